"""What every ``python -m recurl.X`` command line shares: a mistake in it is one line, ``recurl.X: error: ...``,
with exit code 2, argparse's own (an unknown option, a value of the wrong type) included, which argparse would print
after the whole usage; and the argparse types they share (a count, a seed, a folder to write in)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose mistakes are one line; ``refuse`` reports the command's own checks the same
    way."""

    def refuse(self, message: str, code: int = 2) -> NoReturn:
        self.exit(code, f"{self.prog.removeprefix('python -m ')}: error: {message}\n")

    def error(self, message: str) -> NoReturn:
        self.refuse(f"{message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """An argparse type: a count of 1 or more."""
    value = _integer(text, "give 1 or more")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; give 1 or more")
    return value


#: The largest seed: numpy's, which recurl.train seeds.
MAX_SEED = 2**32 - 1


def seed_value(text: str) -> int:
    """An argparse type: a seed, from 0 to ``MAX_SEED``."""
    value = _integer(text, "give 0 or more")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is past 2**32 - 1; give a seed from 0 to {MAX_SEED}")
    return value


def folder(text: str) -> Path:
    """An argparse type: a folder to write in, made if missing; not empty (``Path("")`` is the working folder) and
    not a file, nor inside one."""
    if not text:
        raise argparse.ArgumentTypeError("empty; give a folder (it is made if missing), e.g. runs/suite")
    path = Path(text)
    file = file_on_path(path)
    if file is not None:
        raise argparse.ArgumentTypeError(f"{file} is a file, not a folder; give a folder (it is made if missing)")
    return path


def file_on_path(folder: Path) -> Path | None:
    """The file that ``folder`` is, or lies inside, if any: where no folder can be made."""
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def _integer(text: str, fix: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {fix}") from None
