"""Resuming: what a resumed run starts from, which overrides beside ``resume=`` apply, and where it writes."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_reliability import ONE_ENV, TINY, config

from recurl.builder import setup
from recurl.checkpoint import CheckpointError, load_checkpoint
from recurl.cli_errors import command_line_error, with_saved_groups
from recurl.run_groups import load_run
from recurl.training import prepare, run, train


def resumed(*args):
    """(cfg, run folder, envs, agent, recent returns) of ``python -m recurl.train ARGS``, a resume, in this
    process."""
    return prepare(config(*args), list(args), Path("unused"))


def files(folder):
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_resume_without_env_snapshot_starts_the_agent_on_the_fresh_episodes(tmp_path):
    """Async envs are not saved: they restart their episodes, and the agent must see those, not the saved ones."""
    async_envs = ["env.vectorization=async", "total_steps=64"]
    assert train(config(*async_envs), tmp_path) == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["envs"] is None
    _, _, envs, agent, _ = resumed(f"resume={tmp_path}", *async_envs)
    fresh_envs, fresh = setup(config(*async_envs))
    try:
        assert agent.actor.next["reset"].all()
        assert (agent.actor.next == fresh.actor.next).all()
        initial = agent.network.initial_state(4, agent.device)
        assert all(torch.equal(a, b) for a, b in zip(agent.actor.state, initial, strict=True))
    finally:
        envs.close()
        fresh_envs.close()


@pytest.mark.parametrize("anneal", [False, True])
def test_a_learning_rate_given_beside_resume_applies(anneal, tmp_path):
    """Iterates of 64 env steps: resumed at iterate 2 of 4, an annealed rate is half the new base rate."""
    assert train(config("total_steps=128", f"agent.anneal_lr={anneal}"), tmp_path) == 0
    args = [f"resume={tmp_path}", "total_steps=256", "agent.learning_rate=0.01"]
    _, _, envs, agent, _ = resumed(*args, f"agent.anneal_lr={anneal}")
    try:
        metrics, _ = agent.iterate()
    finally:
        envs.close()
    assert metrics["learning_rate"] == pytest.approx(0.005 if anneal else 0.01)


def test_overrides_beside_resume_are_checked_against_the_resumed_runs_groups(tmp_path):
    """Not against the defaults' (agent=ppo, memory=mingru): a DQN-only or FFM-only key is known, a typo is not."""
    dqn, ffm = tmp_path / "dqn", tmp_path / "ffm"
    assert train(config(*ONE_ENV["dqn"], "total_steps=32"), dqn) == 0
    assert train(config("memory=ffm", "total_steps=64"), ffm) == 0
    assert command_line_error(with_saved_groups([f"resume={ffm}", "memory.context_size=2"])) is None
    typo = command_line_error(with_saved_groups([f"resume={dqn}", "agent.epsilon_ed=0.05"]))
    assert typo.startswith("agent.epsilon_ed=0.05: agent=dqn has no key 'epsilon_ed'; its keys are batch_size,")
    args = with_saved_groups([f"resume={dqn}", "agent.epsilon_end=0.05", "total_steps=64"])
    assert command_line_error(args) is None
    prepared = resumed(*args)  # the groups added are the run's own: the resume accepts them
    assert prepared[0].agent.epsilon_end == 0.05 and run(*prepared) == 0


def test_a_dqn_only_key_beside_resume_from_the_command_line(tmp_path):
    run_dir = tmp_path / "dqn"
    assert train(config(*ONE_ENV["dqn"], "total_steps=32"), run_dir) == 0
    result = subprocess.run(
        [sys.executable, "-m", "recurl.train", f"resume={run_dir}", "agent.epsilon_end=0.05", "total_steps=64"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_a_checkpoint_outside_a_run_folders_checkpoints_is_refused_and_nothing_is_written(tmp_path):
    """The run folder would be a guess: here the file's grandparent, which holds another run."""
    parent = tmp_path / "parent"
    assert train(config("total_steps=64"), parent) == 0
    (parent / "exp").mkdir()
    (parent / "exp" / "best.pt").write_bytes((parent / "checkpoints" / "final.pt").read_bytes())
    before = files(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "recurl.train", *TINY, "resume=parent/exp/best.pt", "total_steps=128"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "recurl.train: error: resume=parent/exp/best.pt: the checkpoint is not in a run folder's checkpoints/, so "
        "there is no run to continue; give the run folder, or a checkpoint in RUN_DIR/checkpoints/"
    )
    assert files(tmp_path) == before


def test_an_override_that_changes_a_weights_shape_is_refused_naming_the_weight(tmp_path):
    assert train(config("memory=ffm", "total_steps=64"), tmp_path) == 0
    with pytest.raises(CheckpointError, match=r"does not fit this run: Error\(s\) .* size mismatch for memory\."):
        resumed(f"resume={tmp_path}", "memory=ffm", "memory.context_size=2")


def test_a_resumed_run_is_compared_by_the_config_it_runs_with_now(tmp_path):
    """A resume may extend total_steps or change the learning rate; Hydra's record keeps the config the run started
    with, so recurl.compare groups by the one the last resume wrote."""
    assert train(config("total_steps=64"), tmp_path) == 0
    (tmp_path / ".hydra").mkdir()  # Hydra's record, as python -m recurl.train writes it
    OmegaConf.save(config("total_steps=64"), tmp_path / ".hydra" / "config.yaml")
    started = (tmp_path / ".hydra" / "config.yaml").read_text()
    args = [f"resume={tmp_path}", "total_steps=128", "agent.learning_rate=0.01"]
    assert run(*resumed(*args)) == 0
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == started
    grouped_by = load_run(tmp_path).config
    assert grouped_by["total_steps"] == 128 and grouped_by["agent.learning_rate"] == 0.01



def made_by_hydra(run_dir, *overrides):
    """A run trained as ``python -m recurl.train`` makes it: with Hydra's record of its config."""
    cfg = config(*overrides)
    assert train(cfg, run_dir) == 0
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_a_checkpoint_copied_in_from_another_run_is_refused(tmp_path):
    """It would continue this run as that one: the LSTM's rows appended to minGRU's, under minGRU's name."""
    mingru = made_by_hydra(tmp_path / "mingru", "total_steps=64")
    lstm = made_by_hydra(tmp_path / "lstm", "total_steps=64", "memory=lstm")
    (mingru / "checkpoints" / "latest.pt").write_bytes((lstm / "checkpoints" / "latest.pt").read_bytes())
    with pytest.raises(ValueError, match=r"latest.pt is not this run's: it was made with memory.name=lstm, the run in "
                       r".*mingru has memory.name=mingru; resume the run that made it"):
        resumed(f"resume={mingru}", "total_steps=128")
    other_seed = made_by_hydra(tmp_path / "seed1", "total_steps=64", "seed=1")
    (other_seed / "checkpoints" / "latest.pt").write_bytes((lstm / "checkpoints" / "latest.pt").read_bytes())
    with pytest.raises(ValueError, match="made with memory.name=lstm"):
        resumed(f"resume={other_seed}", "total_steps=128")
    prepared = resumed(f"resume={lstm}", "total_steps=128")  # its own checkpoint resumes
    assert run(*prepared) == 0


def test_a_resume_keeps_its_seed(tmp_path):
    """The checkpoint's weights, envs and random streams came from its seed: another would only mislabel the run
    (recurl.compare would count it as that seed; recurl.evaluate would pick that seed's episodes)."""
    assert train(config("total_steps=64"), tmp_path) == 0
    with pytest.raises(ValueError, match=r"seed=5: a resumed run keeps its seed \(0\); start a new run instead"):
        resumed(f"resume={tmp_path}", "seed=5", "total_steps=128")
    prepared = resumed(f"resume={tmp_path}", "seed=0", "total_steps=128")  # as a re-run suite command gives it
    assert run(*prepared) == 0


def test_an_env_id_in_its_other_form_is_the_same_env(tmp_path):
    """README: env=popgym takes the full id or the short one; a resume accepts either for the run's env."""
    assert train(config("total_steps=64", "env.id=RepeatFirstEasy"), tmp_path) == 0
    prepared = resumed(f"resume={tmp_path}", "env.id=popgym-RepeatFirstEasy-v0", "total_steps=128")
    assert run(*prepared) == 0
    with pytest.raises(ValueError, match=r"env.id=CountRecallEasy: a resumed run keeps its env.id"):
        resumed(f"resume={tmp_path}", "env.id=CountRecallEasy", "total_steps=192")


def test_a_metrics_row_cut_short_by_a_crash_is_dropped_on_resume(tmp_path):
    """The crash came mid-write of a row past the checkpoint: the row goes, and the rows after it are whole."""
    assert train(config("total_steps=128"), tmp_path) == 0
    metrics = tmp_path / "metrics.csv"
    before = metrics.read_text()
    metrics.write_text(before + "19")  # of 192,...: read alone, a step before the checkpoint
    assert run(*resumed(f"resume={tmp_path}", "total_steps=192")) == 0
    with metrics.open(newline="") as f:
        lines = list(csv.reader(f))
    assert [int(row[0]) for row in lines[1:]] == [64, 128, 192]
    assert all(len(row) == len(lines[0]) for row in lines)


@pytest.mark.parametrize("damage", ["header", "middle row"])
def test_a_damaged_metrics_file_is_refused_and_kept(tmp_path, capsys, damage):
    assert train(config("total_steps=128"), tmp_path) == 0
    metrics = tmp_path / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[0 if damage == "header" else 1] = "abc,1\n"
    metrics.write_text("".join(lines))
    damaged = metrics.read_bytes()
    capsys.readouterr()  # the first session's lines
    assert run(*resumed(f"resume={tmp_path}", "total_steps=192")) == 2
    error = capsys.readouterr().err.strip()
    expected = "has no metrics header" if damage == "header" else "metrics.csv: line 2 is damaged (abc,1)"
    assert error.startswith("recurl.train: error: ") and expected in error
    assert metrics.read_bytes() == damaged


def test_a_key_deleted_beside_resume_takes_its_default(tmp_path):
    """``~agent.gamma`` as Hydra reads it: the key goes, the agent's default applies. Read as text, the override was
    a key named '~agent.gamma', stored beside the real one, which stayed."""
    assert train(config("total_steps=64", "agent.gamma=0.5"), tmp_path) == 0
    cfg, _, envs, agent, _ = resumed(f"resume={tmp_path}", "~agent.gamma", "total_steps=128")
    envs.close()
    assert "gamma" not in cfg.agent and "~agent" not in cfg and agent.config.gamma == 0.99
    cfg, _, envs, _, _ = resumed(f"resume={tmp_path}", "agent.learning_rate=3e-4", "total_steps=128")
    envs.close()
    assert cfg.agent.learning_rate == 3e-4  # a number, as Hydra parses it for a new run (YAML 1.1 left '3e-4' a string)
    with pytest.raises(ValueError, match=r"~agent.gamma=0.99: the run's agent.gamma is 0.5, not 0.99; leave out"):
        resumed(f"resume={tmp_path}", "~agent.gamma=0.99", "total_steps=128")  # Hydra's rule: that value only
    cfg, _, envs, _, _ = resumed(f"resume={tmp_path}", "env.id='RepeatFirstEasy'", "seed='0'", "total_steps=128")
    envs.close()  # quoted values are the values: the run's env and seed


def test_a_top_level_key_cannot_be_deleted():
    """recurl reads every top-level key; deleting one crashed inside Hydra (~seed, ~video) or was called missing."""
    for key in ("seed", "video", "eval_every"):
        assert command_line_error([f"~{key}"]) == f"~{key}: recurl needs its key {key}; set it instead ({key}=...)"
    assert command_line_error(["~agent.gamma"]) is None


def test_a_run_restarted_in_place_is_recorded_as_itself(tmp_path):
    """existing=resume restarts a run that stopped before its first checkpoint. Hydra writes no record then, and
    the stopped attempt's (another memory here) would have made every later resume refuse the run's own checkpoint."""
    run_dir = made_by_hydra(tmp_path / "run", "total_steps=64")
    shutil.rmtree(run_dir / "checkpoints")  # as if it stopped before its first checkpoint
    args = ["existing=resume", "memory=lstm", "total_steps=64"]
    assert run(*prepare(config(*args), args, run_dir)) == 0
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").memory.name == "lstm"
    assert run(*resumed(f"resume={run_dir}", "total_steps=128")) == 0
