"""Periodic evaluation (``eval_every``): when it runs, what it logs, and that it never changes the training run."""

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config
from recurl import load_policy
from recurl.evaluate import eval_seed, evaluate_policy
from recurl.periodic_eval import untouched_rng
from recurl.training import prepare, run, train

#: Each agent at a tiny size on one env: an update is 16 env steps for both.
AGENTS = {
    "ppo": ["agent.rollout_steps=16", "agent.minibatches=1", "agent.anneal_lr=false"],
    "dqn": [
        "agent=dqn", "agent.buffer_capacity=256", "agent.learning_starts=16", "agent.batch_size=4",
        "agent.sequence_length=4", "agent.burn_in=2", "agent.n_step=2", "agent.train_every=16",
    ],
}
EVAL_COLUMNS = {"eval_return", "eval_length"}


def config(agent, *overrides):
    return compose_config(*AGENTS[agent], "memory.hidden_size=16", "env.num_envs=1", "torch_threads=1", *overrides)


def rows(run_dir, leave_out=()):
    """metrics.csv's rows without the time columns (and ``leave_out``)."""
    left_out = {"sps", "wall_time", *leave_out}
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in left_out} for row in csv.DictReader(f)]


def evaluated_steps(run_dir):
    return [int(row["step"]) for row in rows(run_dir) if not math.isnan(float(row["eval_return"]))]


def global_rng():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("agent", AGENTS)
def test_evaluation_does_not_change_the_training_run(agent, tmp_path):
    """Same rows (but the eval columns) and the same global random streams afterwards, with and without evaluation;
    evaluations at the first update end past each multiple of eval_every (40: steps 48, 80, 128) and at the end."""
    assert train(config(agent, "total_steps=160"), tmp_path / "plain") == 0
    plain_rng = global_rng()
    assert train(config(agent, "total_steps=160", "eval_every=40", "eval_episodes=2"), tmp_path / "eval") == 0
    eval_rng = global_rng()
    assert rows(tmp_path / "eval", leave_out=EVAL_COLUMNS) == rows(tmp_path / "plain")
    assert torch.equal(plain_rng[0], eval_rng[0]) and np.array_equal(plain_rng[1], eval_rng[1])
    assert plain_rng[2] == eval_rng[2]
    assert evaluated_steps(tmp_path / "eval") == [48, 80, 128, 160]
    assert all(EVAL_COLUMNS <= set(row) for row in rows(tmp_path / "eval"))
    assert not EVAL_COLUMNS & set(rows(tmp_path / "plain")[0])


def test_the_last_evaluation_is_the_trained_policys_and_goes_to_tensorboard(tmp_path):
    assert train(config("ppo", "total_steps=64", "eval_every=1000", "eval_episodes=3"), tmp_path) == 0
    assert evaluated_steps(tmp_path) == [64]  # never a multiple of 1000: only the final evaluation
    last = rows(tmp_path)[-1]
    episodes = evaluate_policy(load_policy(tmp_path), 3, eval_seed(0))
    assert float(last["eval_return"]) == pytest.approx(np.mean([e.episode_return for e in episodes]))
    assert float(last["eval_length"]) == pytest.approx(np.mean([e.length for e in episodes]))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("eval_return")] == [
        (64, pytest.approx(float(last["eval_return"])))
    ]


def resume(run_dir, *overrides):
    """What ``python -m recurl.train resume=RUN_DIR OVERRIDES`` does, in this process."""
    args = [f"resume={run_dir}", *overrides]
    return run(*prepare(compose_config(*args), args, Path("unused")))


@pytest.mark.parametrize("agent", AGENTS)
def test_a_resumed_run_evaluates_as_the_uninterrupted_one(agent, tmp_path):
    """(DQN's ε is held constant: its schedule follows total_steps, which the resumed run extends.)"""
    full, half = tmp_path / "full", tmp_path / "half"
    same = ["eval_every=32", "eval_episodes=2"]
    if agent == "dqn":
        same += ["agent.epsilon_start=0.3", "agent.epsilon_end=0.3"]
    assert train(config(agent, "total_steps=128", *same), full) == 0
    assert train(config(agent, "total_steps=64", *same), half) == 0
    assert resume(half, "total_steps=128") == 0
    assert rows(half) == rows(full)
    assert evaluated_steps(full) == [32, 64, 96, 128]


def test_evaluation_turned_on_when_resuming_adds_its_columns(tmp_path):
    assert train(config("ppo", "total_steps=32"), tmp_path) == 0
    assert resume(tmp_path, "total_steps=64", "eval_every=32", "eval_episodes=2") == 0
    with (tmp_path / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert header[6:8] == ["eval_return", "eval_length"]
    assert [int(r["step"]) for r in rows(tmp_path)] == [16, 32, 48, 64]
    assert evaluated_steps(tmp_path) == [64]


def test_untouched_rng_restores_every_global_stream():
    before = global_rng()
    with untouched_rng(torch.device("cpu")):
        torch.rand(3), np.random.rand(3), random.random()
    after = global_rng()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
