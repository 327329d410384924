"""Linear recurrence h_t = a_t * h_{t-1} + b_t as a chunked scan in pure torch (any device), real or complex.

Time is cut into chunks of ``C`` steps (a free view of ``[B, T, D]`` as ``[B, T / C, C, D]``). A short loop over the
``C`` positions updates every chunk at once, twice. The first pass keeps only two ``[B, T / C, D]`` running values:
each chunk's exit state as if it had started from zero, and the product of its gates. Those form a shorter recurrence
of the same kind, over the chunks, solved recursively: it gives each chunk's true entry state. The second pass runs
the recurrence itself, every chunk from its entry state, and writes the output. That is about ``3 C + T / C`` small
launches instead of ``T``, one ``[B, T, D]`` allocation (the output), all in linear space: no logs (gates may be 0)
and no division by running products (they underflow).

A zero gate must cut off the past even when it is inf or NaN (``0 * inf`` is NaN). The fast path multiplies
plainly, which is exact whenever the result is finite; when it is not, the scan is redone with ``torch.where`` cuts
(slower, and only then).

The backward pass is the same scan run backwards in time (``g_t = dh_t + a_{t+1} g_{t+1}``), so a custom
``autograd.Function`` stores only ``a``, the output and ``h0`` rather than every intermediate of the loop.

Complex tensors run through the same code (torch's complex multiply-add, one kernel per step for both parts); the
backward conjugates the gates and states it multiplies gradients by, as torch's complex autograd does.
"""

from __future__ import annotations

import math

import torch

#: Sequences up to this length are scanned by a plain loop; longer ones are chunked.
_LOOP_MAX_LEN = 32


def _steps(*tensors: torch.Tensor, reverse: bool) -> list:
    """The time steps (dim -2) of ``[..., T, D]`` tensors, zipped, last first if ``reverse``. Unbound once:
    per-step indexing would cost more Python time than the small multiply-adds themselves."""
    steps = list(zip(*(x.unbind(-2) for x in tensors)))
    return steps[::-1] if reverse else steps


def _scan_loop(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, careful: bool, reverse: bool) -> torch.Tensor:
    """Sequential scan over dim -2 of ``a``, ``b`` ``[..., T, D]`` from ``h0`` ``[..., D]`` (from the last step
    backwards if ``reverse``)."""
    out = torch.empty_like(b)
    prev = h0
    for a_t, b_t, out_t in _steps(a, b, out, reverse=reverse):
        torch.addcmul(b_t, a_t, prev, out=out_t)
        if careful:
            torch.where(a_t == 0, b_t, out_t, out=out_t)
        prev = out_t
    return out


def _chunk_exits(a: torch.Tensor, b: torch.Tensor, careful: bool, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For chunks ``[B, N, C, D]``: the product of each chunk's gates and its exit state from a zero entry, both
    ``[B, N, D]``, kept in place rather than for every step."""
    decay, exit_state = torch.ones_like(a[..., 0, :]), torch.zeros_like(b[..., 0, :])
    for a_t, b_t in _steps(a, b, reverse=reverse):
        torch.addcmul(b_t, a_t, exit_state, out=exit_state)
        decay.mul_(a_t)
        if careful:
            cut = a_t == 0
            torch.where(cut, b_t, exit_state, out=exit_state)
            decay.masked_fill_(cut, 0.0)
    return decay, exit_state


def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, careful: bool, reverse: bool) -> torch.Tensor:
    batch, length, dim = b.shape
    if length <= _LOOP_MAX_LEN:
        return _scan_loop(a, b, h0, careful, reverse)
    size = 1 << round(math.log2(math.sqrt(length)))
    chunks = -(-length // size)
    pad = chunks * size - length
    if pad:  # a = 1, b = 0 carries the state through unchanged; the padded tail is dropped at the end
        a = torch.cat([a, a.new_ones(batch, pad, dim)], dim=1)
        b = torch.cat([b, b.new_zeros(batch, pad, dim)], dim=1)
    a, b = a.unflatten(1, (chunks, size)), b.unflatten(1, (chunks, size))
    ends = _scan(*_chunk_exits(a, b, careful, reverse), h0, careful, reverse)
    # A chunk's entry state is the previous chunk's exit, or the next one's when scanning backwards.
    if reverse:
        starts = torch.cat([ends[:, 1:], h0[:, None]], dim=1)
    else:
        starts = torch.cat([h0[:, None], ends[:, :-1]], dim=1)
    return _scan_loop(a, b, starts, careful, reverse).flatten(1, 2)[:, :length]


def scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Scan of ``[B, T, D]`` tensors from state ``h0`` ``[B, D]`` (entering at t = T - 1 and running back to 0 if
    ``reverse``); builds no autograd graph."""
    h = _scan(a, b, h0, careful=False, reverse=reverse)
    # One read of h (summed as real numbers: torch's complex sum on CPU is ~50x slower); a sum that merely overflows
    # only costs the careful rescan.
    if not torch.isfinite((torch.view_as_real(h) if h.is_complex() else h).sum()):
        h = _scan(a, b, h0, careful=True, reverse=reverse)
    return h


def _mul_conj(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * conj(y)``. For complex ``y`` conj(y) is written into ``out`` and multiplied in place: torch.mul
    with a conjugated view would first copy it into a temporary as large as ``y``."""
    if y.is_complex():
        torch.conj_physical(y, out=out)
        return out.mul_(x)
    return torch.mul(x, y, out=out)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        h = scan(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        a, h, h0 = ctx.saved_tensors
        # g_t = dL/dh_t in total = grad_h_t + a_{t+1} g_{t+1}: the same recurrence, run backwards in time, with the
        # gates shifted by one step (a_T = 0: nothing follows the end). For complex tensors every factor that
        # multiplies a gradient is conjugated (torch's convention: gradients are conjugate Wirtinger derivatives);
        # for real ones conj() is the tensor itself.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1).conj_physical_()
        g = scan(a_next, grad_h, torch.zeros_like(h0), reverse=True)
        grad_a = torch.empty_like(a)  # g_t * conj(h_{t-1})
        _mul_conj(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
        _mul_conj(g[:, 0], h0, out=grad_a[:, 0])
        cut = a == 0  # a cut gate has no dependence on the past, in value or in gradient
        grad_a.masked_fill_(cut, 0.0)
        grad_h0 = torch.where(cut[:, 0], 0.0, g[:, 0] * a[:, 0].conj())
        return grad_a, g, grad_h0


def linear_scan_torch(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable chunked scan; half-precision inputs are accumulated in float32 and cast back."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    h0 = b.new_zeros(b.shape[0], b.shape[2]) if h0 is None else h0
    h = _LinearScan.apply(a.to(compute), b.to(compute), h0.to(compute))
    return h.to(dtype)
