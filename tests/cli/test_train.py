"""End-to-end: the CLI and the training loop write a complete run folder (every backbone and suite: see
test_every_backbone)."""

import csv
import math
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from recurl.builder import setup
from recurl.checkpoint import load_checkpoint
from recurl.run_logger import RunLogger
from recurl.training import train


class TupleActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, np.float32), {}


gym.register("recurl-test/TupleActions-v0", entry_point=TupleActions)
TINY = ["total_steps=256", "agent.rollout_steps=16", "agent.minibatches=2", "memory.hidden_size=16"]


def config(*overrides):
    return compose_config(*TINY, *overrides)


def read_metrics(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def assert_complete_run(run_dir, total_steps=256):
    rows = read_metrics(run_dir)
    assert rows and int(rows[-1]["step"]) >= total_steps
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps))
    for key in ("episode_return", "episode_length", "sps", "policy_loss", "value_loss", "entropy"):
        assert key in rows[0]
    assert all(math.isfinite(float(r["policy_loss"])) and float(r["sps"]) > 0 for r in rows)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    final = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    assert final["agent"]["global_step"] == int(rows[-1]["step"])
    assert (run_dir / "checkpoints" / "latest.pt").is_file()


def test_cli_writes_a_complete_run_named_after_env_agent_and_memory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "recurl.train", *TINY, "memory=minlstm", "env.num_envs=4", "torch_threads=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert re.fullmatch(r"\d\d-\d\d-\d\d_popgym-RepeatFirstEasy-v0_ppo_minlstm", run_dir.name)
    assert_complete_run(run_dir)
    resolved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "name: minlstm" in resolved and "total_steps: 256" in resolved


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.id=RepeatForever", "unknown env id 'RepeatForever' for suite 'popgym'"),
        ("total_steps=0", "total_steps must be a positive integer"),
        ("env.num_envs=-2", "env.num_envs must be a positive integer"),
        ("device=cuda:7", "no CUDA GPU is visible"),
        ("+memory.dropout=0.1", "unknown option(s) dropout"),
        ("memory.scan_backend=cuda", "unknown scan backend 'cuda'; choose one of auto, reference, torch, triton"),
        ("+agent.momentum=0.9", "agent ppo: unknown option(s) momentum"),
        ("agent.gamma=2", "agent.gamma must be in [0, 1]"),
        ("env=gym env.id=recurl-test/TupleActions-v0", "action space Tuple(Discrete(2), Discrete(3)) is not supported"),
    ],
)
def test_config_mistakes_are_refused_with_a_reason(override, message):
    with pytest.raises(ValueError) as error:
        setup(config(*override.split()))
    assert message in str(error.value)


def test_triton_scans_on_cpu_are_refused_before_training(monkeypatch):
    """Outside the interpreter (which the tests otherwise run under), Triton kernels need a CUDA device."""
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="scan backend 'triton' runs on CUDA devices, not cpu"):
        setup(config("memory=minlstm", "memory.scan_backend=triton", "device=cpu"))


def test_env_ids_become_one_folder_name():
    """``ALE/Pong-v5`` or ``module:Env-v0`` would otherwise make nested or odd folders."""
    names = OmegaConf.create({"a": "${recurl_slug:ALE/Pong-v5}", "b": "${recurl_slug:'my.mod:Env-v0'}"})
    assert (names.a, names.b) == ("ALE-Pong-v5", "my.mod-Env-v0")


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_the_progress_bar_ends_where_the_run_does_and_never_shows_nan(agent, tmp_path):
    """Updates of 64 env steps and total_steps=300: the run, and the bar, end at 320. Episodes (52 steps) end only in
    the fourth update: the bar shows "-" for the return until then, and the last known return after it (the fifth
    update's row has none: NaN in metrics.csv)."""
    dqn = [
        "agent=dqn", "agent.train_every=16", "agent.learning_starts=64", "agent.buffer_capacity=512",
        "agent.batch_size=4", "agent.sequence_length=4", "agent.burn_in=2", "agent.n_step=2",
    ]
    overrides = ["memory.hidden_size=16", "env.num_envs=4", "total_steps=300", *(dqn if agent == "dqn" else TINY[1:3])]
    cfg = compose_config(*overrides)
    envs, learner = setup(cfg)
    logger = RunLogger(tmp_path, cfg.total_steps)
    postfixes = []
    while learner.global_step < cfg.total_steps:
        metrics, episodes = learner.iterate()
        row = logger.log(learner.global_step, metrics, episodes)
        postfixes.append(logger.progress.postfix)
    logger.close()
    envs.close()
    assert logger.progress.total == learner.global_step == 320
    assert math.isnan(row["episode_return"])
    assert [p.startswith("ret=-,") for p in postfixes] == [True] * 3 + [False] * 2
    assert all("nan" not in p for p in postfixes)


def test_video_flag_records_the_final_policy(tmp_path):
    assert train(config("video=true", "env.num_envs=2"), tmp_path) == 0
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"final-ep{i}.mp4" for i in range(3)]


def test_the_popgym_preset_sets_popgyms_published_ppo_settings():
    cfg = compose_config("experiment=popgym", "memory=lstm")
    agent, env = cfg.agent, cfg.env
    assert (agent.name, env.suite, env.num_envs) == ("ppo", "popgym", 64)
    assert (agent.rollout_steps, agent.minibatches) == (1024, 8)
    assert env.num_envs * agent.rollout_steps == 65_536 and agent.epochs == 30 and agent.max_grad_norm is None
    assert (agent.learning_rate, agent.gae_lambda, agent.clip_coef, agent.entropy_coef) == (5e-5, 1.0, 0.3, 0.0)
    assert agent.previous_action and cfg.memory.hidden_size == 256 and cfg.total_steps == 15_000_000
    # and it trains, scaled down
    small = compose_config(
        "experiment=popgym", "env.num_envs=4", "agent.rollout_steps=16", "agent.minibatches=2", "agent.epochs=2",
        "memory.hidden_size=16", "total_steps=64", "torch_threads=1",
    )
    envs, ppo = setup(small)
    metrics, _ = ppo.iterate()
    envs.close()
    assert math.isfinite(metrics["policy_loss"]) and ppo.global_step == 64
