"""recurl.compare: statistics checked against hand-computed numbers, grouping, the plot and table, clear refusals."""

import csv
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import write_run
from recurl.compare import compare, figure_of, main
from recurl.run_groups import (
    CompareError,
    bootstrap_band,
    common_grid,
    final_return,
    finished_rows,
    interpolate,
    load_groups,
    mmer,
    normalised_auc,
)

NAN = math.nan


# ---- statistics ---------------------------------------------------------------------------------------------------
def test_statistics_of_one_run_by_hand():
    steps, returns = finished_rows(np.array([100.0, 200, 300, 400]), np.array([NAN, 0.5, NAN, 1.0]))
    assert steps.tolist() == [200, 400] and returns.tolist() == [0.5, 1.0]
    assert final_return(np.arange(20.0)) == 18.5  # last 10% of 20 rows: rows 18 and 19
    assert final_return(np.arange(9.0)) == 8.0  # 10% of 9 rows rounds up to one row
    assert final_return(np.array([3.0])) == 3.0
    assert mmer(np.array([0.1, 0.9, 0.4])) == 0.9
    # trapezoids: (0 + 1) / 2 * 100 + 1 * 100 = 150 over 200 steps
    assert normalised_auc(np.array([0.0, 100, 200]), np.array([0.0, 1, 1])) == pytest.approx(0.75)
    assert normalised_auc(np.array([50.0]), np.array([0.3])) == 0.3


def test_curves_are_interpolated_on_the_steps_all_seeds_cover():
    a = (np.array([0.0, 100, 200]), np.array([0.0, 1, 2]))
    b = (np.array([50.0, 150]), np.array([10.0, 20]))
    grid = common_grid([a, b], points=3)
    assert grid.tolist() == [50, 100, 150]
    assert interpolate([a, b], grid).tolist() == [[0.5, 1.0, 1.5], [10.0, 15.0, 20.0]]
    with pytest.raises(CompareError, match="do not overlap"):
        common_grid([a, (np.array([300.0, 400]), np.array([0.0, 1]))])


def test_bootstrap_band():
    # Two seeds: resampled means are a, (a+b)/2 or b with probability 1/4, 1/2, 1/4, so the 95% band is [a, b].
    low, high = bootstrap_band(np.array([[0.0, 0.0], [1.0, 2.0]]))
    assert low.tolist() == [0.0, 0.0] and high.tolist() == [1.0, 2.0]
    same = np.tile(np.array([[0.5, -1.0, 3.0]]), (4, 1))
    low, high = bootstrap_band(same)
    np.testing.assert_allclose(low, same[0])
    np.testing.assert_allclose(high, same[0])
    values = np.random.default_rng(1).normal(size=(10, 50))
    low, high = bootstrap_band(values)
    mean = values.mean(axis=0)
    assert np.all(low <= mean) and np.all(mean <= high) and np.all(high - low > 0)
    assert np.all(high - low < values.max(axis=0) - values.min(axis=0))
    np.testing.assert_array_equal(bootstrap_band(values)[0], low)  # fixed RNG seed: reproducible


# ---- whole comparisons --------------------------------------------------------------------------------------------
def test_compare_plots_and_tabulates_hand_computed_numbers(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    # mingru seed 0: finished rows 0, .2, .4, .6, .8, .5, .9, 1.0 -> final (1 row of 8) 1.0, MMER 1.0
    write_run(sweep / "0_ppo_mingru_seed0", [NAN, 0.0, 0.2, 0.4, NAN, 0.6, 0.8, 0.5, 0.9, 1.0], seed=0)
    # mingru seed 1, 20 rows (to step 2000, twice as far): final = mean(0.9, 0.5) = 0.7, MMER 0.9
    write_run(sweep / "1_ppo_mingru_seed1", [i / 20 for i in range(1, 19)] + [0.9, 0.5], seed=1)
    # lstm, given as a run folder of its own: final 1.0, MMER 1.0, AUC 0.75 (see test_statistics_of_one_run_by_hand)
    lstm = write_run(tmp_path / "lstm_run", [0.0, 1.0, 1.0], steps=[100, 200, 300], memory="lstm", seed=0)
    out = tmp_path / "plots" / "cmp.png"

    main([str(tmp_path / "multirun"), str(lstm), "--out", str(out)])

    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    with out.with_suffix(".csv").open() as f:
        rows = {row["group"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"mingru", "lstm"}  # agent and env are the same for all: only the backbone labels groups
    mingru, lstm_row = rows["mingru"], rows["lstm"]
    assert mingru["env"] == "popgym-RepeatPreviousEasy-v0"
    assert int(mingru["seeds"]) == 2 and int(lstm_row["seeds"]) == 1
    assert float(mingru["final_return"]) == pytest.approx((1.0 + 0.7) / 2)
    assert float(mingru["mmer"]) == pytest.approx((1.0 + 0.9) / 2)
    assert float(mingru["steps"]) == pytest.approx((1000 + 2000) / 2)
    assert float(mingru["wall_time_s"]) == pytest.approx((10 + 20) / 2)
    assert float(lstm_row["final_return"]) == 1.0 and float(lstm_row["mmer"]) == 1.0
    assert float(lstm_row["auc"]) == pytest.approx(0.75)
    assert float(lstm_row["sps"]) == pytest.approx(100)
    assert mingru["return_used"] == lstm_row["return_used"] == "episode_return"
    printed = capsys.readouterr().out
    assert "final_return" in printed and "mingru" in printed and str(out) in printed


def test_groups_by_every_key_that_differs_and_panels_by_env(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"small{seed}", [0.1, 0.2], seed=seed)
        write_run(tmp_path / f"big{seed}", [0.3, 0.4], seed=seed, memory__hidden_size=128)
    write_run(tmp_path / "aaren", [0.1, 0.2], memory="aaren", memory__num_heads=4)  # a key of its own: not a difference
    # Another env, in two spellings of its id, where the agent differs (and the hidden size does not). Labels show
    # on every env the keys that differ on one, the agent and the hidden size.
    write_run(tmp_path / "ppo_other_env", [0.5, 0.6], env_id="RepeatFirstEasy")
    write_run(tmp_path / "dqn_other_env", [0.5, 0.6], env_id="popgym-RepeatFirstEasy-v0", agent__name="dqn")
    rows = compare([tmp_path], tmp_path / "out.png")
    assert [(r["env"], r["group"], r["seeds"]) for r in rows] == [
        ("popgym-RepeatFirstEasy-v0", "dqn mingru memory.hidden_size=64", 1),
        ("popgym-RepeatFirstEasy-v0", "ppo mingru memory.hidden_size=64", 1),
        ("popgym-RepeatPreviousEasy-v0", "ppo aaren memory.hidden_size=64", 1),
        ("popgym-RepeatPreviousEasy-v0", "ppo mingru memory.hidden_size=128", 2),
        ("popgym-RepeatPreviousEasy-v0", "ppo mingru memory.hidden_size=64", 2),
    ]


def test_a_configuration_has_one_label_on_every_env(tmp_path):
    # RepeatPrevious also tried a budget of 512: total_steps labels every env. The envs' own num_envs, differing only
    # from env to env, is part of the task and labels none.
    A, B = "popgym-RepeatPreviousEasy-v0", "popgym-RepeatFirstEasy-v0"
    write_run(tmp_path / "a2048", [0.1, 0.2], env_id=A, total_steps=2048, env__num_envs=32)
    write_run(tmp_path / "a512", [0.1, 0.2], env_id=A, total_steps=512, env__num_envs=32)
    write_run(tmp_path / "b2048", [0.1, 0.2], env_id=B, total_steps=2048, env__num_envs=16)
    assert list(load_groups([tmp_path])) == [
        (B, "mingru total_steps=2048"), (A, "mingru total_steps=2048"), (A, "mingru total_steps=512"),
    ]


def test_evaluation_and_tracker_settings_do_not_split_seeds(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"seed{seed}", [0.1, 0.2], seed=seed, eval_every=None, eval_episodes=10,
                  logger={"name": "none"})
    write_run(
        tmp_path / "seed2", [0.1, 0.2], eval_returns=[NAN, 0.5], seed=2, eval_every=1024, eval_episodes=3,
        logger={"name": "wandb", "project": "recurl"},
    )
    (row,) = compare([tmp_path], tmp_path / "out.png")
    assert (row["group"], row["seeds"], row["return_used"]) == ("mingru", 3, "mixed")  # seed 2 scores its evaluation
    write_run(tmp_path / "seed2_again", [0.1, 0.2], seed=2, eval_every=2048)  # the same training rows as seed2
    with pytest.raises(CompareError, match="same experiment .* with the same seed 2"):
        compare([tmp_path], tmp_path / "out.png")


def test_refuses_runs_it_cannot_compare(tmp_path):
    write_run(tmp_path / "a", [0.1, 0.2], seed=3)
    write_run(tmp_path / "b", [0.1, 0.2], seed=3, torch_threads=4)  # bookkeeping differs, same experiment and seed
    with pytest.raises(CompareError, match="same experiment .* with the same seed 3"):
        compare([tmp_path], tmp_path / "out.png")
    write_run(tmp_path / "c" / "no_episodes", [NAN, NAN], seed=4)
    write_run(tmp_path / "c" / "no_rows", [], seed=5)
    with pytest.raises(CompareError, match="2 run.* no finished episode.*no_episodes.*no_rows"):
        compare([tmp_path / "c"], tmp_path / "out.png")
    (tmp_path / "foreign" / ".hydra").mkdir(parents=True)
    (tmp_path / "foreign" / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (tmp_path / "foreign" / "metrics.csv").write_text("step,episode_return,sps,wall_time\n1,0.5,1,1\n")
    with pytest.raises(CompareError, match="has no seed, env.id, agent.name, memory.name"):
        compare([tmp_path / "foreign"], tmp_path / "out.png")


def test_cli_fails_in_one_line_on_a_folder_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("step\n")  # a metrics.csv without a config is not a run
    result = subprocess.run(
        [sys.executable, "-m", "recurl.compare", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"recurl.compare: error: no runs under {tmp_path / 'empty'} (a run is a folder with metrics.csv and .hydra/config.yaml)"
    )
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("plots/b", "plots/b is not an image file; name a file ending in .avif, .eps, .gif, .jpeg, .jpg, .pdf, .pgf, "
         ".png, .ps, .raw, .rgba, .svg, .svgz, .tif, .tiff, .webp"),
        ("plots/c.txt", "plots/c.txt is not an image file; name a file ending in .avif, "),
        ("plots", "plots is a folder; name a file ending in .avif, "),
        ("run/metrics.csv/x.png", "run/metrics.csv/x.png is inside run/metrics.csv, which is a file; choose another "
         "--out"),
    ],
)
def test_cli_refuses_an_out_it_cannot_write_before_reading_runs(tmp_path, monkeypatch, capsys, out, message):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "run", [0.1, 0.2])
    (tmp_path / "plots").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--out", out])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1
    assert error.startswith(f"recurl.compare: error: --out {message}")
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("leaderboard", [False, True], ids=["curves", "leaderboard"])
def test_cli_names_a_table_it_cannot_write_in_one_line_and_writes_no_plot(tmp_path, capsys, leaderboard):
    write_run(tmp_path / "run", [0.1, 0.2])
    table = tmp_path / "plots" / "table.csv"
    table.mkdir(parents=True)
    out = tmp_path / "plots" / "table.png"
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "run"), "--out", str(out)] + ["--leaderboard"] * leaderboard)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"recurl.compare: error: --out {out}: its table {table} would replace a folder; choose another --out\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "text, problem",
    [("seed: [0\n", "is not valid YAML; repair it"), ("- 1\n- 2\n", "holds a list, not a config;")],
    ids=["cut short", "a list"],
)
def test_cli_refuses_a_corrupt_config_in_one_line(tmp_path, capsys, text, problem):
    write_run(tmp_path / "good", [0.1, 0.2])
    config = write_run(tmp_path / "sweep" / "bad", [0.1, 0.2]) / ".hydra" / "config.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"recurl.compare: error: {config} {problem}") and error.count("\n") == 1


def test_runs_to_different_budgets_are_groups_of_their_own(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / f"short{seed}", [0.1, 0.2], seed=seed, total_steps=200)
        write_run(tmp_path / f"long{seed}", [0.1, 0.2, 0.5, 0.6], seed=seed, total_steps=400)
    # Seed 0 again, on steps no other run reaches: a group of its own, not a duplicate seed or curves without overlap.
    write_run(tmp_path / "far", [0.0, 0.1], steps=[1000, 2000], total_steps=2000)
    rows = compare([tmp_path], tmp_path / "out.png")
    assert [(r["group"], r["seeds"], r["mmer"]) for r in rows] == [
        ("mingru total_steps=200", 2, 0.2), ("mingru total_steps=2000", 1, 0.1), ("mingru total_steps=400", 2, 0.6),
    ]


def test_legends_count_seeds_in_words(tmp_path):
    write_run(tmp_path / "one", [0.1, 0.2], memory="lstm")
    for seed in (0, 1, 2):
        write_run(tmp_path / f"three{seed}", [0.1, 0.2], seed=seed)
    (ax,) = [ax for ax in figure_of(load_groups([tmp_path])).axes if ax.get_visible()]
    assert ax.get_legend_handles_labels()[1] == ["lstm (1 seed)", "mingru (3 seeds)"]
    assert ax.get_ylabel() == "episode return"


def test_eval_return_is_scored_where_a_run_has_it(tmp_path):
    # Evaluations every other row: MMER 0.7 and final return 0.7 (last of 2 evaluated rows), training returns ignored.
    write_run(tmp_path / "eval", [0.9, 1.0, 0.95, 0.99], eval_returns=[NAN, 0.4, NAN, 0.7], memory="lstm")
    write_run(tmp_path / "no_eval_yet", [0.2, 0.3], eval_returns=[NAN, NAN])  # a column without numbers: not used
    write_run(tmp_path / "old", [0.2, 0.5], seed=1)  # no column
    rows = {row["group"]: row for row in compare([tmp_path], tmp_path / "out.png")}
    lstm = rows["lstm"]
    assert (lstm["mmer"], lstm["final_return"], lstm["return_used"]) == (0.7, 0.7, "eval_return")
    assert (rows["mingru"]["mmer"], rows["mingru"]["return_used"]) == ((0.3 + 0.5) / 2, "episode_return")
    write_run(tmp_path / "mixed", [0.2, 0.5], eval_returns=[0.1, 0.1], seed=2)
    rows = {row["group"]: row for row in compare([tmp_path], tmp_path / "out.png")}
    assert rows["mingru"]["return_used"] == "mixed"


def test_out_defaults_to_beside_the_runs(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "a"
    write_run(sweep / "run0", [0.1, 0.2])
    main([str(sweep)])
    assert (sweep / "compare.png").is_file() and (sweep / "compare.csv").is_file()
    assert f"wrote {sweep / 'compare.png'} and {sweep / 'compare.csv'}" in capsys.readouterr().out
    write_run(tmp_path / "sweeps" / "b" / "run0", [0.1, 0.2], memory="lstm")
    main([str(sweep), str(tmp_path / "sweeps" / "b")])  # two folders: in the folder holding both
    assert (tmp_path / "sweeps" / "compare.png").is_file()
