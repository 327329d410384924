"""Memory backbones behind one contract (see ``Memory``), built by name with ``make_memory``.

    mem = make_memory("mingru", input_size, hidden_size)
    state = mem.initial_state(batch_size, device)
    y, state = mem(x, state, resets)            # x [B, T, in], resets [B, T] bool -> y [B, T, out]
    y_t, state = mem.step(x_t, state, reset_t)  # x_t [B, in], reset_t [B] bool

A new backbone is a cell class (``cell.MemoryCell``) in its own module, an entry in ``MEMORIES`` and a yaml in
``recurl/conf/memory/`` (README, "Adding a backbone"); the tests iterate ``MEMORIES``.
"""

from __future__ import annotations

import functools
import inspect

import torch

from recurl.kernels import check_backend
from recurl.memory.aaren import Aaren
from recurl.memory.cell import State
from recurl.memory.ffm import FFM
from recurl.memory.gru import GRU
from recurl.memory.lru import LRU
from recurl.memory.lstm import LSTM
from recurl.memory.mingru import MinGRU
from recurl.memory.minlstm import MinLSTM
from recurl.memory.mlp import MLP
from recurl.memory.stack import Memory

#: Backbone name -> the cell class one layer is made of. ``mlp`` is the memory-less control.
MEMORIES = {
    "mingru": MinGRU, "minlstm": MinLSTM, "aaren": Aaren, "ffm": FFM, "lru": LRU, "gru": GRU, "lstm": LSTM, "mlp": MLP,
}


def make_memory(
    name: str, input_size: int, hidden_size: int, num_layers: int = 2, *, device: torch.device | str | None = None,
    **options,
) -> Memory:
    """Build backbone ``name`` mapping ``input_size`` features to ``hidden_size``; ``options`` go to its cell.

    With ``device``, the memory is moved there, after checking that its scan backend can run there.
    """
    if name not in MEMORIES:
        raise ValueError(f"unknown memory {name!r}; choose one of {', '.join(MEMORIES)}")
    for field, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"memory {name}: {field} must be a positive integer, got {value!r}")
    cell = MEMORIES[name]
    accepted = [p for p in inspect.signature(cell).parameters if p != "size"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"memory {name}: unknown option(s) {', '.join(unknown)}; it accepts num_layers"
            + "".join(f", {p}" for p in accepted)
        )
    memory = Memory(functools.partial(cell, **options), input_size, hidden_size, num_layers)
    if device is not None:
        device = torch.device(device)
        if "scan_backend" in options:
            check_backend(options["scan_backend"], device)
        memory.to(device)
    return memory


__all__ = ["MEMORIES", "Memory", "State", "make_memory"]
