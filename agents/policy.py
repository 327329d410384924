"""``RecurrentActorCritic``: any ``Memory`` plus an action head and a value head.

The same network is run two ways: ``step`` while acting (one observation per env, O(1) per step) and ``forward`` over
whole trajectories in the update (the memory's parallel form). The memory contract makes both compute the same thing.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Distribution

from recurl.agents.heads import make_action_head
from recurl.memory import Memory
from recurl.memory.cell import State


class RecurrentActorCritic(nn.Module):
    def __init__(self, memory: Memory, action_space: spaces.Space):
        super().__init__()
        self.memory = memory
        self.actor = make_action_head(action_space, memory.output_size)
        self.critic = nn.Linear(memory.output_size, 1)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.memory.initial_state(batch_size, device)

    def forward(
        self, obs: torch.Tensor, state: State, resets: torch.Tensor
    ) -> tuple[Distribution, torch.Tensor, State]:
        """Trajectories: ``obs`` [B, T, F], ``resets`` [B, T] -> action distribution and values [B, T]."""
        features, state = self.memory(obs, state, resets)
        return self.actor(features), self.critic(features).squeeze(-1), state

    def step(self, obs: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[Distribution, torch.Tensor, State]:
        """One step: ``obs`` [B, F], ``reset`` [B] -> action distribution and values [B]."""
        features, state = self.memory.step(obs, state, reset)
        return self.actor(features), self.critic(features).squeeze(-1), state
