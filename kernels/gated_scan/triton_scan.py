"""Gates and scan fused: the Triton kernels behind the parallel form of minGRU and minLSTM (and any cell whose gate
and input are elementwise functions of a projection of x_t).

Such a layer projects ``x_t`` to pre-activations ``z_t`` (``P`` slices of ``D`` channels side by side, one
``[B, T, P * D]`` tensor), turns them into a gate ``a_t`` and input ``b_t``, sets ``a_t = 0`` at episode starts and
scans ``h_t = a_t h_{t-1} + b_t``. In torch ops that is about ten elementwise kernels each way, each reading and
writing whole ``[B, T, D]`` tensors, and autograd keeps their outputs. Here the forward reads ``z`` and the reset flags
once and writes ``h`` once; the backward re-reads ``z`` and ``h``, recomputes the gates (cheaper than storing them)
and writes ``dz``. The layer saves ``z`` and ``h`` only.

The traversal is the linear scan's (``triton_common``): a program owns one sequence and ``BLOCK_D`` channels, and
walks time in tiles of ``CHUNK`` steps; the backward walks back with ``g_t = dh_t + a_{t+1} g_{t+1}``. What differs
between cells are the gates (``triton_cells.py``), chosen by the ``CELL`` constexpr. Zero gates follow
``linear_scan``: a step with ``a_t == 0`` (an episode start, or a gate that underflowed) drops the past, and its gate
gets no gradient from the scan.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurl.kernels.gated_scan.triton_cells import CELLS, gate, gate_grads, gates
from recurl.kernels.triton_common import (
    ACCUMULATOR, check_inputs, device_guard, initial_state, program_block, scan_tile, tile_config,
)


@triton.jit
def _forward_kernel(
    z_ptr, reset_ptr, h0_ptr, h_ptr, T, D, CELL: tl.constexpr,
    P: tl.constexpr, HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    h = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        step = pid_b * T + t  # index of (b, t) in [B, T]
        ok = (t[:, None] < T) & col_ok[None, :]
        a, b = gates(z_ptr, step[:, None] * (P * D) + cols[None, :], D, ok, ACC, CELL)
        reset = tl.load(reset_ptr + step, mask=t < T, other=0) != 0
        a = tl.where(reset[:, None], 0.0, a)
        out, h = scan_tile(tl.where(ok, a, 1.0), tl.where(ok, b, 0.0), h, rows, CHUNK)  # padding carries h on
        tl.store(h_ptr + step[:, None] * D + cols[None, :], out.to(h_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gate_after_reset(z_ptr, reset_ptr, step, cols, D, row_ok, col_ok,
                      CELL: tl.constexpr, P: tl.constexpr, ACC: tl.constexpr):
    """The gate the scan used at each (step, channel) of a tile: 0 at an episode start."""
    ok = row_ok[:, None] & col_ok[None, :]
    a = gate(z_ptr, step[:, None] * (P * D) + cols[None, :], D, ok, ACC, CELL)
    reset = tl.load(reset_ptr + step, mask=row_ok, other=0) != 0
    return tl.where(reset[:, None], 0.0, a)


@triton.jit
def _backward_kernel(
    z_ptr, reset_ptr, h0_ptr, h_ptr, dh_ptr, dz_ptr, dh0_ptr, T, D, CELL: tl.constexpr,
    P: tl.constexpr, HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, cols, col_ok, rows = program_block(D, BLOCK_D, CHUNK)
    h0 = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    g = tl.full([BLOCK_D], 0.0, ACC)  # g_T = 0: nothing after the end
    for k in range(0, T, CHUNK):
        t = T - 1 - k - rows  # the tile's rows run backwards in time
        step = pid_b * T + t
        ok = (t[:, None] >= 0) & col_ok[None, :]
        # g_t = where(a_{t+1} == 0, dh_t, a_{t+1} g_{t+1} + dh_t): the forward scan with gates shifted by one step;
        # a_{t+1} = 1 past either end is harmless at t = T - 1 (g_T = 0) and carries g_0 through padding rows (t < 0).
        has_next = (t >= 0) & (t < T - 1)
        a_next = _gate_after_reset(z_ptr, reset_ptr, step + 1, cols, D, has_next, col_ok, CELL, P, ACC)
        dh = tl.load(dh_ptr + step[:, None] * D + cols[None, :], mask=ok, other=0.0).to(ACC)
        g_tile, g = scan_tile(tl.where(has_next[:, None], a_next, 1.0), dh, g, rows, CHUNK)
        a = _gate_after_reset(z_ptr, reset_ptr, step, cols, D, t >= 0, col_ok, CELL, P, ACC)
        h_prev = tl.load(h_ptr + (step[:, None] - 1) * D + cols[None, :], mask=ok & (t[:, None] > 0), other=0.0)
        h_prev = tl.where(t[:, None] == 0, h0[None, :], h_prev.to(ACC))
        grad_a = tl.where(a == 0, 0.0, g_tile * h_prev)  # a cut step does not depend on its gate
        gate_grads(z_ptr, dz_ptr, step[:, None] * (P * D) + cols[None, :], D, ok, ACC, CELL, grad_a, g_tile)
    if HAS_H0:  # g is now g_0
        first = pid_b * T
        a0 = gate(z_ptr, first * (P * D) + cols, D, col_ok, ACC, CELL)
        a0 = tl.where(tl.load(reset_ptr + first) != 0, 0.0, a0)
        tl.store(dh0_ptr + pid_b * D + cols, tl.where(a0 == 0, 0.0, g * a0).to(dh0_ptr.dtype.element_ty), mask=col_ok)


KERNELS = (_forward_kernel, _backward_kernel)


class GatedScan(torch.autograd.Function):
    """``h`` from ``(z, resets, h0)`` with one cell's gates (see ``gated_scan``)."""

    @staticmethod
    def forward(ctx, z, resets, h0, cell, block_d, chunk, num_warps):
        batch, length, width = z.shape
        cell_id, projections = CELLS[cell]
        dim = width // projections
        h = torch.empty(batch, length, dim, device=z.device, dtype=z.dtype)
        config = dict(CELL=cell_id, P=projections, HAS_H0=h0 is not None, ACC=ACCUMULATOR[z.dtype], BLOCK_D=block_d,
                      CHUNK=chunk, num_warps=num_warps)
        if h.numel():
            with device_guard(z):
                _forward_kernel[(batch, triton.cdiv(dim, block_d))](
                    z, resets, h0 if h0 is not None else h, h, length, dim, **config
                )
        ctx.save_for_backward(z, resets, h0, h)
        ctx.config = config
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        z, resets, h0, h = ctx.saved_tensors
        batch, length, dim = h.shape
        grad_h = grad_h.to(h.dtype).contiguous()
        grad_z = torch.empty_like(z)
        grad_h0 = None if h0 is None else torch.zeros_like(h0)
        if h.numel():
            with device_guard(h):
                _backward_kernel[(batch, triton.cdiv(dim, ctx.config["BLOCK_D"]))](
                    z, resets, h0 if h0 is not None else h, h, grad_h, grad_z, grad_h0 if h0 is not None else h,
                    length, dim, **ctx.config,
                )
        return grad_z, None, grad_h0, None, None, None, None


def gated_scan(
    cell: str,
    z: torch.Tensor,
    resets: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    block_d: int | None = None,
    chunk: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """``cell`` (``"mingru"`` or ``"minlstm"``), ``z`` [B, T, P * D] (P = 2 or 3 slices), ``resets`` [B, T] bool,
    ``h0`` [B, D] or None -> ``h`` [B, T, D] in ``z``'s dtype (float32 accumulation for half types). The tuning knobs
    are ``linear_scan_triton``'s."""
    caller, projections = f"{cell}_scan_triton", CELLS[cell][1]
    batch, length, width = z.shape
    if width % projections or resets.shape != (batch, length):
        raise ValueError(
            f"{caller}: z must be [B, T, {projections} * D] and resets [B, T]; got {tuple(z.shape)} and "
            f"{tuple(resets.shape)}"
        )
    dim = width // projections
    if h0 is not None and h0.shape != (batch, dim):
        raise ValueError(f"{caller}: h0 must be [B, D] = {(batch, dim)}; got {tuple(h0.shape)}")
    check_inputs(caller, z, resets, h0)
    block_d, chunk, num_warps = tile_config(length, dim, block_d, chunk, num_warps)
    if h0 is not None:
        h0 = h0.to(torch.promote_types(z.dtype, torch.float32)).contiguous()
    resets = resets.to(torch.bool).contiguous().view(torch.uint8)
    return GatedScan.apply(z.contiguous(), resets, h0, cell, block_d, chunk, num_warps)
