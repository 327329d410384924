"""Shared body of the cells whose gates ignore the past state: h_t = a_t * h_{t-1} + b_t with (a_t, b_t) from x_t.

A subclass says how the projection ``z_t = W x_t + c`` becomes ``(a_t, b_t)`` (``gates``), and may name a Triton
kernel that does the same and the scan in one pass (``fused_scan``), used where the scan backend resolves to
``"triton"``; without one, ``gates`` runs in torch and the scan in ``linear_scan``'s Triton kernel. The parallel form
folds an episode start at t into a_t = 0 (the initial state is zeros, so nothing else changes) and scans; the
stepwise form is the recurrence itself.
"""

from __future__ import annotations

import torch
from torch import nn

from recurl.kernels import check_backend, linear_scan, resolve_backend
from recurl.memory.cell import State, reset_state


class LinearRecurrentCell(nn.Module):
    def __init__(self, size: int, projections: int, scan_backend: str = "auto"):
        super().__init__()
        self.size = size
        self.scan_backend = check_backend(scan_backend)
        self.proj = nn.Linear(size, projections * size)

    def gates(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The projection ``z`` [..., projections * size] -> ``(a, b)``, each [..., size]."""
        raise NotImplementedError

    def fused_scan(self, z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """``gates`` then the scan with resets, as one Triton kernel: ``z`` [B, T, projections * size] -> h. This
        default is two steps: ``gates`` in torch, then the Triton scan."""
        return self._scan(z, resets, h0, "triton")

    def _scan(self, z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor, backend: str) -> torch.Tensor:
        a, b = self.gates(z)
        return linear_scan(torch.where(resets[..., None], 0.0, a), b, h0, backend=backend)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return (torch.zeros(batch_size, self.size, device=device, dtype=dtype),)

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        z = self.proj(x)
        backend = resolve_backend(self.scan_backend, z)
        h = self.fused_scan(z, resets, state[0]) if backend == "triton" else self._scan(z, resets, state[0], backend)
        return h, (h[:, -1],)

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        (h,) = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        a, b = self.gates(self.proj(x))
        h = torch.addcmul(b, a, h)
        return h, (h,)
