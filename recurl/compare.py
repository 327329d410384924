"""``python -m recurl.compare DIR [DIR ...] [--out FILE.png] [--leaderboard]``: reward curves and a score table
across runs, or (``--leaderboard``) ``recurl.leaderboard``'s table of tasks x memories.

Each DIR is a run folder (``metrics.csv`` and ``.hydra/config.yaml``) or any folder holding run folders at any depth,
such as a Hydra multirun. Without ``--out`` the plot is ``compare.png`` (``leaderboard.png`` with ``--leaderboard``)
in the DIR, or in the folder that holds all the DIRs; the table goes beside it (``.csv``) and to stdout. An ``--out``
that is a folder, inside a file, or not of an image format matplotlib writes (``.png``, ``.pdf``, ``.svg``, ...) is
refused before any run is read.
``recurl.run_groups`` says how runs are found, grouped and scored; a set of runs that cannot be compared stops the
command with one line (exit code 2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from recurl.atomic_file import write_csv
from recurl.command_line import Parser, file_on_path
from recurl.run_groups import (
    CompareError,
    Run,
    bootstrap_band,
    common_grid,
    final_return,
    interpolate,
    load_groups,
    mmer,
    normalised_auc,
    return_used,
    seeds_text,
)

COLUMNS = ["env", "group", "seeds", "steps", "final_return", "mmer", "auc", "wall_time_s", "sps", "return_used"]
FORMATS = {"steps": "{:.0f}", "wall_time_s": "{:.1f}", "sps": "{:.0f}"}  # returns: "{:.3f}"


def default_out(dirs: list[Path], name: str) -> Path:
    """``name`` in the folder given, or in the deepest folder holding all ``dirs``."""
    return Path(os.path.commonpath([folder.resolve() for folder in dirs])) / name


def check_out(out: Path) -> None:
    """``CompareError`` unless ``out`` can be written as an image and its table beside it: run before any run is read,
    so that a mistake leaves no plot without its table."""
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if out.is_dir() or out.suffix.lower()[1:] not in formats:
        what = "a folder" if out.is_dir() else "not an image file"
        raise CompareError(f"--out {out} is {what}; name a file ending in .{', .'.join(formats)}")
    holder = file_on_path(out.parent)
    if holder is not None:
        raise CompareError(f"--out {out} is inside {holder}, which is a file; choose another --out")
    table = out.with_suffix(".csv")
    if table.is_dir():
        raise CompareError(f"--out {out}: its table {table} would replace a folder; choose another --out")


def summarize(env: str, label: str, runs: list[Run]) -> dict[str, Any]:
    """One table row: the mean over seeds of each run's statistics."""
    return {
        "env": env,
        "group": label,
        "seeds": len(runs),
        "steps": float(np.mean([r.last_step for r in runs])),
        "final_return": float(np.mean([final_return(r.returns) for r in runs])),
        "mmer": float(np.mean([mmer(r.returns) for r in runs])),
        "auc": float(np.mean([normalised_auc(r.steps, r.returns) for r in runs])),
        "wall_time_s": float(np.mean([r.wall_time for r in runs])),
        "sps": float(np.mean([r.sps for r in runs])),
        "return_used": return_used(runs),
    }


# ---- output -------------------------------------------------------------------------------------------------------
def figure_of(groups: dict[tuple[str, str], list[Run]]) -> Figure:
    """One panel per env: per group, the mean curve over seeds and its 95% bootstrap band."""
    envs = sorted({env for env, _ in groups})
    labels = sorted({label for _, label in groups})
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    columns = min(3, len(envs))
    rows = math.ceil(len(envs) / columns)
    figure = Figure(figsize=(5.5 * columns, 4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, env in zip(axes, envs):
        for (group_env, label), runs in groups.items():
            if group_env != env:
                continue
            curves = [(r.steps, r.returns) for r in runs]
            try:
                grid = common_grid(curves)
            except CompareError as error:
                raise CompareError(f"cannot average {label} on {env}: {error}") from None
            values = interpolate(curves, grid)
            low, high = bootstrap_band(values)
            ax.plot(
                grid, values.mean(axis=0), color=colors[label], label=f"{label} ({seeds_text(len(runs))})",
                marker="o" if len(grid) == 1 else None,
            )
            ax.fill_between(grid, low, high, color=colors[label], alpha=0.25, linewidth=0)
        used = return_used([run for (group_env, _), runs in groups.items() if group_env == env for run in runs])
        ax.set(title=env, xlabel="env steps", ylabel=used.replace("_", " ") if used != "mixed" else "return (mixed)")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, not 200000 (long labels overlap)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(envs) :]:
        ax.set_visible(False)
    return figure


def plot(groups: dict[tuple[str, str], list[Run]], out: Path) -> None:
    figure = figure_of(groups)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(column: str, value: Any) -> str:
        return FORMATS.get(column, "{:.3f}").format(value) if isinstance(value, float) else str(value)

    cells = [COLUMNS] + [[cell(c, row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells)
    return "\n".join(lines)


def compare(dirs: list[Path], out: Path) -> list[dict[str, Any]]:
    """Plot to ``out``, write the table beside it (``.csv``) and return its rows; ``CompareError`` if impossible."""
    groups = load_groups(dirs)
    plot(groups, out)
    rows = [summarize(env, label, members) for (env, label), members in groups.items()]
    write_csv(out.with_suffix(".csv"), COLUMNS, rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m recurl.compare",
        description="Reward curves (mean over seeds, 95% bootstrap band) and a score table, runs grouped by backbone; "
        "or, with --leaderboard, the leaderboard of tasks x memories (MMER, 95% bootstrap CI, suite mean, rank).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run folders or folders holding runs")
    parser.add_argument(
        "--out", type=Path, metavar="FILE.png",
        help="the plot (or .pdf, .svg); the table goes beside it as .csv. Default: compare.png (leaderboard.png with "
        "--leaderboard) in DIR, or in the folder holding every DIR",
    )
    parser.add_argument(
        "--leaderboard", action="store_true",
        help="draw recurl.suite's leaderboard (a heatmap, a CSV and markdown tables) instead of reward curves",
    )
    args = parser.parse_args(argv)
    out = args.out or default_out(args.dirs, "leaderboard.png" if args.leaderboard else "compare.png")
    try:
        check_out(out)
        if args.leaderboard:
            from recurl.leaderboard import write_leaderboard  # recurl.leaderboard builds on this module

            print(write_leaderboard(args.dirs, out))
        else:
            print(format_table(compare(args.dirs, out)))
    except (CompareError, OSError) as error:  # OSError: an --out that cannot be written, a run that cannot be read
        parser.refuse(str(error))
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
