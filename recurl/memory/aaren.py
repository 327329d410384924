"""Aaren, from Feng et al. 2024, "Attention as an RNN".

Softmax attention of a learned query q over the keys seen so far, per head:

    s_i = q . k_i / sqrt(d),     o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)

is a recurrence over the triple (m, u, w) = (running max of s, sum exp(s - m), sum exp(s - m) v):

    m_t = max(m_{t-1}, s_t),  c_t = exp(m_{t-1} - m_t)
    u_t = c_t u_{t-1} + exp(s_t - m_t),   w_t = c_t w_{t-1} + exp(s_t - m_t) v_t,   o_t = w_t / u_t

Constant state per step when acting. In parallel the same sums are one ``attention_scan`` (``recurl.kernels``): a
prefix scan with an episode start as a cut, the sums starting again from (m, u, w) = (-inf, 0, 0), in torch ops or
one fused Triton kernel each way. Sums over i <= t only, so no O(T^2) attention matrix. m only stabilises the
exponentials (o does not depend on it), so it is computed without gradient in both forms. The scan returns o and u;
the final state's w is o u, well conditioned: u >= 1 once anything is summed (the term at the running max is
at least 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recurl.kernels import attention_scan, check_backend
from recurl.memory.cell import State, reset_state


class Aaren(nn.Module):
    def __init__(self, size: int, num_heads: int = 4, scan_backend: str = "auto"):
        super().__init__()
        if num_heads < 1 or size % num_heads:
            raise ValueError(f"aaren: hidden_size {size} must be a positive multiple of num_heads {num_heads}")
        self.size, self.num_heads, self.head_size = size, num_heads, size // num_heads
        self.scan_backend = check_backend(scan_backend)
        self.query = nn.Parameter(torch.randn(num_heads, self.head_size) / math.sqrt(self.head_size))
        self.key_value = nn.Linear(size, 2 * size)
        self.out = nn.Linear(size, size)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        heads = (batch_size, self.num_heads)
        return (
            torch.full(heads, -math.inf, device=device, dtype=dtype),
            torch.zeros(heads, device=device, dtype=dtype),
            torch.zeros(*heads, self.head_size, device=device, dtype=dtype),
        )

    def _scores_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key, value = self.key_value(x).unflatten(-1, (2, self.num_heads, self.head_size)).unbind(-3)
        return (key * self.query).sum(-1) / math.sqrt(self.head_size), value

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        score, value = self._scores_values(x)  # [B, T, H], [B, T, H, d]
        o, m, u = attention_scan(score, value, resets, state, backend=self.scan_backend)
        return self.out(o.flatten(2)), (m[:, -1], u[:, -1], o[:, -1] * u[:, -1, :, None])

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        m, u, w = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        score, value = self._scores_values(x)  # [B, H], [B, H, d]
        with torch.no_grad():
            m_new = torch.maximum(m, score)
            decay = torch.exp(m - m_new)
        weight = torch.exp(score - m_new)
        u = decay * u + weight
        w = decay[..., None] * w + weight[..., None] * value
        y = self.out((w / u[..., None]).flatten(1))
        return y, (m_new, u, w)
