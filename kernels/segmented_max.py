"""Running maximum over time that restarts at segment starts (Aaren's numerically stabilising max)."""

from __future__ import annotations

import torch


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
