"""Evaluation during training (``eval_every``): the live network plays ``eval_episodes`` episodes on fixed seeds.

Every evaluation plays the same episodes (seeds ``recurl.evaluate.eval_seed(seed)`` on), with the most likely
actions, so the ``eval_return`` curve compares like with like. It runs on envs of its own and leaves every random
stream of the training run as it found it (torch's, numpy's and Python's global generators, the agent's own): a run
with evaluation trains exactly as the same run without it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from recurl.builder import positive_int
from recurl.envs import make_env
from recurl.evaluate import eval_seed, evaluate_policy, summary
from recurl.policy import Policy


def eval_every(cfg: DictConfig) -> int | None:
    """The config's ``eval_every`` (None: never), checked with ``eval_episodes`` (ValueError)."""
    every = OmegaConf.select(cfg, "eval_every", default=None)
    if every is None:
        return None
    positive_int(cfg, "eval_every")
    positive_int(cfg, "eval_episodes")
    return every


@contextmanager
def untouched_rng(device: torch.device) -> Iterator[None]:
    """Run the body without moving torch's (CPU and ``device``'s), numpy's or Python's global random streams."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


class PeriodicEvaluation:
    def __init__(self, cfg: DictConfig, network, every: int):
        self.every, self.episodes, self.seed = every, int(cfg.eval_episodes), eval_seed(int(cfg.seed))
        self.device = next(network.parameters()).device
        env_cfg = cfg.env
        with untouched_rng(self.device):
            env = make_env(env_cfg.suite, str(env_cfg.id), max_episode_steps=env_cfg.max_episode_steps)
            observation_space = env.observation_space
            env.close()
        self.policy = Policy(network, cfg, observation_space, self.device)

    def due(self, step_before: int, step: int, finished: bool) -> bool:
        """At the first update end past each multiple of ``every``, and when training ends."""
        return finished or step // self.every > step_before // self.every

    def __call__(self) -> tuple[dict[str, float], str]:
        """Play the episodes; returns the ``eval_return``/``eval_length`` means and a one-line summary."""
        with untouched_rng(self.device):
            episodes = evaluate_policy(self.policy, self.episodes, self.seed, deterministic=True)
        means = {
            "eval_return": float(np.mean([e.episode_return for e in episodes])),
            "eval_length": float(np.mean([e.length for e in episodes])),
        }
        return means, summary(episodes)
