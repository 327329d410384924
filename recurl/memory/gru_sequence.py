"""``torch.nn.GRU``'s recurrence over a whole sequence with resets, for CPU: a time loop with a hand-written backward.

PyTorch runs ``nn.GRU`` on CPU with its native per-step ops and autograd through every step (oneDNN serves only
``nn.LSTM``): ~5x slower than ``nn.LSTM`` forward+backward, with or without packing. This loop does the least per
step (one matmul and four elementwise ops forward, one matmul and two elementwise ops backward) and everything else
for all steps at once: the input projection before the loop, and after the backward loop the gate factors, the
input and weight gradients as single matmuls over all steps. A reset at t is one ``torch.where`` on the state
entering step t (and on the gradient leaving it), so episodes need no cutting into segments.

With r, z, n the reset gate, update gate and candidate (torch's gate order in the weights):

    r, z = sigmoid(gi_r + W_hr h + b_hr), sigmoid(gi_z + W_hz h + b_hz),   gi = W_i x + b_i
    n = tanh(gi_n + r * (W_hn h + b_hn)),   h' = (1 - z) * n + z * h = lerp(n, h, z)
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def gru_sequence(
    gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, resets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gi`` [T, B, 3H] (the input projection W_i x + b_i, time-major), ``h0`` [B, H], ``resets`` [T, B] bool
    (the state is zeroed before step t) -> outputs [T, B, H] and the final state [B, H]."""
    return _GRUSequence.apply(gi, h0, w_hh, b_hh, resets)


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, resets):
        length, batch, _ = gi.shape
        size = h0.shape[-1]
        reset_steps = set(resets.any(1).nonzero().squeeze(1).tolist())
        # Each step's recurrent matmul adds onto [gi_r + b_hr, gi_z + b_hz, b_hn] and is kept as [r, z, W_hn h + b_hn]
        # once r and z are squashed in place.
        gates = torch.cat([gi[..., : 2 * size] + b_hh[: 2 * size], b_hh[2 * size :].expand(length, batch, size)], -1)
        candidate, out = gi.new_empty(length, batch, size), gi.new_empty(length, batch, size)
        w_hh_t = w_hh.t()
        h = h0
        for t, (g, n, y, gi_t) in enumerate(zip(gates, candidate, out, gi)):
            if t in reset_steps:
                h = torch.where(resets[t, :, None], 0.0, h)
            torch.addmm(g, h, w_hh_t, out=g)
            g[:, : 2 * size].sigmoid_()
            torch.addcmul(gi_t[:, 2 * size :], g[:, :size], g[:, 2 * size :], out=n).tanh_()
            h = torch.lerp(n, h, g[:, size : 2 * size], out=y)
        ctx.save_for_backward(h0, w_hh, resets, gates, candidate, out)
        ctx.reset_steps = reset_steps
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_final):
        h0, w_hh, resets, gates, candidate, out = ctx.saved_tensors
        length, batch, size = candidate.shape
        reset, update, hidden_n = gates.split(size, -1)
        h_prev = torch.where(resets[..., None], 0.0, torch.cat([h0[None], out[:-1]]))
        # d(recurrent matmul output) = dh * factor, per gate; the candidate's pre-activation gets dh * dn_pre.
        dn_pre = (1 - update) * (1 - candidate * candidate)
        factor = torch.stack(
            [dn_pre * hidden_n * reset * (1 - reset), (h_prev - candidate) * update * (1 - update), dn_pre * reset], 2
        )
        grad_gates = gates.new_empty(length, batch, 3, size)
        grad_h = gates.new_empty(length, batch, size)  # total gradient reaching each step's output state
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out
        grad_h[-1] = grad_out[-1] if grad_final is None else grad_out[-1] + grad_final
        for t in range(length - 1, -1, -1):
            torch.mul(factor[t], grad_h[t, :, None], out=grad_gates[t])
            if t == 0:
                break
            back = torch.addcmul(grad_out[t - 1], grad_h[t], update[t], out=grad_h[t - 1])
            torch.addmm(back, grad_gates[t].view(batch, 3 * size), w_hh, out=back)
            if t in ctx.reset_steps:  # nothing flows back past a reset: the earlier step keeps its own output's grad
                torch.where(resets[t, :, None], grad_out[t - 1], back, out=back)
        grad_h0 = torch.addmm(grad_h[0] * update[0], grad_gates[0].view(batch, 3 * size), w_hh)
        grad_h0 = torch.where(resets[0, :, None], 0.0, grad_h0)
        flat_gates = grad_gates.view(length * batch, 3 * size)
        grad_gi = grad_gates.clone()
        grad_gi[:, :, 2] = grad_h * dn_pre
        grad_w_hh = flat_gates.t() @ h_prev.reshape(length * batch, size)
        return grad_gi.view(length, batch, 3 * size), grad_h0, grad_w_hh, flat_gates.sum(0), None
