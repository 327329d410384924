"""Agents: recurrent PPO and recurrent (R2D2-style) DQN, each taking any memory backbone."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from gymnasium.vector import VectorEnv

from recurl.agents.dqn import DQN, DQNConfig
from recurl.agents.ppo import PPO, PPOConfig
from recurl.memory import Memory

#: Agent name -> (agent class, its config dataclass).
AGENTS = {"ppo": (PPO, PPOConfig), "dqn": (DQN, DQNConfig)}


def make_agent(
    name: str, options: dict[str, Any], envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int, seed: int
):
    """Build agent ``name`` with config ``options`` (the fields of its config dataclass)."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    agent_cls, config_cls = AGENTS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"agent {name}: unknown option(s) {', '.join(unknown)}; it accepts {', '.join(sorted(fields))}")
    return agent_cls(config_cls(**options), envs, memory, device=device, total_steps=total_steps, seed=seed)


__all__ = ["AGENTS", "DQN", "DQNConfig", "PPO", "PPOConfig", "make_agent"]
