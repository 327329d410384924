"""Shared by FFM and LRU: a complex diagonal recurrence h_t = lambda * h_{t-1} + b_t with a fixed (learned) lambda.

The parallel form is ``linear_scan`` on complex tensors, with an episode start at t folded in as a_t = 0 (the initial
state is zeros). The stepwise form is the same recurrence written on (real, imaginary) pairs in real arithmetic:
acting then runs no complex op, which ``torch.onnx`` cannot translate, so a trained policy exports.

Parameters are real (a complex parameter would lose its imaginary part to ``Module.to(torch.float64)``) and the state
is stored as real pairs, ``view_as_real``'s ``[..., 2]`` layout in the module's real dtype, so that agents, replay
buffers, checkpoints and ONNX export keep handling real tensors, and a loss may read the state (autograd needs real
losses).
"""

from __future__ import annotations

import torch

from recurl.kernels import linear_scan

#: A complex tensor as its (real, imaginary) parts.
Parts = tuple[torch.Tensor, torch.Tensor]


def polar(log_magnitude: torch.Tensor, angle: torch.Tensor) -> Parts:
    """exp(log_magnitude + i angle), as parts."""
    magnitude = log_magnitude.exp()
    return magnitude * angle.cos(), magnitude * angle.sin()


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a recurrence of real ``dtype`` scans in: complex128 for float64, else complex64 (torch has no complex
    bfloat16, and few complex32 ops)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def scan_with_resets(
    decay: Parts, inputs: Parts | torch.Tensor, resets: torch.Tensor, h0: torch.Tensor, backend: str
) -> torch.Tensor:
    """All states [B, T, D, 2] (pairs, in ``h0``'s dtype) of h_t = decay * h_{t-1} + inputs_t from ``h0`` [B, D, 2];
    ``decay`` [D] as parts, ``inputs`` [B, T, D] as parts or complex, ``resets`` [B, T] bool (h_{t-1} is replaced by
    zeros where true)."""
    real = complex_dtype(h0.dtype).to_real()
    gate = torch.complex(*(part.to(real) for part in decay))
    gates = torch.where(resets[..., None], torch.zeros((), dtype=gate.dtype, device=gate.device), gate)
    if isinstance(inputs, tuple):
        inputs = torch.complex(*(part.to(real) for part in inputs))
    h = linear_scan(gates, inputs, torch.view_as_complex(h0.to(real).contiguous()), backend=backend)
    return torch.view_as_real(h).to(h0.dtype)


def step(decay: Parts, inputs: Parts | torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """One step of the recurrence on pairs [B, D, 2]; ``inputs`` [B, D] as parts, or real."""
    h_re, h_im = pairs.unbind(-1)
    decay_re, decay_im = decay
    in_re, in_im = inputs if isinstance(inputs, tuple) else (inputs, None)
    re = torch.addcmul(in_re, decay_re, h_re) - decay_im * h_im
    im = decay_re * h_im + decay_im * h_re
    return torch.stack([re, im if in_im is None else im + in_im], dim=-1)
