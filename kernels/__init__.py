"""Scans over time, independent of RL: ``linear_scan`` and its backends."""

from recurl.kernels.linear_scan import BACKENDS, linear_scan

__all__ = ["BACKENDS", "linear_scan"]
