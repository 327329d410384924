"""Learning benchmarks as sweeps of ``recurl.train`` runs, summarised by ``recurl.compare``.

Each (task, backbone, seed) is one ``python -m recurl.train`` process with one torch thread, ``jobs`` at a time, into
``out/<agent>/<task>/<backbone>_seed<seed>``; runs whose ``checkpoints/final.pt`` exists are not redone, so an
interrupted benchmark picks up where it stopped. The table is ``recurl.compare``'s: MMER (the maximum over training
of an update's mean episode return), final return, AUC, steps/s, per backbone and task, averaged over seeds.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_sweep(
    agent: str, tasks: list[str], memories: list[str], seeds: list[int], steps: int, out: Path, jobs: int,
    extra: list[str] = (),
) -> list[Path]:
    """Train every (task, backbone, seed) not yet finished; returns the run folders, one per task and backbone seed."""
    runs = [
        (task, memory, seed, out / agent / task / f"{memory}_seed{seed}")
        for task in tasks for memory in memories for seed in seeds
    ]

    def train(job) -> None:
        task, memory, seed, run_dir = job
        if (run_dir / "checkpoints" / "final.pt").exists():
            return
        command = [
            sys.executable, "-m", "recurl.train", f"agent={agent}", f"memory={memory}", "env=popgym",
            f"env.id={task}", f"seed={seed}", f"total_steps={steps}", "torch_threads=1", f"hydra.run.dir={run_dir}",
            *extra,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        status = "ok" if result.returncode == 0 else f"FAILED ({result.stderr.strip().splitlines()[-1:]})"
        print(f"{task} {memory} seed {seed}: {status}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(train, runs))
    return [out / agent / task for task in tasks]


def summarise(task_dirs: list[Path], plot: Path) -> None:
    """Print ``recurl.compare``'s table for the runs under ``task_dirs`` and save its plot to ``plot``."""
    subprocess.run([sys.executable, "-m", "recurl.compare", *map(str, task_dirs), "--out", str(plot)], check=True)
