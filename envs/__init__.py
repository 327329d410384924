"""Environments: vectorised POPGym, MiniGrid or any gymnasium id, with observations encoded as flat float32 vectors.

Importing this package registers ``recurl/Counter-v0`` and does not import
popgym or minigrid: they are imported when their suite is first used.
"""

from .counter import COUNTER_ID, CounterEnv
from .encoding import UnsupportedSpaceError, encode_observations, encoded_size, encoded_space
from .make import EnvStepError, env_seeds, final_observations, finished_episodes, make_env, make_vector_env
from .registry import SUITES, resolve_env_id

__all__ = [
    "COUNTER_ID",
    "SUITES",
    "CounterEnv",
    "EnvStepError",
    "UnsupportedSpaceError",
    "encode_observations",
    "encoded_size",
    "encoded_space",
    "env_seeds",
    "final_observations",
    "finished_episodes",
    "make_env",
    "make_vector_env",
    "resolve_env_id",
]
