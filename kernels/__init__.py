"""Scans over time, independent of RL, one sub-package per op (a reference loop, a torch and a Triton version side by
side): ``linear_scan`` (h_t = a_t h_{t-1} + b_t), ``attention_scan`` (Aaren's softmax-weighted running sums, with its
``segmented_cummax``), and the minGRU/minLSTM gates fused with the scan (``mingru_scan_triton``,
``minlstm_scan_triton``). Triton itself is imported on first use of a Triton backend only."""

from recurl.kernels.attention_scan import attention_scan
from recurl.kernels.attention_scan.torch_scan import segmented_cummax
from recurl.kernels.backends import BACKENDS, check_backend, resolve_backend
from recurl.kernels.gated_scan import mingru_scan_triton, minlstm_scan_triton
from recurl.kernels.linear_scan import linear_scan

__all__ = [
    "BACKENDS", "attention_scan", "check_backend", "linear_scan", "mingru_scan_triton", "minlstm_scan_triton",
    "resolve_backend", "segmented_cummax",
]
