"""The leaderboard of a suite of runs: tasks x memories, scored by max-mean episode return (MMER, after POPGym).

Its rows are ``recurl.compare``'s groups, one per task x memory. A memory is a configuration: the backbone, with the
agent and any other key that differs between the runs of a task (``mingru total_steps=512``), labelled alike on every
task, so it is compared across all the tasks it ran on. Each row has
- ``mmer``: the mean over seeds of each run's MMER (max-mean episode return, ``run_groups.mmer``), and ``mmer_low``,
  ``mmer_high``: its 95% percentile-bootstrap confidence interval over seeds (``run_groups.bootstrap_band``; with one
  seed the interval is the value itself);
- ``final_return``: the mean over seeds of each run's final return (``run_groups.final_return``);
- ``return_used``: the return these are of: ``eval_return`` for runs that evaluate, else ``episode_return``
  (``mixed`` when the seeds differ); see ``recurl.compare``;
- ``suite_mean``: the memory's mean over tasks of its ``mmer``, and ``rank`` (1 = the best suite mean; ties share a
  rank). A memory without a row for every task has the mean of the tasks it has and no rank: that mean is not
  comparable with the others.

``write_leaderboard`` writes them to a CSV (one row per task x memory) and a heatmap (tasks x memories in rank order,
MMER, with the suite means as a last row), and returns them as markdown tables (per task, then per memory) for
printing. It is not a command: ``python -m recurl.compare DIR [DIR ...] --leaderboard`` draws it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from recurl.atomic_file import write_csv
from recurl.run_groups import (
    CompareError,
    Run,
    bootstrap_band,
    common_grid,
    final_return,
    load_groups,
    mmer,
    return_used,
    seeds_text,
)

COLUMNS = [
    "task", "memory", "seeds", "mmer", "mmer_low", "mmer_high", "final_return", "return_used", "suite_mean", "rank",
]
DESCRIBED = {"eval_return": "evaluation episodes (eval_return)", "episode_return": "training episodes (episode_return)"}


def short_task(env_id: str) -> str:
    """``popgym-RepeatFirstEasy-v0`` -> ``RepeatFirstEasy``; other ids as they are."""
    return env_id.removeprefix("popgym-").removesuffix("-v0") if env_id.startswith("popgym-") else env_id


def task_row(task: str, memory: str, runs: list[Run]) -> dict[str, Any]:
    try:  # seeds that share no steps are refused, as compare refuses them
        common_grid([(run.steps, run.returns) for run in runs])
    except CompareError as error:
        raise CompareError(f"{memory} on {task}: {error}; rerun or leave out the seed that stopped early") from None
    scores = np.array([[mmer(run.returns)] for run in runs])  # [seeds, 1]: one point for bootstrap_band
    low, high = bootstrap_band(scores)
    return {
        "task": task,
        "memory": memory,
        "seeds": len(runs),
        "mmer": float(scores.mean()),
        "mmer_low": float(low[0]),
        "mmer_high": float(high[0]),
        "final_return": float(np.mean([final_return(run.returns) for run in runs])),
        "return_used": return_used(runs),
    }


def rank_memories(rows: list[dict[str, Any]]) -> None:
    """Add each row's memory's ``suite_mean`` and ``rank`` (None for a memory that lacks a task)."""
    tasks = {row["task"] for row in rows}
    scores: dict[str, list[float]] = {}
    for row in rows:
        scores.setdefault(row["memory"], []).append(row["mmer"])
    # fsum: a correctly rounded sum, so equal scores in another task order give equal means (and share a rank)
    means = {memory: math.fsum(values) / len(values) for memory, values in scores.items()}
    complete = {memory: means[memory] for memory, values in scores.items() if len(values) == len(tasks)}
    for row in rows:
        row["suite_mean"] = means[row["memory"]]
        mean = complete.get(row["memory"])
        row["rank"] = None if mean is None else 1 + sum(other > mean for other in complete.values())


def leaderboard_rows(dirs: list[Path]) -> list[dict[str, Any]]:
    """The leaderboard of the runs under ``dirs``, by task, then rank; ``CompareError`` if they cannot be compared."""
    rows = [task_row(task, memory, runs) for (task, memory), runs in load_groups(dirs).items()]
    rank_memories(rows)
    return sorted(rows, key=lambda row: (row["task"], _standing(row)))


def _standing(row: dict[str, Any]) -> tuple[float, float, str]:
    """Sort key: ranked memories by rank, then the others by suite mean."""
    return (math.inf if row["rank"] is None else row["rank"], -row["suite_mean"], row["memory"])


def memory_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per memory, in rank order."""
    first: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=_standing):
        first.setdefault(row["memory"], row)
    return list(first.values())


# ---- output -------------------------------------------------------------------------------------------------------
def format_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | memory | seeds | MMER | 95% CI | final return |", "|---|---|---:|---:|---|---:|"]
    for row in rows:
        lines.append(
            f"| {short_task(row['task'])} | {row['memory']} | {row['seeds']} | {row['mmer']:.3f} "
            f"| [{row['mmer_low']:.3f}, {row['mmer_high']:.3f}] | {row['final_return']:.3f} |"
        )
    tasks = len({row["task"] for row in rows})
    lines += ["", "| rank | memory | suite mean MMER | tasks |", "|---:|---|---:|---:|"]
    for row in memory_order(rows):
        count = sum(other["memory"] == row["memory"] for other in rows)
        rank = "–" if row["rank"] is None else row["rank"]
        lines.append(f"| {rank} | {row['memory']} | {row['suite_mean']:.3f} | {count}/{tasks} |")
    lines += ["", returns_note(rows)]
    return "\n".join(lines)


def returns_note(rows: list[dict[str, Any]]) -> str:
    """One line saying which return the scores are of."""
    used = {row["return_used"] for row in rows}
    if len(used) == 1 and "mixed" not in used:
        return f"MMER and final return of {DESCRIBED[used.pop()]}; 95% CI: percentile bootstrap over seeds."
    counts = ", ".join(f"{name} in {sum(r['return_used'] == name for r in rows)}" for name in sorted(used))
    return (
        f"Rows differ in the return they score ({counts} of {len(rows)} rows; see return_used in the CSV): "
        "their MMERs are not comparable."
    )


def heatmap(rows: list[dict[str, Any]]) -> Figure:
    """Tasks (rows) x memories (columns, labelled and ordered by rank) coloured and labelled by MMER; the last row:
    suite means."""
    standings = memory_order(rows)
    memories = [row["memory"] for row in standings]
    tasks = sorted({row["task"] for row in rows})
    values = np.full((len(tasks) + 1, len(memories)), np.nan)
    for row in rows:
        values[tasks.index(row["task"]), memories.index(row["memory"])] = row["mmer"]
        values[-1, memories.index(row["memory"])] = row["suite_mean"]
    figure = Figure(figsize=(2.5 + 1.1 * len(memories), 1.5 + 0.45 * len(values)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    middle = np.nanmin(values) + (np.nanmax(values) - np.nanmin(values)) / 2
    for (i, j), value in np.ndenumerate(values):
        text = "–" if np.isnan(value) else f"{value:.2f}"
        dark = not np.isnan(value) and value <= middle
        ax.text(j, i, text, ha="center", va="center", fontsize="small", color="white" if dark else "black")
    ax.axhline(len(tasks) - 0.5, color="white", linewidth=3)
    counts = np.sum(~np.isnan(values[:-1]), axis=0)
    names = [
        f"{row['memory']} ({count}/{len(tasks)} tasks)" if row["rank"] is None else f"{row['rank']}. {row['memory']}"
        for row, count in zip(standings, counts)
    ]
    ax.set_xticks(range(len(memories)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(values)), [short_task(task) for task in tasks] + ["suite mean"])
    seeds = {row["seeds"] for row in rows}
    ax.set_title(f"MMER, mean over {seeds_text(seeds.pop()) if len(seeds) == 1 else 'seeds'}")
    figure.colorbar(image, ax=ax, label=f"MMER ({'/'.join(sorted({row['return_used'] for row in rows}))})")
    return figure


def write_leaderboard(dirs: list[Path], out: Path) -> str:
    """Write the leaderboard of the runs under ``dirs`` to ``out`` (a heatmap) and beside it (``.csv``); return it
    as markdown. ``CompareError`` when the runs cannot be compared."""
    rows = leaderboard_rows(dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out.with_suffix(".csv"), COLUMNS, rows)
    heatmap(rows).savefig(out, dpi=120)
    return format_markdown(rows)


if __name__ == "__main__":
    print("recurl.leaderboard: error: not a command; run python -m recurl.compare DIR [DIR ...] --leaderboard",
          file=sys.stderr)
    sys.exit(2)
