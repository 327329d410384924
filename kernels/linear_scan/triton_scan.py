"""Linear recurrence h_t = a_t * h_{t-1} + b_t as Triton kernels, forward and backward (CUDA, or CPU when interpreted).

Parallelisation. The scan is memory-bound: it reads ``a`` and ``b`` once and writes ``h`` once, so the kernels are
built to stream them. The grid is ``(B, ceil(D / BLOCK_D))``: one program owns one sequence and a ``BLOCK_D`` slice of
its channels, keeps that slice's state in registers, and walks time from start to end in tiles of ``CHUNK`` steps
(``triton_common.scan_tile``, which the fused kernels of the layers are built on too). Channels are independent, so
programs never talk to each other and every load is a contiguous run of ``BLOCK_D`` channels of one time step.

The backward pass is one kernel of the same shape walking time in reverse (its tiles hold time steps in reverse
order): ``g_t = dh_t + a_{t+1} g_{t+1}``, then ``grad_b = g``, ``grad_a_t = g_t * h_{t-1}`` (re-read from the saved
output, or ``h0`` at t = 0) and ``grad_h0 = g_0 * a_0``; a cut gate (``a_t == 0``) gets no gradient and passes none
back. The state and ``g`` are accumulated in float32 (float64 for float64 inputs); loads and stores stay in the input
dtype. Complex tensors run the kernels of ``triton_complex.py`` through the same autograd function.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurl.kernels.linear_scan.triton_complex import KERNELS as COMPLEX_KERNELS
from recurl.kernels.triton_common import (
    ACCUMULATOR, check_inputs, device_guard, initial_state, program_block, scan_tile, tile_config,
)


@triton.jit
def _scan_fwd_kernel(
    a_ptr, b_ptr, h0_ptr, h_ptr, T, D,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    h = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        offs = (pid_b * T + t)[:, None] * D + cols[None, :]  # (b, t, channel) in [B, T, D]; int64 as pid_b is
        ok = (t[:, None] < T) & col_ok[None, :]
        a = tl.load(a_ptr + offs, mask=ok, other=1.0).to(ACC)  # padding a = 1, b = 0 carries the state unchanged
        b = tl.load(b_ptr + offs, mask=ok, other=0.0).to(ACC)
        out, h = scan_tile(a, b, h, rows, CHUNK)
        tl.store(h_ptr + offs, out.to(h_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _scan_bwd_kernel(
    a_ptr, h_ptr, h0_ptr, dh_ptr, da_ptr, db_ptr, dh0_ptr, T, D,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    h0 = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    g = tl.full([BLOCK_D], 0.0, ACC)  # g_T = 0: nothing after the end
    for k in range(0, T, CHUNK):
        t = T - 1 - k - rows  # the tile's rows run backwards in time
        offs = (pid_b * T + t)[:, None] * D + cols[None, :]
        ok = (t[:, None] >= 0) & col_ok[None, :]
        # g_t = where(a_{t+1} == 0, dh_t, a_{t+1} g_{t+1} + dh_t): the forward scan with gates shifted by one step.
        # a_{t+1} = 1 past either end is harmless at t = T - 1 (g_T = 0) and carries g_0 through padding rows (t < 0).
        a_next = tl.load(a_ptr + offs + D, mask=ok & (t[:, None] < T - 1), other=1.0).to(ACC)
        dh = tl.load(dh_ptr + offs, mask=ok, other=0.0).to(ACC)
        g_tile, g = scan_tile(a_next, dh, g, rows, CHUNK)
        a = tl.load(a_ptr + offs, mask=ok, other=0.0).to(ACC)
        h_prev = tl.load(h_ptr + offs - D, mask=ok & (t[:, None] > 0), other=0.0).to(ACC)
        h_prev = tl.where(t[:, None] == 0, h0[None, :], h_prev)
        da = tl.where(a == 0, 0.0, g_tile * h_prev)  # a cut step does not depend on its gate
        tl.store(da_ptr + offs, da.to(da_ptr.dtype.element_ty), mask=ok)
        tl.store(db_ptr + offs, g_tile.to(db_ptr.dtype.element_ty), mask=ok)
    if HAS_H0:  # g is now g_0
        a0 = tl.load(a_ptr + pid_b * T * D + cols, mask=col_ok, other=0.0).to(ACC)
        tl.store(dh0_ptr + pid_b * D + cols, tl.where(a0 == 0, 0.0, g * a0).to(dh0_ptr.dtype.element_ty), mask=col_ok)


KERNELS = (_scan_fwd_kernel, _scan_bwd_kernel)


#: The complex dtypes the kernels take (as their real views; see ``triton_complex.py``).
COMPLEX = (torch.complex64, torch.complex128)


def _planes(x: torch.Tensor) -> torch.Tensor:
    """What a kernel reads: a complex tensor's real view (real and imaginary parts interleaved), a real one as is."""
    return torch.view_as_real(x) if x.is_complex() else x


class _LinearScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, block_d, chunk, num_warps):
        batch, length, dim = b.shape
        h = torch.empty_like(b)
        forward_kernel, ctx.backward_kernel = COMPLEX_KERNELS if b.is_complex() else KERNELS
        ctx.config = dict(HAS_H0=h0 is not None, ACC=ACCUMULATOR[_planes(b).dtype], BLOCK_D=block_d, CHUNK=chunk,
                          num_warps=num_warps)
        if h.numel():
            with device_guard(b):
                forward_kernel[(batch, triton.cdiv(dim, block_d))](
                    *map(_planes, (a, b, h0 if h0 is not None else b, h)), length, dim, **ctx.config
                )
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        batch, length, dim = h.shape
        grad_h = grad_h.to(h.dtype).resolve_conj().contiguous()
        grad_a, grad_b = torch.empty_like(a), torch.empty_like(h)
        grad_h0 = None if h0 is None else torch.zeros_like(h0)
        if h.numel():
            with device_guard(h):
                ctx.backward_kernel[(batch, triton.cdiv(dim, ctx.config["BLOCK_D"]))](
                    *map(_planes, (a, h, h0 if h0 is not None else h, grad_h, grad_a, grad_b,
                                   grad_h0 if h0 is not None else h)),
                    length, dim, **ctx.config,
                )
        return grad_a, grad_b, grad_h0, None, None, None


def linear_scan_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    block_d: int | None = None,
    chunk: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Differentiable scan of ``[B, T, D]`` tensors with Triton; the output has the dtype of ``a`` and ``b``.

    float16 and bfloat16 are stored as such and accumulated in float32; complex64 and complex128 run the complex
    kernels. ``block_d`` (channels per program), ``chunk`` (time steps per tile; 1 = strictly sequential) and
    ``num_warps`` are tuning knobs (powers of two); see ``tile_config`` for the defaults.
    """
    dtype = torch.promote_types(a.dtype, b.dtype)
    if dtype.is_complex and dtype not in COMPLEX:
        raise ValueError(f"linear_scan: backend 'triton' supports complex64 and complex128; got {dtype}")
    check_inputs("linear_scan", *(None if x is None else _planes(x.resolve_conj()) for x in (a, b, h0)))
    block_d, chunk, num_warps = tile_config(b.shape[1], b.shape[2], block_d, chunk, num_warps)
    a, b = a.to(dtype).resolve_conj().contiguous(), b.to(dtype).resolve_conj().contiguous()
    if h0 is not None:  # kept at least float32: it is tiny, and its precision is worth keeping
        h0 = h0.to(torch.promote_types(dtype, torch.float32)).resolve_conj().contiguous()
    return _LinearScanTriton.apply(a, b, h0, block_d, chunk, num_warps)
