"""Recurrent DQN, R2D2-style (Kapturowski et al. 2019), over any memory backbone.

Acting: the vector env is stepped with ``q_net.step`` (O(1) per step) and ε-greedy actions, ε falling linearly from
``epsilon_start`` to ``epsilon_end`` over the first ``epsilon_decay_fraction`` of ``total_steps``. Every step goes to a
``SequenceReplay`` (see ``recurl.agents.replay``: per-env rings, the recurrent state stored every
``sequence_length`` steps).

Learning: a sequence is ``burn_in + sequence_length + n_step`` steps of one env and the state stored at its start.

- Burn-in. The first ``burn_in`` steps are run through the parallel ``mem(x, state, resets)`` without gradient; they
  only refresh the stored state, which went stale while the network learned. No loss is taken on them. An episode
  start inside the burn-in resets the state there, so the burn-in effectively begins at that start and nothing before
  it (the stale state, the previous episode) reaches the learned steps.
- The remaining steps are run on from that state with gradient, by the online network and (without gradient) by the
  target network, which was burned in on the same steps from the same stored state. The loss is the Huber loss of
  Q(o_t, a_t) against the target on the ``sequence_length`` steps after the burn-in; the last ``n_step`` steps are
  only looked ahead to.
- Targets are double-Q n-step returns: ``sum_k gamma^k r_{t+k} + gamma^n Q_target(o_{t+n}, argmax_a Q(o_{t+n}, a))``,
  cut at the end of the episode (``n_step_targets``). A truncated episode bootstraps from the value of its true last
  observation, ``max_a Q(final obs)``, computed by the acting network when the step is collected, with the state that
  continues the episode (as PPO does; it is as stale as the stored state, but the burn-in cannot refresh it since the
  final observation is never in the sequence). A terminated episode does not bootstrap.
- Gradient norm clipping; every ``target_update_every`` gradient steps the target network moves to the online one,
  by ``target_tau`` (1: a hard copy; less: Polyak averaging).

One ``iterate()``: ``train_every`` steps of the vector env (``train_every * num_envs`` env steps, which is what
``global_step`` counts), then, once ``learning_starts`` env steps are stored, ``gradient_steps`` gradient steps on
batches of ``batch_size`` sequences.

Actions: Discrete, or MultiDiscrete flattened to the product Discrete; other spaces are refused (PPO acts in them).

Checkpoints (``state_dict``) hold both networks, the optimizer, the counters, the sampling RNG, where acting stands
(observations, flags, memory state) and the whole replay buffer, so a resumed run continues exactly. The replay makes
them as large as the buffer (``capacity`` times the bytes per step in ``recurl.agents.replay``: ~5 MB for a POPGym
task, ~400 MB for MiniGrid at the default capacity).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from tensordict import TensorDict
from torch import nn

from recurl.agents.acting import (
    acting_state_dict, load_acting_state_dict, state_from_tensordict, state_to_tensordict,
)
from recurl.agents.heads import UnsupportedActionSpaceError
from recurl.agents.replay import SequenceReplay
from recurl.envs import final_observations, finished_episodes
from recurl.memory import Memory
from recurl.memory.cell import State

#: Largest flattened action space: the Q head has one output per joint action.
MAX_ACTIONS = 4096


@dataclasses.dataclass
class DQNConfig:
    buffer_capacity: int = 100_000  # env steps kept in replay, over all envs
    learning_starts: int = 5_000  # env steps collected before the first gradient step
    batch_size: int = 32  # sequences per gradient step
    sequence_length: int = 40  # steps per sequence that get a loss; sequences start every sequence_length steps
    burn_in: int = 10  # steps before those, run without gradient or loss to refresh the stored state
    n_step: int = 5
    train_every: int = 8  # vector-env steps per iterate()
    gradient_steps: int = 4  # per iterate()
    learning_rate: float = 1e-3
    gamma: float = 0.99
    target_update_every: int = 100  # gradient steps between target-network updates
    target_tau: float = 1.0  # 1: copy the online network; less: Polyak averaging
    max_grad_norm: float = 10.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_fraction: float = 0.1  # of total_steps

    def __post_init__(self):
        for name in (
            "buffer_capacity", "batch_size", "sequence_length", "n_step", "train_every", "gradient_steps",
            "target_update_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_starts", "burn_in", "learning_rate", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent.{name} must be non-negative, got {getattr(self, name)}")
        for name in ("gamma", "epsilon_start", "epsilon_end", "epsilon_decay_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"agent.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.target_tau <= 1:
            raise ValueError(f"agent.target_tau must be in (0, 1], got {self.target_tau}")


class FlatActions:
    """A Discrete or MultiDiscrete space as indices ``0 .. n-1`` (a MultiDiscrete's joint actions in C order)."""

    def __init__(self, space: spaces.Space):
        if isinstance(space, spaces.Discrete):
            self.nvec, self.shape, self.start = (int(space.n),), None, np.array([int(space.start)])
        elif isinstance(space, spaces.MultiDiscrete):
            self.nvec, self.shape = tuple(int(n) for n in space.nvec.reshape(-1)), space.nvec.shape
            self.start = np.asarray(space.start).reshape(-1)
        else:
            raise UnsupportedActionSpaceError(
                f"action space {space} is not supported: DQN acts in Discrete and MultiDiscrete spaces; "
                "use PPO (agent=ppo)"
            )
        self.n = math.prod(self.nvec)
        if self.n > MAX_ACTIONS:
            raise UnsupportedActionSpaceError(
                f"action space {space} has {self.n} joint actions, more than DQN's {MAX_ACTIONS}; use PPO (agent=ppo)"
            )

    def to_env(self, index: torch.Tensor) -> np.ndarray:
        """Indices [B] -> the actions ``VectorEnv.step`` expects ([B] or [B, *nvec.shape])."""
        index = index.cpu().numpy()
        if self.shape is None:
            return index + self.start[0]
        parts = np.stack(np.unravel_index(index, self.nvec), axis=-1) + self.start
        return parts.reshape(-1, *self.shape)


class RecurrentQNetwork(nn.Module):
    """A memory and a linear Q head, in the memory's dtype; ``forward`` over sequences, ``step`` while acting."""

    def __init__(self, memory: Memory, num_actions: int):
        super().__init__()
        self.memory = memory
        self.head = nn.Linear(memory.output_size, num_actions, dtype=next(memory.parameters()).dtype)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return self.memory.initial_state(batch_size, device)

    def forward(self, obs: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        """``obs`` [B, T, F], ``resets`` [B, T] -> Q [B, T, actions]."""
        features, state = self.memory(obs, state, resets)
        return self.head(features), state

    def step(self, obs: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        """``obs`` [B, F], ``reset`` [B] -> Q [B, actions]."""
        features, state = self.memory.step(obs, state, reset)
        return self.head(features), state


def n_step_targets(
    rewards: torch.Tensor, dones: torch.Tensor, final_values: torch.Tensor, values: torch.Tensor, gamma: float, n: int
) -> torch.Tensor:
    """n-step returns of the first ``T - n`` steps of [B, T] sequences, cut at episode ends.

    ``dones[t]``: the episode ended at step t; ``final_values[t]``: the value of the final observation where a
    truncated episode ended at t, 0 elsewhere; ``values[t]``: the bootstrap value of observation t. For each t,

        G_t = sum_{k<m} gamma^k r_{t+k} + (gamma^m final_values_{t+m-1} if the episode ended at t+m-1 < t+n
                                           else gamma^n values_{t+n})

    so nothing after an episode's end (the next episode, which the same sequence holds) is summed or bootstrapped.
    """
    length = rewards.shape[1] - n
    returns = torch.zeros_like(rewards[:, :length])
    alive = torch.ones_like(dones[:, :length])
    discount = 1.0
    for k in range(n):
        reward = rewards[:, k : k + length] + gamma * final_values[:, k : k + length]
        returns = returns + torch.where(alive, discount * reward, 0.0)
        alive = alive & ~dones[:, k : k + length]
        discount *= gamma
    return returns + torch.where(alive, discount * values[:, n:], 0.0)


class DQN:
    def __init__(
        self, config: DQNConfig, envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int, seed: int
    ):
        self.config, self.envs, self.device, self.total_steps = config, envs, device, total_steps
        self.actions = FlatActions(envs.single_action_space)
        self.q_net = RecurrentQNetwork(memory, self.actions.n).to(device)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q_net.parameters(), lr=config.learning_rate, eps=1e-5)
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.global_step = 0
        self.updates = 0  # gradient steps
        obs, _ = envs.reset(seed=seed)
        self.obs = self._tensor(obs)
        self.reset = torch.ones(envs.num_envs, dtype=torch.bool, device=device)
        self.state = self.q_net.initial_state(envs.num_envs, device)
        window = config.burn_in + config.sequence_length + config.n_step
        zeros = torch.zeros_like(self.obs[:, 0])
        step = self._record(self.obs, self.reset, zeros.long(), zeros, self.reset, zeros)
        try:
            self.replay = SequenceReplay(
                step, state_to_tensordict(self.state, envs.num_envs), config.buffer_capacity, config.sequence_length,
                window,
            )
        except ValueError as error:
            raise ValueError(f"agent.buffer_capacity is too small for env.num_envs={envs.num_envs}: {error}") from None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """Env output as a tensor in the network's dtype and device."""
        return torch.as_tensor(array, dtype=self.q_net.head.weight.dtype, device=self.device)

    @staticmethod
    def _record(obs, reset, action, reward, done, final_value) -> TensorDict:
        """What the replay keeps of one step of every env."""
        return TensorDict(
            obs=obs, reset=reset, action=action, reward=reward, done=done, final_value=final_value,
            batch_size=[obs.shape[0]],
        )

    # ---- acting -----------------------------------------------------------------------------------------------
    def epsilon(self) -> float:
        cfg = self.config
        decay_steps = cfg.epsilon_decay_fraction * self.total_steps
        progress = min(1.0, self.global_step / decay_steps) if decay_steps > 0 else 1.0
        return cfg.epsilon_start + progress * (cfg.epsilon_end - cfg.epsilon_start)

    def _epsilon_greedy(self, q: torch.Tensor, epsilon: float) -> torch.Tensor:
        explore = torch.rand(q.shape[0], generator=self.generator) < epsilon
        random = torch.randint(self.actions.n, (q.shape[0],), generator=self.generator)
        return torch.where(explore.to(q.device), random.to(q.device), q.argmax(-1))

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, state: State, reset: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, State]:
        """Flat action indices for evaluation and videos: greedy if ``deterministic``, else ε-greedy at the current ε."""
        q, state = self.q_net.step(obs, state, reset)
        return self._epsilon_greedy(q, 0.0 if deterministic else self.epsilon()), state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The memory state ``act`` starts ``batch_size`` fresh episodes from."""
        return self.q_net.initial_state(batch_size, device)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return self.actions.to_env(action)

    @torch.no_grad()
    def collect(self) -> list[tuple[float, int]]:
        """Step the envs ``train_every`` times into the replay; returns the episodes that ended."""
        envs, num_envs, episodes = self.envs, self.envs.num_envs, []
        for _ in range(self.config.train_every):
            q, next_state = self.q_net.step(self.obs, self.state, self.reset)
            action = self._epsilon_greedy(q, self.epsilon())
            next_obs, reward, terminated, truncated, info = envs.step(self.to_env(action))
            final_value = torch.zeros_like(q[:, 0])
            bootstrap = truncated & ~terminated
            if bootstrap.any():
                rows = torch.as_tensor(np.flatnonzero(bootstrap), device=self.device)
                final = self._tensor(final_observations(next_obs, info)[bootstrap])
                final_q, _ = self.q_net.step(
                    final, tuple(s[rows] for s in next_state), torch.zeros(len(rows), dtype=torch.bool, device=self.device)
                )
                final_value[rows] = final_q.max(-1).values
            done = torch.as_tensor(terminated | truncated, device=self.device)
            self.replay.add(
                self._record(self.obs, self.reset, action, self._tensor(reward), done, final_value),
                state_to_tensordict(self.state, num_envs),
            )
            self.obs, self.reset, self.state = self._tensor(next_obs), done, next_state
            self.global_step += num_envs
            episodes.extend(finished_episodes(info))
        return episodes

    # ---- learning ---------------------------------------------------------------------------------------------
    def unroll(self, net: RecurrentQNetwork, batch: TensorDict) -> torch.Tensor:
        """Q [B, window - burn_in, actions] of ``net`` after the burn-in, from each sequence's stored state."""
        steps, burn_in = batch["steps"], self.config.burn_in
        state = state_from_tensordict(batch["start_state"])
        if burn_in:
            with torch.no_grad():
                _, state = net(steps["obs"][:, :burn_in], state, steps["reset"][:, :burn_in])
        q, _ = net(steps["obs"][:, burn_in:], state, steps["reset"][:, burn_in:])
        return q

    @torch.no_grad()
    def td_targets(self, batch: TensorDict, q: torch.Tensor) -> torch.Tensor:
        """Double-Q n-step targets [B, sequence_length]; ``q`` is the online network's ``unroll`` of ``batch``."""
        cfg = self.config
        greedy = q.argmax(-1, keepdim=True)
        values = self.unroll(self.target_net, batch).gather(-1, greedy).squeeze(-1)
        steps = batch["steps"][:, cfg.burn_in :]
        return n_step_targets(steps["reward"], steps["done"], steps["final_value"], values, cfg.gamma, cfg.n_step)

    def loss(self, batch: TensorDict) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        q = self.unroll(self.q_net, batch)
        targets = self.td_targets(batch, q.detach())
        actions = batch["steps", "action"][:, cfg.burn_in : cfg.burn_in + cfg.sequence_length]
        taken = q[:, : cfg.sequence_length].gather(-1, actions[..., None]).squeeze(-1)
        loss = F.smooth_l1_loss(taken, targets)
        return loss, {"loss": loss.item(), "q_mean": taken.mean().item(), "target_mean": targets.mean().item()}

    def _update_target(self) -> None:
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), self.q_net.parameters()):
                target.lerp_(online, self.config.target_tau)

    def learn(self) -> dict[str, float]:
        """``gradient_steps`` gradient steps; returns their mean loss, Q, target and gradient norm."""
        cfg, totals = self.config, {}
        for _ in range(cfg.gradient_steps):
            loss, stats = self.loss(self.replay.sample(cfg.batch_size, self.generator))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = nn.utils.clip_grad_norm_(self.q_net.parameters(), cfg.max_grad_norm).item()
            self.optimizer.step()
            self.updates += 1
            if self.updates % cfg.target_update_every == 0:
                self._update_target()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
        return {key: value / cfg.gradient_steps for key, value in totals.items()}

    def iterate(self) -> tuple[dict[str, float], list[tuple[float, int]]]:
        """``train_every`` vector-env steps, then ``gradient_steps`` gradient steps once learning has started.

        Metrics have the same keys every iteration (the CSV's columns); the learning ones are NaN before it starts.
        """
        episodes = self.collect()
        if self.global_step >= self.config.learning_starts and self.replay.num_sequences > 0:
            metrics = self.learn()
        else:
            metrics = dict.fromkeys(("loss", "q_mean", "target_mean", "grad_norm"), math.nan)
        self.iteration += 1
        metrics.update(epsilon=self.epsilon(), replay_steps=float(len(self.replay)), updates=float(self.updates))
        return metrics, episodes

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "updates": self.updates,
            "generator": self.generator.get_state(),
            **acting_state_dict(self.obs, self.reset, self.state),
            "replay": self.replay.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_policy(state)
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.global_step, self.updates = state["iteration"], state["global_step"], state["updates"]
        self.generator.set_state(state["generator"])
        self.obs, self.reset, self.state = load_acting_state_dict(state, self.device)
        self.replay.load_state_dict(state["replay"])

    def load_policy(self, state: dict) -> None:
        """Only the online network of a ``state_dict``: enough to act (``recurl.record``), with any number of envs."""
        self.q_net.load_state_dict(state["q_net"])
