"""Where a run's numbers go: ``metrics.csv`` (one row per update), TensorBoard events, and a progress bar."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

#: Columns every agent's metrics.csv starts with; the agent's own metrics follow in sorted order.
BASE_COLUMNS = ["step", "episode_return", "episode_length", "episodes", "sps", "wall_time"]


class RunLogger:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0):
        self.path = run_dir / "metrics.csv"
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f))
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        self.progress = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
        self.started, self.last_step = time.perf_counter(), start_step
        self.start_step = start_step

    def log(self, step: int, metrics: dict[str, float], episodes: list[tuple[float, int]]) -> dict[str, float]:
        """Append one row: ``episode_return``/``episode_length`` are means over ``episodes`` (NaN when none ended)."""
        elapsed = time.perf_counter() - self.started
        returns = [r for r, _ in episodes]
        row = {
            "step": step,
            "episode_return": float(np.mean(returns)) if returns else math.nan,
            "episode_length": float(np.mean([n for _, n in episodes])) if episodes else math.nan,
            "episodes": len(episodes),
            "sps": (step - self.start_step) / max(elapsed, 1e-9),
            "wall_time": elapsed,
            **{key: metrics[key] for key in sorted(metrics)},
        }
        self._append(row)
        for key, value in row.items():
            if key != "step" and not (isinstance(value, float) and math.isnan(value)):
                self.tensorboard.add_scalar(key, value, step)
        self.progress.update(step - self.last_step)
        self.last_step = step
        self.progress.set_postfix(ret=f"{row['episode_return']:.3f}", sps=f"{row['sps']:.0f}", refresh=False)
        return row

    def _append(self, row: dict[str, float]) -> None:
        new_file = self.columns is None
        if new_file:
            self.columns = list(row)
        elif list(row) != self.columns:
            raise ValueError(f"{self.path}: metrics {list(row)} do not match the file's columns {self.columns}")
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        self.progress.close()
        self.tensorboard.close()
