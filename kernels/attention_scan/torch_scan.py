"""Aaren's attention scan in whole-tensor torch ops (any device): a segmented running max, then one ``linear_scan``."""

from __future__ import annotations

import torch

from recurl.kernels.attention_scan.reference import State
from recurl.kernels.linear_scan import linear_scan


def segmented_cummax(x: torch.Tensor, starts: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``m_t = max(x_s for s in [last start <= t, t])``, where the first segment also includes ``initial``.

    ``x`` is [B, T, *F], ``starts`` [B, T] bool, ``initial`` [B, *F]. A Hillis-Steele scan over (value, flag)
    pairs with the segmented-max combine ``(v1, f1) + (v2, f2) = (v2 if f2 else max(v1, v2), f1 or f2)``:
    log2(T) rounds of whole-tensor ops, no loop over time.
    """
    values = torch.cat([initial[:, None], x], dim=1)
    flags = torch.cat([torch.ones_like(starts[:, :1]), starts], dim=1).view(*starts.shape[:1], -1, *[1] * (x.dim() - 2))
    shift = 1
    while shift < values.shape[1]:
        merged = torch.where(flags[:, shift:], values[:, shift:], torch.maximum(values[:, :-shift], values[:, shift:]))
        values = torch.cat([values[:, :shift], merged], dim=1)
        flags = torch.cat([flags[:, :shift], flags[:, shift:] | flags[:, :-shift]], dim=1)
        shift *= 2
    return values[:, 1:]


def attention_scan_torch(score: torch.Tensor, value: torch.Tensor, resets: torch.Tensor, state: State):
    """``m`` is a segmented running max, then ``(u, w)`` is one ``linear_scan`` of ``[u, w]`` with gate
    ``exp(m_{t-1} - m_t)``, set to 0 at episode starts."""
    m0, u0, w0 = state
    with torch.no_grad():
        m = segmented_cummax(score, resets, m0)
        decay = torch.exp(torch.cat([m0[:, None], m[:, :-1]], dim=1) - m)
        decay = torch.where(resets[..., None], 0.0, decay)
    weight = torch.exp(score - m)[..., None]
    b = torch.cat([weight, weight * value], dim=-1)  # [B, T, H, 1 + d]
    a = decay[..., None].expand_as(b)
    h0 = torch.cat([u0[..., None], w0], dim=-1)
    uw = linear_scan(a.flatten(2), b.flatten(2), h0.flatten(1), backend="torch").view_as(b)
    u = uw[..., 0]
    return uw[..., 1:] / u[..., None], m, u
