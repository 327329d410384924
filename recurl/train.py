"""``python -m recurl.train [overrides]``: train an agent with a memory backbone on an environment.

Hydra composes ``recurl/conf/config.yaml`` with the groups ``agent=``, ``memory=``, ``env=`` and any ``key=value``
overrides, and makes the run folder (``runs/<date>/<time>_<agent>_<memory>`` by default). The folder receives the
resolved config (``.hydra/config.yaml``), ``metrics.csv``, TensorBoard events under ``tensorboard/`` and
``checkpoints/latest.pt`` (rewritten every ``checkpoint_every`` updates) and ``checkpoints/final.pt``.

A mistake in the config (an unknown id or option, a value out of range) stops the run before training with one line
naming it; anything that fails later is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recurl.agents import make_agent
from recurl.checkpoint import save_checkpoint
from recurl.envs import make_vector_env
from recurl.memory import make_memory
from recurl.run_logger import RunLogger

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


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def setup(cfg: DictConfig):
    """Check the config and build envs, memory and agent; every ValueError here is a user's mistake."""
    total_steps = _positive_int(cfg, "total_steps")
    _positive_int(cfg, "checkpoint_every")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if cfg.torch_threads is not None:
        torch.set_num_threads(_positive_int(cfg, "torch_threads"))
    device = resolve_device(str(cfg.device))
    for group, keys in (("env", ENV_KEYS), ("memory", MEMORY_KEYS)):
        missing = [key for key in keys if key not in cfg[group]]
        if missing:
            raise ValueError(f"{group} config lacks {', '.join(missing)}")
    unknown_env = sorted(set(cfg.env) - set(ENV_KEYS))
    if unknown_env:
        raise ValueError(f"env: unknown option(s) {', '.join(unknown_env)}; it accepts {', '.join(ENV_KEYS)}")

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    env_cfg = cfg.env
    envs = make_vector_env(
        env_cfg.suite, str(env_cfg.id), _positive_int(cfg, "env.num_envs"), cfg.seed,
        vectorization=env_cfg.vectorization, max_episode_steps=env_cfg.max_episode_steps,
    )
    memory_cfg = OmegaConf.to_container(cfg.memory)
    memory = make_memory(
        memory_cfg.pop("name"), envs.single_observation_space.shape[0], memory_cfg.pop("hidden_size"),
        memory_cfg.pop("num_layers"), **memory_cfg,
    )
    agent_cfg = OmegaConf.to_container(cfg.agent)
    agent = make_agent(
        agent_cfg.pop("name"), agent_cfg, envs, memory, device=device, total_steps=total_steps, seed=cfg.seed
    )
    return envs, agent


def run(cfg: DictConfig, run_dir: Path, envs, agent) -> None:
    """Train ``agent`` until ``total_steps``, logging every update and checkpointing on the way and at the end."""
    logger = RunLogger(run_dir, cfg.total_steps, start_step=agent.global_step)
    config = OmegaConf.to_container(cfg, resolve=True)

    def checkpoint(*names: str) -> None:
        payload = {"agent": agent.state_dict(), "config": config}
        for name in names:
            save_checkpoint(run_dir / "checkpoints" / name, payload)

    try:
        while agent.global_step < cfg.total_steps:
            metrics, episodes = agent.iterate()
            logger.log(agent.global_step, metrics, episodes)
            if agent.iteration % cfg.checkpoint_every == 0:
                checkpoint("latest.pt")
        checkpoint("latest.pt", "final.pt")
    finally:
        logger.close()
        envs.close()


def train(cfg: DictConfig, run_dir: Path) -> None:
    """Programmatic entry point: ``setup`` then ``run`` (config mistakes raise ValueError)."""
    run(cfg, run_dir, *setup(cfg))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        envs, agent = setup(cfg)
    except ValueError as error:
        print(f"recurl.train: error: {error}", file=sys.stderr)
        sys.exit(2)
    run(cfg, Path(HydraConfig.get().runtime.output_dir), envs, agent)


if __name__ == "__main__":
    main()
