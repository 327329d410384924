"""Shared by FFM and LRU: a complex diagonal recurrence h_t = lambda * h_{t-1} + b_t with a fixed (learned) lambda.

The parallel form is ``linear_scan`` on complex tensors, with an episode start at t folded in as a_t = 0 (the initial
state is zeros); the stepwise form is the recurrence itself. Only the insides are complex: parameters are real (a
complex parameter would lose its imaginary part to ``Module.to(torch.float64)``) and the state is stored as real
pairs, ``view_as_real``'s ``[..., 2]`` layout in the module's real dtype, so that agents, replay buffers,
checkpoints and ONNX export keep handling real tensors, and a loss may read the state (autograd needs real losses).
"""

from __future__ import annotations

import torch

from recurl.kernels import linear_scan


def as_complex(pairs: torch.Tensor) -> torch.Tensor:
    """A ``[..., 2]`` real tensor of (real, imaginary) pairs as a complex ``[...]`` tensor."""
    return torch.view_as_complex(pairs.contiguous())


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def scan_with_resets(
    decay: torch.Tensor, inputs: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor, backend: str
) -> torch.Tensor:
    """All states h [B, T, D] of h_t = decay * h_{t-1} + inputs_t from ``h0`` [B, D]; ``decay`` [D] complex,
    ``inputs`` [B, T, D] complex, ``resets`` [B, T] bool (h_{t-1} is replaced by zeros where true)."""
    gates = torch.where(resets[..., None], torch.zeros((), dtype=decay.dtype, device=decay.device), decay)
    # TEMPORARY, until the kernels branch lands: the torch and Triton scans' backward is real-only today (it lacks
    # the conjugates complex gradients need), so complex scans run on the reference loop, whatever ``backend`` says.
    del backend
    return linear_scan(gates, inputs, h0, backend="reference")
