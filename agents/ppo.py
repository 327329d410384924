"""Recurrent PPO (Schulman et al. 2017) over any memory backbone.

Acting: the ``Actor`` (``recurl.agents.actor``) steps the vector env ``rollout_steps`` times with the network's
``step`` (no gradient, O(1) per step), carrying each env's recurrent state, episode-start flag and (if enabled) the
previous action and reward. The state at the rollout's start is stored with the rollout.

Learning: each epoch runs every env's whole ``rollout_steps`` trajectory through the memory's parallel ``forward``
from that stored state, with the episode-start flags as resets. Minibatches are sets of whole env trajectories, so
the recurrence is never cut. Clipped policy loss, value loss, entropy bonus, per-minibatch advantage normalisation,
global gradient-norm clipping, optional linear learning-rate annealing.

Episode ends: every stored transition is real (gymnasium's SAME_STEP autoreset). A truncated episode bootstraps:
``gamma * V(final observation)``, computed with the state that continues the episode, is added to its last reward, and
GAE then treats it as ended.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from tensordict import TensorDict
from torch import nn

from recurl.agents.actor import state_from_tensordict, state_to_tensordict
from recurl.agents.actor_critic import RecurrentActorCritic
from recurl.agents.base import RecurrentAgent
from recurl.agents.config_types import check_field_types, check_max_grad_norm
from recurl.agents.errors import check_finite_loss
from recurl.agents.gae import generalized_advantages
from recurl.agents.inputs import AgentInputs
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
    max_grad_norm: float | None = 0.5  # None: no clipping
    normalize_advantages: bool = True
    previous_action: bool = False  # feed the previous action back as an input (env=popgym turns it on, as POPGym does)
    previous_reward: bool = False  # feed the previous reward back as an input

    def __post_init__(self):
        check_field_types(self)
        for name in ("rollout_steps", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"agent.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("learning_rate", "clip_coef", "value_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent.{name} must be non-negative, got {getattr(self, name)}")
        check_max_grad_norm(self.max_grad_norm)


class PPO(RecurrentAgent):
    @staticmethod
    def build_network(config: PPOConfig, inputs: AgentInputs, memory: Memory, action_space: spaces.Space):
        return RecurrentActorCritic(inputs, memory, action_space)

    def __init__(
        self, config: PPOConfig, envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int, seed: int
    ):
        if config.minibatches > envs.num_envs:
            raise ValueError(
                f"agent.minibatches ({config.minibatches}) cannot exceed env.num_envs ({envs.num_envs}): "
                "a minibatch is a set of whole env trajectories"
            )
        smallest_minibatch = envs.num_envs // config.minibatches * config.rollout_steps
        if config.normalize_advantages and smallest_minibatch < 2:
            raise ValueError(
                f"agent.rollout_steps={config.rollout_steps} with env.num_envs={envs.num_envs} and "
                f"agent.minibatches={config.minibatches} leaves a minibatch of a single step, whose advantages "
                "cannot be normalised: raise agent.rollout_steps, lower agent.minibatches or set "
                "agent.normalize_advantages=false"
            )
        super().__init__(config, envs, memory, device=device, seed=seed)
        self.iterations = max(1, math.ceil(total_steps / (envs.num_envs * config.rollout_steps)))

    # ---- acting -----------------------------------------------------------------------------------------------
    def _sample(self, step: TensorDict, state: State):
        dist, value, state = self.network.step(step, state)
        action = dist.sample()
        return action, state, {"log_prob": dist.log_prob(action), "value": value}

    @torch.no_grad()
    def collect(self) -> tuple[TensorDict, list[tuple[float, int]]]:
        """Step the envs ``rollout_steps`` times; returns the rollout ``[num_envs]`` and the episodes that ended."""
        actor, gamma = self.actor, self.config.gamma
        num_envs = actor.next.batch_size[0]
        start_state = state_to_tensordict(actor.state, num_envs)
        steps, episodes = [], []
        for _ in range(self.config.rollout_steps):
            transition = actor.step(self._sample)
            reward = transition.reward
            if len(transition.bootstrap_rows):
                _, final_value, _ = self.network.step(transition.final, transition.final_state)
                reward = reward.index_add(0, transition.bootstrap_rows, gamma * final_value)
            steps.append(transition.seen.update(action=transition.action, reward=reward, **transition.extras))
            episodes.extend(transition.episodes)
        self.global_step += num_envs * self.config.rollout_steps

        rollout = torch.stack(steps, dim=1)
        _, next_value, _ = self.network.step(actor.next, actor.state)
        dones = torch.cat([rollout["reset"][:, 1:], actor.next["reset"][:, None]], dim=1)
        rollout["advantage"], rollout["return"] = generalized_advantages(
            rollout["reward"], rollout["value"], dones, next_value, gamma, self.config.gae_lambda
        )
        return TensorDict(steps=rollout, start_state=start_state, batch_size=[num_envs]), episodes

    # ---- learning ---------------------------------------------------------------------------------------------
    def evaluate(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities of the stored actions, entropies and values, recomputed over whole trajectories."""
        steps = batch["steps"]
        dist, values, _ = self.network(steps, state_from_tensordict(batch["start_state"]))
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
        check_finite_loss("PPO", self.global_step, loss, policy=policy_loss, value=value_loss, entropy=entropy)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm, foreach=True)
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
