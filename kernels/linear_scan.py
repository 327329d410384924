"""``linear_scan``: the one entry point the memory modules call; it checks shapes and picks a backend."""

from __future__ import annotations

import os

import torch

from recurl.kernels.scan_reference import linear_scan_reference
from recurl.kernels.scan_torch import linear_scan_torch

BACKENDS = ("auto", "reference", "torch", "triton")


def triton_available() -> bool:
    """Whether the Triton kernels can be imported. They are imported on first use rather than with this package,
    because Triton reads ``TRITON_INTERPRET`` when a kernel is defined: a test can set it first."""
    try:
        import recurl.kernels.scan_triton  # noqa: F401
    except ImportError:
        return False
    return True


def check_backend(backend: str, device: torch.device | None = None) -> str:
    """``backend``, if it is a known name and can run (on ``device``, when given); else a ValueError saying why."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "triton":
        if not triton_available():
            raise ValueError("scan backend 'triton' needs the triton package (pip install 'recurl[triton]')")
        if device is not None and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"scan backend 'triton' runs on CUDA devices, not {device.type} (on CPU only under TRITON_INTERPRET=1, "
                "slowly, for tests); use a CUDA device or scan backend 'auto'"
            )
    return backend


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The backend that runs for tensors like ``x``: ``"auto"`` is ``"triton"`` for CUDA tensors when Triton is
    installed and ``"torch"`` otherwise; an explicit name is checked and kept."""
    if check_backend(backend) == "auto":
        return "triton" if x.is_cuda and triton_available() else "torch"
    return backend


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
    backend = resolve_backend(backend, a)
    if backend == "reference":
        return linear_scan_reference(a, b, h0)
    if backend == "triton":
        from recurl.kernels.scan_triton import linear_scan_triton

        return linear_scan_triton(a, b, h0)
    return linear_scan_torch(a, b, h0)
