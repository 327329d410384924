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
    def __init__(self, make_cell: Callable[[int], MemoryCell], input_size: int, hidden_size: int, num_layers: int = 2):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.output_size = hidden_size
        self.input_proj = nn.Linear(input_size, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers))
        self.cells = nn.ModuleList(make_cell(hidden_size) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state of ``batch_size`` fresh episodes, in the dtype of the parameters."""
        dtype = self.input_proj.weight.dtype
        device = self.input_proj.weight.device if device is None else torch.device(device)
        return _stack_layers([cell.initial_state(batch_size, device, dtype) for cell in self.cells])

    def forward(
        self, x: torch.Tensor, state: State | None = None, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """``x`` [B, T, input_size], ``resets`` [B, T] bool (True: an episode starts at t) -> ``y`` [B, T, output_size].

        ``state=None`` is the initial state and ``resets=None`` no resets, so ``mem(x)`` works as ``nn.GRU(x)`` does
        with ``batch_first=True`` (batch first, always: a time-major ``[T, B, in]`` would pass for ``[B, T, in]``).
        """
        x, state, resets = self._checked(x, state, resets, time=True)
        return self._run(x, state, resets, lambda cell, *args: cell(*args))

    def step(
        self, x: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One time step: ``x`` [B, input_size], ``reset`` [B] bool -> ``y`` [B, output_size] (defaults as
        ``forward``)."""
        x, state, reset = self._checked(x, state, reset, time=False)
        return self._run(x, state, reset, lambda cell, *args: cell.step(*args))

    def _checked(self, x: torch.Tensor, state: State | None, resets: torch.Tensor | None, time: bool):
        """The inputs with defaults filled in; a shape or dtype that does not fit raises one ValueError naming it."""
        what, flags, dims = ("forward", "resets", "[B, T, {}]") if time else ("step", "reset", "[B, {}]")
        expected = f"memory.{what}: expected x {dims.format(self.input_size)}"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{expected}, a torch tensor; got a {type(x).__name__}")
        if x.dim() != 2 + time or x.shape[-1] != self.input_size or 0 in x.shape[:-1]:
            raise ValueError(f"{expected} with B, T >= 1; got x {tuple(x.shape)}")
        dtype = self.input_proj.weight.dtype
        if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):  # autocast casts it
            raise ValueError(f"{expected} in the memory's dtype, {dtype}; got x {x.dtype} (convert x, or the memory)")
        batch_shape = x.shape[:-1]
        if resets is None:
            resets = torch.zeros(batch_shape, dtype=torch.bool, device=x.device)
        elif not isinstance(resets, torch.Tensor) or resets.shape != batch_shape or resets.dtype != torch.bool:
            tensor = isinstance(resets, torch.Tensor)
            got = f"{tuple(resets.shape)} {resets.dtype}" if tensor else f"a {type(resets).__name__}"
            raise ValueError(f"memory.{what}: expected {flags} a torch.bool tensor {list(batch_shape)}; got {got}")
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        elif isinstance(state, torch.Tensor):
            raise ValueError(f"memory.{what}: the state is the tuple of tensors initial_state gives; got a tensor")
        elif any(part.shape[:2] != (x.shape[0], self.num_layers) for part in state):
            shapes = ", ".join(str(tuple(part.shape)) for part in state)
            raise ValueError(
                f"memory.{what}: the state's tensors must start with [B, num_layers] = [{x.shape[0]}, "
                f"{self.num_layers}]; got {shapes}"
            )
        return x, state, resets

    def _run(self, x, state, resets, call) -> tuple[torch.Tensor, State]:
        h = self.input_proj(x)
        new_states = []
        for layer, (norm, cell) in enumerate(zip(self.norms, self.cells)):
            y, layer_state = call(cell, norm(h), tuple(part[:, layer] for part in state), resets)
            h = h + y
            new_states.append(layer_state)
        return self.out_norm(h), _stack_layers(new_states)
