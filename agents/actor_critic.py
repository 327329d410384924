"""``RecurrentActorCritic``: PPO's network, any ``Memory`` between the step inputs and an action head and a value head.

The same network is run two ways: ``step`` while acting (one step per env, O(1)) and ``forward`` over whole
trajectories in the update (the memory's parallel form). The memory contract makes both compute the same thing.
Both read a step TensorDict (``recurl.agents.inputs``): the observation, its reset flag, and the previous action and
reward when the agent is configured to see them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn
from torch.distributions import Distribution

from recurl.agents.heads import make_action_head
from recurl.agents.inputs import AgentInputs
from recurl.memory import Memory
from recurl.memory.cell import State


class RecurrentActorCritic(nn.Module):
    def __init__(self, inputs: AgentInputs, memory: Memory, action_space: spaces.Space):
        super().__init__()
        if memory.input_size != inputs.size:
            raise ValueError(f"the memory reads {memory.input_size} features; the agent's inputs have {inputs.size}")
        self.inputs, self.memory = inputs, memory
        self.action_head = make_action_head(action_space, memory.output_size)
        self.value_head = nn.Linear(memory.output_size, 1)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.memory.initial_state(batch_size, device)

    def forward(self, steps: TensorDict, state: State) -> tuple[Distribution, torch.Tensor, State]:
        """Trajectories ``steps`` [B, T] -> action distribution and values [B, T], and the final state."""
        features, state = self.memory(self.inputs(steps), state, steps["reset"])
        return self.action_head(features), self.value_head(features).squeeze(-1), state

    def step(self, step: TensorDict, state: State) -> tuple[Distribution, torch.Tensor, State]:
        """One step ``step`` [B] -> action distribution and values [B], and the next state."""
        features, state = self.memory.step(self.inputs(step), state, step["reset"])
        return self.action_head(features), self.value_head(features).squeeze(-1), state

    @torch.no_grad()
    def act(
        self, step: TensorDict, state: State, deterministic: bool, generators: Sequence[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, State]:
        """Actions for ``step`` [B]: the distribution's mode if ``deterministic``, else a sample, drawn from torch's
        global generator or, given ``generators`` (one per row), row ``i``'s from ``generators[i]``."""
        dist, _, state = self.step(step, state)
        if deterministic:
            return dist.mode, state
        return (dist.sample() if generators is None else dist.sample_rows(generators)), state

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        """Actions as ``VectorEnv.step`` takes them."""
        return self.action_head.to_env(action)
