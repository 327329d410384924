"""The argparse type of the benches' --device: a device this machine has."""

from __future__ import annotations

import argparse


def available_device(name: str):
    """The torch device ``name`` (``auto``: CUDA if visible, else CPU), refused unless this machine has it."""
    from recurl.builder import resolve_device  # slow: only when a bench runs, not for --help

    try:
        return resolve_device(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
