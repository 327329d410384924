"""Runs on disk as data: find run folders, load their config and curve, group them, and score a curve.

Grouping rule. Two runs are in the same group when their configs agree on every key except those that do not change
what is learned: the *bookkeeping* keys (``BOOKKEEPING``: seed, device, threads, checkpointing, vectorisation,
resuming, videos) and the *recording* keys (``RECORDING``: evaluation, which leaves the training rows as they are, and
the tracker, ``logger.*``). So a run's group is its env id, agent, backbone, and every other key that differs between
the runs of one env: a sweep over ``memory.hidden_size`` gives one group per size, runs to different step budgets
(``total_steps``) one group per budget. A key that only some runs have (a backbone's own option) differs only if those
runs disagree on it. Groups never span envs: there is one plot panel per env. A group's label shows the backbone
always, and the agent and the other keys when they differ between the runs of any one env; such a key is shown on
every env, so a configuration has the same label (the same colour, the same leaderboard row) on every env. A key
that differs only from env to env (``env.suite``, a task's own budget) is part of the task, not of the label.

The runs cannot be compared, and the command stops with one line (exit code 2), when:

- no run is found under a DIR;
- a run's config lacks ``seed``, ``env.id``, ``agent.name`` or ``memory.name`` (not a recurl run);
- a run has no finished episode (``metrics.csv`` empty, or every ``episode_return`` NaN);
- two runs of one group have the same seed: they are not independent seeds (the same run twice);
- the runs of a group do not overlap in env steps, so there is no step at which to average them.

Statistics, per run, are of its *return used*: ``eval_return`` (the periodic evaluation's mean episode return, NaN in
rows without an evaluation) where the run has a number in that column, else ``episode_return`` (the mean return of the
training episodes that ended in the row's update, NaN when none did); the table says which (``return_used``: either
name, or ``mixed`` when the seeds of a group differ). They are taken over the rows where that return is a number: *final
return* is the mean of the last 10% of those rows (at least one); *MMER* the maximum over training of the row's mean
episode return (POPGym's score takes the maximum of a mean over the last 100 episodes instead: lower and less noisy
where few episodes end per update; BENCHMARKS.md compares the two); *AUC* the area under return-vs-steps (trapezoids)
divided by the steps it spans, i.e. the curve's average height. Wall time and steps/s are those of the run's last row.
The table reports the mean over a group's seeds. The plot shows, per group, the mean curve over seeds after
interpolating each seed onto a common grid of ``GRID_POINTS`` steps spanning the steps all seeds cover, and a 95%
percentile-bootstrap band: seeds are resampled with replacement ``BOOTSTRAP_RESAMPLES`` times (fixed RNG seed) and the
band holds the middle 95% of the resampled means at each step. With one seed the band is the curve itself.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from recurl.config_keys import flatten
from recurl.envs import resolve_env_id
from recurl.resume import recorded_config

BOOKKEEPING = frozenset(
    {"seed", "device", "torch_threads", "checkpoint_every", "env.vectorization", "resume", "existing", "video"}
)
#: Keys that change what a run records, not what it learns, besides every ``logger.*`` key (``learning_keys``).
RECORDING = frozenset({"eval_every", "eval_episodes"})
REQUIRED = ("seed", "env.id", "agent.name", "memory.name")
FINAL_FRACTION = 0.1
GRID_POINTS = 200
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
#: The returns a run's statistics can be of, preferred first: a run's evaluation where it has one.
RETURNS = ("eval_return", "episode_return")


class CompareError(ValueError):
    """Runs that cannot be read or grouped; the message names them."""


# ---- statistics (one run's curve: steps and returns of the rows where an episode finished) -----------------------
def finished_rows(steps: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows where an episode finished, or an evaluation ran: ``returns`` (``episode_return`` or
    ``eval_return``) is not NaN."""
    keep = ~np.isnan(returns)
    return steps[keep], returns[keep]


def final_return(returns: np.ndarray, fraction: float = FINAL_FRACTION) -> float:
    """Mean of the last ``fraction`` of the rows (rounded up, at least one)."""
    return float(np.mean(returns[-max(1, math.ceil(fraction * len(returns))) :]))


def mmer(returns: np.ndarray) -> float:
    """Max-mean episode return: the best row, each row being the mean return of the episodes that ended in it."""
    return float(np.max(returns))


def normalised_auc(steps: np.ndarray, returns: np.ndarray) -> float:
    """Area under the return curve divided by the steps it spans: the curve's average height."""
    if len(steps) == 1 or steps[-1] == steps[0]:
        return float(np.mean(returns))
    return float(np.trapezoid(returns, steps) / (steps[-1] - steps[0]))


def common_grid(curves: list[tuple[np.ndarray, np.ndarray]], points: int = GRID_POINTS) -> np.ndarray:
    """``points`` steps from the latest first step to the earliest last step of ``curves``: where all have data."""
    start, end = max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves)
    if start > end:
        raise CompareError(f"curves do not overlap in steps (one starts at {start:g}, another ends at {end:g})")
    return np.linspace(start, end, points if end > start else 1)


def interpolate(curves: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """``[len(curves), len(grid)]``: each curve linearly interpolated at the grid's steps."""
    return np.stack([np.interp(grid, steps, returns) for steps, returns in curves])


def bootstrap_band(
    values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap confidence band of the mean over rows (seeds) of ``values`` ``[seeds, points]``."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[picks].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


# ---- runs ---------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened: "memory.name" -> "mingru"
    steps: np.ndarray  # of the rows where an episode finished
    returns: np.ndarray
    return_used: str  # the metrics.csv column of ``returns``: one of RETURNS
    last_step: float
    wall_time: float
    sps: float


def find_runs(dirs: list[Path]) -> list[Path]:
    """Run folders given or under ``dirs``, each once, in path order."""
    found: set[Path] = set()
    for folder in dirs:
        if not folder.is_dir():
            raise CompareError(f"{folder} is not a folder")
        metrics = folder.rglob("metrics.csv")
        runs = {p.parent.resolve() for p in metrics if (p.parent / ".hydra" / "config.yaml").is_file()}
        if not runs:
            raise CompareError(f"no runs under {folder} (a run is a folder with metrics.csv and .hydra/config.yaml)")
        found |= runs
    return sorted(found)


def load_run(path: Path) -> Run:
    config_file = recorded_config(path)
    try:
        tree = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    except yaml.YAMLError:
        raise CompareError(f"{config_file} is not valid YAML; repair it or leave its run out of the DIRs") from None
    if not isinstance(tree, dict):
        raise CompareError(f"{config_file} holds a {type(tree).__name__}, not a config; leave its run out of the DIRs")
    config = {key: tuple(value) if isinstance(value, list) else value for key, value in flatten(tree).items()}
    missing = [key for key in REQUIRED if key not in config]
    if missing:
        raise CompareError(f"cannot group {path}: its config has no {', '.join(missing)} (not a recurl run?)")
    if config.get("env.suite") == "popgym":  # one env however spelled: RepeatFirstEasy is popgym-RepeatFirstEasy-v0
        try:
            config["env.id"] = resolve_env_id("popgym", str(config["env.id"]))
        except ValueError:
            pass  # an id this popgym does not know is still a name to group by
    columns = read_metrics(path / "metrics.csv", optional=RETURNS[:-1])
    used = next((name for name in RETURNS if name in columns and not np.all(np.isnan(columns[name]))), RETURNS[-1])
    steps, returns = finished_rows(columns["step"], columns[used])
    return Run(
        path, config, steps, returns, used,
        last_step=float(columns["step"][-1]) if len(columns["step"]) else math.nan,
        wall_time=float(columns["wall_time"][-1]) if len(columns["step"]) else math.nan,
        sps=float(columns["sps"][-1]) if len(columns["step"]) else math.nan,
    )


def read_metrics(
    path: Path, names: tuple[str, ...] = ("step", "episode_return", "wall_time", "sps"), optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """The columns ``names``, and those of ``optional`` that it has, of a metrics.csv as float arrays (empty cells are
    NaN)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [name for name in names if name not in (reader.fieldnames or [])]
        if missing:
            raise CompareError(f"{path} lacks the column(s) {', '.join(missing)}")
        names += tuple(name for name in optional if name in reader.fieldnames)
        rows = list(reader)
    try:  # a cell cut short by a crash mid-write is missing (None, NaN) or not a number (refused)
        return {name: np.array([float(row[name] or "nan") for row in rows], dtype=np.float64) for name in names}
    except ValueError as error:
        raise CompareError(f"{path}: {error}") from None


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """``{(env id, label): runs}`` by the grouping rule of the module docstring."""
    by_env: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_env[str(run.config["env.id"])].append(run)
    shown = label_keys(list(by_env.values()))
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(str(run.config["env.id"]), label_of(run, shown))].append(run)
    for (env, label), members in groups.items():
        seeds: dict[Any, list[Path]] = defaultdict(list)
        for run in members:
            seeds[run.config["seed"]].append(run.path)
        for seed, paths in seeds.items():
            if len(paths) > 1:
                raise CompareError(
                    f"cannot group {' and '.join(map(str, paths))}: same experiment ({label} on {env}) with the "
                    f"same seed {seed}; pass only one of them"
                )
    return dict(sorted(groups.items()))


def learning_keys(config: dict[str, Any]) -> set[str]:
    """The keys of ``config`` that may change what is learned: all but bookkeeping and recording."""
    return {key for key in config if key not in BOOKKEEPING | RECORDING and not key.startswith("logger.")}


def label_keys(runs_by_env: list[list[Run]]) -> list[str]:
    """The keys labels show: the backbone, then the agent and any other key when it differs between the runs of one
    env. A key that only some runs have (a backbone's own option, such as Aaren's ``memory.num_heads``) differs only
    if it takes two values among those runs."""
    keys = set().union(*(learning_keys(run.config) for runs in runs_by_env for run in runs))
    varying = sorted(
        key for key in keys
        if any(len({repr(run.config[key]) for run in runs if key in run.config}) > 1 for runs in runs_by_env)
    )
    names = [key for key in ("agent.name", "memory.name") if key == "memory.name" or key in varying]
    return names + [key for key in varying if key not in names]


def label_of(run: Run, shown: list[str]) -> str:
    """``run``'s values of the keys ``shown`` that it has: names as they are, other keys as ``key=value``."""
    return " ".join(
        str(run.config[k]) if k in ("agent.name", "memory.name") else f"{k}={run.config[k]}"
        for k in shown if k in run.config
    )


def load_groups(dirs: list[Path]) -> dict[tuple[str, str], list[Run]]:
    """The runs under ``dirs``, grouped (``group_runs``); ``CompareError`` if one has no finished episode."""
    runs = [load_run(path) for path in find_runs(dirs)]
    empty = [str(run.path) for run in runs if len(run.returns) == 0]
    if empty:
        raise CompareError(
            f"{len(empty)} run(s) have no finished episode (empty metrics.csv or only NaN returns): {', '.join(empty)}"
        )
    return group_runs(runs)


def return_used(runs: list[Run]) -> str:
    """The return ``runs``' statistics are of: one of RETURNS, or ``mixed``."""
    used = {run.return_used for run in runs}
    return used.pop() if len(used) == 1 else "mixed"


def seeds_text(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"


