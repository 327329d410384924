"""Scans over time, independent of RL: ``linear_scan`` (h_t = a_t h_{t-1} + b_t) and ``attention_scan`` (Aaren's
softmax-weighted running sums), each with a reference loop, a torch and a Triton backend; ``segmented_cummax``."""

from recurl.kernels.attention_scan import attention_scan
from recurl.kernels.linear_scan import BACKENDS, check_backend, linear_scan, resolve_backend
from recurl.kernels.segmented_max import segmented_cummax

__all__ = ["BACKENDS", "attention_scan", "check_backend", "linear_scan", "resolve_backend", "segmented_cummax"]
