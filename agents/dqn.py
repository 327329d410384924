"""Recurrent DQN, R2D2-style (Kapturowski et al. 2019), over any memory backbone.

Acting: the ``Actor`` (``recurl.agents.actor``) steps the vector env with ``q_net.step`` (O(1) per step) and ε-greedy
actions, ε falling linearly from ``epsilon_start`` to ``epsilon_end`` over the first ``epsilon_decay_fraction`` of
``total_steps``. Every step goes to a ``SequenceReplay`` (``recurl.agents.replay``: per-env rings, the recurrent state
stored every ``sequence_length`` steps, a priority per stored sequence).

Learning: a sequence is ``burn_in + sequence_length + n_step`` steps of one env and the state stored at its start.

- Burn-in. The first ``burn_in`` steps are run through the parallel ``mem(x, state, resets)`` without gradient; they
  only refresh the stored state, which went stale while the network learned. No loss is taken on them. An episode
  start inside the burn-in resets the state there, so the burn-in effectively begins at that start and nothing before
  it (the stale state, the previous episode) reaches the learned steps.
- The remaining steps are run on from that state with gradient, by the online network and (without gradient) by the
  target network, which was burned in on the same steps from the same stored state. The loss is the Huber loss of
  Q(o_t, a_t) against the target on the ``sequence_length`` steps after the burn-in, weighted by the sequence's
  importance weight; the last ``n_step`` steps are only looked ahead to.
- Targets are double-Q n-step returns: ``sum_k gamma^k r_{t+k} + gamma^n Q_target(o_{t+n}, argmax_a Q(o_{t+n}, a))``,
  cut at the end of the episode (``recurl.agents.returns.n_step_targets``). A terminated episode does not bootstrap.
  A truncated one bootstraps from the value of its true last observation, by ``truncation_bootstrap``:
  ``learn`` (default) values it when learning, with double Q like every other bootstrap, from the state the same
  sequence's unroll reaches there (the replay then also stores the final observations); ``collect`` stores
  ``max_a Q(final obs)`` of the acting network at collection, as stale as the acting weights.
- Value rescaling (``value_rescaling``, R2D2's default): Q is learned as h(Q), targets are h(G) with every bootstrap
  value read through h^-1.
- Prioritised replay (R2D2's defaults): a sequence's priority is ``priority_eta * max|δ| + (1 - priority_eta) *
  mean|δ|`` over its learned steps, sampling follows ``priority ** priority_exponent`` (0: uniform) and the loss is
  weighted by importance weights with exponent ``importance_exponent``.
- Gradient norm clipping; every ``target_update_every`` gradient steps the target network moves to the online one,
  by ``target_tau`` (1: a hard copy; less: Polyak averaging).

One ``iterate()``: ``train_every`` steps of the vector env (``train_every * num_envs`` env steps, which is what
``global_step`` counts), then, once ``learning_starts`` env steps are stored, ``gradient_steps`` gradient steps on
batches of ``batch_size`` sequences.

Actions: Discrete, or MultiDiscrete flattened to the product Discrete; other spaces are refused (PPO acts in them).

Checkpoints (``state_dict``) hold both networks, the optimizer, the counters, the sampling RNG, where acting stands
and the whole replay buffer with its priorities, so a resumed run continues exactly. The replay makes them as large as
the buffer (see ``recurl.agents.replay`` for the bytes per step).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from tensordict import TensorDict
from torch import nn

from recurl.agents.actor import Transition, state_from_tensordict, state_to_tensordict
from recurl.agents.base import RecurrentAgent
from recurl.agents.config_types import check_field_types, check_max_grad_norm
from recurl.agents.errors import check_finite_loss
from recurl.agents.inputs import AgentInputs
from recurl.agents.q_network import RecurrentQNetwork
from recurl.agents.replay import SequenceReplay
from recurl.agents.returns import n_step_targets, rescale, unrescale
from recurl.memory import Memory
from recurl.memory.cell import State

TRUNCATION_BOOTSTRAPS = ("learn", "collect")


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
    max_grad_norm: float | None = 10.0  # None: no clipping
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01  # also the ε of sampled (not greedy) actions in evaluation and videos
    epsilon_decay_fraction: float = 0.1  # of total_steps
    value_rescaling: bool = True  # learn h(Q) (R2D2); false: plain Q
    priority_exponent: float = 0.9  # sample sequences with probability ~ priority ** this (R2D2: 0.9); 0: uniform
    importance_exponent: float = 0.6  # exponent of the importance weights (R2D2: 0.6)
    priority_eta: float = 0.9  # priority = eta * max|δ| + (1 - eta) * mean|δ| over a sequence (R2D2: 0.9)
    truncation_bootstrap: str = "learn"  # learn: double-Q value of the final observation when learning; collect
    previous_action: bool = False  # feed the previous action back as an input (env=popgym turns it on, as POPGym does)
    previous_reward: bool = False  # feed the previous reward back as an input (R2D2 does)

    def __post_init__(self):
        check_field_types(self)
        for name in (
            "buffer_capacity", "batch_size", "sequence_length", "n_step", "train_every", "gradient_steps",
            "target_update_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_starts", "burn_in", "learning_rate", "priority_exponent", "importance_exponent"):
            if getattr(self, name) < 0:
                raise ValueError(f"agent.{name} must be non-negative, got {getattr(self, name)}")
        check_max_grad_norm(self.max_grad_norm)
        for name in ("gamma", "epsilon_start", "epsilon_end", "epsilon_decay_fraction", "priority_eta"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"agent.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.target_tau <= 1:
            raise ValueError(f"agent.target_tau must be in (0, 1], got {self.target_tau}")
        if self.truncation_bootstrap not in TRUNCATION_BOOTSTRAPS:
            raise ValueError(
                f"agent.truncation_bootstrap must be one of {', '.join(TRUNCATION_BOOTSTRAPS)}, "
                f"got {self.truncation_bootstrap!r}"
            )


class DQN(RecurrentAgent):
    @staticmethod
    def build_network(config: DQNConfig, inputs: AgentInputs, memory: Memory, action_space: spaces.Space):
        return RecurrentQNetwork(inputs, memory, action_space, explore_epsilon=config.epsilon_end)

    def __init__(
        self, config: DQNConfig, envs: VectorEnv, memory: Memory, *, device: torch.device, total_steps: int, seed: int
    ):
        super().__init__(config, envs, memory, device=device, seed=seed)
        self.total_steps = total_steps
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0  # gradient steps
        window = config.burn_in + config.sequence_length + config.n_step
        example = self._record(self._empty_transition(envs.num_envs))
        try:
            self.replay = SequenceReplay(
                example, state_to_tensordict(self.actor.state, envs.num_envs), config.buffer_capacity,
                config.sequence_length, window,
            )
        except ValueError as error:
            raise ValueError(f"agent.buffer_capacity is too small for env.num_envs={envs.num_envs}: {error}") from None
        sequences = self.replay.priorities.numel()
        if config.batch_size > sequences:
            raise ValueError(
                f"agent.batch_size={config.batch_size} is more than the {sequences} sequences the replay holds "
                f"(agent.buffer_capacity={config.buffer_capacity} over {envs.num_envs} envs, in sequences of "
                f"{config.sequence_length}); lower agent.batch_size or raise agent.buffer_capacity"
            )

    @property
    def q_net(self) -> RecurrentQNetwork:
        """The online Q-network: the one that acts and learns."""
        return self.network

    def _rescale(self, x: torch.Tensor) -> torch.Tensor:
        return rescale(x) if self.config.value_rescaling else x

    def _unrescale(self, x: torch.Tensor) -> torch.Tensor:
        return unrescale(x) if self.config.value_rescaling else x

    # ---- acting -----------------------------------------------------------------------------------------------
    def epsilon(self) -> float:
        cfg = self.config
        decay_steps = cfg.epsilon_decay_fraction * self.total_steps
        progress = min(1.0, self.global_step / decay_steps) if decay_steps > 0 else 1.0
        return cfg.epsilon_start + progress * (cfg.epsilon_end - cfg.epsilon_start)

    def _explore(self, step: TensorDict, state: State):
        action, state = self.q_net.act(step, state, False, generator=self.generator, epsilon=self.epsilon())
        return action, state, {}

    def _empty_transition(self, num_envs: int) -> Transition:
        """A transition of zeros shaped like the real ones: what the replay is allocated from."""
        seen = self.actor.next.clone()
        none = torch.zeros(0, dtype=torch.long, device=self.device)
        zeros = torch.zeros(num_envs, dtype=seen["obs"].dtype, device=self.device)
        flags = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        return Transition(seen, zeros.long(), {}, zeros, flags, flags, none, None, (), [])

    def _record(self, transition: Transition) -> TensorDict:
        """What the replay keeps of one step of every env."""
        record = transition.seen.clone().update(
            action=transition.action, reward=transition.reward, done=transition.done
        )
        if self.config.truncation_bootstrap == "learn":
            record["bootstrap"] = torch.zeros_like(record["done"])
            record["final"] = torch.zeros_like(transition.seen.exclude("reset"))
        else:
            record["final_value"] = torch.zeros_like(transition.reward)
        if len(transition.bootstrap_rows):
            self._truncate(record, transition.bootstrap_rows, transition.final, transition.final_state)
        return record

    def _truncate(self, record: TensorDict, rows: torch.Tensor, final: TensorDict, final_state: State) -> None:
        """Mark the steps ``rows`` of ``record`` [num_envs] as the ends of truncated episodes, whose targets bootstrap
        from ``final`` [len(rows)] (the next observations, as steps that start no episode) with ``final_state``."""
        record["done"][rows] = True
        if self.config.truncation_bootstrap == "learn":
            record["bootstrap"][rows] = True
            record["final"][rows] = final.exclude("reset")
        else:
            final_q, _ = self.q_net.step(final, final_state)
            record["final_value"][rows] = self._unrescale(final_q.max(-1).values)

    @torch.no_grad()
    def collect(self) -> list[tuple[float, int]]:
        """Step the envs ``train_every`` times into the replay; returns the episodes that ended."""
        num_envs, episodes = self.actor.next.batch_size[0], []
        for _ in range(self.config.train_every):
            carried = state_to_tensordict(self.actor.state, num_envs)
            transition = self.actor.step(self._explore)
            self.replay.add(self._record(transition), carried)
            self.global_step += num_envs
            episodes.extend(transition.episodes)
        return episodes

    # ---- learning ---------------------------------------------------------------------------------------------
    def unroll(self, net: RecurrentQNetwork, batch: TensorDict) -> torch.Tensor:
        """Q [B, window - burn_in, actions] of ``net`` after the burn-in, from each sequence's stored state."""
        steps, burn_in = batch["steps"], self.config.burn_in
        state = state_from_tensordict(batch["start_state"])
        if burn_in:
            with torch.no_grad():
                _, state = net(steps[:, :burn_in], state)
        q, _ = net(steps[:, burn_in:], state)
        return q

    @torch.no_grad()
    def final_values(self, batch: TensorDict) -> torch.Tensor:
        """[B, window - burn_in]: the double-Q value of each truncated episode's final observation, at its last step
        (0 elsewhere), from the state each network's unroll of the sequence reaches there."""
        steps, burn_in = batch["steps"], self.config.burn_in
        values = torch.zeros_like(steps["reward"])
        rows, times = steps["bootstrap"].nonzero(as_tuple=True)
        start = state_from_tensordict(batch["start_state"])
        for time in times[times >= burn_in].unique().tolist():
            at = rows[times == time]
            prefix = steps[at][:, : time + 1]
            final = steps["final"][at, time].update(reset=torch.zeros(len(at), dtype=torch.bool, device=self.device))
            q = {}
            for name, net in (("online", self.q_net), ("target", self.target_net)):
                _, state = net(prefix, tuple(s[at] for s in start))
                q[name], _ = net.step(final, state)
            values[at, time] = q["target"].gather(-1, q["online"].argmax(-1, keepdim=True)).squeeze(-1)
        return self._unrescale(values)[:, burn_in:]

    @torch.no_grad()
    def td_targets(self, batch: TensorDict, q: torch.Tensor) -> torch.Tensor:
        """Double-Q n-step targets [B, sequence_length] (rescaled if ``value_rescaling``); ``q`` is the online
        network's ``unroll`` of ``batch``."""
        cfg = self.config
        greedy = q.argmax(-1, keepdim=True)
        values = self._unrescale(self.unroll(self.target_net, batch).gather(-1, greedy).squeeze(-1))
        steps = batch["steps"][:, cfg.burn_in :]
        final_values = steps["final_value"] if cfg.truncation_bootstrap == "collect" else self.final_values(batch)
        returns = n_step_targets(steps["reward"], steps["done"], final_values, values, cfg.gamma, cfg.n_step)
        return self._rescale(returns)

    def loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The importance-weighted Huber loss, each sequence's new priority [B], and statistics."""
        cfg = self.config
        q = self.unroll(self.q_net, batch)
        targets = self.td_targets(batch, q.detach())
        actions = batch["steps", "action"][:, cfg.burn_in : cfg.burn_in + cfg.sequence_length]
        taken = q[:, : cfg.sequence_length].gather(-1, actions[..., None]).squeeze(-1)
        per_sequence = F.smooth_l1_loss(taken, targets, reduction="none").mean(1)
        loss = (batch["weight"].to(per_sequence) * per_sequence).mean()  # weights come on the CPU (sample)
        errors = (taken - targets).detach().abs()
        priority = cfg.priority_eta * errors.max(1).values + (1 - cfg.priority_eta) * errors.mean(1)
        stats = {"loss": loss.item(), "q_mean": taken.mean().item(), "target_mean": targets.mean().item()}
        return loss, priority, stats

    def _update_target(self) -> None:
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), self.q_net.parameters()):
                target.lerp_(online, self.config.target_tau)

    def learn(self) -> dict[str, float]:
        """``gradient_steps`` gradient steps; returns their mean loss, Q, target and gradient norm."""
        cfg, totals = self.config, {}
        for _ in range(cfg.gradient_steps):
            batch = self.replay.sample(cfg.batch_size, self.generator, cfg.priority_exponent, cfg.importance_exponent)
            loss, priority, stats = self.loss(batch)
            check_finite_loss("DQN", self.global_step, loss, q_mean=torch.tensor(stats["q_mean"]))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = math.inf if cfg.max_grad_norm is None else cfg.max_grad_norm  # inf: measured, not clipped
            grad_norm = nn.utils.clip_grad_norm_(self.q_net.parameters(), max_norm, foreach=True)
            stats["grad_norm"] = grad_norm.item()
            self.optimizer.step()
            self.replay.update_priorities(batch["env"], batch["start"], priority)
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
        """The shared checkpoint, the target network, the gradient-step count, the sampling RNG and the replay."""
        return {
            **super().state_dict(),
            "target_net": self.target_net.state_dict(),
            "updates": self.updates,
            "generator": self.generator.get_state(),
            "replay": self.replay.state_dict(),
        }

    def load_state_dict(self, state: dict, envs_restarted: bool = False) -> None:
        super().load_state_dict(state, envs_restarted)
        self.target_net.load_state_dict(state["target_net"])
        self.updates = state["updates"]
        self.generator.set_state(state["generator"])
        self.replay.load_state_dict(state["replay"])
        if envs_restarted:
            self._truncate_at_the_cut(state["actor"])

    @torch.no_grad()
    def _truncate_at_the_cut(self, saved_actor: dict) -> None:
        """The envs restarted their episodes: each env's last step in the replay, unless its episode ended there,
        becomes the end of a truncated episode that bootstraps from the observation the saved actor was about to act
        on, so that no n-step target runs on into the next, unrelated episode."""
        if not self.replay.written:
            return
        num_envs = self.actor.next.batch_size[0]
        slot = (self.replay.written - 1) % self.replay.slots
        last = self.replay.steps[:, slot].clone()
        rows = (~last["done"]).nonzero().squeeze(1)
        if len(rows):
            final = TensorDict(saved_actor["next"], batch_size=[num_envs]).to(self.device)[rows]
            saved_state = TensorDict(saved_actor["memory_state"], batch_size=[num_envs]).to(self.device)
            self._truncate(last, rows, final, tuple(s[rows] for s in state_from_tensordict(saved_state)))
            self.replay.steps[:, slot] = last
