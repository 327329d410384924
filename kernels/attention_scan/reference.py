"""The readable definition of Aaren's attention scan: a Python loop over time, the same math as ``Aaren.step``.

Per batch row and head, items ``(s_t, v_t)`` (score, value) are summed since the last episode start (``resets[b, t]``
starts a new segment before item t; the first segment also holds the carried state ``(m0, u0, w0)``):

    m_t = max(m0, s_i for i <= t),   u_t = u0 exp(m0 - m_t) + sum_i exp(s_i - m_t),
    w_t = w0 exp(m0 - m_t) + sum_i exp(s_i - m_t) v_i,   o_t = w_t / u_t.

``m`` only stabilises the exponentials (``o`` does not depend on it), so it is treated as a constant: it gets no
gradient, and ``m0`` none either. ``(m, u, w)`` at any t is the state ``Aaren.step`` would hold; ``w = o u``.
"""

from __future__ import annotations

import torch

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def attention_scan_reference(score: torch.Tensor, value: torch.Tensor, resets: torch.Tensor, state: State):
    """Differentiable by autograd. Slow, and the ground truth the other backends must match."""
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
