"""Every agent trains with every memory backbone on every env suite, end to end, and writes a complete run folder."""

import csv
import math

import pytest

from conftest import compose_config
from recurl.checkpoint import load_checkpoint
from recurl.memory import MEMORIES
from recurl.training import train

pytestmark = pytest.mark.slow
AGENTS = {
    "ppo": ["agent.rollout_steps=16", "agent.minibatches=2"],
    "dqn": [
        "agent=dqn", "agent.buffer_capacity=256", "agent.learning_starts=64", "agent.batch_size=4",
        "agent.sequence_length=4", "agent.burn_in=2", "agent.n_step=2", "agent.train_every=8",
        "agent.target_update_every=2",
    ],
}
#: Metrics each agent must log in every row (finite once it has started learning).
LEARNING_METRICS = {"ppo": ("policy_loss", "value_loss", "entropy"), "dqn": ("loss", "q_mean", "grad_norm")}


@pytest.mark.parametrize("env", ["popgym", "minigrid"])
@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_backbone_trains_on_every_suite(agent, memory, env, tmp_path):
    cfg = compose_config(
        *AGENTS[agent], f"memory={memory}", f"env={env}", "env.num_envs=4", "total_steps=256", "memory.hidden_size=16",
        "torch_threads=1",
    )
    assert train(cfg, tmp_path) == 0
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] >= 256
    learned = [r for r in rows if not math.isnan(float(r[LEARNING_METRICS[agent][0]]))]
    assert learned and all(math.isfinite(float(r[key])) for r in learned for key in LEARNING_METRICS[agent])
    assert all(float(r["sps"]) > 0 for r in rows)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert final["agent"]["global_step"] == steps[-1] and final["config"]["agent"]["name"] == agent
    assert (tmp_path / "checkpoints" / "latest.pt").is_file()
