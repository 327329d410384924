"""Files rewritten whole (checkpoints, metrics.csv cut back on resume, eval.csv, a resumed run's config): written to a
temporary file beside the target and renamed over it, so that a reader or a crash never meets one half-written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def replacing(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """A file opened for writing that replaces ``path`` when the block ends, and is removed if the block raises.

    Opened as any file is, so its permissions follow the umask as the run's other files do (``mkstemp`` would make
    it readable by its owner only, and teammates could not load a checkpoint). The process id in the temporary name
    keeps two writers of one path (two jobs of a sweep) off each other's temporary file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open(mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
