"""``recurl.load_policy``: a trained run's policy, acting on an env's own observations, one step at a time.

    policy = recurl.load_policy("runs/2026-11-30/10-00-00_popgym-RepeatFirstEasy-v0_ppo_mingru")
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    state, reset, done = policy.initial_state(), True, False
    while not done:
        action, state = policy.act(obs, state, reset)
        obs, reward, terminated, truncated, _ = env.step(action)
        reset, done = False, terminated or truncated

Observations go in exactly as gymnasium returns them, one env's or a vector env's batch (``act`` tells them apart by
their shape); actions come back in the env's own format, likewise single or batched. ``reset`` is true where the
observation starts an episode. The policy's state holds the memory state and, for agents trained to see it, the
previous action. An agent trained to see the previous reward needs it as ``act(..., reward=r)``: the reward that came
with ``obs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import utils as vector_utils
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict

from recurl.agents import ActingNetwork
from recurl.agents.actor import state_from_tensordict, state_to_tensordict
from recurl.builder import build_network, resolve_device
from recurl.checkpoint import CheckpointError, load_checkpoint
from recurl.envs import make_env
from recurl.envs.encoding import make_encoder

CHECKPOINTS = ("final.pt", "latest.pt")


def default_checkpoint(run_dir: Path) -> Path:
    """``checkpoints/final.pt``, or ``latest.pt`` for a run that has not finished."""
    for name in CHECKPOINTS:
        if (path := run_dir / "checkpoints" / name).is_file():
            return path
    raise CheckpointError(f"{run_dir} has no checkpoints/{' or '.join(CHECKPOINTS)}")


def _batch_size(space: spaces.Space, obs: Any) -> int | None:
    """How many observations of ``space`` ``obs`` holds if it is a vector env's batch; None if it is one."""
    if isinstance(space, spaces.Dict):
        key = next(k for k, s in space.spaces.items() if not isinstance(s, spaces.Text))
        return _batch_size(space[key], obs[key])
    if isinstance(space, spaces.Tuple):
        return _batch_size(space[0], obs[0])
    single_ndim = 0 if isinstance(space, spaces.Discrete) else len(space.shape)
    return len(obs) if np.ndim(obs) == single_ndim + 1 else None


class Policy:
    def __init__(self, network: ActingNetwork, config: DictConfig, observation_space: spaces.Space, device):
        self.network, self.config, self.device = network, config, torch.device(device)
        self.observation_space = observation_space
        self.encode = make_encoder(observation_space)[0]
        self.dtype = next(network.parameters()).dtype

    @property
    def env_id(self) -> str:
        return str(self.config.env.id)

    def make_env(self, **kwargs: Any) -> gym.Env:
        """The env the policy was trained on (same id and time limit), observations not encoded; ``kwargs`` go to
        ``gymnasium.make`` (e.g. ``render_mode``)."""
        env_cfg = self.config.env
        return make_env(env_cfg.suite, str(env_cfg.id), max_episode_steps=env_cfg.max_episode_steps, **kwargs)

    def make_vector_env(self, num_envs: int, **kwargs: Any) -> gym.vector.SyncVectorEnv:
        """``num_envs`` of ``make_env``'s envs in gymnasium's ``SyncVectorEnv``, resetting each finished env in the
        step that ends its episode (``AutoresetMode.SAME_STEP``, as in training). Then the flags ``act`` wants are
        ``terminated | truncated`` of the step that returned the observations. Gymnasium's default, NEXT_STEP,
        returns the episode's last observation with them and starts the next episode one step later."""
        return gym.vector.SyncVectorEnv(
            [lambda: self.make_env(**kwargs)] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )

    def initial_state(self, batch_size: int = 1) -> TensorDict:
        """The state of ``batch_size`` envs before their first observation."""
        inputs = self.network.inputs
        memory = state_to_tensordict(self.network.initial_state(batch_size, self.device), batch_size)
        state = TensorDict(memory=memory, batch_size=[batch_size])
        if inputs.previous_action is not None:
            state["prev_action"] = inputs.previous_action.empty(batch_size, self.device)
        return state

    @torch.no_grad()
    def act(
        self, obs: Any, state: TensorDict, reset: bool | np.ndarray, *, reward: float | np.ndarray | None = None,
        deterministic: bool = True, generators: Sequence[torch.Generator] | None = None,
    ) -> tuple[Any, TensorDict]:
        """Actions for ``obs`` (the env's own observation or batch of them), and the next state.

        ``deterministic``: the most likely action (PPO) or the greedy one (DQN); else a sample (PPO) or ε-greedy at the
        run's final ε (DQN), drawn from torch's global generator; given ``generators`` (CPU ``torch.Generator``s, one
        per env), env ``i``'s noise from ``generators[i]`` alone, whatever the other envs (``generators`` are not read
        for deterministic actions). The network runs on the whole batch, whose size can change the rounding of its
        matrix products: an env's continuous actions may differ in their last bits with the envs beside it.
        """
        size = _batch_size(self.observation_space, obs)
        batched = size is not None
        space = self.observation_space
        items = list(vector_utils.iterate(vector_utils.batch_space(space, size), obs)) if batched else [obs]
        encoded = torch.as_tensor(np.stack([self.encode(item) for item in items]), dtype=self.dtype, device=self.device)
        batch = len(items)
        if state.batch_size[0] != batch:
            raise ValueError(f"policy.act: the state is for {state.batch_size[0]} envs, the observations for {batch}")
        reset_t = torch.as_tensor(np.asarray(reset, dtype=bool), device=self.device).expand(batch)
        step = TensorDict(obs=encoded, reset=reset_t, batch_size=[batch]).update(state.exclude("memory"))
        if self.network.inputs.previous_reward:
            if reward is None:
                raise ValueError("policy.act: this policy sees the previous reward; pass reward= (what came with obs)")
            reward_t = torch.as_tensor(np.asarray(reward), dtype=self.dtype, device=self.device)
            step["prev_reward"] = reward_t.expand(batch)
        if not deterministic and generators is not None and len(generators) != batch:
            raise ValueError(f"policy.act: {len(generators)} generators for {batch} envs")
        memory = state_from_tensordict(state["memory"])
        action, memory = self.network.act(step, memory, deterministic, generators=generators)
        env_action = self.network.to_env(action)
        next_state = TensorDict(memory=state_to_tensordict(memory, batch), batch_size=[batch])
        if "prev_action" in state.keys():
            next_state["prev_action"] = torch.as_tensor(env_action, device=self.device).to(state["prev_action"].dtype)
        return (env_action if batched else env_action[0]), next_state


def load_policy(run: str | Path, device: str | torch.device = "cpu") -> Policy:
    """The policy of a run folder (its ``checkpoints/final.pt``, else ``latest.pt``) or of a checkpoint file, on
    ``device`` (as training's: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a ``torch.device``)."""
    device = resolve_device(str(device))
    path = Path(run)
    checkpoint = default_checkpoint(path) if path.is_dir() else path
    payload = load_checkpoint(checkpoint)
    config = OmegaConf.create(payload["config"])
    env = make_env(config.env.suite, str(config.env.id), max_episode_steps=config.env.max_episode_steps)
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    encoded_size = make_encoder(observation_space)[1].shape[0]
    network = build_network(config, encoded_size, action_space, torch.device(device))
    try:
        network.load_state_dict(payload["agent"]["network"])
    except (KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {checkpoint} does not fit its own config: {first_line}") from None
    return Policy(network.eval(), config, observation_space, device)
