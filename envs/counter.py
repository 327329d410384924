"""``CounterEnv``: a transparent test env for episode-boundary bookkeeping.

Its observation says which episode and which step it is, and its reward is
the action taken, so a test can check that no transition spans two
episodes, that recurrent state resets exactly at each episode's first
observation, and which action was applied at which step. Registered as
``recurl/Counter-v0`` on ``import recurl.envs``; use it through
``make_vector_env("gym", "recurl/Counter-v0", ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

COUNTER_ID = "recurl/Counter-v0"


class CounterEnv(gym.Env[np.ndarray, np.int64]):
    """Observation ``(episode_id, step_in_episode)`` as float32, actions ``Discrete(2)``, reward = action.

    - ``step_in_episode`` is 0 on the reset observation and ``t`` after ``t`` steps.
    - ``episode_id`` counts resets: 0 for the first episode after a seeded
      reset, +1 at every reset without a seed. A seeded reset starts over, so
      the stream of a sub-env depends on its seed only.
    - Episode ``k`` lasts ``episode_lengths[(seed + k) % len(episode_lengths)]``
      steps (``seed`` of the last seeded reset, 0 if none): sub-envs of a
      vector env, seeded ``seed + i``, thus end at different steps.
    - The last step reports ``terminated`` or, with ``truncate=True``, ``truncated``.
    """

    metadata = {"render_modes": []}

    def __init__(self, episode_lengths: Sequence[int] = (3, 4, 5), truncate: bool = False) -> None:
        if len(episode_lengths) == 0 or min(episode_lengths) < 1:
            raise ValueError(f"episode_lengths must be a non-empty list of positive ints, got {episode_lengths}")
        self.episode_lengths = tuple(int(n) for n in episode_lengths)
        self.truncate = truncate
        self.observation_space = spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._cycle_start = 0
        self._episode_id = -1
        self._step = 0
        self._length = 0  # 0 until the first reset, so that stepping before it fails

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._cycle_start = seed
            self._episode_id = -1
        self._episode_id += 1
        self._length = self.episode_lengths[(self._cycle_start + self._episode_id) % len(self.episode_lengths)]
        self._step = 0
        return self._obs(), {}

    def step(self, action: Any):
        if self._step >= self._length:
            raise RuntimeError("CounterEnv.step() called after the episode ended (or before reset)")
        if not self.action_space.contains(action):
            raise ValueError(f"CounterEnv: invalid action {action!r}")
        self._step += 1
        done = self._step == self._length
        return self._obs(), float(action), done and not self.truncate, done and self.truncate, {}

    def _obs(self) -> np.ndarray:
        return np.array([self._episode_id, self._step], dtype=np.float32)


gym.register(id=COUNTER_ID, entry_point="recurl.envs.counter:CounterEnv")
