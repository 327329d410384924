"""The argparse types the benches' options share: a count, and a device this machine has."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give 1 or more")
    return value


def available_device(name: str):
    """The torch device ``name`` (``auto``: CUDA if visible, else CPU), refused unless this machine has it."""
    from recurl.builder import resolve_device  # slow: only when a bench runs, not for --help

    try:
        return resolve_device(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
