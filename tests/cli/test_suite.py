"""recurl.suite: the grid as one resumable Hydra multirun ending in a leaderboard, refusals before anything runs,
and the ``existing`` key of recurl.train that makes re-running a sweep skip finished runs and continue interrupted
ones."""

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

from conftest import compose_config
from recurl import compare, suite
from recurl.memory import MEMORIES
from recurl.suite import main, parse_tasks, record_settings, task_set
from recurl.training import prepare, run, train

TINY = [
    "agent.rollout_steps=16", "agent.minibatches=2", "agent.anneal_lr=false", "memory.hidden_size=16", "env.num_envs=4",
    "torch_threads=1",
]
TIME_COLUMNS = {"sps", "wall_time"}


def python(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


def files(folder):
    """Every file under ``folder`` with its bytes and modification time: what "untouched" means."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in Path(folder).rglob("*") if path.is_file()}


def run_files(suite_dir):
    """``files`` of the run folders only (not what the suite and Hydra rewrite beside them)."""
    return {path: value for path, value in files(suite_dir).items() if path.parent != suite_dir}


def rows(run_dir):
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(f)]


# ---- existing= in recurl.train (a finished run left untouched: see the suite's test, which goes through Hydra) ----
def test_existing_resume_continues_an_interrupted_run_in_place(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert train(compose_config(*TINY, "total_steps=256"), full) == 0
    assert train(compose_config(*TINY, "total_steps=128"), cut) == 0
    (cut / "checkpoints" / "final.pt").unlink()  # as if stopped at step 128 of 256: only latest.pt
    overrides = ["existing=resume", "total_steps=256"]
    cfg, run_dir, envs, agent, returns_record = prepare(compose_config(*TINY, *overrides), overrides, cut)
    assert run_dir == cut and agent.global_step == 128
    assert run(cfg, run_dir, envs, agent, returns_record) == 0
    assert rows(cut) == rows(full)


#: The POPGym preset at a tiny size: what a suite run with experiment=popgym passes to each of its jobs.
POPGYM_TINY = [
    "experiment=popgym", "env.num_envs=2", "agent.rollout_steps=16", "agent.minibatches=1", "agent.epochs=1",
    "memory.hidden_size=8", "torch_threads=1",
]


def test_existing_resume_accepts_the_preset_the_run_was_made_with(tmp_path):
    """A suite run with experiment=popgym, run again after an interruption, resumes each unfinished job."""
    first = [*POPGYM_TINY, "existing=resume", "total_steps=32"]
    assert run(*prepare(compose_config(*first), first, tmp_path)) == 0
    (tmp_path / "checkpoints" / "final.pt").unlink()  # as if stopped at step 32
    again = [*POPGYM_TINY, "existing=resume", "total_steps=64"]
    cfg, run_dir, envs, agent, returns_record = prepare(compose_config(*again), again, tmp_path)
    assert run_dir == tmp_path and agent.global_step == 32 and cfg.agent.learning_rate == 5e-5
    assert run(cfg, run_dir, envs, agent, returns_record) == 0


def test_resume_refuses_a_preset_the_run_was_not_made_with(tmp_path):
    plain = [item for item in POPGYM_TINY if item != "experiment=popgym"]
    assert train(compose_config(*plain, "agent.learning_rate=0.001", "total_steps=32"), tmp_path) == 0
    resume = [*POPGYM_TINY, f"resume={tmp_path}", "total_steps=64"]
    with pytest.raises(ValueError) as error:
        prepare(compose_config(*resume), resume, tmp_path)
    assert str(error.value) == (
        "experiment=popgym: this run was not made with it (agent.learning_rate is 0.001, the preset's 5e-05); a "
        "resumed run keeps its own settings, so leave the preset out"
    )


def test_existing_resume_restarts_a_run_that_stopped_before_its_first_checkpoint(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,episode_return\n64,0.5\n")
    _, run_dir, envs, agent, _ = prepare(compose_config(*TINY, "existing=resume"), ["existing=resume"], tmp_path)
    envs.close()
    assert run_dir == tmp_path and agent.global_step == 0 and not (tmp_path / "metrics.csv").exists()


def test_existing_refuse_is_the_default(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,episode_return\n64,0.5\n")
    with pytest.raises(ValueError, match="already holds a run; continue it with resume="):
        prepare(compose_config(*TINY), [], tmp_path)
    with pytest.raises(ValueError, match="existing=skip: choose one of refuse, resume"):
        prepare(compose_config(*TINY, "existing=skip"), [], tmp_path)


# ---- the suite ----------------------------------------------------------------------------------------------------
def test_suite_trains_the_grid_once_and_prints_the_same_leaderboard_again(tmp_path, capfd):
    out = tmp_path / "suite"
    args = ["--tasks", "RepeatFirstEasy,CountRecallEasy", "--memories", "mingru,mlp", "--seeds", "0", "--steps", "512",
            "--dir", str(out), "--", *TINY]
    first = python("recurl.suite", *args)
    assert first.returncode == 0, first.stderr
    folders = {f"popgym-{task}-v0_ppo_{memory}_seed0" for task in ("RepeatFirstEasy", "CountRecallEasy")
               for memory in ("mingru", "mlp")}
    assert folders <= {path.name for path in out.iterdir()}
    with (out / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sorted((row["task"], row["memory"]) for row in table) == sorted(
        (f"popgym-{task}-v0", memory) for task in ("CountRecallEasy", "RepeatFirstEasy") for memory in ("mingru", "mlp")
    )
    for row in table:
        scores = [float(other["mmer"]) for other in table if other["memory"] == row["memory"]]
        assert float(row["suite_mean"]) == pytest.approx(sum(scores) / 2)
    assert sorted(int(row["rank"]) for row in table) == [1, 1, 2, 2]
    assert (out / "leaderboard.png").stat().st_size > 0

    before = run_files(out)
    main(args)  # again (in this process: quicker)
    again = capfd.readouterr()
    assert "all 4 runs" in again.err and "Launching" not in again.err  # Hydra was not started
    assert again.out == first.stdout and "| RepeatFirstEasy | mingru | 1 |" in first.stdout
    assert run_files(out) == before

    compare.main([str(out), "--leaderboard"])  # the same leaderboard, from the runs alone
    assert capfd.readouterr().out == first.stdout

    # One run interrupted after its last checkpoint: Hydra runs the grid again with existing=resume; the finished runs
    # say so and stay as they were, byte for byte; the interrupted one resumes and finishes.
    interrupted = out / "popgym-CountRecallEasy-v0_ppo_mlp_seed0"
    (interrupted / "checkpoints" / "final.pt").unlink()
    others = {path: value for path, value in before.items() if interrupted not in path.parents}
    main(args)
    resumed = capfd.readouterr()
    assert resumed.err.count("already finished") == 3 and (interrupted / "checkpoints" / "final.pt").is_file()
    assert {path: value for path, value in run_files(out).items() if interrupted not in path.parents} == others
    assert resumed.out == first.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "RepeatFirstEasyy"], "unknown env id 'RepeatFirstEasyy' for suite 'popgym'; close matches: "
         "RepeatFirstEasy"),
        (["--tasks", "popgym-eazy"], "unknown task set 'popgym-eazy'; did you mean popgym-easy?"),
        (["--memories", "mingru,minlsmt"], "unknown memory 'minlsmt'; did you mean minlstm?"),
        (["--seeds", "0,one"], "--seeds 0,one: 'one' is not an integer; give 0 or more; separate seeds with commas"),
        (["--seeds", "0,-1"], "--seeds 0,-1: -1 is negative; give 0 or more"),
        (["--seeds", "4294967296"], "--seeds 4294967296: 4294967296 is past 2**32 - 1"),  # every run would refuse it
        (["--", "memory=lstm"], "memory=lstm: the suite sets memory itself; use --memories instead"),
    ],
)
def test_typos_are_refused_in_one_line_before_anything_runs(args, message, tmp_path, capsys):
    defaults = ["--tasks", "RepeatFirstEasy", "--memories", "mingru", "--steps", "512", "--dir", str(tmp_path / "d")]
    with pytest.raises(SystemExit) as exit_:
        main(defaults + args)  # argparse keeps the last --tasks or --memories
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("recurl.suite: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_task_sets_are_popgyms_lists():
    registered = sorted(spec.id for spec in gym.registry.values() if str(spec.entry_point).startswith("popgym."))
    assert sorted(task_set("popgym-all")) == registered  # Labyrinth ids included exactly when popgym registers them
    levels = [task_set(f"popgym-{level}") for level in ("easy", "medium", "hard")]
    assert sorted(sum(levels, [])) == registered and all(len(level) == len(registered) // 3 for level in levels)
    assert all(task.endswith("Easy-v0") for task in levels[0])
    easy = parse_tasks("RepeatFirstEasy,popgym-easy,popgym-CountRecallEasy-v0")
    assert easy[0] == "popgym-RepeatFirstEasy-v0" and sorted(easy) == sorted(levels[0])  # each once, full ids


def test_memories_come_from_the_registry(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--tasks", "RepeatFirstEasy", "--memories", "nope", "--steps", "1", "--dir", str(tmp_path / "d")])
    assert f"(choose from {', '.join(MEMORIES)})" in capsys.readouterr().err


def test_a_suite_folder_keeps_its_settings(tmp_path):
    record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=-1"])
    record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=16", "torch_threads=1", "hydra/launcher=joblib"])
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)  # from here on the folder holds a run of those settings
    # other launcher and threads, more tasks: the same suite
    record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=16", "torch_threads=4"])
    with pytest.raises(ValueError, match=r"other settings: steps 512 \(here 1024\); .*use another --dir"):
        record_settings(tmp_path, "ppo", 1024, ["memory.hidden_size=16"])
    with pytest.raises(ValueError, match="overrides"):
        record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=32"])


def test_a_suite_folder_takes_its_overrides_in_any_order(tmp_path):
    (tmp_path / "suite.yaml").write_text(  # as recorded before the order stopped mattering
        "agent: ppo\nsteps: 512\noverrides: [memory.hidden_size=32, env.num_envs=4]\n"
    )
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    record_settings(tmp_path, "ppo", 512, ["env.num_envs=4", "memory.hidden_size=32"])
    record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=32", "env.num_envs=4"])
    with pytest.raises(ValueError, match=r"other settings: overrides .* \(here \['env.num_envs=8', 'memory"):
        record_settings(tmp_path, "ppo", 512, ["memory.hidden_size=32", "env.num_envs=8"])


@pytest.mark.parametrize("inside", ["", "suite"], ids=["a file", "in a file"])
def test_a_dir_that_is_not_a_folder_is_refused_in_one_line(tmp_path, capsys, inside):
    file = tmp_path / "bad.pt"
    file.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["--tasks", "RepeatFirstEasy", "--memories", "mlp", "--steps", "10", "--dir", str(file / inside)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"recurl.suite: error: argument --dir: {file} is a file, not a folder; give a folder (it is made if "
        "missing) (see python -m recurl.suite --help)\n"
    )


@pytest.mark.parametrize(
    "code, advice", [(2, "fix that override or option, then run the command again"), (1, "run the same command again")]
)
def test_stopped_training_says_resume_only_when_running_again_can_help(tmp_path, capsys, monkeypatch, code, advice):
    """Exit code 2 is recurl.train's for a mistake (an unknown key, say), which running again would repeat; any
    other stop can be resumed. (The training is left out: only its exit code matters here.)"""
    monkeypatch.setattr(suite, "train_grid", lambda *args: (code, None))
    with pytest.raises(SystemExit) as exit_:
        main(["--tasks", "RepeatFirstEasy", "--memories", "mlp", "--steps", "10", "--dir", str(tmp_path)])
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert err.startswith("recurl.suite: error: ") and err.count("\n") == 1 and advice in err
    assert ("resume" in err) == (code != 2)


def test_an_empty_dir_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """``Path("")`` is the current folder: the grid would be written there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(suite, "train_grid", lambda *args: pytest.fail("the grid was trained"))
    with pytest.raises(SystemExit) as exit_:
        main(["--tasks", "RepeatFirstEasy", "--memories", "mlp", "--steps", "10", "--dir", ""])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "recurl.suite: error: argument --dir: empty; give a folder (it is made if missing), e.g. runs/suite (see "
        "python -m recurl.suite --help)\n"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "send, signum",
    [(os.kill, signal.SIGINT), (os.killpg, signal.SIGINT), (os.kill, signal.SIGTERM)],
    ids=["SIGINT to the suite alone", "SIGINT to its process group", "SIGTERM to the suite alone"],
)
def test_a_stopped_suite_lets_the_training_save_its_run(tmp_path, send, signum):
    """Ctrl-C at a terminal signals the suite's process group, ``kill`` the suite alone: either way the training
    saves its run at the end of its update, and the suite says in one line how to resume."""
    out = tmp_path / "suite"
    suite_process = subprocess.Popen(
        [sys.executable, "-m", "recurl.suite", "--tasks", "RepeatFirstEasy", "--memories", "mlp", "--seeds", "0",
         "--steps", "100000000", "--dir", str(out), "--", *TINY, "checkpoint_every=100000000"],
        stderr=subprocess.PIPE, text=True, start_new_session=True,  # its own process group, as at a terminal
    )
    run_dir = out / "popgym-RepeatFirstEasy-v0_ppo_mlp_seed0"
    try:
        deadline = time.monotonic() + 120
        while not ((run_dir / "metrics.csv").is_file() and rows(run_dir)):  # training: past its first update
            assert suite_process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        send(suite_process.pid, signum)
        _, err = suite_process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a failed test leaves no training behind
            os.killpg(suite_process.pid, signal.SIGKILL)
    assert (run_dir / "checkpoints" / "latest.pt").is_file()  # written on the stop only (checkpoint_every)
    assert "checkpoint saved" in (run_dir / "train.log").read_text()
    assert suite_process.returncode == 128 + signum and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"recurl.suite: stopped by {signum.name}; run the same command again to resume it (each run from its last "
        "checkpoint)"
    )
