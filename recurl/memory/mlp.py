"""The memory-less control: a feed-forward layer with an empty state, so every agent runs unchanged without memory."""

from __future__ import annotations

import torch
from torch import nn

from recurl.memory.cell import State


class MLP(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.net = nn.Sequential(nn.Linear(size, size), nn.GELU())

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return ()

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self.net(x), ()

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        return self.net(x), ()
