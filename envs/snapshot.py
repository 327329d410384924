"""Exact environment state for resuming a run, as plain data: each sub-env's current episode, replayable.

Gymnasium envs cannot be saved without pickling arbitrary objects, which checkpoints refuse. But an env whose
randomness comes from its ``np_random`` is a function of how its episode started (the seed, or the RNG state just
before the reset) and of the actions taken since. ``EpisodeLog`` wraps each sub-env and keeps exactly that;
``snapshot`` reads it out (with the episode statistics in progress) and ``restore`` rebuilds every sub-env by
resetting it the same way and replaying the actions. Exact for POPGym, MiniGrid and gymnasium's classic-control envs;
an env with hidden randomness of its own would diverge after a resume: POPGym's Labyrinth tasks (registered when
``mazelib`` is installed) draw their mazes from Python's global ``random``, shared by all sub-envs. Sync vectorization
only: async sub-envs live in other processes. A replay that ends its episode before its last action (the env's time
limit was lowered, or the env changed) is refused.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics


class EpisodeLog(gym.Wrapper):
    """Remembers how the current episode started and the actions taken since (the last one only once it succeeded)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.start = {"seed": seed} if seed is not None else {"rng": self.unwrapped.np_random.bit_generator.state}
        self.actions: list[Any] = []
        return super().reset(seed=seed, options=options)

    def step(self, action):
        result = super().step(action)
        self.actions.append(np.asarray(action).tolist())
        return result

    def replay(self, start: dict[str, Any], actions: list[Any]) -> None:
        if "seed" in start:
            self.reset(seed=start["seed"])
        else:
            self.unwrapped.np_random.bit_generator.state = start["rng"]
            self.reset()
        space = self.action_space
        for count, action in enumerate(actions, 1):
            # [()]: a Discrete action as a numpy scalar, as the vector env passes it (a 0-d array is unhashable)
            _, _, terminated, truncated, _ = self.step(
                np.asarray(action, dtype=space.dtype)[()] if space.dtype is not None else action
            )
            if terminated or truncated:  # a saved episode was under way: it ended with none of its actions
                raise ValueError(
                    f"env snapshot does not replay: {self.spec.id if self.spec else 'the env'}'s episode ended after "
                    f"{count} of its {len(actions)} actions (a lower env.max_episode_steps, or another env?)"
                )


def _sub_envs(envs: VectorEnv) -> list[EpisodeLog]:
    vector = envs.unwrapped
    if not isinstance(vector, SyncVectorEnv):
        raise ValueError("exact env snapshots need env.vectorization=sync (async sub-envs run in other processes)")
    return list(vector.envs)


def _episode_statistics(envs: VectorEnv) -> RecordEpisodeStatistics:
    while not isinstance(envs, RecordEpisodeStatistics):
        envs = envs.env
    return envs


def snapshot(envs: VectorEnv) -> str:
    """The state of every sub-env and of the episode statistics in progress, as a JSON string."""
    return json.dumps(
        {
            "episodes": [{"start": env.start, "actions": env.actions} for env in _sub_envs(envs)],
            "episode_returns": _episode_statistics(envs).episode_returns.tolist(),
            "episode_lengths": _episode_statistics(envs).episode_lengths.tolist(),
        }
    )


def restore(envs: VectorEnv, state: str) -> None:
    """Put freshly made ``envs`` (same id, kwargs and number of sub-envs) back into the state ``snapshot`` saw."""
    data = json.loads(state)
    sub_envs = _sub_envs(envs)
    if len(data["episodes"]) != len(sub_envs):
        raise ValueError(f"env snapshot holds {len(data['episodes'])} sub-envs, the run has {len(sub_envs)}")
    for env, episode in zip(sub_envs, data["episodes"]):
        env.replay(episode["start"], episode["actions"])
    statistics = _episode_statistics(envs)
    statistics.episode_returns[:] = data["episode_returns"]
    statistics.episode_lengths[:] = data["episode_lengths"]
