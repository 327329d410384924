"""A trained policy's stepwise form as one torch module with plain tensors in and out, for ``torch.onnx.export``.

``PolicyStep(policy)`` computes for a batch of envs what ``Policy.act(obs, state, reset, deterministic=True)``
computes, all in tensors:

    inputs:  the observation's leaves (``obs``; or ``obs.image``, ``obs.direction``, ...; or ``obs.0``, ``obs.1``, ...),
             ``reset``, ``prev_reward`` (agents that see it), then the state: ``state_0``, ``state_1``, ... (the
             memory's state tensors, each stacked over layers) and ``prev_action`` (agents that see it)
    outputs: ``action`` (the env's format), ``agent_action`` (the agent's), then ``next_<name>`` for each state input

Every input and output has the batch as its first dimension. The observation is encoded inside, as
``recurl.envs.encoding`` encodes it (one-hots of Discrete and MultiDiscrete leaves and of MiniGrid's symbolic image,
uint8 images scaled to [0, 1], other Boxes as they are), so a caller in any language feeds each leaf of the env's
observation as gymnasium returns it, in its space's dtype; ``observation_inputs`` does that in Python. A MiniGrid
mission string is not an input: the encoding ignores it. An index outside its space encodes to zeros here, where
the numpy encoder raises.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from recurl.agents.action_spaces import discrete_components
from recurl.agents.q_network import RecurrentQNetwork
from recurl.envs.encoding import box_scale, is_minigrid, minigrid_channel_sizes
from recurl.policy import Policy


@dataclass(frozen=True)
class TensorSpec:
    """An input or output: its shape after the batch dimension, its dtype, and for a state input the value it holds
    at an episode's start (a number when all elements share it, else a nested list)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    initial: Any = None


class _OneHot(nn.Module):
    """Integer leaf [B, *shape] -> one one-hot per element, element ``k`` over ``sizes[k]`` values from ``start[k]``."""

    def __init__(self, sizes: np.ndarray, start: np.ndarray):
        super().__init__()
        sizes = np.asarray(sizes).reshape(-1).astype(np.int64)
        width = int(sizes.max())
        start = torch.as_tensor(np.asarray(start).reshape(-1), dtype=torch.long)
        self.register_buffer("start", start, persistent=False)
        self.register_buffer("values", torch.arange(width), persistent=False)
        # Of the [elements, width] comparisons, those with real values of their element, in row-major order.
        kept = (np.arange(width) < sizes[:, None]).reshape(-1).nonzero()[0]
        self.register_buffer("kept", torch.as_tensor(kept), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.reshape(x.shape[0], -1).long() - self.start
        return (index[..., None] == self.values).flatten(1)[:, self.kept].float()


class _Flat(nn.Module):
    """Box or MultiBinary leaf [B, *shape] -> float32 [B, size], divided by ``scale`` (255 for an image)."""

    def __init__(self, scale: float | None):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).float()
        return flat if self.scale is None else flat / self.scale


def _minigrid_image(space: spaces.Box) -> _OneHot:
    """Each cell's (object, colour, state) triple as three one-hots over minigrid's tables."""
    sizes = minigrid_channel_sizes()
    cells = space.shape[0] * space.shape[1]
    return _OneHot(np.tile(sizes, cells), np.zeros(3 * cells))


def observation_leaves(space: spaces.Space, name: str = "obs") -> list[tuple[str, spaces.Space, nn.Module]]:
    """(input name, leaf space, its encoding) in the order ``recurl.envs.encoding`` concatenates the leaves."""
    if isinstance(space, spaces.Dict):
        minigrid, parts = is_minigrid(space), []
        for key in sorted(space.spaces):
            if minigrid and key == "mission":
                continue
            if minigrid and key == "image":
                parts.append((f"{name}.{key}", space[key], _minigrid_image(space[key])))
            else:
                parts += observation_leaves(space[key], f"{name}.{key}")
        return parts
    if isinstance(space, spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in observation_leaves(sub, f"{name}.{i}")]
    if isinstance(space, spaces.Discrete):
        return [(name, space, _OneHot(np.array([space.n]), np.array([space.start])))]
    if isinstance(space, spaces.MultiDiscrete):
        return [(name, space, _OneHot(space.nvec, space.start))]
    if isinstance(space, spaces.MultiBinary):
        return [(name, space, _Flat(None))]
    if isinstance(space, spaces.Box):
        return [(name, space, _Flat(box_scale(space)))]
    raise ValueError(f"{name}: a {type(space).__name__} observation cannot be an input of the exported policy")


def observation_inputs(obs: Any, batched: bool = False, name: str = "obs") -> dict[str, np.ndarray]:
    """The observation inputs of a gymnasium observation: one array per leaf, named as ``observation_leaves`` names
    them, with a batch dimension of 1 added unless ``batched`` (a vector env's observations). Strings (a MiniGrid
    mission) are left out."""
    if isinstance(obs, str) or (isinstance(obs, tuple) and obs and all(isinstance(item, str) for item in obs)):
        return {}  # a mission, or a vector env's tuple of missions
    if isinstance(obs, dict):
        return {k: v for key, sub in obs.items() for k, v in observation_inputs(sub, batched, f"{name}.{key}").items()}
    if isinstance(obs, tuple):
        return {k: v for i, sub in enumerate(obs) for k, v in observation_inputs(sub, batched, f"{name}.{i}").items()}
    array = np.asarray(obs)
    return {name: array if batched else array[None]}


def _initial_value(tensor: torch.Tensor) -> Any:
    """A batch-1 tensor's values for the metadata: one number if all are equal, else a nested list; non-finite
    numbers as the strings "-inf", "inf" (JSON has no infinities; ``float()`` and ``strtod`` read these)."""
    values = tensor[0]
    value = values.flatten()[0].item() if values.numel() else 0
    if values.numel() and not bool((values == value).all()):
        return values.tolist()
    return value if math.isfinite(value) else str(value)


class EnvAction(nn.Module):
    """The agent's action [B, ...] -> the env's, as ``network.to_env`` does in numpy: a Box action clipped to its
    bounds, indices offset by the space's start, a flat DQN index unravelled (C order), a MultiDiscrete reshaped."""

    def __init__(self, space: spaces.Space, flat_index: bool):
        super().__init__()
        self.shape, self.flat_index, self.clip = tuple(space.shape), flat_index, isinstance(space, spaces.Box)
        if self.clip:
            self.register_buffer("low", torch.as_tensor(space.low.reshape(-1)), persistent=False)
            self.register_buffer("high", torch.as_tensor(space.high.reshape(-1)), persistent=False)
            return
        nvec, start = discrete_components(space)
        strides = np.cumprod(np.concatenate([nvec[1:], [1]])[::-1])[::-1].copy()
        self.register_buffer("nvec", torch.as_tensor(nvec, dtype=torch.long), persistent=False)
        self.register_buffer("start", torch.as_tensor(start, dtype=torch.long), persistent=False)
        self.register_buffer("strides", torch.as_tensor(strides, dtype=torch.long), persistent=False)

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        batch = action.shape[0]
        if self.clip:
            return torch.clamp(action, self.low, self.high).reshape(batch, *self.shape)
        if self.flat_index:
            action = action[:, None] // self.strides % self.nvec
        return (action.reshape(batch, -1) + self.start).reshape(batch, *self.shape)


class PolicyStep(nn.Module):
    def __init__(self, policy: Policy):
        super().__init__()
        self.network = policy.network
        inputs = self.network.inputs
        leaves = observation_leaves(policy.observation_space)
        self.encoders = nn.ModuleList(encoder for _, _, encoder in leaves)
        self.leaf_spaces = [space for _, space, _ in leaves]
        env = policy.make_env()
        self.env_action = EnvAction(env.action_space, isinstance(self.network, RecurrentQNetwork))
        env.close()
        self.dtype, self.previous_reward = policy.dtype, inputs.previous_reward
        self.previous_action = inputs.previous_action is not None
        memory = self.network.initial_state(1, "cpu")
        self.memory_parts = len(memory)
        self.observation_specs = [
            TensorSpec(name, tuple(space.shape), _torch_dtype(space.dtype)) for name, space, _ in leaves
        ]
        self.control_specs = [TensorSpec("reset", (), torch.bool)]
        if self.previous_reward:
            self.control_specs.append(TensorSpec("prev_reward", (), self.dtype))
        initial = [(f"state_{i}", part) for i, part in enumerate(memory)]
        if self.previous_action:
            initial.append(("prev_action", inputs.previous_action.empty(1, torch.device("cpu"))))
        self.state_specs = [TensorSpec(name, tuple(t.shape[1:]), t.dtype, _initial_value(t)) for name, t in initial]
        self._initial = dict(initial)
        outputs = self(*self.example_inputs(2))
        names = ["action", "agent_action"] + [f"next_{spec.name}" for spec in self.state_specs]
        self.output_specs = [TensorSpec(n, tuple(t.shape[1:]), t.dtype) for n, t in zip(names, outputs)]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return self.observation_specs + self.control_specs + self.state_specs

    def example_inputs(self, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Inputs of ``batch_size`` envs at an episode's first step: sampled observations, the initial state."""
        leaves = []
        for space in self.leaf_spaces:
            space = copy.deepcopy(space)
            space.seed(seed)
            leaves.append(torch.as_tensor(np.stack([space.sample() for _ in range(batch_size)])))
        controls = [torch.ones(batch_size, dtype=torch.bool)]
        controls += [torch.zeros(batch_size, dtype=self.dtype)] * self.previous_reward
        state = [part.expand(batch_size, *part.shape[1:]).clone() for part in self._initial.values()]
        return (*leaves, *controls, *state)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip([spec.name for spec in self.input_specs], inputs))
        leaves = [encode(named[spec.name]) for encode, spec in zip(self.encoders, self.observation_specs)]
        obs = torch.cat(leaves, dim=-1).to(self.dtype)
        step = TensorDict(obs=obs, reset=named["reset"], batch_size=[obs.shape[0]])
        if self.previous_reward:
            step["prev_reward"] = named["prev_reward"]
        if self.previous_action:
            step["prev_action"] = named["prev_action"]
        memory = tuple(named[f"state_{i}"] for i in range(self.memory_parts))
        action, memory = self.network.act(step, memory, True)
        env_action = self.env_action(action)
        prev_action = (env_action.to(named["prev_action"].dtype).clone(),) if self.previous_action else ()
        return (env_action, action, *memory, *prev_action)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
