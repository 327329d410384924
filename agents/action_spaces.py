"""Discrete and MultiDiscrete action spaces as one flat list of components, the way every part that handles them
(heads, DQN's flat index, the previous-action input, the exported graph) reads them."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def discrete_components(space: spaces.Discrete | spaces.MultiDiscrete) -> tuple[np.ndarray, np.ndarray]:
    """Each component's number of values and first value, int64, flattened in C order (a Discrete space is one
    component)."""
    if isinstance(space, spaces.Discrete):
        return np.array([int(space.n)]), np.array([int(space.start)])
    return space.nvec.reshape(-1).astype(np.int64), np.asarray(space.start).reshape(-1).astype(np.int64)
