"""``RecurrentQNetwork``: DQN's network, any ``Memory`` between the step inputs and one Q value per (flat) action.

``forward`` runs sequences (the memory's parallel form, learning); ``step`` one step per env (acting). Actions are
indices ``0 .. n-1`` (``FlatActions``): a ``Discrete`` space's, or a ``MultiDiscrete`` space's joint actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from recurl.agents.action_spaces import discrete_components
from recurl.agents.errors import UnsupportedActionSpaceError
from recurl.agents.inputs import AgentInputs
from recurl.memory import Memory
from recurl.memory.cell import State

#: Largest flattened action space: the Q head has one output per joint action.
MAX_ACTIONS = 4096


class FlatActions:
    """A Discrete or MultiDiscrete space as indices ``0 .. n-1`` (a MultiDiscrete's joint actions in C order)."""

    def __init__(self, space: spaces.Space):
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
            sizes, self.start = discrete_components(space)
            self.nvec, self.shape = tuple(sizes.tolist()), space.shape
        else:
            raise UnsupportedActionSpaceError(
                f"action space {space} is not supported: DQN acts in Discrete and MultiDiscrete spaces; "
                "use PPO (agent=ppo)"
            )
        self.n = math.prod(self.nvec)
        if self.n > MAX_ACTIONS:
            raise UnsupportedActionSpaceError(
                f"action space {space} has {self.n} joint actions, more than DQN's {MAX_ACTIONS}; use PPO (agent=ppo)"
            )

    def to_env(self, index: torch.Tensor) -> np.ndarray:
        """Indices [B] -> the actions ``VectorEnv.step`` expects ([B] or [B, *nvec.shape])."""
        parts = np.stack(np.unravel_index(index.cpu().numpy(), self.nvec), axis=-1) + self.start
        return parts.reshape(-1, *self.shape)


class RecurrentQNetwork(nn.Module):
    def __init__(self, inputs: AgentInputs, memory: Memory, action_space: spaces.Space, explore_epsilon: float):
        """``explore_epsilon``: the chance of a uniformly random action when ``act`` is not ``deterministic``."""
        super().__init__()
        if memory.input_size != inputs.size:
            raise ValueError(f"the memory reads {memory.input_size} features; the agent's inputs have {inputs.size}")
        self.actions = FlatActions(action_space)
        self.inputs, self.memory, self.explore_epsilon = inputs, memory, explore_epsilon
        self.head = nn.Linear(memory.output_size, self.actions.n, dtype=memory.input_proj.weight.dtype)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.memory.initial_state(batch_size, device)

    def forward(self, steps: TensorDict, state: State) -> tuple[torch.Tensor, State]:
        """Sequences ``steps`` [B, T] -> Q [B, T, actions], and the final state."""
        features, state = self.memory(self.inputs(steps), state, steps["reset"])
        return self.head(features), state

    def step(self, step: TensorDict, state: State) -> tuple[torch.Tensor, State]:
        """One step ``step`` [B] -> Q [B, actions], and the next state."""
        features, state = self.memory.step(self.inputs(step), state, step["reset"])
        return self.head(features), state

    @torch.no_grad()
    def act(
        self, step: TensorDict, state: State, deterministic: bool, generator: torch.Generator | None = None,
        epsilon: float | None = None, generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Greedy actions if ``deterministic`` (no random number is drawn), else ε-greedy with ``epsilon``
        (default ``explore_epsilon``), drawing from ``generator`` (default torch's global one) or, given
        ``generators`` (one per row), row ``i``'s from ``generators[i]``."""
        q, state = self.step(step, state)
        greedy = q.argmax(-1)
        if deterministic:
            return greedy, state
        epsilon = self.explore_epsilon if epsilon is None else epsilon
        if generators is None:
            explore = torch.rand(q.shape[0], generator=generator) < epsilon
            random = torch.randint(self.actions.n, (q.shape[0],), generator=generator)
        else:
            draws = [(torch.rand((), generator=g), torch.randint(self.actions.n, (), generator=g)) for g in generators]
            explore = torch.stack([uniform for uniform, _ in draws]) < epsilon
            random = torch.stack([action for _, action in draws])
        return torch.where(explore.to(q.device), random.to(q.device), greedy), state

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return self.actions.to_env(action)
