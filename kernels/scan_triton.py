"""Linear recurrence h_t = a_t * h_{t-1} + b_t as Triton kernels, forward and backward (CUDA, or CPU when interpreted).

Parallelisation. The scan is memory-bound: it reads ``a`` and ``b`` once and writes ``h`` once, so the kernels are
built to stream them. The grid is ``(B, ceil(D / BLOCK_D))``: one program owns one sequence and a ``BLOCK_D`` slice of
its channels, keeps that slice's state in registers, and walks time from start to end. Channels are independent, so
programs never talk to each other and every load is a contiguous run of ``BLOCK_D`` channels of one time step.

A program does not load one time step at a time: a GPU would then wait a full memory latency per step. It loads a
tile of ``CHUNK`` steps x ``BLOCK_D`` channels at once, scans the tile in registers with ``tl.associative_scan``
(combining steps ``(a, b)`` into ``(a1 * a2, a2 * b1 + b2)``), folds in the state carried from the previous tile, stores
the tile, and carries its last row on. ``CHUNK = 1`` is the plain sequential walk (flash-linear-attention's
"fused recurrent" scheme); larger chunks put ``CHUNK`` times more bytes in flight per program, which is what matters
when ``B * D`` is too small to fill the GPU, as it is in RL. That tile step is ``scan_tile``; the fused kernels of
the layers (``gated_scan_triton``, ``attention_scan_triton``) are built on it too.

The backward pass is one kernel of the same shape walking time in reverse (its tiles hold time steps in reverse
order): ``g_t = dh_t + a_{t+1} g_{t+1}``, then ``grad_b = g``, ``grad_a_t = g_t * h_{t-1}`` (re-read from the saved
output, or ``h0`` at t = 0) and ``grad_h0 = g_0 * a_0``. The state and ``g`` are accumulated in float32 (float64 for
float64 inputs); loads and stores stay in the input dtype.

Zero gates. ``a_t == 0`` cuts the past off: ``h_t = b_t`` even if ``h_{t-1}`` is inf or NaN, and no gradient flows to
``a_t`` or through the step. Every such rule is a ``tl.where`` (multiplying by a mask would turn ``0 * inf`` into NaN).
Inside a tile the combined gate of several steps is a product, and a combined gate of 0 is read as a cut; a product
of nonzero gates that underflows float32 (below ~1e-38) is therefore cut too. That drops a term ``product * state``
that is that small anyway; with ``chunk=1`` no products are formed and the kernel follows the reference step by step.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

#: The dtype each input dtype is accumulated in.
ACCUMULATOR = {
    torch.float16: tl.float32, torch.bfloat16: tl.float32, torch.float32: tl.float32, torch.float64: tl.float64,
}


# The kernels call Triton builtins and this module's helpers only, never a ``@triton.jit`` function of triton.language
# (``tl.zeros``, ``tl.sum``): those are interpreted only if TRITON_INTERPRET was set before triton itself was first
# imported, which a test cannot ensure (tensordict imports triton).


@triton.jit
def _compose(a_first, b_first, a_then, b_then):
    """The step ``h -> then(first(h))``; a gate ``a_then == 0`` discards ``first`` entirely, even an inf or NaN in it
    (so the combined gate of a span that ends after a cut is 0, never ``nan * 0``)."""
    return tl.where(a_then == 0, 0.0, a_first * a_then), tl.where(a_then == 0, b_then, a_then * b_first + b_then)


@triton.jit
def _add(x, y):
    return x + y


@triton.jit
def _last_row(x, rows, CHUNK: tl.constexpr):
    """Row ``CHUNK - 1`` of the tile ``x`` (selected with where, so inf or NaN in other rows cannot leak in)."""
    return tl.reduce(tl.where(rows[:, None] == CHUNK - 1, x, 0.0), 0, _add)


@triton.jit
def scan_tile(a, b, h, rows, CHUNK: tl.constexpr):
    """Run ``h_t = a_t h_{t-1} + b_t`` over the rows of a ``[CHUNK, BLOCK_D]`` tile from the carried state ``h``.

    Returns every row's state and the last one, the state to carry into the next tile. Padding rows should hold
    ``a = 1, b = 0``, which carry the state unchanged.
    """
    a_run, b_run = tl.associative_scan((a, b), 0, _compose)  # each row as if the tile started from zero
    out = tl.where(a_run == 0, b_run, a_run * h[None, :] + b_run)
    return out, _last_row(out, rows, CHUNK)


@triton.jit
def initial_state(h0_ptr, pid_b, cols, col_ok, D,
                  HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's channels of ``h0`` (row ``pid_b`` of a ``[B, D]`` tensor), or zeros when there is none."""
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D + cols, mask=col_ok, other=0.0).to(ACC)
    else:
        h = tl.full([BLOCK_D], 0.0, ACC)
    return h


@triton.jit
def _scan_fwd_kernel(
    a_ptr, b_ptr, h0_ptr, h_ptr, T, D,
    HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b, pid_d = tl.program_id(0), tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK)
    seq = pid_b.to(tl.int64) * T * D  # start of this program's sequence
    h = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    for t0 in range(0, T, CHUNK):
        t = t0 + rows
        offs = seq + t[:, None] * D + cols[None, :]
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
    pid_b, pid_d = tl.program_id(0), tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    rows = tl.arange(0, CHUNK)
    seq = pid_b.to(tl.int64) * T * D
    h0 = initial_state(h0_ptr, pid_b, cols, col_ok, D, HAS_H0, ACC, BLOCK_D)
    g = tl.full([BLOCK_D], 0.0, ACC)  # g_T = 0: nothing after the end
    for k in range(0, T, CHUNK):
        t = T - 1 - k - rows  # the tile's rows run backwards in time
        offs = seq + t[:, None] * D + cols[None, :]
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
        a0 = tl.load(a_ptr + seq + cols, mask=col_ok, other=0.0).to(ACC)
        tl.store(dh0_ptr + pid_b * D + cols, tl.where(a0 == 0, 0.0, g * a0).to(dh0_ptr.dtype.element_ty), mask=col_ok)


KERNELS = (_scan_fwd_kernel, _scan_bwd_kernel)

#: Whether the kernels were defined under ``TRITON_INTERPRET=1`` (Triton reads it when ``@triton.jit`` runs, that is
#: when this module is first imported); only then can they run on CPU tensors.
INTERPRETED = type(_scan_fwd_kernel).__name__ == "InterpretedFunction"


def tile_config(length: int, dim: int, block_d: int | None, chunk: int | None, num_warps: int | None):
    """Default tile: up to 32 channels x 32 time steps, with a warp per 128 elements (4 per thread, ~60 registers)."""
    block_d = block_d or min(triton.next_power_of_2(dim), 32)
    chunk = chunk or min(triton.next_power_of_2(max(length, 1)), 32)
    for name, value in (("block_d", block_d), ("chunk", chunk)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"triton scan: {name} must be a power of two; got {value}")
    num_warps = num_warps or min(max(block_d * chunk // 128, 1), 8)
    return block_d, chunk, num_warps


def check_inputs(caller: str, *tensors: torch.Tensor | None) -> None:
    """Refuse what the kernels cannot run on: CPU tensors outside the interpreter, mixed devices, integer dtypes
    (bool is allowed: episode-start flags)."""
    tensors = [x for x in tensors if x is not None]
    if not (tensors[0].is_cuda or INTERPRETED):
        raise ValueError(
            f"{caller}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before the first use of the "
            f"backend, to run the kernels slowly on CPU); got tensors on {tensors[0].device}"
        )
    if any(x.device != tensors[0].device for x in tensors):
        raise ValueError(f"{caller}: all inputs must be on one device; got {sorted({str(x.device) for x in tensors})}")
    for x in tensors:
        if x.dtype != torch.bool and x.dtype not in ACCUMULATOR:
            raise ValueError(
                f"{caller}: backend 'triton' supports float16, bfloat16, float32 and float64; got {x.dtype}"
            )


def device_guard(x: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


class _LinearScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, block_d, chunk, num_warps):
        batch, length, dim = b.shape
        h = torch.empty_like(b)
        acc = ACCUMULATOR[b.dtype]
        if h.numel():
            with device_guard(b):
                _scan_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
                    a, b, h0 if h0 is not None else b, h, length, dim,
                    HAS_H0=h0 is not None, ACC=acc, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
                )
        ctx.save_for_backward(a, h, h0)
        ctx.config = (acc, block_d, chunk, num_warps)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        acc, block_d, chunk, num_warps = ctx.config
        batch, length, dim = h.shape
        grad_h = grad_h.to(h.dtype).contiguous()
        grad_a, grad_b = torch.empty_like(a), torch.empty_like(h)
        grad_h0 = None if h0 is None else torch.zeros_like(h0)
        if h.numel():
            with device_guard(h):
                _scan_bwd_kernel[(batch, triton.cdiv(dim, block_d))](
                    a, h, h0 if h0 is not None else h, grad_h, grad_a, grad_b, grad_h0 if h0 is not None else h,
                    length, dim, HAS_H0=h0 is not None, ACC=acc, BLOCK_D=block_d, CHUNK=chunk, num_warps=num_warps,
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

    float16 and bfloat16 are stored as such and accumulated in float32. ``block_d`` (channels per program), ``chunk``
    (time steps per tile; 1 = strictly sequential) and ``num_warps`` are tuning knobs (powers of two); see
    ``tile_config`` for the defaults.
    """
    check_inputs("linear_scan", a, b, h0)
    dtype = torch.promote_types(a.dtype, b.dtype)
    block_d, chunk, num_warps = tile_config(b.shape[1], b.shape[2], block_d, chunk, num_warps)
    a, b = a.to(dtype).contiguous(), b.to(dtype).contiguous()
    if h0 is not None:  # kept at least float32: it is tiny, and its precision is worth keeping
        h0 = h0.to(torch.promote_types(dtype, torch.float32)).contiguous()
    return _LinearScanTriton.apply(a, b, h0, block_d, chunk, num_warps)
