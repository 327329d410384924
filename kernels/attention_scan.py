"""Aaren's parallel form: softmax attention of a learned query over the items of each episode so far, as a scan.

Per batch row and head, items ``(s_t, v_t)`` (score, value) are summed since the last episode start (``resets[b, t]``
starts a new segment before item t; the first segment also holds the carried state ``(m0, u0, w0)``):

    m_t = max(m0, s_i for i <= t),   u_t = u0 exp(m0 - m_t) + sum_i exp(s_i - m_t),
    w_t = w0 exp(m0 - m_t) + sum_i exp(s_i - m_t) v_i,   o_t = w_t / u_t.

``m`` only stabilises the exponentials (``o`` does not depend on it), so it is treated as a constant: it gets no
gradient, and ``m0`` none either. ``(m, u, w)`` at any t is the state ``Aaren.step`` would hold; ``w = o u``.
"""

from __future__ import annotations

import torch

from recurl.kernels.linear_scan import linear_scan, resolve_backend
from recurl.kernels.segmented_max import segmented_cummax

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def attention_scan_reference(score: torch.Tensor, value: torch.Tensor, resets: torch.Tensor, state: State):
    """A Python loop over time, the same math as ``Aaren.step``: the definition the other backends must match."""
    m, u, w = state
    outputs = []
    for t in range(score.shape[1]):
        reset = resets[:, t, None]  # an episode start: back to the empty state (-inf, 0, 0)
        m, u, w = torch.where(reset, -torch.inf, m), torch.where(reset, 0.0, u), torch.where(reset[..., None], 0.0, w)
        with torch.no_grad():
            m_new = torch.maximum(m, score[:, t])
            decay = torch.exp(m - m_new)
        weight = torch.exp(score[:, t] - m_new)
        m, u, w = m_new, decay * u + weight, decay[..., None] * w + weight[..., None] * value[:, t]
        outputs.append((w / u[..., None], m, u))
    o, m, u = (torch.stack(x, dim=1) for x in zip(*outputs))
    return o, m, u


def attention_scan_torch(score: torch.Tensor, value: torch.Tensor, resets: torch.Tensor, state: State):
    """Whole-tensor ops: ``m`` is a segmented running max, then ``(u, w)`` is one ``linear_scan`` of ``[u, w]`` with
    gate ``exp(m_{t-1} - m_t)``, set to 0 at episode starts."""
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
        from recurl.kernels.attention_scan_triton import attention_scan_triton

        return attention_scan_triton(score, value, resets, state)
    return attention_scan_torch(score, value, resets, state)
