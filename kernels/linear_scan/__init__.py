"""``linear_scan``: h_t = a_t h_{t-1} + b_t over time, the one entry point the memory modules call; it checks shapes
and picks a backend: ``reference.py`` (the definition), ``torch_scan.py`` (chunked, any device), ``triton_scan.py``
(fused kernels)."""

from __future__ import annotations

import torch

from recurl.kernels.backends import resolve_backend
from recurl.kernels.linear_scan.reference import linear_scan_reference
from recurl.kernels.linear_scan.torch_scan import linear_scan_torch


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, backend: str = "auto"
) -> torch.Tensor:
    """Compute ``h_t = a_t * h_{t-1} + b_t`` over dim 1 of ``[B, T, D]`` tensors, with ``h_{-1} = h0`` (zeros if None).

    Real or complex (complex64, complex128: FFM's and LRU's recurrences); differentiable in ``a``, ``b`` and ``h0``,
    complex gradients in torch's convention (conjugate Wirtinger, as autograd of the reference loop gives them). A gate
    ``a_t == 0`` makes ``h_t = b_t`` exactly, whatever came before (resets are folded into the gates this way; see
    ``reference.py``). Backends: ``"reference"`` (a loop over time,
    the definition), ``"torch"`` (chunked, fast on any device), ``"triton"`` (fused kernels; CUDA tensors, or CPU
    under ``TRITON_INTERPRET=1``), ``"auto"`` (triton for CUDA tensors when it is installed, else torch).
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"linear_scan: a and b must both be [B, T, D]; got {tuple(a.shape)} and {tuple(b.shape)}")
    if h0 is not None and h0.shape != (b.shape[0], b.shape[2]):
        raise ValueError(f"linear_scan: h0 must be [B, D] = {(b.shape[0], b.shape[2])}; got {tuple(h0.shape)}")
    backend = resolve_backend(backend, a)
    if backend == "reference":
        return linear_scan_reference(a, b, h0)
    if backend == "triton":
        from recurl.kernels.linear_scan.triton_scan import linear_scan_triton

        return linear_scan_triton(a, b, h0)
    return linear_scan_torch(a, b, h0)
