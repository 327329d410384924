"""Files rewritten whole (checkpoints, metrics.csv cut back on resume, eval.csv, a resumed run's config, tables, an
exported policy): written to a temporary file beside the target and renamed over it, so that a reader or a crash
never meets one half-written."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def replaced_by(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; it replaces ``path`` when the block ends, and is
    removed if the block raises. The process id in its name keeps two writers of one path (two jobs of a sweep) off
    each other's temporary file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # also where it could not be made (a parent that is a file)
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """A file opened for writing that replaces ``path`` when the block ends, and is removed if the block raises.

    Opened as any file is, so its permissions follow the umask as the run's other files do (``mkstemp`` would make
    it readable by its owner only, and teammates could not load a checkpoint).
    """
    with replaced_by(path) as tmp, tmp.open(mode, newline=newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` by a table of ``columns``, one line per row (a mapping by column name)."""
    with replacing(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
