"""An LSTM PPO in one file, written to run the loop of CleanRL's ``ppo_atari_lstm.py`` on flat observations: the
second peer of ``python -m recurl.bench peers`` (the first is sb3-contrib's RecurrentPPO).

What follows CleanRL's loop, step for step:

- rollout storage preallocated as ``[num_steps, num_envs, ...]`` tensors; each step stores the observation and the
  flag ``done`` of the step before (1 where the observation starts an episode), acts with the LSTM one step at a
  time, and keeps the LSTM state; the state at the rollout's start is cloned for the update;
- GAE as a Python loop backwards over the rollout; returns = advantages + values;
- the update shuffles env indices each epoch and takes minibatches of whole env trajectories, ``num_envs //
  num_minibatches`` envs each; it re-runs each minibatch from the stored start state **one time step at a time**
  through ``nn.LSTM``, multiplying the state by ``1 - done`` before each step (CleanRL's reset by done masks);
- per-minibatch advantage normalisation, clipped policy loss, entropy bonus, global gradient-norm clipping, Adam with
  eps 1e-5, linear learning-rate annealing from the first iteration, orthogonal initialisation (LSTM weights gain 1
  and zero biases, actor head std 0.01, critic head std 1).

What differs, and why:

- the input: flat float vectors (``recurl.envs``'s encoding), so CleanRL's Atari CNN becomes one
  ``Linear(obs, hidden_size)`` + ReLU before the LSTM, and the LSTM may have several layers (``num_layers``), so that
  the network matches the other systems' width and depth;
- the value loss is not clipped (CleanRL's ``clip_vloss`` is on by default): recurl's PPO and sb3's RecurrentPPO do
  not clip it either, and the benchmark runs every system with the same losses;
- no TensorBoard writer, prints or W&B, and no ``target_kl``; the episodes that end are returned instead;
- the vector env is given, not built here: it must be a gymnasium ``VectorEnv`` with flat ``float32`` observations,
  a ``Discrete`` action space and same-step autoreset (what ``recurl.envs.make_vector_env`` builds), as
  gymnasium 0.29, which CleanRL's script was written for, resets. Truncation counts as an episode end without
  bootstrapping, as in CleanRL.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from torch import nn
from torch.distributions import Categorical

from recurl.envs import finished_episodes


@dataclasses.dataclass(frozen=True)
class Args:
    num_steps: int = 64
    learning_rate: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden_size: int = 64
    num_layers: int = 2


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_size: int, num_actions: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.network = nn.Sequential(layer_init(nn.Linear(obs_size, hidden_size)), nn.ReLU())
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.actor = layer_init(nn.Linear(hidden_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1)

    def get_states(self, x, lstm_state, done):
        """Time-major ``x`` [T * B, obs] and ``done`` [T * B] -> LSTM outputs [T * B, hidden], final state."""
        hidden = self.network(x)
        batch_size = lstm_state[0].shape[1]
        hidden = hidden.reshape((-1, batch_size, self.lstm.input_size))
        done = done.reshape((-1, batch_size))
        outputs = []
        for h, d in zip(hidden, done):
            keep = (1.0 - d).view(1, -1, 1)
            h, lstm_state = self.lstm(h.unsqueeze(0), (keep * lstm_state[0], keep * lstm_state[1]))
            outputs.append(h)
        return torch.flatten(torch.cat(outputs), 0, 1), lstm_state

    def get_value(self, x, lstm_state, done):
        hidden, _ = self.get_states(x, lstm_state, done)
        return self.critic(hidden)

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


def train(envs: VectorEnv, args: Args, total_timesteps: int, seed: int) -> list[tuple[int, float]]:
    """Train on ``envs`` for ``total_timesteps // (num_envs * num_steps)`` iterations (at least one); returns
    ``(iteration, return)`` of every episode that ended, iterations counted from 0."""
    if not isinstance(envs.single_action_space, spaces.Discrete):
        raise ValueError(f"the CleanRL LSTM PPO acts only in Discrete action spaces, not {envs.single_action_space}")
    num_envs, obs_shape = envs.num_envs, envs.single_observation_space.shape
    if num_envs % args.num_minibatches:
        raise ValueError(f"num_envs ({num_envs}) must be a multiple of num_minibatches ({args.num_minibatches})")
    batch_size = num_envs * args.num_steps
    num_iterations = max(1, total_timesteps // batch_size)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    agent = Agent(int(np.prod(obs_shape)), int(envs.single_action_space.n), args.hidden_size, args.num_layers)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    obs = torch.zeros((args.num_steps, num_envs, *obs_shape))
    actions = torch.zeros((args.num_steps, num_envs))
    logprobs = torch.zeros((args.num_steps, num_envs))
    rewards = torch.zeros((args.num_steps, num_envs))
    dones = torch.zeros((args.num_steps, num_envs))
    values = torch.zeros((args.num_steps, num_envs))

    episodes = []
    next_obs, _ = envs.reset(seed=seed)
    next_obs = torch.Tensor(next_obs)
    next_done = torch.zeros(num_envs)
    state_shape = (agent.lstm.num_layers, num_envs, agent.lstm.hidden_size)
    next_lstm_state = (torch.zeros(state_shape), torch.zeros(state_shape))

    for iteration in range(num_iterations):
        initial_lstm_state = (next_lstm_state[0].clone(), next_lstm_state[1].clone())
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - iteration / num_iterations) * args.learning_rate

        for step in range(args.num_steps):
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value, next_lstm_state = agent.get_action_and_value(
                    next_obs, next_lstm_state, next_done
                )
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            rewards[step] = torch.tensor(reward).view(-1)
            next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(np.logical_or(terminations, truncations))
            episodes.extend((iteration, episode_return) for episode_return, _ in finished_episodes(infos))

        with torch.no_grad():
            next_value = agent.get_value(next_obs, next_lstm_state, next_done).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal, nextvalues = 1.0 - next_done, next_value
                else:
                    nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs = obs.reshape((-1, *obs_shape))
        b_logprobs, b_actions, b_dones = logprobs.reshape(-1), actions.reshape(-1), dones.reshape(-1)
        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)

        envsperbatch = num_envs // args.num_minibatches
        envinds = np.arange(num_envs)
        flatinds = np.arange(batch_size).reshape(args.num_steps, num_envs)
        for _ in range(args.update_epochs):
            np.random.shuffle(envinds)
            for start in range(0, num_envs, envsperbatch):
                mbenvinds = envinds[start : start + envsperbatch]
                mb_inds = flatinds[:, mbenvinds].ravel()  # time-major, as get_states reshapes it
                _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                    b_obs[mb_inds],
                    (initial_lstm_state[0][:, mbenvinds], initial_lstm_state[1][:, mbenvinds]),
                    b_dones[mb_inds],
                    b_actions.long()[mb_inds],
                )
                ratio = (newlogprob - b_logprobs[mb_inds]).exp()
                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                v_loss = 0.5 * ((newvalue.view(-1) - b_returns[mb_inds]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
    return episodes
