"""recurl.load_policy and recurl.evaluate: a trained run acts on the env's own observations, as it acted in training.
Also recurl.export's refusal of an --out it cannot write (tests/cli/test_export.py trains a run per backbone)."""

import csv
import errno
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import recurl
from conftest import compose_config
from recurl.agents.actor import Actor
from recurl.checkpoint import CheckpointError
from recurl.envs import env_seeds, make_vector_env
from recurl.evaluate import eval_seed, evaluate_policy
from recurl.evaluate import main as evaluate_main
from recurl.export import main as export_main
from recurl.training import train

TINY = ["total_steps=256", "env.num_envs=4", "agent.rollout_steps=16", "agent.minibatches=2", "memory.hidden_size=16"]
ENVS = {
    "popgym": ["env=popgym", "env.id=RepeatPreviousEasy"],  # previous action on (POPGym's default)
    "minigrid": ["env=minigrid", "env.id=MiniGrid-MemoryS7-v0", "env.max_episode_steps=30"],  # Dict observations
    "dqn": ["agent=dqn", "env=popgym", "env.id=CountRecallEasy", "agent.learning_starts=64", "agent.batch_size=4",
            "agent.buffer_capacity=512", "agent.previous_reward=true"],
    "box": ["env=popgym", "env.id=PositionOnlyPendulumEasy", "env.max_episode_steps=40"],  # continuous actions
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    folders = {}
    for name, overrides in ENVS.items():
        tiny = TINY if name != "dqn" else ["total_steps=256", "env.num_envs=4", "memory.hidden_size=16"]
        folders[name] = tmp_path_factory.mktemp(name)
        assert train(compose_config(*tiny, *overrides), folders[name]) == 0
    return folders


@pytest.mark.parametrize("name", ENVS)
def test_the_readme_loop_plays_an_episode(runs, name):
    policy = recurl.load_policy(runs[name])
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    state, reset, reward, done, steps = policy.initial_state(), True, 0.0, False, 0
    while not done:
        action, state = policy.act(obs, state, reset, reward=reward)
        assert env.action_space.contains(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        reset, done, steps = False, terminated or truncated, steps + 1
    assert steps > 1 and policy.env_id == compose_config(*ENVS[name]).env.id


@pytest.mark.parametrize("name", ENVS)
def test_the_policy_acts_as_the_training_loop_did(runs, name):
    """Most likely actions of the policy on raw observations of a plain gymnasium vector env equal those of the
    network in recurl's own acting loop (encoded observations, previous action and reward) over several episodes."""
    policy = recurl.load_policy(runs[name])
    cfg, num_envs, seed = policy.config, 3, 11
    encoded = make_vector_env(cfg.env.suite, cfg.env.id, num_envs, seed, max_episode_steps=cfg.env.max_episode_steps)
    network = policy.network
    actor = Actor(encoded, network.inputs, network.initial_state(num_envs), network.to_env, dtype=torch.float32,
                  device=torch.device("cpu"), seed=seed)
    raw = policy.make_vector_env(num_envs)
    obs, _ = raw.reset(seed=env_seeds(seed, num_envs))
    state, reset, reward = policy.initial_state(num_envs), np.ones(num_envs, bool), np.zeros(num_envs)
    ended = 0
    for _ in range(120):
        transition = actor.step(lambda step, s: (*network.act(step, s, True), {}))
        action, state = policy.act(obs, state, reset, reward=reward)
        np.testing.assert_array_equal(action, network.to_env(transition.action))
        obs, reward, terminated, truncated, _ = raw.step(action)
        reset = terminated | truncated
        ended += reset.sum()
    assert ended >= 2  # the comparison crossed episode boundaries


def test_evaluation_is_reproducible_and_independent_of_the_number_of_envs(runs):
    policy = recurl.load_policy(runs["popgym"])
    one = evaluate_policy(policy, 5, seed=7, num_envs=1)
    three = evaluate_policy(policy, 5, seed=7, num_envs=3)
    assert one == three and [e.seed for e in one] == [7, 8, 9, 10, 11]
    assert len({e.episode_return for e in one}) > 1 or one[0].episode_return != 0  # not a constant stub


@pytest.mark.parametrize("name", ["popgym", "dqn"])
def test_sampled_evaluation_is_reproducible_and_independent_of_the_number_of_envs(runs, name):
    """Episode i samples from a generator of its own (seed + i): neither torch's global stream nor the envs beside it
    change its actions."""
    policy = recurl.load_policy(runs[name])
    if name == "dqn":
        policy.network.explore_epsilon = 0.5  # the run's final ε (0.01) would leave most episodes greedy
    one = evaluate_policy(policy, 6, seed=7, deterministic=False, num_envs=1)
    torch.manual_seed(123)
    assert evaluate_policy(policy, 6, seed=7, deterministic=False, num_envs=4) == one
    assert one != evaluate_policy(policy, 6, seed=7)  # the actions were sampled


def test_sampled_continuous_actions_repeat_and_agree_across_the_number_of_envs_up_to_rounding(runs):
    """A batch of another size rounds the network's matrix products differently, so Box actions may differ in their
    last bits across ``num_envs``; for one ``num_envs`` they repeat exactly, whatever torch's global stream."""
    policy = recurl.load_policy(runs["box"])
    three = evaluate_policy(policy, 6, seed=7, deterministic=False, num_envs=3)
    torch.manual_seed(123)
    assert evaluate_policy(policy, 6, seed=7, deterministic=False, num_envs=3) == three
    one = evaluate_policy(policy, 6, seed=7, deterministic=False, num_envs=1)
    assert [e.seed for e in one] == [e.seed for e in three]
    assert [e.episode_return for e in one] == pytest.approx([e.episode_return for e in three], rel=1e-5)
    likeliest = evaluate_policy(policy, 6, seed=7)
    assert [e.episode_return for e in one] != pytest.approx([e.episode_return for e in likeliest])  # sampled


def test_evaluate_cli_writes_one_row_per_episode(runs, capsys):
    evaluate_main([str(runs["minigrid"]), "--episodes", "3", "--seed", "5"])
    out = capsys.readouterr().out
    assert out.startswith("return ") and "over 3 episodes" in out
    with (runs["minigrid"] / "eval.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [5, 6, 7] and all(int(r["length"]) > 0 for r in rows)


def test_bad_runs_are_refused_in_one_line(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"recurl.evaluate: error: {tmp_path} has no checkpoints/final.pt or latest.pt"
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((runs["popgym"] / "checkpoints" / "final.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="is corrupt or not a recurl checkpoint"):
        recurl.load_policy(corrupt)


def _not_played(*args, **kwargs):
    raise AssertionError("episodes were played before the refusal")


def test_an_eval_csv_that_cannot_be_written_is_refused_before_playing(runs, tmp_path, capsys, monkeypatch):
    """RUN/eval.csv a folder, or RUN read-only (faked: root writes in read-only folders too): one line, exit 2."""
    run = shutil.copytree(runs["popgym"], tmp_path / "run", ignore=shutil.ignore_patterns("eval.csv"))
    monkeypatch.setattr("recurl.evaluate.evaluate_policy", _not_played)
    (run / "eval.csv").mkdir()
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.evaluate: error: cannot write {run / 'eval.csv'}: it is a folder; move it away or remove it\n"
    )
    (run / "eval.csv").rmdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != run)
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.evaluate: error: cannot write {run / 'eval.csv'}: {run} is read-only; make it writable\n"
    )


def test_an_eval_csv_whose_write_fails_is_one_line_and_the_previous_one_is_kept(runs, tmp_path, capsys, monkeypatch):
    run = shutil.copytree(runs["popgym"], tmp_path / "run")
    (run / "eval.csv").write_text("the previous evaluation\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("recurl.atomic_file.os.fsync", full_disk)
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(run), "--episodes", "2"])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.evaluate: error: cannot write {run / 'eval.csv'}: No space left on device; free some space, or fix "
        "the folder, and evaluate again\n"
    )
    assert (run / "eval.csv").read_text() == "the previous evaluation\n"
    assert not list(run.glob(".eval.csv.*"))


def test_each_run_seed_is_evaluated_on_episodes_of_its_own(runs, capsys):
    """With S + i for run seed S, the runs of seeds 0 and 1 would share all but one of their episodes."""
    assert [eval_seed(s) for s in (0, 1, 2)] == [1_000_000, 2_000_000, 3_000_000]
    assert eval_seed(3_999) == 4_000_000_000 and eval_seed(4_000) == eval_seed(0)  # below 2**32, numpy's limit
    with pytest.raises(ValueError, match=r"episode seeds 4294967295..4294967296 go past 2\*\*32 - 1"):
        evaluate_policy(recurl.load_policy(runs["popgym"]), 2, 2**32 - 1)
    evaluate_main([str(runs["popgym"]), "--episodes", "2", "--envs", "1"])
    with (runs["popgym"] / "eval.csv").open() as f:
        seeds = [int(row["seed"]) for row in csv.DictReader(f)]
    first = eval_seed(int(recurl.load_policy(runs["popgym"]).config.seed))
    assert seeds == [first, first + 1]
    assert f"seeds {first}..{first + 1}" in capsys.readouterr().out


def test_a_negative_seed_is_refused_in_one_line(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(runs["popgym"]), "--seed", "-1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "recurl.evaluate: error: argument --seed: -1 is negative; give 0 or more (see python -m recurl.evaluate --help)"
    )


def test_load_policy_takes_the_devices_training_takes(runs):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert recurl.load_policy(runs["popgym"], device="auto").device.type == expected
    assert recurl.load_policy(runs["popgym"], device=torch.device("cpu")).device == torch.device("cpu")
    with pytest.raises(ValueError, match="device=tpu is not a device; use auto, cpu, cuda or cuda:N"):
        recurl.load_policy(runs["popgym"], device="tpu")


def test_policy_state_and_observations_must_agree(runs):
    policy = recurl.load_policy(runs["popgym"])
    env = gym.vector.SyncVectorEnv([policy.make_env] * 2)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="the state is for 1 envs, the observations for 2"):
        policy.act(obs, policy.initial_state(1), True)
    dqn = recurl.load_policy(runs["dqn"])
    single, _ = dqn.make_env().reset(seed=0)
    with pytest.raises(ValueError, match="pass reward="):
        dqn.act(single, dqn.initial_state(), True)


class _ExportedProgram:
    """What ``torch.onnx.export`` returns, as far as ``export_onnx`` uses it before checking the file."""

    model = SimpleNamespace(metadata_props={}, doc_string="")

    def save(self, path, external_data):
        Path(path).write_bytes(b"")


def test_export_refuses_an_out_it_cannot_write_in_one_line(runs, tmp_path, capsys, monkeypatch):
    """An --out under a file (mkdir fails) or where the OS refuses a file (saving fails): one line naming the path and
    the OS's reason, nothing written. The exporter is stubbed: the refusal comes after it, and it takes seconds."""
    monkeypatch.setattr("recurl.export.EXTRA_MODULES", ())
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: _ExportedProgram())
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out in [a_file / "policy.onnx", Path("/proc/policy.onnx")]:  # /proc takes no new files
        with pytest.raises(SystemExit) as stop:
            export_main([str(runs["popgym"]), "--out", str(out)])
        line = capsys.readouterr().err
        assert stop.value.code == 2 and line.count("\n") == 1
        assert line.startswith(f"recurl.export: error: cannot write {out}: ") and "; choose another path" in line
    assert list(tmp_path.iterdir()) == [a_file] and not list(Path("/proc").glob(".policy.onnx.*"))
