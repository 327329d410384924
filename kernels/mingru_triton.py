"""minGRU's gates fused with the scan (Triton; the math is ``recurl/memory/mingru.py``'s, the traversal is
``gated_scan_triton``'s).

``z = [k, c]`` (update and candidate pre-activations, ``D`` channels each): ``a = sigmoid(-k)``, ``b = (1 - a) g(c)``.
Backward, with ``gb`` and ``ga`` the gradients of b and a: ``dc = gb (1 - a) g'(c)`` and
``dk = -a (1 - a) (ga - gb g(c))`` (b depends on k through a).
"""

from __future__ import annotations

import triton
import triton.language as tl

from recurl.kernels.gated_scan_triton import gated_scan, gated_scan_backward, gated_scan_forward


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def positive_activation(x):
    """g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise; and its derivative."""
    s = sigmoid(x)
    return tl.where(x >= 0, x + 0.5, s), tl.where(x >= 0, 1.0, s * (1.0 - s))


@triton.jit
def _gate(z_ptr, offs, D, mask, ACC: tl.constexpr):
    return sigmoid(-tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC))


@triton.jit
def _gates(z_ptr, offs, D, mask, ACC: tl.constexpr):
    a = _gate(z_ptr, offs, D, mask, ACC)
    candidate, _ = positive_activation(tl.load(z_ptr + offs + D, mask=mask, other=0.0).to(ACC))
    return a, (1.0 - a) * candidate


@triton.jit
def _gate_grads(z_ptr, dz_ptr, offs, D, mask, ACC: tl.constexpr, grad_a, grad_b):
    a = _gate(z_ptr, offs, D, mask, ACC)
    candidate, slope = positive_activation(tl.load(z_ptr + offs + D, mask=mask, other=0.0).to(ACC))
    grad_k = -a * (1.0 - a) * (grad_a - grad_b * candidate)
    tl.store(dz_ptr + offs, grad_k.to(dz_ptr.dtype.element_ty), mask=mask)
    tl.store(dz_ptr + offs + D, (grad_b * (1.0 - a) * slope).to(dz_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _forward(z_ptr, reset_ptr, h0_ptr, h_ptr, T, D,
             HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    gated_scan_forward(z_ptr, reset_ptr, h0_ptr, h_ptr, T, D, _gates, 2, HAS_H0, ACC, BLOCK_D, CHUNK)


@triton.jit
def _backward(z_ptr, reset_ptr, h0_ptr, h_ptr, dh_ptr, dz_ptr, dh0_ptr, T, D,
              HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    gated_scan_backward(
        z_ptr, reset_ptr, h0_ptr, h_ptr, dh_ptr, dz_ptr, dh0_ptr, T, D, _gate, _gate_grads, 2, HAS_H0, ACC, BLOCK_D,
        CHUNK,
    )


KERNELS = (_forward, _backward)


def mingru_scan_triton(z, resets, h0=None, **config):
    """minGRU's parallel form from its projection ``z`` [B, T, 2D] (update, candidate), ``resets`` [B, T] and ``h0``
    [B, D]; differentiable in ``z`` and ``h0``. ``config``: ``gated_scan``'s tuning knobs."""
    return gated_scan("mingru_scan_triton", KERNELS, 2, z, resets, h0, **config)
