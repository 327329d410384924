"""minLSTM, from Feng et al. 2024, "Were RNNs All We Needed?".

    f_t  = sigmoid(W_f x_t),    i_t = sigmoid(W_i x_t),    h~_t = g(W_h x_t)     (g as in minGRU)
    f'_t = f_t / (f_t + i_t),   i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

The normalisation keeps the state's scale independent of time. A linear recurrence with a_t = f'_t, b_t = i'_t h~_t.
"""

from __future__ import annotations

import torch

from recurl.kernels import minlstm_scan_triton
from recurl.memory.cell import positive_activation
from recurl.memory.linear_recurrence import LinearRecurrentCell


class MinLSTM(LinearRecurrentCell):
    def __init__(self, size: int, scan_backend: str = "auto"):
        super().__init__(size, projections=3, scan_backend=scan_backend)

    def gates(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        forget, keep, candidate = z.chunk(3, dim=-1)
        f, i = torch.sigmoid(forget), torch.sigmoid(keep)
        total = f + i
        return f / total, i / total * positive_activation(candidate)

    def fused_scan(self, z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return minlstm_scan_triton(z, resets, h0)
