"""Where an agent stands in its vector env, as data: how a memory state travels through TensorDicts and checkpoints.

Both agents act the same way: each env's next observation, the flag "it starts an episode", and the memory state
carried into it. A checkpoint must hold all three for a resumed run to continue exactly where it stopped.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from recurl.memory.cell import State


def state_to_tensordict(state: State, batch_size: int) -> TensorDict:
    """A memory state (a tuple of ``[B, ...]`` tensors) as a TensorDict with keys ``"0"``, ``"1"``, ... ."""
    return TensorDict({str(i): part for i, part in enumerate(state)}, batch_size=[batch_size])


def state_from_tensordict(td: TensorDict) -> State:
    return tuple(td[str(i)] for i in range(len(td.keys())))


def acting_state_dict(obs: torch.Tensor, reset: torch.Tensor, state: State) -> dict:
    """The next observations, their episode-start flags and the memory state, as checkpointable plain data."""
    return {"obs": obs, "reset": reset, "memory_state": dict(state_to_tensordict(state, len(obs)).items())}


def load_acting_state_dict(saved: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, State]:
    memory_state = saved["memory_state"]
    state = tuple(memory_state[str(i)].to(device) for i in range(len(memory_state)))
    return saved["obs"].to(device), saved["reset"].to(device), state
