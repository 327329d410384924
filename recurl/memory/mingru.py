"""minGRU, from Feng et al. 2024, "Were RNNs All We Needed?".

    z_t  = sigmoid(W_z x_t)
    h~_t = g(W_h x_t),          g(x) = x + 0.5 if x >= 0 else sigmoid(x)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

The gate does not depend on h_{t-1}, so over a trajectory this is the linear recurrence h_t = a_t h_{t-1} + b_t with
a_t = 1 - z_t and b_t = z_t h~_t. The decay a_t is computed as sigmoid(-W_z x_t) rather than as 1 - z_t, which keeps
it accurate where z_t is near 1 (1 - z_t rounds to 0 in fp32 from W_z x_t of about 17 on, sigmoid(-W_z x_t) only
from about 88 on); z_t is then 1 - a_t.
"""

from __future__ import annotations

import torch

from recurl.kernels import mingru_scan_triton
from recurl.memory.cell import positive_activation
from recurl.memory.linear_recurrence import LinearRecurrentCell


class MinGRU(LinearRecurrentCell):
    def __init__(self, size: int, scan_backend: str = "auto"):
        super().__init__(size, projections=2, scan_backend=scan_backend)

    def gates(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        update, candidate = z.chunk(2, dim=-1)
        decay = torch.sigmoid(-update)
        return decay, (1 - decay) * positive_activation(candidate)

    def fused_scan(self, z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        return mingru_scan_triton(z, resets, h0)
