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

minLSTM, ``z = [x_f, x_i, c]``: the normalised gates ``f / (f + i)`` and ``i / (f + i)`` (``f = sigmoid(x_f)``,
``i = sigmoid(x_i)``) in log space, as ``recurl/memory/minlstm.py`` computes them: with
``r = logsigmoid(x_f) - logsigmoid(x_i)``, ``a = sigmoid(r)`` and ``b = sigmoid(-r) g(c)`` (no 0 / 0 when both
sigmoids underflow). Backward, with ``A = ga - gb g(c)`` the whole gradient reaching a and ``a' = sigmoid(-r)``
(= 1 - a): ``dc = gb a' g'(c)``, ``dx_f = A a a' sigmoid(-x_f)``, ``dx_i = -A a a' sigmoid(-x_i)`` (from
``da/dr = a (1 - a)`` and ``logsigmoid'(x) = sigmoid(-x)``).
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
    """g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise; and its derivative, sigmoid'(0) = 1/4 at exactly 0 as in the
    torch form (``recurl.memory.cell.positive_activation``)."""
    s = sigmoid(x)
    return tl.where(x >= 0, x + 0.5, s), tl.where(x > 0, 1.0, s * (1.0 - s))


@triton.jit
def _load(z_ptr, offs, mask, ACC: tl.constexpr):
    return tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)


@triton.jit
def logsigmoid(x):
    """log(sigmoid(x)) without underflow: min(x, 0) - log(1 + exp(-|x|))."""
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _log_ratio(z_ptr, offs, D, mask, ACC: tl.constexpr):
    """minLSTM's log(f / i) from the pre-activations ``x_f``, ``x_i``, and the two."""
    x_f, x_i = _load(z_ptr, offs, mask, ACC), _load(z_ptr, offs + D, mask, ACC)
    return logsigmoid(x_f) - logsigmoid(x_i), x_f, x_i


@triton.jit
def gate(z_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr):
    if CELL == MINGRU:
        a = sigmoid(-_load(z_ptr, offs, mask, ACC))
    else:
        r, _, _ = _log_ratio(z_ptr, offs, D, mask, ACC)
        a = sigmoid(r)
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
    candidate, _ = _candidate(z_ptr, offs, D, mask, ACC, CELL)
    if CELL == MINGRU:
        a = gate(z_ptr, offs, D, mask, ACC, CELL)
        candidate_share = 1.0 - a
    else:
        r, _, _ = _log_ratio(z_ptr, offs, D, mask, ACC)
        a, candidate_share = sigmoid(r), sigmoid(-r)
    return a, candidate_share * candidate


@triton.jit
def gate_grads(z_ptr, dz_ptr, offs, D, mask, ACC: tl.constexpr, CELL: tl.constexpr, grad_a, grad_b):
    out = dz_ptr.dtype.element_ty
    candidate, slope = _candidate(z_ptr, offs, D, mask, ACC, CELL)
    if CELL == MINGRU:
        a = gate(z_ptr, offs, D, mask, ACC, CELL)
        tl.store(dz_ptr + offs, (-a * (1.0 - a) * (grad_a - grad_b * candidate)).to(out), mask=mask)
        tl.store(dz_ptr + offs + D, (grad_b * (1.0 - a) * slope).to(out), mask=mask)
    else:
        r, x_f, x_i = _log_ratio(z_ptr, offs, D, mask, ACC)
        a, candidate_share = sigmoid(r), sigmoid(-r)
        through_r = (grad_a - grad_b * candidate) * a * candidate_share
        tl.store(dz_ptr + offs, (through_r * sigmoid(-x_f)).to(out), mask=mask)
        tl.store(dz_ptr + offs + D, (-through_r * sigmoid(-x_i)).to(out), mask=mask)
        tl.store(dz_ptr + offs + 2 * D, (grad_b * candidate_share * slope).to(out), mask=mask)
