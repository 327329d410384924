"""minLSTM's gates fused with the scan (Triton; the math is ``recurl/memory/minlstm.py``'s, the traversal is
``gated_scan_triton``'s).

``z = [x_f, x_i, c]``: ``f = sigmoid(x_f)``, ``i = sigmoid(x_i)``, ``a = f / (f + i)``, ``b = (1 - a) g(c)``.
Backward, with ``gb`` and ``ga`` the gradients of b and a, and ``A = ga - gb g(c)`` the whole gradient reaching a:
``dc = gb (1 - a) g'(c)``, ``dx_f = A a (1 - a) (1 - f)``, ``dx_i = -A a (1 - a) (1 - i)``
(from ``da/df = i / (f + i)^2``, ``da/di = -f / (f + i)^2`` and ``sigmoid' = s (1 - s)``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from recurl.kernels.gated_scan_triton import gated_scan, gated_scan_backward, gated_scan_forward
from recurl.kernels.mingru_triton import positive_activation, sigmoid


@triton.jit
def _forget_keep(z_ptr, offs, D, mask, ACC: tl.constexpr):
    f = sigmoid(tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC))
    i = sigmoid(tl.load(z_ptr + offs + D, mask=mask, other=0.0).to(ACC))
    return f, i


@triton.jit
def _gate(z_ptr, offs, D, mask, ACC: tl.constexpr):
    f, i = _forget_keep(z_ptr, offs, D, mask, ACC)
    return f / (f + i)


@triton.jit
def _gates(z_ptr, offs, D, mask, ACC: tl.constexpr):
    a = _gate(z_ptr, offs, D, mask, ACC)
    candidate, _ = positive_activation(tl.load(z_ptr + offs + 2 * D, mask=mask, other=0.0).to(ACC))
    return a, (1.0 - a) * candidate


@triton.jit
def _gate_grads(z_ptr, dz_ptr, offs, D, mask, ACC: tl.constexpr, grad_a, grad_b):
    f, i = _forget_keep(z_ptr, offs, D, mask, ACC)
    a = f / (f + i)
    candidate, slope = positive_activation(tl.load(z_ptr + offs + 2 * D, mask=mask, other=0.0).to(ACC))
    through_a = (grad_a - grad_b * candidate) * a * (1.0 - a)
    out = dz_ptr.dtype.element_ty
    tl.store(dz_ptr + offs, (through_a * (1.0 - f)).to(out), mask=mask)
    tl.store(dz_ptr + offs + D, (-through_a * (1.0 - i)).to(out), mask=mask)
    tl.store(dz_ptr + offs + 2 * D, (grad_b * (1.0 - a) * slope).to(out), mask=mask)


@triton.jit
def _forward(z_ptr, reset_ptr, h0_ptr, h_ptr, T, D,
             HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    gated_scan_forward(z_ptr, reset_ptr, h0_ptr, h_ptr, T, D, _gates, 3, HAS_H0, ACC, BLOCK_D, CHUNK)


@triton.jit
def _backward(z_ptr, reset_ptr, h0_ptr, h_ptr, dh_ptr, dz_ptr, dh0_ptr, T, D,
              HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    gated_scan_backward(
        z_ptr, reset_ptr, h0_ptr, h_ptr, dh_ptr, dz_ptr, dh0_ptr, T, D, _gate, _gate_grads, 3, HAS_H0, ACC, BLOCK_D,
        CHUNK,
    )


KERNELS = (_forward, _backward)


def minlstm_scan_triton(z, resets, h0=None, **config):
    """minLSTM's parallel form from its projection ``z`` [B, T, 3D] (forget, input, candidate), ``resets`` [B, T] and
    ``h0`` [B, D]; differentiable in ``z`` and ``h0``. ``config``: ``gated_scan``'s tuning knobs."""
    return gated_scan("minlstm_scan_triton", KERNELS, 3, z, resets, h0, **config)
