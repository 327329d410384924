"""Checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with ``torch.save`` and loaded with
``torch.load(weights_only=True)``, which refuses any other object (torch >= 2.6, as pyproject requires: earlier
versions could be tricked past it, CVE-2025-32434). It is written to a temporary file in the same folder and renamed
over the old one (``recurl.atomic_file``), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recurl.atomic_file import replacing

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, of another format, or made for another setup."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **payload}, f)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a recurl checkpoint ({type(error).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"checkpoint {path} has format {found!r}; this recurl reads format {FORMAT_VERSION}")
    return payload
