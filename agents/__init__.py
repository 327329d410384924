"""Agents: recurrent PPO and recurrent (R2D2-style) DQN, each taking any memory backbone.

``Agent`` is what ``recurl.train`` drives and ``ActingNetwork`` what acts for evaluation, videos and export; both
agents implement them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tensordict import TensorDict

from recurl.agents.dqn import DQN, DQNConfig
from recurl.agents.inputs import AgentInputs
from recurl.agents.ppo import PPO, PPOConfig
from recurl.memory import Memory
from recurl.memory.cell import State

#: Agent name -> (agent class, its config dataclass).
AGENTS = {"ppo": (PPO, PPOConfig), "dqn": (DQN, DQNConfig)}


class ActingNetwork(Protocol):
    """A trained network that acts one step at a time (``RecurrentActorCritic``, ``RecurrentQNetwork``)."""

    inputs: AgentInputs

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State: ...

    def act(
        self, step: TensorDict, state: State, deterministic: bool, generators: Sequence[torch.Generator] | None = None
    ) -> tuple[torch.Tensor, State]:
        """Actions for ``step`` [B]: the most likely (greedy) ones if ``deterministic``, else sampled, row ``i``'s
        from ``generators[i]`` when given."""

    def to_env(self, action: torch.Tensor) -> np.ndarray: ...


class Agent(Protocol):
    """What training drives: one ``iterate`` is some acting and some learning."""

    network: ActingNetwork
    global_step: int

    def iterate(self) -> tuple[dict[str, float], list[tuple[float, int]]]:
        """Act and learn once; returns metrics (the same keys every time) and the ``(return, length)`` of each
        episode that ended meanwhile."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, envs_restarted: bool = False) -> None:
        """Restore ``state_dict``'s; ``envs_restarted``: the envs were reset, not restored from the checkpoint."""


def agent_config(name: str, options: dict[str, Any]):
    """The config dataclass of agent ``name`` filled from ``options`` (unknown names and keys are refused)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    config_cls = AGENTS[name][1]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        accepted = ", ".join(sorted(fields))
        raise ValueError(f"agent {name}: unknown option(s) {', '.join(unknown)}; it accepts {accepted}")
    return config_cls(**options)


def make_agent(
    name: str, options: dict[str, Any], envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int,
    seed: int,
) -> Agent:
    """Build agent ``name`` with config ``options`` (the fields of its config dataclass)."""
    return AGENTS[name][0](agent_config(name, options), envs, memory, device=device, total_steps=total_steps, seed=seed)


def input_size(name: str, options: dict[str, Any], observation_size: int, action_space) -> int:
    """How many features agent ``name``'s memory reads: the observation, plus the previous action and reward if on."""
    config = agent_config(name, options)
    return AgentInputs(observation_size, action_space, config.previous_action, config.previous_reward).size


__all__ = [
    "AGENTS", "ActingNetwork", "Agent", "DQN", "DQNConfig", "PPO", "PPOConfig", "agent_config", "input_size",
    "make_agent",
]
