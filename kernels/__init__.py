"""Scans over time, independent of RL: ``linear_scan`` and its backends, and ``segmented_cummax``."""

from recurl.kernels.linear_scan import BACKENDS, linear_scan, resolve_backend
from recurl.kernels.segmented_max import segmented_cummax

__all__ = ["BACKENDS", "linear_scan", "resolve_backend", "segmented_cummax"]
