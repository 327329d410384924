"""recurl.envs.snapshot: a vector env restored from a snapshot goes on exactly as the one it was taken from."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from recurl.envs import COUNTER_ID, make_vector_env
from recurl.envs.snapshot import EpisodeLog, restore, snapshot

ENVS = [("popgym", "RepeatPreviousEasy"), ("minigrid", "MiniGrid-MemoryS7-v0"), ("gym", "CartPole-v1")]


def play(envs, actions):
    return [envs.step(action)[:4] for action in actions]


@pytest.mark.parametrize("suite, env_id", ENVS, ids=[env_id for _, env_id in ENVS])
def test_a_restored_vector_env_steps_as_the_original(suite, env_id):
    original = make_vector_env(suite, env_id, 3, seed=4)
    rng = np.random.default_rng(0)
    play(original, [original.action_space.sample() for _ in range(9)])
    restored = make_vector_env(suite, env_id, 3, seed=99)
    restore(restored, snapshot(original))
    actions = [rng.integers(0, original.single_action_space.n, 3) for _ in range(40)]
    for got, want in zip(play(restored, actions), play(original, actions), strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    original.close()
    restored.close()


def test_a_replay_that_ends_its_episode_early_is_refused():
    """A lower time limit than the run's: the saved episode would end during its replay."""
    counter = dict(env_kwargs={"episode_lengths": (50,)})
    original = make_vector_env("gym", COUNTER_ID, 1, seed=0, **counter)
    play(original, [np.array([1])] * 12)
    shorter = make_vector_env("gym", COUNTER_ID, 1, seed=0, max_episode_steps=5, **counter)
    with pytest.raises(ValueError, match="episode ended after 5 of its 12 actions"):
        restore(shorter, snapshot(original))


class LookupEnv(gym.Env):
    """Looks its Discrete action up in a dict, as POPGym's Labyrinth does: a 0-d array is not a key."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = {0: 0.0, 1: 1.0}[action]
        return np.zeros(1, np.float32), reward, False, False, {}


def test_replayed_discrete_actions_are_scalars_as_the_vector_env_passes_them():
    env = EpisodeLog(LookupEnv())
    env.reset(seed=0)
    env.step(np.int64(1))
    env.replay(env.start, env.actions)
    assert env.actions == [1]
