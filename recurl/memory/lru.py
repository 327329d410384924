"""The Linear Recurrent Unit (LRU), from Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences".

With a complex state of N channels, for an input x_t (one layer maps size H to H):

    lambda = exp(-exp(nu) + i exp(theta))                  stable (|lambda| < 1) for any real nu, theta   [N]
    h_t = lambda * h_{t-1} + exp(gamma_log) * (B x_t)      B complex [N, H]
    y_t = Re(C h_t) + D * x_t                              C complex [H, N], D real [H]
    out_t = GLU(GELU(y_t)),   GLU(v) = (W_1 v + b_1) * sigmoid(W_2 v + b_2)

Ring initialisation: |lambda| uniform on the ring r_min <= |lambda| <= r_max (uniform in area: |lambda|^2 uniform),
arg(lambda) uniform in [0, max_phase]. B and C start normal with variance 1/(2H) and 1/N per real and imaginary
part, D standard normal. gamma_log is learned (as in the paper's code); with ``normalize`` it starts at
log sqrt(1 - |lambda|^2), the paper's normalisation, which keeps the state at the scale of the input for white-noise
inputs however close |lambda| is to 1; without, at 0.

Defaults, and why they differ from the paper's code (r_min = 0, r_max = 1, max_phase = 2 pi, normalised): PPO on
POPGym RepeatFirstEasy (repeat the first of 51 cards), 200k steps, seeds 0-2, first step with mean return >= 0.8
(commit 9a96fdc):

    paper's init, normalised            never (best -0.34, 0.15, 0.11)
    paper's init, not normalised        never (best 0.62, 0.32, 0.67)
    ring init below, normalised         72k, never (best 0.71), 61k
    ring init below, not normalised     92k, 55k, 72k          (the defaults; minGRU: 57k, 59k, 131k)

- Initialisation. Holding a value over an episode takes channels that neither fade nor turn: with phases up to 2 pi
  only ~0.5% of channels turn less than a quarter turn in 51 steps, and |lambda|^2 uniform on [0, 1] leaves ~4%
  with |lambda| > 0.98. Hence r_min = 0.9, r_max = 0.999, max_phase = pi / 10: eigenvalues near the unit circle and
  a small phase range, the paper's own remedy for its long-range tasks.
- Normalisation (``normalize``, off by default). Remembering one event means writing once and reading long after;
  normalised, that write is scaled by sqrt(1 - |lambda|^2) (0.045 at |lambda| = 0.999) and the readout must learn
  to scale it back up. What the normalisation guards against, a state growing like 1 / (1 - |lambda|^2) under long
  dense input, is bounded here by the episode (states reset) and by the stack's layer norms.

The paper's layer is norm -> LRU -> GELU -> GLU -> residual; recurl's stack provides the norm and the residual, so
one cell is the LRU with its GELU and GLU. Without that nonlinearity a stack of LRUs is a linear time-invariant
filter of its inputs (between layer norms), which cannot pick out one step (such as an episode's first) by content.

The recurrence is ``linear_scan`` on complex numbers, with an episode start at t as the gate 0. The state is h as
(real, imaginary) pairs, [N, 2]. ``state_size`` N defaults to half the hidden size, so that the state holds as many
reals as minGRU's and FFM's; at N = H one layer's forward+backward on CPU (B=16, T=512, H=64) took 2.0x minGRU's
instead of 1.3x.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recurl.kernels import check_backend
from recurl.memory.cell import State, reset_state
from recurl.memory.complex_recurrence import Parts, polar, scan_with_resets, step


class LRU(nn.Module):
    def __init__(
        self,
        size: int,
        state_size: int | None = None,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = math.pi / 10,
        normalize: bool = False,
        scan_backend: str = "auto",
    ):
        super().__init__()
        state_size = -(-size // 2) if state_size is None else state_size
        if not isinstance(state_size, int) or state_size < 1:
            raise ValueError(f"lru: state_size must be a positive integer, got {state_size!r}")
        if not 0 <= r_min < 1:
            raise ValueError(f"lru: r_min must be in [0, 1), got {r_min!r} (the smallest initial |lambda|)")
        if not r_min < r_max <= 1:
            raise ValueError(f"lru: r_max must be in (r_min, 1] = ({r_min}, 1], got {r_max!r}")
        if not 0 < max_phase <= 2 * math.pi:
            raise ValueError(f"lru: max_phase must be in (0, 2 pi], got {max_phase!r}")
        self.size, self.state_size = size, state_size
        self.scan_backend = check_backend(scan_backend)
        # Drawn in float64 from (0, 1]: |lambda| = 0 exactly (log 0) is out of reach, |lambda| = 1 at r_max = 1
        # has probability 2^-53.
        radius_sq = (1 - torch.rand(state_size, dtype=torch.float64)) * (r_max**2 - r_min**2) + r_min**2
        phase = (1 - torch.rand(state_size, dtype=torch.float64)) * max_phase
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(radius_sq)).float())
        self.theta_log = nn.Parameter(torch.log(phase).float())
        gamma_log = 0.5 * torch.log1p(-radius_sq) if normalize else torch.zeros_like(radius_sq)
        self.gamma_log = nn.Parameter(gamma_log.float())
        self.input_proj = nn.Linear(size, 2 * state_size, bias=False)  # B: rows 2n and 2n+1 are Re, Im of B's row n
        self.output_proj = nn.Linear(2 * state_size, size, bias=False)  # columns 2n, 2n+1: Re C[:, n], -Im C[:, n]
        nn.init.normal_(self.input_proj.weight, std=1 / math.sqrt(2 * size))
        nn.init.normal_(self.output_proj.weight, std=1 / math.sqrt(state_size))
        self.skip = nn.Parameter(torch.randn(size))  # D
        self.glu = nn.Linear(size, 2 * size)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return (torch.zeros(batch_size, self.state_size, 2, device=device, dtype=dtype),)

    def _lambda(self) -> Parts:
        return polar(-self.nu_log.exp(), self.theta_log.exp())

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """exp(gamma_log) * B x as pairs [..., N, 2]; gamma scales B's rows rather than every step of the product."""
        weight = self.input_proj.weight * self.gamma_log.exp().repeat_interleave(2)[:, None]
        return nn.functional.linear(x, weight).unflatten(-1, (self.state_size, 2))

    def _output(self, pairs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """From h as pairs [..., N, 2]."""
        y = torch.addcmul(self.output_proj(pairs.flatten(-2)), self.skip, x)
        value, gate = self.glu(nn.functional.gelu(y)).chunk(2, dim=-1)
        return value * gate.sigmoid()

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        h = scan_with_resets(self._lambda(), self._input(x).unbind(-1), resets, state[0], self.scan_backend)
        return self._output(h, x), (h[:, -1],)

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        (pairs,) = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        h = step(self._lambda(), self._input(x).unbind(-1), pairs)
        return self._output(h, x), (h,)
