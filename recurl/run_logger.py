"""Where a run's numbers and lines go: ``metrics.csv`` (one row per update), TensorBoard events (scalars, and the
config as hparams with the final return), the tracker chosen with ``logger=``, a progress bar, and ``train.log``."""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from recurl.atomic_file import replacing
from recurl.config_keys import flatten
from recurl.trackers import Tracker

#: Columns a resumed run may add to or leave out of a run's metrics.csv (evaluation turned on or off).
OPTIONAL_COLUMNS = ("eval_return", "eval_length")
#: The final return is the mean return of this many of the last episodes (fewer when fewer ended).
FINAL_EPISODES = 100


class RunLogger:
    def __init__(
        self, run_dir: Path, total_steps: int, start_step: int = 0, *, tracker: Tracker | None = None,
        config: dict | None = None, returns_record: dict[str, Any] | None = None,
    ):
        """``returns_record``: a resumed run's ``returns_record()`` as its checkpoint kept it; ``None`` when the
        checkpoint predates them, and the final return then covers the episodes since this resume only."""
        self.path = run_dir / "metrics.csv"
        self.columns: list[str] | None = None
        # A resumed run's wall time goes on from its last row (the checkpoint's: metrics.csv was cut back to it).
        self.wall_time_before = 0.0
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
            self.columns = list(reader.fieldnames)
            if start_step and rows:
                self.wall_time_before = float(rows[-1]["wall_time"])
        # A resumed run writes again from its checkpoint's step: TensorBoard drops the events a crash left past it.
        purge = start_step + 1 if start_step else None
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        self.tracker, self.config = tracker, config
        self.total_steps = total_steps
        self.progress = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
        self.started, self.last_step = time.perf_counter(), start_step
        self.start_step = start_step
        record = returns_record or {"since": start_step, "returns": []}
        #: The step from which ``recent_returns`` covers the run's episodes: 0, unless a resume lost the earlier ones.
        self.returns_since: int = record["since"]
        self.recent_returns: deque[float] = deque(record["returns"], maxlen=FINAL_EPISODES)

    def log(
        self, step: int, metrics: dict[str, float], episodes: list[tuple[float, int]],
        evaluation: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """Append one row: ``episode_return``/``episode_length`` are means over ``episodes`` (NaN when none ended);
        ``evaluation`` (a dict, also empty) adds the ``eval_*`` columns, NaN where it lacks them."""
        elapsed = time.perf_counter() - self.started
        returns = [r for r, _ in episodes]
        self.recent_returns.extend(returns)
        row = {
            "step": step,
            "episode_return": float(np.mean(returns)) if returns else math.nan,
            "episode_length": float(np.mean([n for _, n in episodes])) if episodes else math.nan,
            "episodes": len(episodes),
            "sps": (step - self.start_step) / max(elapsed, 1e-9),
            "wall_time": self.wall_time_before + elapsed,
            **({key: evaluation.get(key, math.nan) for key in OPTIONAL_COLUMNS} if evaluation is not None else {}),
            **{key: metrics[key] for key in sorted(metrics)},
        }
        self._append(row)
        for key, value in row.items():
            if key != "step" and not (isinstance(value, float) and math.isnan(value)):
                self.tensorboard.add_scalar(key, value, step)
        if self.tracker is not None:
            self.tracker.log(step, row)
        self._advance(step, row)
        return row

    def _advance(self, step: int, row: dict[str, float]) -> None:
        if self.last_step == self.start_step and step > self.start_step:
            # Updates take a fixed number of env steps and the last one may pass total_steps: the bar ends where the
            # run will.
            per_update = step - self.start_step
            updates = math.ceil((self.total_steps - self.start_step) / per_update)
            self.progress.total = self.start_step + max(updates, 1) * per_update
        self.progress.update(step - self.last_step)
        self.last_step = step
        recent = self.final_return
        postfix = {"ret": "-" if math.isnan(recent) else f"{recent:.3f}"}
        if not math.isnan(row.get("eval_return", math.nan)):
            postfix["eval"] = f"{row['eval_return']:.3f}"
        self.progress.set_postfix(**postfix, sps=f"{row['sps']:.0f}", refresh=False)

    def returns_record(self) -> dict[str, Any]:
        """What a checkpoint keeps for the final return of the run it resumes: the last episode returns, and the
        step from which they cover the run."""
        return {"since": self.returns_since, "returns": list(self.recent_returns)}

    @property
    def final_return(self) -> float:
        """The mean return of the run's last ``FINAL_EPISODES`` episodes (NaN before one ended)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else math.nan

    def summary(self, status: str, run_dir: Path) -> str:
        """The run's last line: what happened, where, how far, how well, how long."""
        count = len(self.recent_returns)
        if count:
            which = f"mean of the last {count} episodes" if count == FINAL_EPISODES else f"mean of all {count} episodes"
            which = which if count > 1 else "its only episode"
            since = f" since the resume at step {self.returns_since:,}" if self.returns_since else ""
            result = f"final return {self.final_return:.3f} ({which}{since})"
        else:
            result = "no episode ended"
        wall = duration(time.perf_counter() - self.started)
        return f"{status}: {run_dir}, {self.last_step:,} env steps, {result}, {wall}"

    def _append(self, row: dict[str, float]) -> None:
        new_file = self.columns is None
        if new_file:
            self.columns = list(row)
        elif list(row) != self.columns:
            changed = set(row) ^ set(self.columns)
            if not changed <= set(OPTIONAL_COLUMNS):
                raise ValueError(f"{self.path}: metrics {list(row)} do not match the file's columns {self.columns}")
            if set(row) - set(self.columns):
                self._add_columns(list(row))
            row = {key: row.get(key, math.nan) for key in self.columns}
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def _add_columns(self, columns: list[str]) -> None:
        """Rewrite the file with ``columns`` (a resumed run that evaluates where the run did not): NaN in old rows."""
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        with replacing(self.path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="nan")
            writer.writeheader()
            writer.writerows(rows)
        self.columns = columns

    def close(self, finished: bool = True) -> None:
        """End the bar, record the config with the final return as TensorBoard hparams, and end the tracker run."""
        self.progress.close()
        if self.config is not None:
            hparam_values = {key: _hparam(value) for key, value in flatten(self.config).items()}
            for summary in hparams(hparam_values, {"final_return": self.final_return}):
                self.tensorboard.file_writer.add_summary(summary)
            self.tensorboard.add_scalar("final_return", self.final_return, self.last_step)
        self.tensorboard.close()
        if self.tracker is not None:
            self.tracker.close(finished, self.final_return)


def _hparam(value):
    """A config value as TensorBoard's hparams take it: a number, a bool or a string."""
    return value if isinstance(value, (bool, int, float, str)) else "null" if value is None else str(value)


def duration(seconds: float) -> str:
    """``42.3 s``, ``3 min 07 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _TqdmStderr(logging.Handler):
    """Writes each line to stderr above the progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


@contextmanager
def run_log(run_dir: Path) -> Iterator[logging.Logger]:
    """The logger of a run's own lines (stops, evaluations, videos, the summary): each goes to stderr as
    ``recurl.train: ...`` and, with its time, to ``RUN/train.log`` (appended to on resume)."""
    log = logging.getLogger("recurl.run")
    log.setLevel(logging.INFO)
    log.propagate = False
    console = _TqdmStderr()
    console.setFormatter(logging.Formatter("recurl.train: %(message)s"))
    file = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    for handler in (console, file):
        log.addHandler(handler)
    try:
        yield log
    finally:
        for handler in (console, file):
            log.removeHandler(handler)
            handler.close()
