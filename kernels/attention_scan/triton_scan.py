"""Aaren's attention scan (``reference.py``) as fused Triton kernels, forward and backward.

The torch path runs a segmented max, then a ``linear_scan`` over ``[u, w]`` fed by several elementwise kernels, each
reading and writing ``[B, T, H, 1 + d]`` tensors. Here one program owns one (batch row, head) and the whole head
(``BLOCK_D = next_pow2(d)`` channels), reads score, value and resets and writes ``o``, ``m``, ``u`` once each,
walking time in tiles of ``CHUNK`` steps as the linear scan's kernels do (``triton_common``).

Forward: the torch path's two scans, per tile. First the running max ``m_t`` of each row's segment, a scan of
``(s_t, reset_t)`` over the tile's rows with the segmented-max operator, the max carried from the previous tile
included until the first reset; the same scan over the rows shifted by one gives ``m_{t-1}``. Then ``(u, w)`` is a
linear scan (``scan_tile``) with gate ``c_t = exp(m_{t-1} - m_t)`` (0 at a reset) and input ``e^(s_t - m_t) (1, v_t)``:
one exponential per row for the gate and one for the input, none inside the scan's operator. (Aaren's own operator
on ``(m, u, w)`` would rescale both operands with two exponentials at every combine, for every channel.) ``u`` is
scanned as a ``[CHUNK, 1]`` tile, ``w`` as ``[CHUNK, BLOCK_D]``.

Backward, with ``m`` a constant, ``do`` and ``du`` the incoming gradients and ``c_{t+1} = exp(m_t - m_{t+1})`` the
decay into the next step (0 at a reset and after the end):

    R_t = do_t / u_t + c_{t+1} R_{t+1}                    (dL/dw_t, a vector over d)
    S_t = (o_t . do_t) / u_t - du_t + c_{t+1} S_{t+1}      (-dL/du_t, one number per head)
    dv_t = e^(s_t - m_t) R_t,   ds_t = e^(s_t - m_t) (v_t . R_t - S_t),
    dw0 = c_0 R_0,   du0 = -c_0 S_0,   c_0 = exp(m0 - m_0) (0 if resets[:, 0]).

``R`` and ``S`` are two reverse linear scans with the same gate (``S`` as a ``[CHUNK, 1]`` tile), run with
``scan_tile`` walking time backwards. The backward re-reads score, value, ``m``, ``u`` and ``o`` (saved by the
forward) and recomputes only ``e^(s - m)``. ``m`` is saved in at least float32 even for half inputs: the backward's
``e^(s - m)`` must use the very ``m`` that ``u`` was summed against (a bfloat16 ``m`` near 10 is off by up to 0.03,
3% in ``e^(s - m)``).

Overflow stays in its episode: resets and masks are ``tl.where``, never a multiply (``0 * inf`` is NaN), and padding
rows get gate 1 and input 0 by ``where`` rather than from ``exp(-inf - -inf)``. As in
``triton_common``, a product of gates that underflows to 0 inside a tile is read as a cut; that drops a term below
1e-38 times the carried sums, next to a ``u`` of at least 1. Accumulation is in float32 (float64 for float64 inputs);
loads and stores keep the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from recurl.kernels.triton_common import ACCUMULATOR, add, check_inputs, device_guard, scan_tile, tile_config


@triton.jit
def _max_within_segment(m1, f1, m2, f2):
    """The running max's operator on (max, reset seen): a reset in the second operand drops the first."""
    return tl.where(f2 != 0, m2, tl.maximum(m1, m2, propagate_nan=tl.PropagateNan.ALL)), f1 | f2


@triton.jit
def _running_max(s, f, m):
    """Over a tile's rows (``[CHUNK]``): the max of each row's segment so far, the carried max ``m`` included until
    the tile's first reset. NaN propagates, as with torch.maximum."""
    m_run, f_run = tl.associative_scan((s, f), 0, _max_within_segment)
    return tl.where(f_run != 0, m_run, tl.maximum(m, m_run, propagate_nan=tl.PropagateNan.ALL))


@triton.jit
def _last(x, rows, CHUNK: tl.constexpr):
    """Row ``CHUNK - 1`` of a ``[CHUNK]`` vector (selected with where: other rows may hold inf or NaN)."""
    return tl.reduce(tl.where(rows == CHUNK - 1, x, 0.0), 0, add)


@triton.jit
def _forward_kernel(
    score_ptr, value_ptr, reset_ptr, m0_ptr, u0_ptr, w0_ptr, o_ptr, m_ptr, u_ptr, T, H, D,
    ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, pid_h = tl.program_id(0).to(tl.int64), tl.program_id(1)  # offsets from pid_b may pass 2^31
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK)
    head = pid_b * H + pid_h  # index of (b, h) in [B, H]
    one = tl.full([1], 0, tl.int32)  # offset of a 1-element vector: u is scanned as a [CHUNK, 1] tile
    m = tl.load(m0_ptr + head).to(ACC)
    u = tl.load(u0_ptr + head + one).to(ACC)
    w = tl.load(w0_ptr + head * D + cols, mask=col_ok, other=0.0).to(ACC)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        row_ok = t < T
        has_prev = row_ok & (rows > 0)  # row t - 1 is in this tile; for the first row m_{t-1} is the carried m
        step = pid_b * T + t  # index of (b, t) in [B, T]
        item = step * H + pid_h  # index of (b, t, h) in [B, T, H]
        s = tl.load(score_ptr + item, mask=row_ok, other=-float("inf")).to(ACC)
        reset = tl.load(reset_ptr + step, mask=row_ok, other=0).to(tl.int32)
        m_run = _running_max(s, reset, m)
        m_prev = _running_max(  # m_{t-1}: the same scan over the tile shifted by one row
            tl.load(score_ptr + item - H, mask=has_prev, other=-float("inf")).to(ACC),
            tl.load(reset_ptr + step - 1, mask=has_prev, other=0).to(tl.int32), m,
        )
        # Gate and input of the linear scans; padding rows (gate 1, input 0) carry the state through.
        c = tl.where(row_ok, tl.where(reset != 0, 0.0, tl.exp(m_prev - m_run)), 1.0)
        weight = tl.where(row_ok, tl.exp(s - m_run), 0.0)
        u_run, u = scan_tile(c[:, None], weight[:, None], u, rows, CHUNK)
        ok = row_ok[:, None] & col_ok[None, :]
        tile = item[:, None] * D + cols[None, :]
        v = tl.load(value_ptr + tile, mask=ok, other=0.0).to(ACC)
        w_run, w = scan_tile(tl.broadcast_to(c[:, None], (CHUNK, BLOCK_D)), weight[:, None] * v, w, rows, CHUNK)
        tl.store(o_ptr + tile, (w_run / u_run).to(o_ptr.dtype.element_ty), mask=ok)
        tl.store(m_ptr + item, m_run.to(m_ptr.dtype.element_ty), mask=row_ok)
        tl.store(u_ptr + item[:, None], u_run.to(u_ptr.dtype.element_ty), mask=row_ok[:, None])
        m = _last(m_run, rows, CHUNK)


@triton.jit
def _backward_kernel(
    score_ptr, value_ptr, reset_ptr, m0_ptr, m_ptr, u_ptr, o_ptr, do_ptr, du_ptr, ds_ptr, dv_ptr, du0_ptr, dw0_ptr,
    T, H, D, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, pid_h = tl.program_id(0).to(tl.int64), tl.program_id(1)  # offsets from pid_b may pass 2^31
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK)
    head = pid_b * H + pid_h
    one = tl.full([1], 0, tl.int32)
    r = tl.full([BLOCK_D], 0.0, ACC)  # R_T = S_T = 0: nothing after the end
    s_acc = tl.full([1], 0.0, ACC)
    for k in range(0, T, CHUNK):
        t = T - 1 - k - rows  # the tile's rows run backwards in time
        row_ok = t >= 0
        has_next = row_ok & (t < T - 1)
        step = pid_b * T + t
        item = step * H + pid_h
        ok = row_ok[:, None] & col_ok[None, :]
        tile = item[:, None] * D + cols[None, :]
        # c_{t+1}: 0 at a reset; 1 past either end, harmless at t = T - 1 (R_T = 0) and carrying R_0 through the
        # padding rows (t < 0) to the tile's last row.
        m_t = tl.load(m_ptr + item, mask=row_ok, other=0.0).to(ACC)
        m_next = tl.load(m_ptr + item + H, mask=has_next, other=0.0).to(ACC)
        reset_next = tl.load(reset_ptr + step + 1, mask=has_next, other=0) != 0
        c = tl.where(has_next, tl.where(reset_next, 0.0, tl.exp(m_t - m_next)), 1.0)
        u_t = tl.load(u_ptr + item, mask=row_ok, other=1.0).to(ACC)
        do = tl.load(do_ptr + tile, mask=ok, other=0.0).to(ACC)
        r_tile, r = scan_tile(tl.broadcast_to(c[:, None], (CHUNK, BLOCK_D)), do / u_t[:, None], r, rows, CHUNK)
        o = tl.load(o_ptr + tile, mask=ok, other=0.0).to(ACC)
        s_in = tl.reduce(o * do, 1, add) / u_t - tl.load(du_ptr + item, mask=row_ok, other=0.0).to(ACC)
        s_tile, s_acc = scan_tile(c[:, None], s_in[:, None], s_acc, rows, CHUNK)
        weight = tl.exp(tl.load(score_ptr + item, mask=row_ok, other=0.0).to(ACC) - m_t)[:, None]
        v = tl.load(value_ptr + tile, mask=ok, other=0.0).to(ACC)
        tl.store(dv_ptr + tile, (weight * r_tile).to(dv_ptr.dtype.element_ty), mask=ok)
        ds = weight * (tl.reduce(v * r_tile, 1, add)[:, None] - s_tile)
        tl.store(ds_ptr + item[:, None], ds.to(ds_ptr.dtype.element_ty), mask=row_ok[:, None])
    # r and s_acc are now R_0 and S_0; c_0 links them to the initial state.
    m_first = tl.load(m_ptr + pid_b * T * H + pid_h).to(ACC)
    reset_first = tl.load(reset_ptr + pid_b * T) != 0
    c0 = tl.where(reset_first, 0.0, tl.exp(tl.load(m0_ptr + head).to(ACC) - m_first))
    tl.store(dw0_ptr + head * D + cols, tl.where(c0 == 0, 0.0, c0 * r).to(dw0_ptr.dtype.element_ty), mask=col_ok)
    tl.store(du0_ptr + head + one, tl.where(c0 == 0, 0.0, -c0 * s_acc).to(du0_ptr.dtype.element_ty))


KERNELS = (_forward_kernel, _backward_kernel)


class _AttentionScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score, value, resets, m0, u0, w0, chunk, num_warps):
        batch, length, heads, dim = value.shape
        o = torch.empty_like(value)
        # m and u are kept precise for the backward (they are 1/d of o's size): e^(s - m) must use the m that u was
        # summed against, and d score subtracts two sums that carry u's rounding.
        m, u = torch.empty_like(score, dtype=m0.dtype), torch.empty_like(score, dtype=m0.dtype)
        acc = ACCUMULATOR[value.dtype]
        block_d = triton.next_power_of_2(dim)
        if o.numel():
            with device_guard(value):
                _forward_kernel[(batch, heads)](
                    score, value, resets, m0, u0, w0, o, m, u, length, heads, dim,
                    ACC=acc, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
                )
        ctx.save_for_backward(score, value, resets, m0, m, u, o)
        ctx.config = (acc, block_d, chunk, num_warps)
        m_out = m.to(score.dtype)
        ctx.mark_non_differentiable(m_out)
        return o, m_out, u.to(score.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, _grad_m, grad_u):
        score, value, resets, m0, m, u, o = ctx.saved_tensors
        acc, block_d, chunk, num_warps = ctx.config
        batch, length, heads, dim = value.shape
        grad_o, grad_u = grad_o.to(o.dtype).contiguous(), grad_u.to(u.dtype).contiguous()
        grad_score, grad_value = torch.empty_like(score), torch.empty_like(value)
        grad_u0, grad_w0 = torch.zeros_like(m0), m0.new_zeros(batch, heads, dim)  # zeros: T = 0 launches nothing
        if o.numel():
            with device_guard(value):
                _backward_kernel[(batch, heads)](
                    score, value, resets, m0, m, u, o, grad_o, grad_u, grad_score, grad_value, grad_u0, grad_w0,
                    length, heads, dim, ACC=acc, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
                )
        return grad_score, grad_value, None, None, grad_u0, grad_w0, None, None


def attention_scan_triton(score, value, resets, state, *, chunk: int | None = None, num_warps: int | None = None):
    """``attention_scan`` with the fused kernels (shapes are checked there). Outputs have the dtype of score and
    value; the state is used in at least float32. ``chunk`` (time steps per tile, a power of two; 1 = strictly
    sequential) and ``num_warps`` are tuning knobs: by default a tile holds at most 32 steps and 1024 elements."""
    m0, u0, w0 = state
    check_inputs("attention_scan", score, value, resets, m0, u0, w0)
    dtype = torch.promote_types(score.dtype, value.dtype)
    state_dtype = torch.promote_types(dtype, torch.float32)  # tiny, and its precision is worth keeping
    block_d = triton.next_power_of_2(value.shape[-1])
    chunk = chunk or min(triton.next_power_of_2(max(score.shape[1], 1)), max(1024 // block_d, 1), 32)
    _, chunk, num_warps = tile_config(score.shape[1], block_d, block_d, chunk, num_warps)
    return _AttentionScanTriton.apply(
        score.to(dtype).contiguous(), value.to(dtype).contiguous(), resets.contiguous().view(torch.uint8),
        m0.detach().to(state_dtype).contiguous(), u0.to(state_dtype).contiguous(), w0.to(state_dtype).contiguous(),
        chunk, num_warps,
    )
