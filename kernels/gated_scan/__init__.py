"""minGRU's and minLSTM's parallel form with the gates fused into the scan: one Triton kernel each way
(``triton_scan.py``, the cells' gates in ``triton_cells.py``).

There is no torch version or reference here: the reference is the cell's own ``gates`` (``recurl/memory/mingru.py``,
``minlstm.py``) followed by ``linear_scan``'s reference, and the torch path is the same with ``linear_scan``'s torch
backend; ``LinearRecurrentCell.forward`` picks between them. Triton is imported on first call, not with this package
(Triton reads ``TRITON_INTERPRET`` when a kernel is defined).
"""

from __future__ import annotations

import torch


def mingru_scan_triton(
    z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor | None = None, **config
) -> torch.Tensor:
    """minGRU's parallel form from its projection ``z`` [B, T, 2D] (update, candidate), ``resets`` [B, T] and ``h0``
    [B, D]; differentiable in ``z`` and ``h0``. ``config``: ``gated_scan``'s tuning knobs."""
    from recurl.kernels.gated_scan.triton_scan import gated_scan

    return gated_scan("mingru", z, resets, h0, **config)


def minlstm_scan_triton(
    z: torch.Tensor, resets: torch.Tensor, h0: torch.Tensor | None = None, **config
) -> torch.Tensor:
    """minLSTM's parallel form from its projection ``z`` [B, T, 3D] (forget, input, candidate), ``resets`` [B, T] and
    ``h0`` [B, D]; differentiable in ``z`` and ``h0``. ``config``: ``gated_scan``'s tuning knobs."""
    from recurl.kernels.gated_scan.triton_scan import gated_scan

    return gated_scan("minlstm", z, resets, h0, **config)
