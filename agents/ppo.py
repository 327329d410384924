"""Recurrent PPO (Schulman et al. 2017) over any memory backbone.

Acting: the vector env is stepped ``rollout_steps`` times with ``policy.step`` (no gradient, O(1) per step), keeping
each env's recurrent state and the flag "this observation starts an episode". The state at the rollout's start is
stored with the rollout.

Learning: each epoch runs every env's whole ``rollout_steps`` trajectory through the memory's parallel ``forward``
from that stored state, with the episode-start flags as resets. Minibatches are sets of whole env trajectories, so
the recurrence is never cut. Clipped policy loss, value loss, entropy bonus, per-minibatch advantage normalisation,
global gradient-norm clipping, optional linear learning-rate annealing.

Episode ends (gymnasium's SAME_STEP autoreset, see ``recurl.envs.make``): the step that ends an episode returns the
next episode's first observation, so every stored transition is real and the next step's reset flag is ``done``.
A truncated episode bootstraps: ``gamma * V(final observation)``, computed with the state that continues the episode,
is added to its last reward, and GAE then treats it as ended.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tensordict import TensorDict
from torch import nn

from recurl.agents.acting import (
    acting_state_dict, load_acting_state_dict, state_from_tensordict, state_to_tensordict,
)
from recurl.agents.errors import NonFiniteError, check_finite
from recurl.agents.gae import generalized_advantages
from recurl.agents.policy import RecurrentActorCritic
from recurl.envs import final_observations, finished_episodes
from recurl.memory import Memory
from recurl.memory.cell import State


@dataclasses.dataclass
class PPOConfig:
    rollout_steps: int = 64
    epochs: int = 4
    minibatches: int = 4
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True

    def __post_init__(self):
        for name in ("rollout_steps", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"agent.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("learning_rate", "clip_coef", "value_coef", "entropy_coef", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent.{name} must be non-negative, got {getattr(self, name)}")


class PPO:
    def __init__(
        self, config: PPOConfig, envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int, seed: int
    ):
        if config.minibatches > envs.num_envs:
            raise ValueError(
                f"agent.minibatches ({config.minibatches}) cannot exceed env.num_envs ({envs.num_envs}): "
                "a minibatch is a set of whole env trajectories"
            )
        self.config, self.envs, self.device = config, envs, device
        self.policy = RecurrentActorCritic(memory, envs.single_action_space).to(device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate, eps=1e-5)
        self.iterations = max(1, math.ceil(total_steps / (envs.num_envs * config.rollout_steps)))
        self.iteration = 0
        self.global_step = 0
        obs, _ = envs.reset(seed=seed)
        self.obs = self._tensor(obs)
        self.reset = torch.ones(envs.num_envs, dtype=torch.bool, device=device)
        self.state = self.policy.initial_state(envs.num_envs, device)

    # ---- acting -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, state: State, reset: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, State]:
        """The policy alone, for evaluation and videos: actions (the distribution's mode if ``deterministic``)."""
        dist, _, state = self.policy.step(obs, state, reset)
        return (dist.mode if deterministic else dist.sample()), state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The memory state ``act`` starts ``batch_size`` fresh episodes from."""
        return self.policy.initial_state(batch_size, device)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return self.policy.actor.to_env(action)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """Env output as a tensor in the policy's dtype and device."""
        return torch.as_tensor(array, dtype=self.policy.critic.weight.dtype, device=self.device)

    @torch.no_grad()
    def collect(self) -> tuple[TensorDict, list[tuple[float, int]]]:
        """Step the envs ``rollout_steps`` times; returns the rollout ``[num_envs]`` and the episodes that ended."""
        envs, policy, gamma = self.envs, self.policy, self.config.gamma
        start_state = state_to_tensordict(self.state, envs.num_envs)
        steps, episodes = [], []
        for _ in range(self.config.rollout_steps):
            dist, value, self.state = policy.step(self.obs, self.state, self.reset)
            action = dist.sample()
            next_obs, reward, terminated, truncated, info = envs.step(self.to_env(action))
            check_finite(next_obs, reward)
            reward = self._tensor(reward)
            bootstrap = truncated & ~terminated
            if bootstrap.any():
                rows = torch.as_tensor(np.flatnonzero(bootstrap), device=self.device)
                final = self._tensor(final_observations(next_obs, info)[bootstrap])
                _, final_value, _ = policy.step(
                    final, tuple(s[rows] for s in self.state), torch.zeros(len(rows), dtype=torch.bool, device=self.device)
                )
                reward[rows] += gamma * final_value
            steps.append(
                TensorDict(
                    obs=self.obs, reset=self.reset, action=action, log_prob=dist.log_prob(action), value=value,
                    reward=reward, batch_size=[envs.num_envs],
                )
            )
            self.obs = self._tensor(next_obs)
            self.reset = torch.as_tensor(terminated | truncated, device=self.device)
            episodes.extend(finished_episodes(info))
        self.global_step += envs.num_envs * self.config.rollout_steps

        rollout = torch.stack(steps, dim=1)
        _, next_value, _ = policy.step(self.obs, self.state, self.reset)
        dones = torch.cat([rollout["reset"][:, 1:], self.reset[:, None]], dim=1)
        rollout["advantage"], rollout["return"] = generalized_advantages(
            rollout["reward"], rollout["value"], dones, next_value, gamma, self.config.gae_lambda
        )
        return TensorDict(steps=rollout, start_state=start_state, batch_size=[envs.num_envs]), episodes

    # ---- learning ---------------------------------------------------------------------------------------------
    def evaluate(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities of the stored actions, entropies and values, recomputed over whole trajectories."""
        steps = batch["steps"]
        dist, values, _ = self.policy(steps["obs"], state_from_tensordict(batch["start_state"]), steps["reset"])
        return dist.log_prob(steps["action"]), dist.entropy(), values

    def update(self, batch: TensorDict) -> dict[str, float]:
        cfg = self.config
        if cfg.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate * (1 - self.iteration / self.iterations)
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.epochs):
            for rows in torch.randperm(batch.batch_size[0], device=self.device).tensor_split(cfg.minibatches):
                stats = self._minibatch_step(batch[rows])
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                updates += 1
        self.iteration += 1
        metrics = {key: value / updates for key, value in totals.items()}
        metrics["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        return metrics

    def _minibatch_step(self, batch: TensorDict) -> dict[str, float]:
        cfg, steps = self.config, batch["steps"]
        log_prob, entropy, values = self.evaluate(batch)
        log_ratio = log_prob - steps["log_prob"]
        ratio = log_ratio.exp()
        advantages = steps["advantage"]
        if cfg.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
        policy_loss = policy_loss.mean()
        value_loss = 0.5 * (values - steps["return"]).square().mean()
        entropy = entropy.mean()
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"PPO loss is {loss.item()} at step {self.global_step} (policy {policy_loss.item()}, "
                f"value {value_loss.item()}, entropy {entropy.item()})"
            )

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            return {
                "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(),
                "entropy": entropy.item(),
                "approx_kl": ((ratio - 1) - log_ratio).mean().item(),
                "clip_fraction": ((ratio - 1).abs() > cfg.clip_coef).float().mean().item(),
                "max_ratio_deviation": (ratio - 1).abs().max().item(),
            }

    def iterate(self) -> tuple[dict[str, float], list[tuple[float, int]]]:
        """One rollout and one update; returns the update's metrics and the episodes that ended meanwhile."""
        batch, episodes = self.collect()
        return self.update(batch), episodes

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Weights, optimiser, counters, and where acting stands: the next observations, flags and memory state."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            **acting_state_dict(self.obs, self.reset, self.state),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.global_step = state["iteration"], state["global_step"]
        self.obs, self.reset, self.state = load_acting_state_dict(state, self.device)

    def load_policy(self, state: dict) -> None:
        """Only the network of a ``state_dict``: enough to act (``recurl.record``), with any number of envs."""
        self.policy.load_state_dict(state["policy"])
