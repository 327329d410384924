"""Encode any supported observation space as one flat ``float32`` vector.

Agents see every environment as ``[num_envs, obs_dim]`` float arrays. The
encoding of a space, recursively:

- ``Discrete`` -> one-hot; ``MultiDiscrete`` -> concatenated one-hots;
- ``MultiBinary`` -> its bits as floats;
- ``Box`` -> flattened and cast to float32; a ``uint8`` Box bounded exactly
  ``0..255`` (an image) is scaled to ``[0, 1]``; other Boxes keep their
  values and bounds, infinite bounds included;
- ``Tuple`` -> its parts' encodings concatenated in order; ``Dict`` -> its
  parts' encodings concatenated in sorted key order;
- a MiniGrid observation (a ``Dict`` whose ``"mission"`` is minigrid's
  ``MissionSpace``): ``image`` becomes one one-hot per cell per channel over
  minigrid's object, colour and state tables, ``direction`` a one-hot, and
  the mission string is ignored (it is constant or nearly so in the memory tasks).

Anything else (``Text``, ``Graph``, ``Sequence``, ``OneOf``, custom spaces,
one-hots wider than ``MAX_ONE_HOT``) raises ``UnsupportedSpaceError`` when
the encoder is built, naming the path inside the observation.

``gymnasium.wrappers.FlattenObservation`` is not used: it neither scales
images nor knows MiniGrid's symbolic image, returns float64 for mixed spaces,
and allocates one array per leaf per step. Here the space is compiled once
into closures holding precomputed offsets, each writing its leaf into one
preallocated output with a vectorised numpy op. The only per-step checks are
the index range checks of one-hot leaves: an out-of-range index would
otherwise set a bit of the neighbouring field without any error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TransformObservation

# A wider one-hot is almost surely an id or a count, not a category: encoding
# it would allocate a huge, nearly empty vector per step.
MAX_ONE_HOT = 1 << 16

_Writer = Callable[[Any, np.ndarray], None]


class UnsupportedSpaceError(ValueError):
    """An observation space (or a part of one) that cannot be encoded as a flat float vector."""


def make_encoder(space: spaces.Space) -> tuple[Callable[[Any], np.ndarray], spaces.Box]:
    """Compile ``space`` into ``(encode, encoded_space)``.

    ``encode(obs)`` returns a new 1-D float32 array on every call: a vector
    env in same-step autoreset mode keeps the final observation of an
    episode while it asks for the reset one, so a reused buffer would alias them.
    """
    writer, low, high = _compile(space, "observation", 0)
    if low.size == 0:
        raise UnsupportedSpaceError(f"observation: {space} encodes to an empty vector")
    size = low.size

    def encode(obs: Any) -> np.ndarray:
        out = np.zeros(size, dtype=np.float32)
        writer(obs, out)
        return out

    return encode, spaces.Box(low, high, dtype=np.float32)


def encoded_space(space: spaces.Space) -> spaces.Box:
    """The flat ``Box(float32)`` that ``space`` encodes to."""
    return make_encoder(space)[1]


def encoded_size(space: spaces.Space) -> int:
    """Length of the vector that ``space`` encodes to."""
    return int(encoded_space(space).shape[0])


def encode_observations(env: gym.Env) -> gym.Env:
    """Wrap ``env`` so that its observations are encoded; an ``UnsupportedSpaceError`` is raised now, not later."""
    encode, box = make_encoder(env.observation_space)
    return TransformObservation(env, encode, box)


def _compile(space: spaces.Space, path: str, offset: int) -> tuple[_Writer, np.ndarray, np.ndarray]:
    """Return ``(writer, low, high)``: ``writer(obs, out)`` fills ``out[offset : offset + len(low)]``."""
    if isinstance(space, spaces.Discrete):
        return _discrete(space, path, offset)
    if isinstance(space, spaces.MultiDiscrete):
        return _multi_discrete(space, path, offset)
    if isinstance(space, spaces.MultiBinary):
        n = int(np.prod(space.shape))
        return _copy_writer(offset, n, scale=None), np.zeros(n, np.float32), np.ones(n, np.float32)
    if isinstance(space, spaces.Box):
        return _box(space, offset)
    if isinstance(space, spaces.Tuple):
        return _sequence(
            [(i, s, f"{path}[{i}]") for i, s in enumerate(space.spaces)], offset, minigrid=False
        )
    if isinstance(space, spaces.Dict):
        minigrid = is_minigrid(space)
        parts = [
            (k, space[k], f"{path}[{k!r}]")
            for k in sorted(space.spaces)
            if not (minigrid and k == "mission")
        ]
        return _sequence(parts, offset, minigrid)
    raise UnsupportedSpaceError(
        f"{path}: {type(space).__name__} spaces are not supported ({space}); "
        "supported: Box, Discrete, MultiDiscrete, MultiBinary, Tuple and Dict of these"
    )


def _check_one_hot_width(width: int, space: spaces.Space, path: str) -> None:
    if width > MAX_ONE_HOT:
        raise UnsupportedSpaceError(
            f"{path}: {space} would one-hot encode to {width} values (more than MAX_ONE_HOT={MAX_ONE_HOT})"
        )


def _discrete(space: spaces.Discrete, path: str, offset: int):
    n, start = int(space.n), int(space.start)
    _check_one_hot_width(n, space, path)

    def write(x: Any, out: np.ndarray) -> None:
        i = int(x) - start
        if not 0 <= i < n:
            raise ValueError(f"{path}: value {x} outside {space}")
        out[offset + i] = 1.0

    return write, np.zeros(n, np.float32), np.ones(n, np.float32)


def _multi_discrete(space: spaces.MultiDiscrete, path: str, offset: int):
    nvec = space.nvec.ravel().astype(np.int64)
    lo = space.start.ravel().astype(np.int64)
    hi = lo + nvec
    width = int(nvec.sum())
    _check_one_hot_width(width, space, path)
    # out[base + x] is the bit of value x: each field's block start, shifted by its start value.
    base = offset + np.concatenate([[0], np.cumsum(nvec)[:-1]]) - lo

    def write(x: Any, out: np.ndarray) -> None:
        x = np.ravel(x)
        if np.any((x < lo) | (x >= hi)):
            raise ValueError(f"{path}: value {x} outside {space}")
        out[base + x] = 1.0

    return write, np.zeros(width, np.float32), np.ones(width, np.float32)


def _box(space: spaces.Box, offset: int):
    n = int(np.prod(space.shape))
    low = space.low.ravel().astype(np.float64)
    high = space.high.ravel().astype(np.float64)
    scale = box_scale(space)
    if scale is not None:
        low, high = low / scale, high / scale
    with np.errstate(over="ignore"):  # bounds beyond float32's range become +-inf, as values there would
        return _copy_writer(offset, n, scale), low.astype(np.float32), high.astype(np.float32)


def box_scale(space: spaces.Box) -> float | None:
    """What a Box's values are divided by: 255 for an image (uint8 in [0, 255]), else nothing."""
    is_image = space.dtype == np.uint8 and np.all(space.low == 0) and np.all(space.high == 255)
    return 255.0 if is_image else None


def _copy_writer(offset: int, n: int, scale: float | None) -> _Writer:
    view = slice(offset, offset + n)
    if scale is None:

        def write(x: Any, out: np.ndarray) -> None:
            out[view] = np.ravel(x)

    else:
        divisor = np.float32(scale)

        def write(x: Any, out: np.ndarray) -> None:
            np.divide(np.ravel(x), divisor, out=out[view])

    return write


def _sequence(parts: list[tuple[Any, spaces.Space, str]], offset: int, minigrid: bool):
    """Tuple and Dict: the parts' writers one after another; ``parts`` holds (index or key, space, path)."""
    keyed_writers, lows, highs = [], [], []
    for key, sub, sub_path in parts:
        if minigrid and key == "image":
            writer, low, high = _minigrid_image(sub, sub_path, offset)
        else:
            writer, low, high = _compile(sub, sub_path, offset)
        keyed_writers.append((key, writer))
        lows.append(low)
        highs.append(high)
        offset += low.size

    def write(obs: Any, out: np.ndarray) -> None:
        for key, writer in keyed_writers:
            writer(obs[key], out)

    empty = np.zeros(0, np.float32)
    return write, np.concatenate([empty, *lows]), np.concatenate([empty, *highs])


def is_minigrid(space: spaces.Dict) -> bool:
    """Whether ``space`` is a MiniGrid observation (a mission and a symbolic image), encoded its own way."""
    # minigrid is never imported here: if it is not loaded, no space can be one of its MissionSpaces.
    mission_module = sys.modules.get("minigrid.core.mission")
    return (
        mission_module is not None
        and isinstance(space.spaces.get("mission"), mission_module.MissionSpace)
        and "image" in space.spaces
    )


def minigrid_channel_sizes() -> np.ndarray:
    """The sizes of minigrid's object, colour and state tables: the one-hot widths of an image cell's channels."""
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    return np.array([len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX)])


def _minigrid_image(space: spaces.Space, path: str, offset: int):
    """One-hot of each cell's (object, colour, state) triple, cell by cell in row-major order."""
    if not (isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[2] == 3):
        raise UnsupportedSpaceError(
            f"{path}: expected MiniGrid's symbolic (height, width, 3) image, got {space}"
        )
    sizes = minigrid_channel_sizes()
    cells = space.shape[0] * space.shape[1]
    per_cell = int(sizes.sum())
    channel_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    base = (offset + np.arange(cells)[:, None] * per_cell + channel_start).ravel()
    width = cells * per_cell

    def write(x: Any, out: np.ndarray) -> None:
        cells_by_channel = np.reshape(x, (cells, 3))
        # Also catches an RGB image or a fully observable grid (agent direction as state).
        if np.any(cells_by_channel >= sizes):
            raise ValueError(f"{path}: values outside minigrid's object/colour/state tables")
        out[base + cells_by_channel.ravel()] = 1.0

    return write, np.zeros(width, np.float32), np.ones(width, np.float32)
