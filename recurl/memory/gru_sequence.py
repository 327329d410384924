"""``torch.nn.GRU``'s recurrence over a whole sequence with resets, for CPU: a time loop with a hand-written backward.

PyTorch runs ``nn.GRU`` on CPU with its native per-step ops and autograd through every step (oneDNN serves only
``nn.LSTM``): ~5x slower than ``nn.LSTM`` forward+backward, with or without packing. This loop does the least per
step (one matmul and four elementwise ops forward, one matmul and one elementwise op backward) and everything else
for all steps at once: the input projection before the loop, and after the backward loop the gate factors, the
input and weight gradients as single matmuls over all steps. A reset at t is one ``torch.where`` on the state
entering step t (and on the gradient leaving it), so episodes need no cutting into segments.

Both loops run in ``torch.inference_mode`` (no version counters or view tracking on each op: ~4% of the layer's time)
and, while a step's matmul is small, on one torch thread: waking a second thread for a 16x64 @ 64x192 sgemm costs
more than it saves (the layer at B=16, width 64 takes 10–17% less time on one thread of two). The thread count is
process-wide, so it is restored however the loop ends.

With r, z, n the reset gate, update gate and candidate (torch's gate order in the weights):

    r, z = sigmoid(gi_r + W_hr h + b_hr), sigmoid(gi_z + W_hz h + b_hz),   gi = W_i x + b_i
    n = tanh(gi_n + r * (W_hn h + b_hn)),   h' = (1 - z) * n + z * h = lerp(n, h, z)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.autograd.function import once_differentiable

# Multiply-adds in one step's recurrent matmul (B x H @ H x 3H) below which one thread runs the loops faster than
# several (on a 2-core VM: B=16 or 64 at width 64 and B=16 at width 128, up to 0.8M, gain 4-23%; at 3.1M the two
# are even or two threads win, and from 12.6M on two threads win by 24% and more).
ONE_THREAD_BELOW_MACS = 1 << 21


@contextlib.contextmanager
def _step_loop(batch: int, size: int) -> Iterator[None]:
    """Inference mode, and one torch thread while the step's matmul is too small to share."""
    threads = torch.get_num_threads()
    one_thread = threads > 1 and batch * size * 3 * size < ONE_THREAD_BELOW_MACS
    if one_thread:
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        if one_thread:
            torch.set_num_threads(threads)


def gru_sequence(
    gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, resets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gi`` [B, T, 3H] (the input projection W_i x + b_i), ``h0`` [B, H], ``resets`` [B, T] bool (the state is
    zeroed before step t) -> outputs [B, T, H] and the final state [B, H]."""
    return _GRUSequence.apply(gi, h0, w_hh, b_hh, resets)


class _GRUSequence(torch.autograd.Function):
    # Batch-major, as the layer's input and output are: a step's [B, 3H] slice is strided, which BLAS (as its leading
    # dimension) and the elementwise ops take without copies, and no transposed copy of the whole sequence is made.
    # The loops index only views made before them (``unbind``): slicing inside a loop of T steps costs more than
    # the arithmetic at these sizes.

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, resets):
        batch, length, _ = gi.shape
        size = h0.shape[-1]
        reset_steps = set(resets.any(0).nonzero().squeeze(1).tolist())
        # Each step's recurrent matmul adds onto [gi_r + b_hr, gi_z + b_hz, b_hn]; r and z are then squashed in place,
        # so after the loop ``gates`` holds [r, z, W_hn h + b_hn] for the backward.
        gates = gi + nn.functional.pad(b_hh[: 2 * size], (0, size))
        candidate = gates[..., 2 * size :].clone()
        gates[..., 2 * size :] = b_hh[2 * size :]
        out = gi.new_empty(batch, length, size)
        w_hh_t = w_hh.t().contiguous()  # a transposed view as the matmul operand costs ~2 us more a step
        steps = zip(
            gates.unbind(1), gates[..., : 2 * size].unbind(1), gates[..., :size].unbind(1),
            gates[..., size : 2 * size].unbind(1), gates[..., 2 * size :].unbind(1), candidate.unbind(1),
            out.unbind(1),
        )
        h = h0
        with _step_loop(batch, size):
            for t, (g, rz, r, z, hidden_n, n, y) in enumerate(steps):
                if t in reset_steps:
                    h = torch.where(resets[:, t, None], 0.0, h)
                g.addmm_(h, w_hh_t)
                rz.sigmoid_()
                n.addcmul_(r, hidden_n).tanh_()
                h = torch.lerp(n, h, z, out=y)
        ctx.save_for_backward(h0, w_hh, resets, gates, candidate, out)
        ctx.reset_steps = reset_steps
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_final):
        h0, w_hh, resets, gates, candidate, out = ctx.saved_tensors
        batch, length, size = candidate.shape
        reset, update, hidden_n = gates.split(size, -1)
        h_prev = torch.cat([h0[:, None], out[:, :-1]], 1).masked_fill_(resets[..., None], 0.0)
        # The gradient of each step's recurrent matmul output is dh * factor (per gate r, z, n); the candidate's
        # pre-activation gets dh * dn_pre. With s(1 - s) the sigmoids' slopes:
        #   factor_r = dn_pre * (W_hn h + b_hn) * r(1 - r),  factor_z = (h - n) * z(1 - z),  factor_n = dn_pre * r
        candidate_share = 1 - update
        dn_pre = torch.addcmul(candidate_share, candidate_share, candidate * candidate, value=-1)  # (1 - z)(1 - n^2)
        rz = gates[..., : 2 * size]
        # A fourth slot holds z, so that one matmul against [W_hh; I] gives a step's whole gradient to the state
        # before it: (dh * factor) @ W_hh + dh * z.
        factor = gates.new_empty(batch, length, 4, size)
        d_reset, d_update, d_hidden_n, keep = factor.unbind(2)
        torch.mul(dn_pre, hidden_n, out=d_reset)
        torch.sub(h_prev, candidate, out=d_update)
        factor[:, :, :2].mul_(torch.addcmul(rz, rz, rz, value=-1).reshape(batch, length, 2, size))
        torch.mul(dn_pre, reset, out=d_hidden_n)
        keep.copy_(update)
        w_and_identity = torch.cat([w_hh, torch.eye(size, dtype=w_hh.dtype, device=w_hh.device)])
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out
        grad_h = grad_out.clone()
        if grad_final is not None:
            grad_h[:, -1] += grad_final
        # The loop turns ``factor`` into the gradient of each step's recurrent matmul output (and dh * z) in place,
        # step by step, and ``grad_h`` (starting as the outputs' gradient) into the total gradient reaching each
        # step's output state.
        flat_factor = factor.view(batch, length, 4 * size)
        steps = list(zip(factor.unbind(1), flat_factor.unbind(1), grad_h[:, :, None].unbind(1)))
        grad_h_steps = grad_h.unbind(1)
        with _step_loop(batch, size):
            for t in range(length - 1, 0, -1):
                dg, dg_flat, dh = steps[t]
                dg.mul_(dh)
                back = grad_h_steps[t - 1].addmm_(dg_flat, w_and_identity)
                # Nothing flows back past a reset: the earlier step keeps its own output's gradient.
                if t in ctx.reset_steps:
                    torch.where(resets[:, t, None], grad_out[:, t - 1], back, out=back)
        dg, dg_flat, dh = steps[0]
        dg.mul_(dh)
        grad_h0 = (dg_flat @ w_and_identity).masked_fill_(resets[:, 0, None], 0.0)
        grad_gates = flat_factor[..., : 3 * size]
        flat_gates = grad_gates.reshape(batch * length, 3 * size)
        grad_w_hh, grad_b_hh = flat_gates.t() @ h_prev.view(batch * length, size), flat_gates.sum(0)
        torch.mul(grad_h, dn_pre, out=d_hidden_n)  # now the gradient of gi: its candidate part is the pre-activation's
        return grad_gates, grad_h0, grad_w_hh, grad_b_hh, None
