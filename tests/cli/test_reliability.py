"""Reliability: exact resume, clear refusals, interrupts, failing envs, NaNs, atomic checkpoints, seeding."""

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import recurl.checkpoint as checkpoint_module
from conftest import compose_config
from recurl.agents.errors import NonFiniteError
from recurl.builder import load_into, setup
from recurl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from recurl.envs import UnsupportedSpaceError
from recurl.envs.encoding import make_encoder
from recurl.training import prepare, run, train

TINY = [
    "agent.rollout_steps=16", "agent.minibatches=2", "agent.anneal_lr=false", "memory.hidden_size=16",
    "env.num_envs=4", "checkpoint_every=1", "torch_threads=1",
]
#: Each agent at a tiny size, one env: an ``iterate`` is 16 env steps for both.
ONE_ENV = {
    "ppo": ["agent.minibatches=1", "env.num_envs=1"],
    "dqn": [
        "agent=dqn", "env.num_envs=1", "agent.buffer_capacity=256", "agent.learning_starts=16", "agent.batch_size=4",
        "agent.sequence_length=4", "agent.burn_in=2", "agent.n_step=2", "agent.train_every=16",
    ],
}
TIME_COLUMNS = {"sps", "wall_time"}


def config(*overrides):
    if "agent=dqn" in overrides:  # TINY's agent keys are PPO's
        return compose_config(*TINY[3:], *overrides)
    return compose_config(*TINY, *overrides)


def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "recurl.train", *TINY, *args], capture_output=True, text=True, timeout=timeout
    )


def rows(run_dir):
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(f)]


# ---- resume ---------------------------------------------------------------------------------------------------
def final_return_of(run_dir):
    """The final return its last summary line gives, with what it is the mean of."""
    summary = (run_dir / "train.log").read_text().splitlines()[-1]
    return re.search(r"final return .*?\)", summary).group()


def resume(path, *overrides):
    """What ``python -m recurl.train resume=PATH OVERRIDES`` does, in this process."""
    args = [f"resume={path}", *overrides]
    cfg, run_dir, envs, agent, returns_record = prepare(config(*args), args, Path("unused"))
    assert run_dir in (path, path.parent.parent)
    return run(cfg, run_dir, envs, agent, returns_record)


@pytest.mark.parametrize("memory", ["mingru", "aaren", "lstm"])
def test_resumed_run_reproduces_the_uninterrupted_one(memory, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    assert train(config(f"memory={memory}", "total_steps=512"), full) == 0
    assert train(config(f"memory={memory}", "total_steps=256"), half) == 0
    assert resume(half, "total_steps=512") == 0
    assert len(rows(full)) == 8
    assert rows(half) == rows(full)
    assert final_return_of(half) == final_return_of(full)  # over the run's last episodes, not the session's


def test_resume_from_the_command_line_keeps_the_runs_record(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("total_steps=64", f"hydra.run.dir={run_dir}").returncode == 0
    original_config = (run_dir / ".hydra" / "config.yaml").read_text()
    resumed = cli(f"resume={run_dir}", "total_steps=128")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["step"]) for r in rows(run_dir)] == [16 * 4 * i for i in (1, 2)]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original_config
    assert list((run_dir / ".hydra").glob("resume-*/overrides.yaml"))
    # bad checkpoints and changed backbones are refused in one line
    latest = run_dir / "checkpoints" / "latest.pt"
    other = cli(f"resume={run_dir}", "memory=lstm")
    assert other.returncode == 2 and "keeps its memory.name (mingru)" in other.stderr
    latest.write_bytes(latest.read_bytes()[:200])
    corrupt = cli(f"resume={run_dir}")
    assert corrupt.returncode == 2 and "Traceback" not in corrupt.stderr
    assert f"checkpoint {latest} is corrupt" in corrupt.stderr


def test_a_new_run_in_a_folder_holding_a_run_is_refused_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("total_steps=64", f"hydra.run.dir={run_dir}").returncode == 0
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    again = cli("total_steps=128", "memory=lstm", f"hydra.run.dir={run_dir}")
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"already holds a run; continue it with resume={run_dir}" in again.stderr
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_resume_drops_rows_logged_after_the_checkpoint_and_appends(tmp_path):
    run_dir, early = tmp_path / "run", tmp_path / "early"
    assert train(config("total_steps=256"), run_dir) == 0
    assert train(config("total_steps=128"), early) == 0
    before, final_before = rows(run_dir), final_return_of(run_dir)
    # As if the run had crashed after writing rows 3 and 4 but before checkpointing them.
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    checkpoint.write_bytes((early / "checkpoints" / "latest.pt").read_bytes())
    time.sleep(1)  # event files are named by the second they open in, and TensorBoard reads them in name order
    assert resume(checkpoint, "total_steps=256") == 0
    assert rows(run_dir) == before
    with (run_dir / "metrics.csv").open() as f:
        wall_times = [float(row["wall_time"]) for row in csv.DictReader(f)]
    assert wall_times == sorted(wall_times)  # the resumed session's go on from the checkpoint's row
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("episodes")]
    assert steps == [64, 128, 192, 256]  # the rows past the checkpoint that the first session wrote are purged
    assert final_return_of(run_dir) == final_before  # the checkpoint carried the episodes before it


def test_a_checkpoint_without_the_runs_last_returns_gives_the_sessions_final_return(tmp_path):
    """Checkpoints written before they held the last episode returns still resume; the summary says what it covers."""
    assert train(config("total_steps=256"), tmp_path) == 0
    latest = tmp_path / "checkpoints" / "latest.pt"
    payload = load_checkpoint(latest)
    record = payload.pop("returns")
    assert record["since"] == 0 and len(record["returns"]) == 4  # one episode (52 steps) ended in each env
    save_checkpoint(latest, {key: value for key, value in payload.items() if key != "format_version"})
    assert resume(tmp_path, "total_steps=448") == 0  # the next 4 episodes end at step 416
    assert final_return_of(tmp_path).endswith("mean of all 4 episodes since the resume at step 256)")
    assert resume(tmp_path, "total_steps=640") == 0  # resumed again: the summary still says what it covers
    assert final_return_of(tmp_path).endswith("mean of all 8 episodes since the resume at step 256)")


def test_resume_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at"):
        prepare(config(f"resume={tmp_path}"), [], tmp_path)


def test_checkpoint_of_another_shape_does_not_load(tmp_path):
    assert train(config("total_steps=64"), tmp_path) == 0
    envs, agent = setup(config("total_steps=64", "memory.hidden_size=32"))
    with pytest.raises(CheckpointError, match="does not fit this run"):
        load_into(tmp_path / "checkpoints" / "final.pt", envs, agent)


# ---- checkpoint files -----------------------------------------------------------------------------------------
def test_failed_checkpoint_write_keeps_the_previous_one_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"value": torch.tensor([1.0])})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"value": torch.tensor([2.0])})
    assert load_checkpoint(path)["value"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Path("/etc")}, path)  # a class weights_only refuses
    with pytest.raises(CheckpointError, match="corrupt or not a recurl checkpoint"):
        load_checkpoint(path)


# ---- signals --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_checkpoint_and_says_how_to_resume(sig, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recurl.train", *TINY, "total_steps=10000000", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "metrics.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    assert f"resume with: python -m recurl.train resume={run_dir}" in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"recurl.train: stopped by {sig.name}: {run_dir}, ")
    last_row = rows(run_dir)[-1]
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["agent"]["global_step"] == int(last_row["step"])


# ---- failing envs and NaNs ------------------------------------------------------------------------------------
class Faulty(gym.Env):
    """Raises, or returns NaN, at its 40th step."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, mode="raise"):
        self.mode, self.steps = mode, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps == 40:
            if self.mode == "raise":
                raise RuntimeError("simulator exploded")
            return np.full(2, np.nan, np.float32), 0.0, False, False, {}
        return np.ones(2, np.float32), 1.0, self.steps % 7 == 0, False, {}


gym.register("recurl-test/Faulty-v0", entry_point=Faulty)


@pytest.mark.parametrize("agent_name", ONE_ENV)
@pytest.mark.parametrize(
    "mode, message", [("raise", "raised RuntimeError: simulator exploded"), ("nan", "NaN or inf in obs")]
)
def test_failing_env_stops_the_run_with_its_error_and_keeps_the_checkpoint(mode, message, agent_name, tmp_path, capsys):
    cfg = config("env=gym", "env.id=recurl-test/Faulty-v0", "total_steps=100000", *ONE_ENV[agent_name])
    envs, agent = setup(cfg)
    envs.unwrapped.envs[0].unwrapped.mode = mode
    assert run(cfg, tmp_path, envs, agent) == 1
    err = capsys.readouterr().err
    assert message in err and "the last checkpoint" in err
    kept = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert kept["agent"]["global_step"] == 32  # two complete updates of 16 steps before step 40


@pytest.mark.parametrize("every, kept_step", [(20, 32), (33, None)])
def test_checkpoints_are_written_every_checkpoint_every_env_steps(every, kept_step, tmp_path):
    """Updates of 16 env steps; the env fails at step 40: a checkpoint exists only if a multiple of ``every`` was
    passed by then (20 is passed at the update ending on step 32; 33 is not)."""
    cfg = config("env=gym", "env.id=recurl-test/Faulty-v0", "total_steps=100000", "env.num_envs=1",
                 "agent.minibatches=1", f"checkpoint_every={every}")
    envs, agent = setup(cfg)
    assert run(cfg, tmp_path, envs, agent) == 1
    latest = tmp_path / "checkpoints" / "latest.pt"
    if kept_step is None:
        assert not latest.exists()
    else:
        assert load_checkpoint(latest)["agent"]["global_step"] == kept_step


@pytest.mark.parametrize("agent_name", ONE_ENV)
def test_nan_loss_is_detected_before_the_weights_change(agent_name):
    envs, agent = setup(config(*ONE_ENV[agent_name], "total_steps=1000"))
    head = agent.network.value_head if agent_name == "ppo" else agent.network.head
    with torch.no_grad():
        head.bias.fill_(float("inf"))
    before = [p.clone() for p in agent.network.memory.parameters()]
    with pytest.raises(NonFiniteError, match=f"{agent_name.upper()} loss is"):
        for _ in range(4):  # DQN learns from its second iterate
            agent.iterate()
    assert all(torch.equal(a, b) for a, b in zip(before, agent.network.memory.parameters()))


# ---- seeding --------------------------------------------------------------------------------------------------
def test_run_seeds_share_no_env_stream():
    """What training's agent sees, from setup on. Gymnasium's reset(seed=s) gives sub-env i the seed s + i, so seed
    1's sub-env 0 would replay seed 0's sub-env 1 (POPGym deals the same cards whatever the agent does): seeds
    averaged as independent runs would share their data."""

    def streams(seed):
        envs, agent = setup(config(f"seed={seed}", "env.id=RepeatPreviousEasy"))
        try:
            out = [agent.actor.next["obs"].numpy()]
            out += [envs.step(envs.action_space.sample())[0] for _ in range(30)]
            return np.stack(out, axis=1)  # [env, step, obs]
        finally:
            envs.close()

    first, second = streams(0), streams(1)
    np.testing.assert_array_equal(first, streams(0))
    for i in range(len(first)):
        for j in range(len(second)):
            assert not np.array_equal(first[i], second[j]), (i, j)


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert train(config("total_steps=256", f"seed={seed}"), tmp_path / name) == 0
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert rows(tmp_path / "a") != rows(tmp_path / "c")


# ---- observation spaces -----------------------------------------------------------------------------------------
_unsupported = st.sampled_from([spaces.Text(5), spaces.Sequence(spaces.Discrete(2)), spaces.Discrete(1 << 20)])
_supported = st.one_of(
    st.builds(spaces.Discrete, st.integers(1, 5)),
    st.builds(spaces.MultiDiscrete, st.lists(st.integers(1, 4), min_size=1, max_size=3)),
    st.builds(lambda n: spaces.Box(-1, 1, (n,), np.float32), st.integers(1, 3)),
)
_spaces = st.recursive(
    st.one_of(_supported, _unsupported),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(spaces.Tuple),
        st.dictionaries(st.sampled_from("abc"), children, min_size=1, max_size=3).map(spaces.Dict),
    ),
    max_leaves=6,
)


def _has_unsupported(space):
    if isinstance(space, (spaces.Text, spaces.Sequence)) or (isinstance(space, spaces.Discrete) and space.n > 1000):
        return True
    parts = space.spaces.values() if isinstance(space, spaces.Dict) else getattr(space, "spaces", ())
    return any(_has_unsupported(s) for s in parts)


@settings(max_examples=100, deadline=None)
@given(space=_spaces, seed=st.integers(0, 1000))
def test_random_observation_spaces_are_encoded_or_refused_by_name(space, seed):
    if _has_unsupported(space):
        with pytest.raises(UnsupportedSpaceError, match=r"observation.*(not supported|too wide|one-hot)"):
            make_encoder(space)
        return
    encode, box = make_encoder(space)
    space.seed(seed)
    assert box.contains(encode(space.sample()))
