"""Learning benchmarks: one Hydra multirun of ``recurl.train`` over tasks x backbones x seeds, summarised by
``recurl.compare``.

The sweep runs through Hydra's joblib launcher (``pip install -e ".[sweep]"``), ``jobs`` runs at a time with one torch
thread each, into ``out/<agent>/``. The table is ``recurl.compare``'s: MMER (the maximum over training of an update's
mean episode return), final return, AUC and steps/s per task and backbone, averaged over seeds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from recurl.suite import grid_command


def run_sweep(
    agent: str, tasks: list[str], memories: list[str], seeds: list[int], steps: int, out: Path, jobs: int
) -> Path:
    """Train every (task, backbone, seed) as one Hydra multirun; returns the sweep folder."""
    sweep_dir = out / agent
    command = grid_command(
        sweep_dir, agent, tasks, memories, seeds, steps, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
        "torch_threads=1",
    )
    print(" ".join(command[1:]), file=sys.stderr, flush=True)
    _run(command, "the learning sweep (python -m recurl.train -m)")
    return sweep_dir


def summarise(sweep_dir: Path, plot: Path) -> None:
    """Print ``recurl.compare``'s table for the runs under ``sweep_dir`` and save its plot (and CSV) beside."""
    _run([sys.executable, "-m", "recurl.compare", str(sweep_dir), "--out", str(plot)], "python -m recurl.compare")


class RunFailed(Exception):
    """A training run or command of an agent bench failed; its own messages are above."""


def _run(command: list[str], what: str) -> None:
    code = subprocess.run(command, check=False).returncode
    if code:
        raise RunFailed(f"{what} failed with exit code {code}; its messages above say why")
