"""``python -m recurl.bench peers``: recurl's PPO next to sb3-contrib's RecurrentPPO and a CleanRL-style LSTM PPO,
on one POPGym task with the same settings, in one process, runs interleaved.

Every system trains for the same number of env steps (``--steps`` rounded up to whole rollouts) with the same
env count, rollout length, epochs, minibatches, network width and depth, one torch thread, and the learning
hyperparameters of recurl's ``PPOConfig`` defaults: learning rate (annealed linearly to 0), gamma, GAE lambda, clip
coefficient, entropy coefficient, value coefficient, max grad norm, Adam eps 1e-5, per-minibatch advantage
normalisation, no value clipping. Every system sees the same input, the encoded observation: recurl's previous
action and reward inputs (``agent.previous_action``, on by default with ``env=popgym``) are off, since the peers have
neither. The systems:

- ``recurl PPO <memory>``: ``recurl.training.train`` with a composed Hydra config, as ``python -m recurl.train`` runs it
  (metrics.csv, TensorBoard events and the final checkpoint are written, to a temporary folder).
- ``CleanRL-style LSTM PPO``: ``recurl/bench/cleanrl_lstm_ppo.py`` (its docstring says what follows CleanRL's
  ``ppo_atari_lstm.py`` and what differs) on the vector env recurl trains on (``recurl.envs.make_vector_env``).
- ``sb3-contrib RecurrentPPO``: ``MlpLstmPolicy`` on sb3's ``DummyVecEnv`` of the same gymnasium envs, each wrapped in
  recurl's observation encoding (``recurl.envs.encode_observations``, the wrapper inside every sub-env of
  ``make_vector_env``) and in sb3's ``Monitor`` (episode returns). Its network is the closest sb3 allows to the
  others': one LSTM of ``--layers`` layers and width ``--width`` (``lstm_hidden_size``, ``n_lstm_layers``) shared by
  actor and critic (``shared_lstm=True, enable_critic_lstm=False``; sb3 then trains the LSTM with the actor's loss
  only), linear heads on it (``net_arch=[]``: recurl's heads are single linear layers on the memory's output too).
  sb3's default, a second LSTM for the critic, does twice the LSTM work and is slower still; it is not used here.
  The value loss is the same: sb3's is ``vf_coef * mse``, recurl's ``value_coef * 0.5 * mse``, so
  ``vf_coef = value_coef / 2``. The learning-rate schedule is shifted by one rollout so that, as in recurl, the
  first update uses the full rate.
  Minibatches: sb3's ``batch_size`` counts steps, not sequences. It is ``envs * rollout_steps / minibatches`` here
  (512 by default: as many steps as recurl's minibatch of 8 whole 64-step trajectories). sb3 lays the rollout out
  env after env, rotates it by a random offset, and cuts it into runs of ``batch_size`` consecutive steps, which it
  splits into sequences at env changes and episode starts and pads; each sequence starts from the LSTM state
  stored at its first step. So an sb3 minibatch holds the same number of steps, from about 8 neighbouring envs'
  trajectories (two of them partial) rather than a random set of 8 whole ones.

Timing: from building the envs to the end of training (collection and updates), per run, as wall time and as this
process's CPU time; a system's env steps/s is the median over ``--repeats`` runs. Every system runs on one thread,
so on an idle machine the two agree; on a shared one the CPU time leaves out the time the process waited for a
core, and its ratios are the steadier. The runs are interleaved: each repeat runs every system once (seed
``--seed`` + repeat), in an order that rotates each repeat, so drift of a shared machine hits all alike.

Final return: the mean return of the episodes that ended in the last 10% of rollouts (at least the last rollout),
pooled over the repeats; the same rule for every system, read from its training (no separate evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from recurl.agents import PPOConfig
from recurl.bench import cleanrl_lstm_ppo
from recurl.command_line import Parser, positive_int
from recurl.config_files import compose_config
from recurl.envs import encode_observations, make_vector_env, resolve_env_id
from recurl.memory import MEMORIES
from recurl.training import train

SUITE = "popgym"
SB3 = "sb3-contrib RecurrentPPO"
CLEANRL = "CleanRL-style LSTM PPO"
SB3_MISSING = "not installed (pip install -e '.[peers]')"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every system is run with; the learning hyperparameters are recurl's ``PPOConfig`` defaults."""

    task: str
    iterations: int
    num_envs: int = 32
    rollout_steps: int = 64
    epochs: int = 4
    minibatches: int = 4
    width: int = 64
    layers: int = 2
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)

    @property
    def steps(self) -> int:
        return self.iterations * self.num_envs * self.rollout_steps


class Stopwatch:
    """Wall time and this process's CPU time (all its threads) spent inside the ``with`` block."""

    def __enter__(self) -> Stopwatch:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@dataclasses.dataclass(frozen=True)
class Run:
    wall_seconds: float
    cpu_seconds: float
    #: ``(rollout index from 0, sum of episode returns, number of episodes)`` for the episodes that ended.
    episodes: list[tuple[int, float, int]]


def run_recurl(memory: str, s: Settings, seed: int) -> Run:
    p = s.ppo
    overrides = [
        "agent=ppo", f"memory={memory}", f"env={SUITE}", f"env.id={s.task}", f"env.num_envs={s.num_envs}",
        f"memory.hidden_size={s.width}", f"memory.num_layers={s.layers}", f"agent.rollout_steps={s.rollout_steps}",
        f"agent.epochs={s.epochs}", f"agent.minibatches={s.minibatches}", f"agent.learning_rate={p.learning_rate}",
        f"agent.anneal_lr={p.anneal_lr}", f"agent.gamma={p.gamma}", f"agent.gae_lambda={p.gae_lambda}",
        f"agent.clip_coef={p.clip_coef}", f"agent.value_coef={p.value_coef}", f"agent.entropy_coef={p.entropy_coef}",
        f"agent.max_grad_norm={p.max_grad_norm}", f"agent.normalize_advantages={p.normalize_advantages}",
        "agent.previous_action=false", "agent.previous_reward=false",
        f"total_steps={s.steps}", f"checkpoint_every={s.steps}", f"seed={seed}", "torch_threads=1", "device=cpu",
    ]
    cfg = compose_config(*overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        with Stopwatch() as clock:
            code = train(cfg, Path(run_dir))
        if code:
            raise RuntimeError(f"recurl PPO {memory} stopped with exit code {code}")
        with (Path(run_dir) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
    return Run(clock.wall, clock.cpu, [
        (i, float(row["episode_return"]) * int(row["episodes"]), int(row["episodes"]))
        for i, row in enumerate(rows) if int(row["episodes"])
    ])


def run_cleanrl(s: Settings, seed: int) -> Run:
    p = s.ppo
    args = cleanrl_lstm_ppo.Args(
        num_steps=s.rollout_steps, learning_rate=p.learning_rate, anneal_lr=p.anneal_lr, gamma=p.gamma,
        gae_lambda=p.gae_lambda, num_minibatches=s.minibatches, update_epochs=s.epochs,
        norm_adv=p.normalize_advantages, clip_coef=p.clip_coef, ent_coef=p.entropy_coef, vf_coef=p.value_coef,
        max_grad_norm=p.max_grad_norm, hidden_size=s.width, num_layers=s.layers,
    )
    with Stopwatch() as clock:
        envs = make_vector_env(SUITE, s.task, s.num_envs, seed)
        try:
            episodes = cleanrl_lstm_ppo.train(envs, args, s.steps, seed)
        finally:
            envs.close()
    return Run(clock.wall, clock.cpu, [(i, episode_return, 1) for i, episode_return in episodes])


def _sb3_env(env_id: str) -> gym.Env:
    from stable_baselines3.common.monitor import Monitor

    return Monitor(encode_observations(gym.make(env_id)))


def run_sb3(s: Settings, seed: int) -> Run:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    p = s.ppo
    one_rollout = 1 / s.iterations  # of sb3's "progress remaining", which it lowers before each update

    def learning_rate(progress_remaining: float) -> float:
        return p.learning_rate * (min(1.0, progress_remaining + one_rollout) if p.anneal_lr else 1.0)

    policy = dict(
        lstm_hidden_size=s.width, n_lstm_layers=s.layers, shared_lstm=True, enable_critic_lstm=False, net_arch=[],
        optimizer_kwargs=dict(eps=1e-5),
    )
    with Stopwatch() as clock:
        envs = DummyVecEnv([functools.partial(_sb3_env, resolve_env_id(SUITE, s.task))] * s.num_envs)
        model = RecurrentPPO(
            "MlpLstmPolicy", envs, learning_rate=learning_rate, n_steps=s.rollout_steps,
            batch_size=s.num_envs * s.rollout_steps // s.minibatches, n_epochs=s.epochs, gamma=p.gamma,
            gae_lambda=p.gae_lambda, clip_range=p.clip_coef, normalize_advantage=p.normalize_advantages,
            ent_coef=p.entropy_coef, vf_coef=p.value_coef / 2, max_grad_norm=p.max_grad_norm, seed=seed, device="cpu",
            policy_kwargs=policy,
        )
        model.learn(total_timesteps=s.steps)
    episodes = []
    for monitor in envs.envs:  # an episode ending at the env's n-th step (from 1) ended in rollout (n - 1) // T
        ends = np.cumsum(monitor.get_episode_lengths())
        returns = monitor.get_episode_rewards()
        episodes += [(int(end - 1) // s.rollout_steps, float(r), 1) for end, r in zip(ends, returns)]
    envs.close()
    return Run(clock.wall, clock.cpu, episodes)


def final_return(runs: list[Run], iterations: int) -> float:
    """Mean return of the episodes that ended in the last 10% of rollouts (at least one), over all runs."""
    first = iterations - max(1, round(iterations / 10))
    total = count = 0
    for run in runs:
        for rollout, return_sum, episodes in run.episodes:
            if rollout >= first:
                total, count = total + return_sum, count + episodes
    return total / count if count else math.nan


def sb3_installed() -> bool:
    return importlib.util.find_spec("sb3_contrib") is not None


def systems(memories: list[str], with_sb3: bool) -> dict[str, Callable[[Settings, int], Run]]:
    runners: dict[str, Callable[[Settings, int], Run]] = {
        f"recurl PPO {memory}": functools.partial(run_recurl, memory) for memory in memories
    }
    runners[CLEANRL] = run_cleanrl
    if with_sb3:
        runners[SB3] = run_sb3
    return runners


def measure(
    runners: dict[str, Callable[[Settings, int], Run]], s: Settings, repeats: int, seed: int
) -> dict[str, list[Run]]:
    """Each repeat runs every system once, the order rotated by one each repeat."""
    names = list(runners)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            print(f"peers: repeat {repeat + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            runs[name].append(runners[name](s, seed + repeat))
    return runs


def table(runs: dict[str, list[Run]], s: Settings) -> str:
    wall = {name: [s.steps / run.wall_seconds for run in name_runs] for name, name_runs in runs.items()}
    cpu = {name: [s.steps / run.cpu_seconds for run in name_runs] for name, name_runs in runs.items()}
    median_wall = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    lines = [
        "| system | env steps/s | env steps per CPU-second | final return | vs sb3 RecurrentPPO (wall / CPU) "
        "| env steps/s of each run |",
        "|---|---|---|---|---|---|",
    ]
    for name in runs:
        ratio = "n/a"
        if SB3 in runs:
            ratio = f"{median_wall[name] / median_wall[SB3]:.2f}x / {median_cpu[name] / median_cpu[SB3]:.2f}x"
        each = ", ".join(f"{v:.0f}" for v in wall[name])
        final = final_return(runs[name], s.iterations)
        final_cell = "n/a (no episode ended)" if math.isnan(final) else f"{final:.3f}"
        lines.append(f"| {name} | {median_wall[name]:.0f} | {median_cpu[name]:.0f} | {final_cell} | {ratio} | {each} |")
    if SB3 not in runs:
        lines.append(f"| {SB3} | {SB3_MISSING} | n/a | n/a | n/a | n/a |")
    return "\n".join(lines)


def main(argv: list[str] | None) -> None:
    parser = Parser(prog="python -m recurl.bench peers", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="RepeatPreviousEasy", help="a POPGym id, short or full")
    parser.add_argument(
        "--steps", type=positive_int, default=100_000, help="env steps per run (rounded up to whole rollouts)"
    )
    parser.add_argument("--memories", nargs="+", default=["mingru", "lstm"], choices=list(MEMORIES))
    parser.add_argument("--repeats", type=positive_int, default=2, help="runs of each system, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=positive_int, default=32)
    parser.add_argument("--rollout-steps", type=positive_int, default=64)
    parser.add_argument("--epochs", type=positive_int, default=4)
    parser.add_argument("--minibatches", type=positive_int, default=4)
    parser.add_argument("--width", type=positive_int, default=64)
    parser.add_argument("--layers", type=positive_int, default=2)
    args = parser.parse_args(argv)
    if args.envs % args.minibatches:
        parser.error(f"--envs ({args.envs}) must be a multiple of --minibatches ({args.minibatches}): a minibatch "
                     "is a set of whole env trajectories, the same number for every system")
    try:
        resolve_env_id(SUITE, args.task)
    except ValueError as error:
        parser.error(str(error))

    torch.set_num_threads(1)
    s = Settings(
        args.task, math.ceil(args.steps / (args.envs * args.rollout_steps)), args.envs, args.rollout_steps,
        args.epochs, args.minibatches, args.width, args.layers,
    )
    runs = measure(systems(args.memories, sb3_installed()), s, args.repeats, args.seed)
    print(
        f"# PPO next to its peers: POPGym {args.task}, {s.steps} env steps, {s.num_envs} envs x {s.rollout_steps} "
        f"steps, {s.epochs} epochs x {s.minibatches} minibatches, width {s.width} x {s.layers} layers, 1 torch "
        f"thread, {args.repeats} interleaved repeats, CPU\n"
    )
    print(table(runs, s))
