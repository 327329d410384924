"""minLSTM, from Feng et al. 2024, "Were RNNs All We Needed?".

    f_t  = sigmoid(W_f x_t),    i_t = sigmoid(W_i x_t),    h~_t = g(W_h x_t)     (g as in minGRU)
    f'_t = f_t / (f_t + i_t),   i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

The normalisation keeps the state's scale independent of time. A linear recurrence with a_t = f'_t, b_t = i'_t h~_t.

The normalised gates are computed in log space, f'_t = sigmoid(log f_t - log i_t) and i'_t = sigmoid(log i_t - log f_t)
with log f_t = logsigmoid(W_f x_t): the same values up to rounding, but f / (f + i) is 0 / 0 = NaN, in value and
gradient, once both sigmoids underflow (pre-activations below about -88 in float32), where the log-space form still
gives their ratio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recurl.kernels import minlstm_scan_triton
from recurl.memory.cell import positive_activation
from recurl.memory.linear_recurrence import LinearRecurrentCell


class MinLSTM(LinearRecurrentCell):
    def __init__(self, size: int, scan_backend: str = "auto"):
        super().__init__(size, projections=3, scan_backend=scan_backend)

    def gates(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        forget, input_gate, candidate = z.chunk(3, dim=-1)
        # log(f / i) = logsigmoid(x_f) - logsigmoid(x_i), as softplus(-x) = -logsigmoid(x) (which is 5-10% slower for
        # the layer on CPU). Above its threshold softplus(y) is y: at 40 that is exact to float64 rounding, at 20 not.
        log_ratio = F.softplus(-input_gate, threshold=40) - F.softplus(-forget, threshold=40)
        return torch.sigmoid(log_ratio), torch.sigmoid(-log_ratio) * positive_activation(candidate)

    def fused_scan(self, z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return minlstm_scan_triton(z, resets, h0)
