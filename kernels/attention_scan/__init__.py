"""``attention_scan``: Aaren's parallel form, softmax attention of a learned query over the items of each episode so
far, as a scan. This entry checks shapes and picks a backend: ``reference.py`` (the definition, and the math),
``torch_scan.py`` (whole-tensor ops, any device), ``triton_scan.py`` (fused kernels)."""

from __future__ import annotations

import torch

from recurl.kernels.attention_scan.reference import State, attention_scan_reference
from recurl.kernels.attention_scan.torch_scan import attention_scan_torch
from recurl.kernels.backends import resolve_backend


def attention_scan(
    score: torch.Tensor, value: torch.Tensor, resets: torch.Tensor, state: State, *, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``score`` [B, T, H], ``value`` [B, T, H, d], ``resets`` [B, T] bool, ``state = (m0 [B, H], u0 [B, H],
    w0 [B, H, d])`` -> ``(o [B, T, H, d], m [B, T, H], u [B, T, H])``, differentiable in score, value, u0 and w0
    through ``o`` and ``u``. Backends as ``linear_scan``'s: ``"reference"``, ``"torch"``, ``"triton"`` (fused kernels),
    ``"auto"``."""
    if score.dim() != 3 or value.dim() != 4 or value.shape[:3] != score.shape:
        raise ValueError(
            f"attention_scan: score must be [B, T, H] and value [B, T, H, d]; got {tuple(score.shape)} and "
            f"{tuple(value.shape)}"
        )
    batch, length, heads, dim = value.shape
    if resets.shape != (batch, length) or resets.dtype != torch.bool:
        raise ValueError(f"attention_scan: resets must be bool [B, T] = {(batch, length)}; got {resets.dtype} "
                         f"{tuple(resets.shape)}")
    expected = ((batch, heads), (batch, heads), (batch, heads, dim))
    if len(state) != 3 or any(s.shape != e for s, e in zip(state, expected)):
        raise ValueError(f"attention_scan: state must be (m0, u0, w0) of shapes {expected}; got "
                         f"{[tuple(s.shape) for s in state]}")
    backend = resolve_backend(backend, score)
    if backend == "reference":
        return attention_scan_reference(score, value, resets, state)
    if backend == "triton":
        from recurl.kernels.attention_scan.triton_scan import attention_scan_triton

        return attention_scan_triton(score, value, resets, state)
    return attention_scan_torch(score, value, resets, state)
