"""Build the vectorised, observation-encoded environments agents train on.

Autoreset is ``gymnasium.vector.AutoresetMode.SAME_STEP``, on purpose. When
sub-env ``i``'s episode ends at step ``t``, that same ``step`` call returns
the *next* episode's first observation in ``obs[i]`` and the true last
observation in ``info["final_obs"][i]`` (mask ``info["_final_obs"]``). So:

- every transition ``(obs_t, action_t, reward_t, done_t)`` is real: there is
  no fake step whose action is ignored and whose reward is 0, as with
  gymnasium's default ``NEXT_STEP`` mode, to be masked out of losses;
- the reset flag of observation ``t + 1`` (it starts an episode) is exactly
  ``terminated_t | truncated_t``, the flag the memory contract wants;
- a truncated episode can bootstrap from its true last observation
  (``final_observations``), which is encoded like every other observation
  because the encoding wrapper sits inside each sub-env.

Episode statistics come from gymnasium's vector ``RecordEpisodeStatistics``,
which counts correctly in ``SAME_STEP`` mode; ``finished_episodes`` reads them.

Seeding: ``make_vector_env`` seeds the action space with ``seed`` and resets
sub-env ``i`` with ``env_seeds(seed, num_envs)[i]``, drawn from
``numpy.random.SeedSequence(seed)``. Gymnasium's own ``reset(seed=seed)``
would give sub-env ``i`` the seed ``seed + i``: runs with seeds 0 and 1 would
then share all but one env stream (seed 1's sub-env 0 replaying seed 0's
sub-env 1), and seeds averaged as independent would not be. The env comes back
reset; ``envs.reset(seed=env_seeds(seed, num_envs))`` again gives the same
observations, and a later ``reset()`` without a seed continues the seeded
random streams, so runs are reproducible either way.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from .encoding import encode_observations
from .registry import resolve_env_id
from .snapshot import EpisodeLog

VECTORIZATIONS = {"sync": SyncVectorEnv, "async": AsyncVectorEnv}


class EnvStepError(RuntimeError):
    """An environment raised while being stepped: the run cannot go on, but it is not a bug of the agent."""


class NamedEnvErrors(VectorWrapper):
    """Re-raises anything a sub-env raises in ``step`` as ``EnvStepError`` naming the env id."""

    def __init__(self, env: VectorEnv, env_id: str):
        super().__init__(env)
        self.env_id = env_id

    def step(self, actions):
        try:
            return self.env.step(actions)
        except Exception as error:
            raise EnvStepError(f"env {self.env_id} raised {type(error).__name__}: {error}") from error


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """The reset seeds of a run's ``num_envs`` sub-envs: independent streams for every run seed (module docstring)."""
    return [int(word) for word in np.random.SeedSequence(seed).generate_state(num_envs)]


def make_vector_env(
    suite: str,
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    vectorization: str = "sync",
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> VectorEnv:
    """``num_envs`` encoded copies of ``env_id`` from ``suite`` in one vector env, already reset with
    ``env_seeds(seed, num_envs)``.

    Observations are ``[num_envs, obs_dim]`` float32 (``single_observation_space``
    is the encoded flat Box); action spaces are the env's own. ``vectorization``
    is ``"sync"`` (one process) or ``"async"`` (one process per sub-env).
    ``render_mode`` is passed to the env only when given (most POPGym games
    refuse the argument); ``max_episode_steps`` adds a ``TimeLimit`` (truncation);
    ``env_kwargs`` are passed to ``gymnasium.make``.
    """
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {', '.join(VECTORIZATIONS)}, got {vectorization!r}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    full_id = resolve_env_id(suite, env_id)
    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    make_one = functools.partial(_make_encoded_env, suite, full_id, max_episode_steps, kwargs)
    envs = VECTORIZATIONS[vectorization]([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    envs = NamedEnvErrors(RecordEpisodeStatistics(envs), full_id)
    if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
        envs.close()
        raise RuntimeError(
            f"{envs} reports autoreset_mode={envs.metadata.get('autoreset_mode')}, expected SAME_STEP"
        )
    envs.action_space.seed(seed)
    envs.single_action_space.seed(seed)
    envs.reset(seed=env_seeds(seed, num_envs))
    return envs


def make_env(suite: str, env_id: str, *, max_episode_steps: int | None = None, **kwargs: Any) -> gym.Env:
    """One env of ``suite`` as gymnasium makes it (observations not encoded), with a ``TimeLimit`` if
    ``max_episode_steps`` is given; ``kwargs`` go to ``gymnasium.make``. Not reset."""
    full_id = resolve_env_id(suite, env_id)  # imports the suite: an async worker may start with an empty registry
    try:
        return gym.make(full_id, max_episode_steps=max_episode_steps, **kwargs)
    except gym.error.DependencyNotInstalled as error:  # registered, but its package is missing (Box2D, MuJoCo)
        raise ValueError(f"env {full_id} cannot run here: {str(error).strip().splitlines()[0]}") from None


def _make_encoded_env(
    suite: str, env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]
) -> gym.Env:
    return EpisodeLog(encode_observations(make_env(suite, env_id, max_episode_steps=max_episode_steps, **kwargs)))


def finished_episodes(info: dict[str, Any]) -> list[tuple[float, int]]:
    """``(return, length)`` of each episode that ended this step, in sub-env order."""
    if "_episode" not in info:
        return []
    done = info["_episode"]
    stats = info["episode"]
    return [(float(r), int(n)) for r, n in zip(stats["r"][done], stats["l"][done])]


def final_observations(obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The observation each sub-env's last transition led to: ``obs`` with ended sub-envs' rows replaced by their
    final ones.

    This is what a value target bootstraps from (for truncated episodes);
    ``obs`` itself holds the next episodes' first observations there.
    """
    if "_final_obs" not in info:
        return obs
    ended = info["_final_obs"]
    out = obs.copy()
    out[ended] = np.stack(info["final_obs"][ended])
    return out
