"""The linear scan's Triton kernels for complex tensors (complex64, complex128), forward and backward.

The traversal is ``triton_scan.py``'s (one program per sequence and ``BLOCK_D`` channels, tiles of ``CHUNK`` steps,
the backward walking time in reverse); only the arithmetic is complex. A complex tensor is read as its real view
(``torch.view_as_real``: real and imaginary parts interleaved, element ``e`` at ``2e`` and ``2e + 1``), and each
tile is held as two planes, real and imaginary, combined with the complex product in registers.

Backward, in torch's convention for complex gradients (the conjugate Wirtinger derivative, what autograd of the
reference loop returns): ``g_t = dh_t + conj(a_{t+1}) g_{t+1}``, ``grad_b = g``, ``grad_a_t = g_t conj(h_{t-1})``,
``grad_h0 = conj(a_0) g_0``. A gate is a cut when both its parts are 0, with the same rules as the real kernels.
"""

from __future__ import annotations

import triton
import triton.language as tl

from recurl.kernels.triton_common import last_row, program_block


@triton.jit
def _mul(ar, ai, br, bi):
    """(ar + i ai) (br + i bi)."""
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _compose(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """The step ``h -> a2 (a1 h + b1) + b2``; a zero ``a2`` discards the first step entirely (inf and NaN too)."""
    cut = (ar2 == 0) & (ai2 == 0)
    ar, ai = _mul(ar1, ai1, ar2, ai2)
    cr, ci = _mul(ar2, ai2, br1, bi1)
    return (tl.where(cut, 0.0, ar), tl.where(cut, 0.0, ai),
            tl.where(cut, br2, cr + br2), tl.where(cut, bi2, ci + bi2))


@triton.jit
def _scan_tile(ar, ai, br, bi, hr, hi, rows, CHUNK: tl.constexpr):
    """``triton_common.scan_tile`` on complex planes: every row's state, and the last row's, from the carried state
    ``(hr, hi)``. Padding rows should hold ``a = 1, b = 0``."""
    ar, ai, br, bi = tl.associative_scan((ar, ai, br, bi), 0, _compose)
    cut = (ar == 0) & (ai == 0)
    cr, ci = _mul(ar, ai, hr[None, :], hi[None, :])
    out_r, out_i = tl.where(cut, br, cr + br), tl.where(cut, bi, ci + bi)
    return out_r, out_i, last_row(out_r, rows, CHUNK), last_row(out_i, rows, CHUNK)


@triton.jit
def _load(ptr, offs, mask, other, ACC: tl.constexpr):
    """Real and imaginary parts of the complex elements at ``offs``; masked ones read as ``other`` + 0i."""
    return (tl.load(ptr + 2 * offs, mask=mask, other=other).to(ACC),
            tl.load(ptr + 2 * offs + 1, mask=mask, other=0.0).to(ACC))


@triton.jit
def _store(ptr, offs, re, im, mask):
    tl.store(ptr + 2 * offs, re.to(ptr.dtype.element_ty), mask=mask)
    tl.store(ptr + 2 * offs + 1, im.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    if HAS_H0:
        hr, hi = _load(h0_ptr, pid_b * D + cols, col_ok, 0.0, ACC)
    else:
        hr, hi = tl.full([BLOCK_D], 0.0, ACC), tl.full([BLOCK_D], 0.0, ACC)
    return hr, hi


@triton.jit
def _complex_fwd_kernel(
    a_ptr, b_ptr, h0_ptr, h_ptr, T, D,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    hr, hi = _initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        offs = (pid_b * T + t)[:, None] * D + cols[None, :]  # (b, t, channel) in [B, T, D], int64
        ok = (t[:, None] < T) & col_ok[None, :]
        ar, ai = _load(a_ptr, offs, ok, 1.0, ACC)  # padding a = 1, b = 0 carries the state unchanged
        br, bi = _load(b_ptr, offs, ok, 0.0, ACC)
        out_r, out_i, hr, hi = _scan_tile(ar, ai, br, bi, hr, hi, rows, CHUNK)
        _store(h_ptr, offs, out_r, out_i, ok)


@triton.jit
def _complex_bwd_kernel(
    a_ptr, h_ptr, h0_ptr, dh_ptr, da_ptr, db_ptr, dh0_ptr, T, D,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    h0r, h0i = _initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    gr, gi = tl.full([BLOCK_D], 0.0, ACC), tl.full([BLOCK_D], 0.0, ACC)  # g_T = 0: nothing after the end
    for k in range(0, T, CHUNK):
        t = T - 1 - k - rows  # the tile's rows run backwards in time
        offs = (pid_b * T + t)[:, None] * D + cols[None, :]
        ok = (t[:, None] >= 0) & col_ok[None, :]
        # g_t = conj(a_{t+1}) g_{t+1} + dh_t (a cut if a_{t+1} == 0); a_{t+1} = 1 past either end, as in the real
        # kernel: harmless at t = T - 1 (g_T = 0), and it carries g_0 through the padding rows (t < 0).
        anr, ani = _load(a_ptr, offs + D, ok & (t[:, None] < T - 1), 1.0, ACC)
        dhr, dhi = _load(dh_ptr, offs, ok, 0.0, ACC)
        g_r, g_i, gr, gi = _scan_tile(anr, -ani, dhr, dhi, gr, gi, rows, CHUNK)
        ar, ai = _load(a_ptr, offs, ok, 0.0, ACC)
        hpr, hpi = _load(h_ptr, offs - D, ok & (t[:, None] > 0), 0.0, ACC)
        hpr, hpi = tl.where(t[:, None] == 0, h0r[None, :], hpr), tl.where(t[:, None] == 0, h0i[None, :], hpi)
        dar, dai = _mul(g_r, g_i, hpr, -hpi)  # g_t conj(h_{t-1}); a cut step does not depend on its gate
        cut = (ar == 0) & (ai == 0)
        _store(da_ptr, offs, tl.where(cut, 0.0, dar), tl.where(cut, 0.0, dai), ok)
        _store(db_ptr, offs, g_r, g_i, ok)
    if HAS_H0:  # (gr, gi) is now g_0
        a0r, a0i = _load(a_ptr, pid_b * T * D + cols, col_ok, 0.0, ACC)
        d0r, d0i = _mul(gr, gi, a0r, -a0i)
        cut0 = (a0r == 0) & (a0i == 0)
        _store(dh0_ptr, pid_b * D + cols, tl.where(cut0, 0.0, d0r), tl.where(cut0, 0.0, d0i), col_ok)


KERNELS = (_complex_fwd_kernel, _complex_bwd_kernel)
