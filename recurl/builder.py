"""Build a run from its config: check it, make the envs, the memory and the agent; restore them from a checkpoint.

``recurl.train`` trains what this builds; ``recurl.policy`` rebuilds only the acting network of a finished run.
Every ``ValueError`` raised here is a mistake in the config (or checkpoint), reported to the user in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from omegaconf import DictConfig, OmegaConf

from recurl.agents import AGENTS, Agent, agent_config, input_size, make_agent
from recurl.checkpoint import CheckpointError, load_checkpoint
from recurl.command_line import MAX_SEED
from recurl.envs import make_vector_env
from recurl.envs.snapshot import restore
from recurl.memory import MEMORIES, Memory, make_memory

MEMORY_KEYS = ("name", "hidden_size", "num_layers")
ENV_KEYS = ("suite", "id", "num_envs", "vectorization", "max_episode_steps")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    return device


def positive_int(cfg: DictConfig, key: str) -> int:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def check_groups(cfg: DictConfig) -> None:
    """The env and memory groups have their required keys, and env no others."""
    for group, keys in (("env", ENV_KEYS), ("memory", MEMORY_KEYS)):
        missing = [key for key in keys if key not in cfg[group]]
        if missing:
            raise ValueError(f"{group} config lacks {', '.join(missing)}")
    unknown_env = sorted(set(cfg.env) - set(ENV_KEYS))
    if unknown_env:
        raise ValueError(f"env: unknown option(s) {', '.join(unknown_env)}; it accepts {', '.join(ENV_KEYS)}")


def build_memory(cfg: DictConfig, observation_size: int, action_space: spaces.Space, device: torch.device) -> Memory:
    """The memory the config's agent reads its inputs with (observation, and previous action and reward if on)."""
    agent_options = OmegaConf.to_container(cfg.agent)
    agent_name = agent_options.pop("name")
    options = OmegaConf.to_container(cfg.memory)
    if options["name"] not in MEMORIES:  # Hydra found a yaml in the memory group: the cell is what is missing
        raise ValueError(
            f"memory.name={options['name']}: recurl.memory.MEMORIES has no such backbone ({', '.join(MEMORIES)}); a "
            "new backbone's cell is added there (README, \"Adding a backbone\")"
        )
    return make_memory(
        options.pop("name"), input_size(agent_name, agent_options, observation_size, action_space),
        options.pop("hidden_size"), options.pop("num_layers"), device=device, **options,
    )


def build_network(cfg: DictConfig, observation_size: int, action_space: spaces.Space, device: torch.device):
    """Only the acting network of the config's agent (``recurl.agents.ActingNetwork``), untrained, on ``device``."""
    check_groups(cfg)
    options = OmegaConf.to_container(cfg.agent)
    name = options.pop("name")
    config = agent_config(name, options)
    memory = build_memory(cfg, observation_size, action_space, device)
    return AGENTS[name][0].make_network(config, memory, observation_size, action_space).to(device)


def setup(cfg: DictConfig) -> tuple[VectorEnv, Agent]:
    """Check the config and build envs, memory and agent."""
    total_steps = positive_int(cfg, "total_steps")
    positive_int(cfg, "checkpoint_every")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2**32 - 1 (numpy's seed range), got {cfg.seed!r}")
    if cfg.torch_threads is not None:
        torch.set_num_threads(positive_int(cfg, "torch_threads"))
    device = resolve_device(str(cfg.device))
    check_groups(cfg)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    env_cfg = cfg.env
    time_limit = None if env_cfg.max_episode_steps is None else positive_int(cfg, "env.max_episode_steps")
    envs = make_vector_env(
        env_cfg.suite, str(env_cfg.id), positive_int(cfg, "env.num_envs"), cfg.seed,
        vectorization=env_cfg.vectorization, max_episode_steps=time_limit,
    )
    try:
        memory = build_memory(cfg, envs.single_observation_space.shape[0], envs.single_action_space, device)
        agent_options = OmegaConf.to_container(cfg.agent)
        agent = make_agent(
            agent_options.pop("name"), agent_options, envs, memory, device=device, total_steps=total_steps,
            seed=cfg.seed,
        )
    except BaseException:
        envs.close()
        raise
    return envs, agent


def load_into(checkpoint: Path, envs: VectorEnv, agent: Agent) -> dict | None:
    """Restore agent, env episodes and RNG streams from ``checkpoint`` (refused in one line if it does not fit);
    returns the run's last episode returns before it (``RunLogger.returns_record``), for its final return (``None``
    from a checkpoint without them).

    A checkpoint without the envs' episodes (``async`` vectorization keeps none) leaves the envs in the fresh episodes
    ``setup`` reset them to, and the agent acting on those (``RecurrentAgent.load_state_dict``'s ``envs_restarted``).
    """
    payload = load_checkpoint(checkpoint)
    try:
        agent.load_state_dict(payload["agent"], envs_restarted=payload.get("envs") is None)
        if payload.get("envs") is not None:
            restore(envs, payload["envs"])
        torch.set_rng_state(payload["rng"]["torch"])
    except (KeyError, RuntimeError, ValueError) as error:
        # torch's state-dict errors put their summary on the first line and what does not fit on the next
        reason = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        raise CheckpointError(f"checkpoint {checkpoint} does not fit this run: {reason}") from None
    return payload.get("returns")
