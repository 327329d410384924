"""``Memory``: the module every agent talks to, built from ``num_layers`` cells of one backbone.

    h = W_in x;   for each layer: h = h + cell(LayerNorm(h));   y = LayerNorm(h)

Pre-norm residual layers, as in the minGRU/minLSTM and Aaren papers' stacks. The state is a tuple of tensors
``[B, num_layers, ...]`` (each cell's state components stacked over layers), so agents store and index it without
knowing the backbone. Initial states are fixed (zeros; Aaren's running max -inf), not learned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recurl.memory.cell import MemoryCell, State


def _stack_layers(states: list[State]) -> State:
    return tuple(torch.stack(parts, dim=1) for parts in zip(*states))


class Memory(nn.Module):
    def __init__(self, make_cell: Callable[[int], MemoryCell], input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.input_proj = nn.Linear(input_size, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        self.cells = nn.ModuleList(make_cell(hidden_size) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state of ``batch_size`` fresh episodes, in the dtype of the parameters."""
        dtype = self.input_proj.weight.dtype
        device = self.input_proj.weight.device if device is None else torch.device(device)
        return _stack_layers([cell.initial_state(batch_size, device, dtype) for cell in self.cells])

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """``x`` [B, T, input_size], ``resets`` [B, T] bool (True: an episode starts at t) -> ``y`` [B, T, output_size]."""
        if x.dim() != 3 or resets.shape != x.shape[:2] or resets.dtype != torch.bool:
            raise ValueError(
                f"memory: expected x [B, T, {self.input_size}] and bool resets [B, T]; "
                f"got x {tuple(x.shape)} and resets {tuple(resets.shape)} {resets.dtype}"
            )
        return self._run(x, state, resets, lambda cell, *args: cell(*args))

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        """One time step: ``x`` [B, input_size], ``reset`` [B] bool -> ``y`` [B, output_size]."""
        return self._run(x, state, reset, lambda cell, *args: cell.step(*args))

    def _run(self, x, state, resets, call) -> tuple[torch.Tensor, State]:
        h = self.input_proj(x)
        new_states = []
        for layer, (norm, cell) in enumerate(zip(self.norms, self.cells)):
            y, layer_state = call(cell, norm(h), tuple(part[:, layer] for part in state), resets)
            h = h + y
            new_states.append(layer_state)
        return self.out_norm(h), _stack_layers(new_states)
