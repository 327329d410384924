"""``python -m recurl.bench peers`` at tiny sizes: every system's row is printed with a positive speed (this checks the
script, not the speed); sb3-contrib's row runs only where the ``[peers]`` extra is installed."""

import pytest

from recurl.bench import peers

TINY = ["--steps", "64", "--envs", "2", "--rollout-steps", "8", "--minibatches", "2", "--epochs", "1",
        "--width", "4", "--layers", "1", "--repeats", "2", "--memories", "mingru", "lstm"]


def rows(text):
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])}


def test_without_sb3_the_other_rows_run_and_the_sb3_row_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(peers, "sb3_installed", lambda: False)
    peers.main(TINY)
    table = rows(capsys.readouterr().out)
    assert list(table) == ["recurl PPO mingru", "recurl PPO lstm", peers.CLEANRL, peers.SB3]
    for name in ("recurl PPO mingru", "recurl PPO lstm", peers.CLEANRL):
        steps_per_second, steps_per_cpu_second, _, ratio, each = table[name]
        assert float(steps_per_second) > 0 and float(steps_per_cpu_second) > 0 and ratio == "n/a"
        assert len(each.split(", ")) == 2 and all(float(v) > 0 for v in each.split(", "))
    assert table[peers.SB3][0] == peers.SB3_MISSING


def test_sb3_recurrent_ppo_runs_beside_recurl_when_installed(capsys):
    pytest.importorskip("sb3_contrib", reason="sb3-contrib is the [peers] extra: pip install -e '.[peers]'")
    peers.main(TINY)
    table = rows(capsys.readouterr().out)
    assert list(table) == ["recurl PPO mingru", "recurl PPO lstm", peers.CLEANRL, peers.SB3]
    sb3_wall, sb3_cpu = float(table[peers.SB3][0]), float(table[peers.SB3][1])
    assert sb3_wall > 0 and sb3_cpu > 0 and table[peers.SB3][3] == "1.00x / 1.00x"
    for name in ("recurl PPO mingru", "recurl PPO lstm", peers.CLEANRL):
        wall_ratio, cpu_ratio = (float(r.rstrip("x")) for r in table[name][3].split(" / "))
        assert wall_ratio == pytest.approx(float(table[name][0]) / sb3_wall, rel=0.01)
        assert cpu_ratio == pytest.approx(float(table[name][1]) / sb3_cpu, rel=0.01)


def test_final_return_pools_the_episodes_of_the_last_tenth_of_rollouts():
    runs = [
        peers.Run(1.0, 1.0, [(rollout, 10.0 * rollout, 2) for rollout in range(20)]),  # two episodes a rollout
        peers.Run(1.0, 1.0, [(19, 1.0, 1)]),
    ]
    assert peers.final_return(runs, iterations=20) == pytest.approx((180.0 + 190.0 + 1.0) / 5)
    short = [peers.Run(1.0, 1.0, [(rollout, float(rollout), 1) for rollout in range(5)])]
    assert peers.final_return(short, iterations=5) == 4.0  # at least the last rollout


def test_env_counts_that_minibatches_cannot_split_evenly_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        peers.main(["--envs", "6", "--minibatches", "4"])
    assert exit_info.value.code == 2
    assert "--envs (6) must be a multiple of --minibatches (4)" in capsys.readouterr().err
