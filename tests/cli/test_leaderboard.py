"""recurl.leaderboard: hand-computed MMER means, bootstrap CIs, suite means and ranks from synthetic runs, with and
without an eval_return column; the CSV, heatmap and markdown; the same leaderboard from recurl.compare."""

import csv
import math
import subprocess
import sys

import pytest
from PIL import Image

from conftest import write_run
from recurl.compare import main
from recurl.leaderboard import format_markdown, leaderboard_rows, rank_memories, write_leaderboard
from recurl.run_groups import CompareError

NAN = math.nan
A, B = "popgym-RepeatPreviousEasy-v0", "popgym-RepeatFirstEasy-v0"


def write_suite(folder, eval_every_other=False):
    """Two tasks x (mingru, lstm) x 2 seeds, and aaren on task A only. MMER per seed: the max of the returns scored.

    mingru: A 0.4, 0.6 (mean 0.5); B 1.0, 0.8 (0.9) -> suite mean 0.7, rank 1
    lstm:   A 0.8, 0.8 (0.8);      B 0.2, 0.4 (0.3) -> suite mean 0.55, rank 2
    aaren:  A 0.9                                   -> suite mean 0.9 over 1 of 2 tasks: no rank
    With ``eval_every_other`` those are the eval_return of every other row, and the training returns are all 5.0."""
    scores = {("mingru", A): [0.4, 0.6], ("mingru", B): [1.0, 0.8], ("lstm", A): [0.8, 0.8], ("lstm", B): [0.2, 0.4],
              ("aaren", A): [0.9]}
    for (memory, task), seeds in scores.items():
        for seed, best in enumerate(seeds):
            returns = [best - 0.3, best, best - 0.1]  # final return: best - 0.1
            run = folder / f"{task}_{memory}_seed{seed}"
            if eval_every_other:
                evaluated = [returns[0], NAN, returns[1], NAN, returns[2]]
                write_run(run, [5.0] * 5, memory=memory, seed=seed, env_id=task, eval_returns=evaluated)
            else:
                write_run(run, returns, memory=memory, seed=seed, env_id=task)


@pytest.mark.parametrize("eval_every_other", [False, True])
def test_scores_ranks_and_files_by_hand(eval_every_other, tmp_path):
    write_suite(tmp_path / "runs", eval_every_other)
    used = "eval_return" if eval_every_other else "episode_return"
    text = write_leaderboard([tmp_path / "runs"], tmp_path / "runs" / "leaderboard.png")

    with (tmp_path / "runs" / "leaderboard.csv").open() as f:
        table = {(row["task"], row["memory"]): row for row in csv.DictReader(f)}
    expected = {  # mmer, CI low, CI high, suite mean, rank
        (A, "mingru"): (0.5, 0.4, 0.6, 0.7, "1"), (B, "mingru"): (0.9, 0.8, 1.0, 0.7, "1"),
        (A, "lstm"): (0.8, 0.8, 0.8, 0.55, "2"), (B, "lstm"): (0.3, 0.2, 0.4, 0.55, "2"),
        (A, "aaren"): (0.9, 0.9, 0.9, 0.9, ""),
    }
    assert set(table) == set(expected)
    for key, (score, low, high, suite_mean, rank) in expected.items():
        row = table[key]
        assert float(row["mmer"]) == pytest.approx(score)
        assert (float(row["mmer_low"]), float(row["mmer_high"])) == pytest.approx((low, high))
        assert float(row["final_return"]) == pytest.approx(score - 0.1)
        assert float(row["suite_mean"]) == pytest.approx(suite_mean) and row["rank"] == rank
        assert row["return_used"] == used
    assert table[(A, "mingru")]["seeds"] == "2" and table[(A, "aaren")]["seeds"] == "1"

    with Image.open(tmp_path / "runs" / "leaderboard.png") as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
    lines = text.splitlines()
    assert lines[2:7] == [  # by task (RepeatFirstEasy first), then rank; unranked last
        "| RepeatFirstEasy | mingru | 2 | 0.900 | [0.800, 1.000] | 0.800 |",
        "| RepeatFirstEasy | lstm | 2 | 0.300 | [0.200, 0.400] | 0.200 |",
        "| RepeatPreviousEasy | mingru | 2 | 0.500 | [0.400, 0.600] | 0.400 |",
        "| RepeatPreviousEasy | lstm | 2 | 0.800 | [0.800, 0.800] | 0.700 |",
        "| RepeatPreviousEasy | aaren | 1 | 0.900 | [0.900, 0.900] | 0.800 |",
    ]
    assert lines[10:13] == [
        "| 1 | mingru | 0.700 | 2/2 |", "| 2 | lstm | 0.550 | 2/2 |", "| – | aaren | 0.900 | 1/2 |"
    ]
    assert f"({used})" in lines[-1]


def test_rows_that_score_different_returns_are_flagged(tmp_path):
    write_run(tmp_path / "eval", [0.1, 0.2], memory="lstm", eval_returns=[NAN, 0.5])
    write_run(tmp_path / "train", [0.1, 0.2])
    rows = leaderboard_rows([tmp_path])
    assert {row["memory"]: row["return_used"] for row in rows} == {"lstm": "eval_return", "mingru": "episode_return"}
    assert "not comparable" in format_markdown(rows).splitlines()[-1]


def test_compare_draws_the_same_leaderboard(tmp_path, capsys):
    write_suite(tmp_path)
    text = write_leaderboard([tmp_path], tmp_path / "elsewhere.png")
    main([str(tmp_path), "--leaderboard"])
    printed = capsys.readouterr().out
    assert printed == f"{text}\nwrote {tmp_path / 'leaderboard.png'} and {tmp_path / 'leaderboard.csv'}\n"
    assert (tmp_path / "leaderboard.csv").read_text() == (tmp_path / "elsewhere.csv").read_text()


def test_runs_that_cannot_be_compared_are_refused(tmp_path):
    write_run(tmp_path / "empty", [NAN, NAN])
    with pytest.raises(CompareError, match="no finished episode"):
        leaderboard_rows([tmp_path])


@pytest.mark.parametrize(
    "extra, labels",  # labels of mingru, lstm, aaren and the configuration tried on task A only
    [
        ({"total_steps": 512}, ["mingru total_steps=2000", "lstm total_steps=2000", "aaren total_steps=2000",
                                "mingru total_steps=512"]),
        ({"memory__hidden_size": 128}, ["mingru memory.hidden_size=64", "lstm memory.hidden_size=64",
                                        "aaren memory.hidden_size=64", "mingru memory.hidden_size=128"]),
        ({"agent__name": "dqn"}, ["ppo mingru", "ppo lstm", "ppo aaren", "dqn mingru"]),
    ],
)
def test_a_configuration_tried_on_one_task_only_leaves_the_others_ranked(tmp_path, extra, labels):
    write_suite(tmp_path)
    write_run(tmp_path / "tried_on_A", [0.2, 0.3], env_id=A, **extra)
    rows = leaderboard_rows([tmp_path])
    assert {(row["memory"], row["rank"]) for row in rows} == set(zip(labels, [1, 2, None, None]))


def test_is_not_a_command():
    result = subprocess.run(
        [sys.executable, "-m", "recurl.leaderboard", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "recurl.leaderboard: error: not a command; run python -m recurl.compare DIR [DIR ...] --leaderboard\n"
    )


def test_memories_with_equal_scores_in_another_task_order_share_a_rank():
    rows = [
        {"task": task, "memory": memory, "mmer": score}
        for memory, scores in {"gru": (0.1, 0.2, 0.3), "lstm": (0.3, 0.2, 0.1)}.items()
        for task, score in zip(("a", "b", "c"), scores)
    ]
    rank_memories(rows)
    assert len({row["suite_mean"] for row in rows}) == 1 and {row["rank"] for row in rows} == {1}


def test_seeds_that_share_no_steps_are_refused_as_compare_refuses_them(tmp_path, capsys):
    """One seed stopped at step 200, the other's first episode ended at 300: no step at which both have a return."""
    nan = math.nan
    write_run(tmp_path / "s0", [0.9, 0.1], steps=[100, 200], seed=0)
    write_run(tmp_path / "s1", [nan, nan, 0.2, 0.3, 0.4], steps=[100, 200, 300, 400, 500], seed=1)
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--leaderboard"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "recurl.compare: error: mingru on popgym-RepeatPreviousEasy-v0: curves do not overlap in steps (one starts at "
        "300, another ends at 200); rerun or leave out the seed that stopped early\n"
    )

