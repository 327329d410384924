"""``linear_scan``: the one entry point the memory modules call; it checks shapes and picks a backend."""

from __future__ import annotations

import torch

from recurl.kernels.scan_reference import linear_scan_reference
from recurl.kernels.scan_torch import linear_scan_torch

BACKENDS = ("auto", "reference", "torch", "triton")


def _triton_scan():
    """The Triton backend, imported on first use (Triton reads ``TRITON_INTERPRET`` when the kernels are defined, so
    this lets a test set it first); None when triton is not installed."""
    try:
        from recurl.kernels.scan_triton import linear_scan_triton
    except ImportError:
        return None
    return linear_scan_triton


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, backend: str = "auto"
) -> torch.Tensor:
    """Compute ``h_t = a_t * h_{t-1} + b_t`` over dim 1 of ``[B, T, D]`` tensors, with ``h_{-1} = h0`` (zeros if None).

    Differentiable in ``a``, ``b`` and ``h0``. A gate ``a_t == 0`` makes ``h_t = b_t`` exactly, whatever came before
    (resets are folded into the gates this way; see ``scan_reference``). Backends: ``"reference"`` (a loop over time,
    the definition), ``"torch"`` (chunked, fast on any device), ``"triton"`` (fused kernels; CUDA tensors, or CPU
    under ``TRITON_INTERPRET=1``), ``"auto"`` (triton for CUDA tensors when it is installed, else torch).
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"linear_scan: a and b must both be [B, T, D]; got {tuple(a.shape)} and {tuple(b.shape)}")
    if h0 is not None and h0.shape != (b.shape[0], b.shape[2]):
        raise ValueError(f"linear_scan: h0 must be [B, D] = {(b.shape[0], b.shape[2])}; got {tuple(h0.shape)}")
    if backend == "reference":
        return linear_scan_reference(a, b, h0)
    if backend == "triton" or (backend == "auto" and a.is_cuda):
        triton_scan = _triton_scan()
        if triton_scan is not None:
            return triton_scan(a, b, h0)
        if backend == "triton":
            raise ImportError("linear_scan: backend 'triton' needs the triton package (pip install 'recurl[triton]')")
    if backend in ("torch", "auto"):
        return linear_scan_torch(a, b, h0)
    raise ValueError(f"linear_scan: unknown backend {backend!r}; choose one of {BACKENDS}")
