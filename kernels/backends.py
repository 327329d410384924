"""Backend names shared by every op, and which one runs: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"``."""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "reference", "torch", "triton")


def triton_available() -> bool:
    """Whether the Triton kernels can be imported. They are imported on first use rather than with this package,
    because Triton reads ``TRITON_INTERPRET`` when a kernel is defined: a test can set it first."""
    try:
        import recurl.kernels.triton_common  # noqa: F401
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
