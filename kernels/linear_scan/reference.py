"""The readable definition of the linear recurrence every scan backend must reproduce.

    h_t = a_t * h_{t-1} + b_t,   h_{-1} = h0 (zeros when None),

over dim 1 of ``[B, T, D]`` tensors, real or complex. A gate ``a_t == 0`` cuts the past off completely: ``h_t = b_t``
even when ``h_{t-1}`` is inf or NaN. That is how a memory module resets a state (it sets ``a_t = 0`` at an episode
start), and ``0 * inf = nan`` must not leak a previous episode's overflow into the next one.
"""

from __future__ import annotations

import torch


def linear_scan_reference(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """A Python loop over time; differentiable by autograd. Slow, and the ground truth for the fast backends."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    outputs = []
    for t in range(a.shape[1]):
        h = a[:, t] * torch.where(a[:, t] == 0, 0.0, h) + b[:, t]  # a zero gate drops h, inf and NaN included
        outputs.append(h)
    return torch.stack(outputs, dim=1)
