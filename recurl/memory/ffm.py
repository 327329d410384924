"""Fast and Forgetful Memory (FFM), from Morad et al. 2023, "Reinforcement Learning with Fast and Forgetful Memory".

With m traces and c context frequencies, for an input x_t (one layer maps size H to H):

    v_t, s_t, (p_t, q_t) = W x_t + b, split into m, H and m + H features; p_t, q_t = sigmoid(...)
    u_t  = v_t * p_t                                               input gate          [m]
    S_t  = gamma * S_{t-1} + u_t,   gamma_jk = exp(-|alpha_j| + i omega_k)   aggregator  [m, c] complex
    z_t  = W_mix [Re S_t, Im S_t] + b_mix
    y_t  = LayerNorm(z_t) * q_t + s_t * (1 - q_t)                  output gate and mix  [H]

u_t is added to every context frequency of its trace. The decay alpha_j (per trace) and the frequency omega_k (per
context) are learned. The aggregator is a complex diagonal linear recurrence: in parallel, ``linear_scan`` on complex
numbers, with an episode start at t as the gate 0 (the paper's code takes no done flag; here the reset is inside the
scan). The state is S as (real, imaginary) pairs, stored transposed: [c, m, 2].

Initialisation as in the paper's code: alpha evenly spaced from ln(100) / 1024 (a trace falls to 1% of an input
after 1024 steps) to ln 2 (it halves every step; the reference stops at ln 2 - 0.02, an overflow bound of its
cumulative-sum form that a scan does not have), and omega = 2 pi / (periods evenly spaced from 1 to 1024). The
reference keeps alpha positive by clamping it; |alpha| does the same without a dead gradient below the clamp.

Sizes: the paper's POPGym runs used 32 traces x 4 complex frequencies for a hidden size of 256 (the state holds as
many reals as the hidden size). ``context_size`` defaults to 4 and ``trace_size`` to hidden_size / (2 context_size),
the same proportions: 8 x 4 at the default hidden size of 64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recurl.kernels import check_backend
from recurl.memory.cell import State, reset_state
from recurl.memory.complex_recurrence import Parts, complex_dtype, polar, scan_with_resets, step

#: The shortest and longest periods (in steps) the aggregator starts out representing, as in the paper.
MIN_PERIOD, MAX_PERIOD = 1, 1024


class FFM(nn.Module):
    def __init__(self, size: int, trace_size: int | None = None, context_size: int = 4, scan_backend: str = "auto"):
        super().__init__()
        if not isinstance(context_size, int) or context_size < 1:
            raise ValueError(f"ffm: context_size must be a positive integer, got {context_size!r}")
        if trace_size is None:
            if size % (2 * context_size):
                raise ValueError(
                    f"ffm: 2 * context_size ({2 * context_size}) must divide hidden_size {size} to size the traces; "
                    "choose another context_size or give memory.trace_size"
                )
            trace_size = size // (2 * context_size)
        if not isinstance(trace_size, int) or trace_size < 1:
            raise ValueError(f"ffm: trace_size must be a positive integer, got {trace_size!r}")
        self.size, self.trace_size, self.context_size = size, trace_size, context_size
        self.scan_backend = check_backend(scan_backend)
        self.pre = nn.Linear(size, 2 * trace_size + 2 * size)
        self.alpha = nn.Parameter(torch.linspace(math.log(100) / MAX_PERIOD, math.log(2), trace_size))
        self.omega = nn.Parameter(2 * math.pi / torch.linspace(MIN_PERIOD, MAX_PERIOD, context_size))
        self.mix = nn.Linear(2 * trace_size * context_size, size)
        self.out_norm = nn.LayerNorm(size, elementwise_affine=False)

    @property
    def _state_shape(self) -> tuple[int, int]:
        """S is stored transposed, [c, m]: u then broadcasts over a leading dim, which the backward sums over
        contiguous rows (1.5 ms -> 0.4 ms at B=16, T=512, m=8, c=4 on CPU, where the whole layer takes ~12 ms)."""
        return self.context_size, self.trace_size

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return (torch.zeros(batch_size, *self._state_shape, 2, device=device, dtype=dtype),)

    def _gamma(self) -> Parts:
        """The aggregator's decay, [c * m] as parts."""
        shape = self._state_shape
        return polar(-self.alpha.abs().expand(shape).flatten(), self.omega[:, None].expand(shape).flatten())

    def _gated_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u [..., m], the skip s and the output gate q."""
        value, skip, gates = self.pre(x).split([self.trace_size, self.size, self.trace_size + self.size], dim=-1)
        in_gate, out_gate = gates.sigmoid().split([self.trace_size, self.size], dim=-1)
        return value * in_gate, skip, out_gate

    def _to_contexts(self, u: torch.Tensor) -> torch.Tensor:
        """u [..., m] added to every context of its trace: [..., c * m]."""
        return u[..., None, :].expand(*u.shape[:-1], *self._state_shape).flatten(-2)

    def _output(self, pairs: torch.Tensor, skip: torch.Tensor, out_gate: torch.Tensor) -> torch.Tensor:
        """From the aggregate as pairs [..., c * m, 2]."""
        return torch.lerp(skip, self.out_norm(self.mix(pairs.flatten(-2))), out_gate)

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        u, skip, out_gate = self._gated_input(x)
        inputs = self._to_contexts(u.to(complex_dtype(u.dtype)))
        aggregate = scan_with_resets(self._gamma(), inputs, resets, state[0].flatten(1, 2), self.scan_backend)
        return self._output(aggregate, skip, out_gate), (aggregate[:, -1].unflatten(1, self._state_shape),)

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        (pairs,) = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        u, skip, out_gate = self._gated_input(x)
        aggregate = step(self._gamma(), self._to_contexts(u), pairs.flatten(1, 2))
        return self._output(aggregate, skip, out_gate), (aggregate.unflatten(1, self._state_shape),)
