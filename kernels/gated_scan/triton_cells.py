"""The gates of minGRU and minLSTM in Triton, for the fused kernels of ``triton_scan.py`` (the math is
``recurl/memory/mingru.py``'s and ``minlstm.py``'s). Which cell a kernel computes is its ``CELL`` constexpr, so both
cells share one traversal and Triton compiles a specialised kernel for each.

Each cell reads its projection ``z``: ``P`` slices of ``D`` channels side by side; ``offs`` points at slice 0 of each
element of a tile and slice ``p`` is at ``offs + p * D``. Three functions per cell:

    gate(z_ptr, offs, D, mask, ACC, CELL) -> a                # the decay alone (the backward needs a_{t+1})
    gates(z_ptr, offs, D, mask, ACC, CELL) -> (a, b)
    gate_grads(z_ptr, dz_ptr, offs, D, mask, ACC, CELL, grad_a, grad_b)   # stores dz from the gradients of a and b

minGRU, ``z = [k, c]`` (update and candidate pre-activations): ``a = sigmoid(-k)``, ``b = (1 - a) g(c)``. Backward,
with ``gb`` and ``ga`` the gradients of b and a: ``dc = gb (1 - a) g'(c)`` and ``dk = -a (1 - a) (ga - gb g(c))``
(b depends on k through a).

minLSTM, ``z = [x_f, x_i, c]``: ``f = sigmoid(x_f)``, ``i = sigmoid(x_i)``, ``a = f / (f + i)``, ``b = (1 - a) g(c)``.
Backward, with ``A = ga - gb g(c)`` the whole gradient reaching a: ``dc = gb (1 - a) g'(c)``,
``dx_f = A a (1 - a) (1 - f)``, ``dx_i = -A a (1 - a) (1 - i)`` (from ``da/df = i / (f + i)^2``,
``da/di = -f / (f + i)^2`` and ``sigmoid' = s (1 - s)``).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: The ``CELL`` constexpr of each cell, and how many slices of ``D`` channels its projection has.
MINGRU = tl.constexpr(0)
MINLSTM = tl.constexpr(1)
CELLS = {"mingru": (MINGRU.value, 2), "minlstm": (MINLSTM.value, 3)}


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def positive_activation(x):
    """g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise; and its derivative."""
    s = sigmoid(x)
    return tl.where(x >= 0, x + 0.5, s), tl.where(x >= 0, 1.0, s * (1.0 - s))


@triton.jit
def _load(z_ptr, offs, mask, ACC: tl.constexpr):
    return tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)


@triton.jit
def _forget_keep(z_ptr, offs, D, mask, ACC: tl.constexpr):
    """minLSTM's f and i."""
    return sigmoid(_load(z_ptr, offs, mask, ACC)), sigmoid(_load(z_ptr, offs + D, mask, ACC))


@triton.jit
def gate(z_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr):
    if CELL == MINGRU:
        a = sigmoid(-_load(z_ptr, offs, mask, ACC))
    else:
        f, i = _forget_keep(z_ptr, offs, D, mask, ACC)
        a = f / (f + i)
    return a


@triton.jit
def _candidate(z_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr):
    """g(c) and g'(c); ``c`` is the cell's last slice."""
    if CELL == MINGRU:
        c = _load(z_ptr, offs + D, mask, ACC)
    else:
        c = _load(z_ptr, offs + 2 * D, mask, ACC)
    return positive_activation(c)


@triton.jit
def gates(z_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr):
    a = gate(z_ptr, offs, D, mask, ACC, CELL)
    candidate, _ = _candidate(z_ptr, offs, D, mask, ACC, CELL)
    return a, (1.0 - a) * candidate


@triton.jit
def gate_grads(z_ptr, dz_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr, grad_a, grad_b):
    out = dz_ptr.dtype.element_ty
    candidate, slope = _candidate(z_ptr, offs, D, mask, ACC, CELL)
    if CELL == MINGRU:
        a = gate(z_ptr, offs, D, mask, ACC, CELL)
        tl.store(dz_ptr + offs, (-a * (1.0 - a) * (grad_a - grad_b * candidate)).to(out), mask=mask)
        tl.store(dz_ptr + offs + D, (grad_b * (1.0 - a) * slope).to(out), mask=mask)
    else:
        f, i = _forget_keep(z_ptr, offs, D, mask, ACC)
        a = f / (f + i)
        through_a = (grad_a - grad_b * candidate) * a * (1.0 - a)
        tl.store(dz_ptr + offs, (through_a * (1.0 - f)).to(out), mask=mask)
        tl.store(dz_ptr + offs + D, (-through_a * (1.0 - i)).to(out), mask=mask)
        tl.store(dz_ptr + offs + 2 * D, (grad_b * (1.0 - a) * slope).to(out), mask=mask)
