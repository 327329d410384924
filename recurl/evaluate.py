"""``python -m recurl.evaluate RUN``: play a trained policy for a number of episodes on fixed seeds and report them.

    python -m recurl.evaluate RUN [--episodes N] [--sampled] [--checkpoint PATH] [--seed S] [--envs K]

Episode ``i`` starts from ``env.reset(seed=S + i)``, so an evaluation is reproducible and two policies can be compared
on the same episodes. ``S`` defaults to ``eval_seed(run seed)``, 1,000,000 x (the run's seed mod 4,000, + 1): each run
seed has its own million episodes, so the runs of a backbone's seeds are evaluated on different episodes, as they
trained on different ones. Actions are the most likely ones unless ``--sampled``; then episode ``i`` samples its actions
from a torch generator of its own, seeded with ``S + i``. ``K`` envs play at once (each its own share of the episodes,
in order). The results repeat exactly for the same ``K``; across ``K`` they agree up to floating-point rounding (a batch
of another size rounds its matrix products differently): in practice the same discrete actions, and continuous actions
(Box) that differ in their last bits. It prints the mean ± std of the return and the length and writes one row per
episode to ``RUN/eval.csv`` (replaced atomically; checked writable before any episode is played).

Training's periodic evaluation (``eval_every``) uses ``evaluate_policy`` with the live network, most likely actions
and the same seeds every time, so its ``eval_return`` curve compares like with like.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import utils as vector_utils

from recurl.atomic_file import write_csv
from recurl.checkpoint import CheckpointError
from recurl.command_line import MAX_SEED, Parser, positive_int, seed_value
from recurl.policy import Policy, load_policy

#: The episode seeds of each run seed's evaluation (``eval_seed``), and how many run seeds get blocks of their own.
SEEDS_PER_RUN = 1_000_000
RUN_SEEDS_APART = 4_000


def eval_seed(run_seed: int) -> int:
    """The seed of evaluation episode 0 of a run with seed ``run_seed``; episode ``i`` has ``eval_seed + i``. Runs of
    different seeds get disjoint blocks (for fewer than a million episodes; seeds ``RUN_SEEDS_APART`` apart share
    one, which keeps every episode seed below 2**32, numpy's limit); with ``S + i`` for run seed ``S``, seeds 0 and
    1 would share all but one of their episodes."""
    return SEEDS_PER_RUN * (run_seed % RUN_SEEDS_APART + 1)


@dataclass(frozen=True)
class Episode:
    seed: int
    episode_return: float
    length: int


def evaluate_policy(
    policy: Policy, episodes: int, seed: int, *, deterministic: bool = True, num_envs: int = 8
) -> list[Episode]:
    """Play ``episodes`` episodes, episode ``i`` from ``reset(seed=seed + i)`` (and, unless ``deterministic``, with
    actions sampled from a generator seeded with ``seed + i``), on up to ``num_envs`` envs at once."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if seed + episodes - 1 > MAX_SEED:  # numpy's limit, which some envs seed their generators with
        raise ValueError(f"episode seeds {seed}..{seed + episodes - 1} go past 2**32 - 1; give a smaller seed")
    envs = [policy.make_env() for _ in range(min(episodes, num_envs))]
    queues = [list(range(j, episodes, len(envs))) for j in range(len(envs))]  # env j plays episodes j, j + K, ...
    results: dict[int, Episode] = {}
    state = policy.initial_state(len(envs))
    obs = [env.reset(seed=seed + queue.pop(0))[0] for env, queue in zip(envs, queues)]
    current = [seed + j for j in range(len(envs))]
    generators = [torch.Generator().manual_seed(s) for s in current]
    returns, lengths, rewards = np.zeros(len(envs)), np.zeros(len(envs), dtype=int), np.zeros(len(envs))
    reset = np.ones(len(envs), dtype=bool)
    active = list(range(len(envs)))
    try:
        while active:
            rows = torch.tensor(active)
            actions, state_rows = policy.act(
                _batch(policy.observation_space, [obs[j] for j in active]), state[rows], reset[active],
                reward=rewards[active],
                deterministic=deterministic, generators=[generators[j] for j in active],
            )
            state[rows] = state_rows
            for j, action in zip(active.copy(), actions):
                obs[j], reward, terminated, truncated, _ = envs[j].step(action)
                rewards[j], reset[j] = reward, False
                returns[j] += reward
                lengths[j] += 1
                if terminated or truncated:
                    results[current[j] - seed] = Episode(current[j], float(returns[j]), int(lengths[j]))
                    returns[j], lengths[j], rewards[j], reset[j] = 0.0, 0, 0.0, True
                    if queues[j]:
                        current[j] = seed + queues[j].pop(0)
                        generators[j] = torch.Generator().manual_seed(current[j])
                        obs[j] = envs[j].reset(seed=current[j])[0]
                    else:
                        active.remove(j)
    finally:
        for env in envs:
            env.close()
    return [results[i] for i in range(episodes)]


def _batch(space: spaces.Space, observations: list) -> Any:
    """Single observations of ``space`` as one batch, as a gymnasium vector env returns them."""
    return vector_utils.concatenate(space, observations, vector_utils.create_empty_array(space, len(observations)))


def summary(episodes: list[Episode]) -> str:
    returns = np.array([e.episode_return for e in episodes])
    lengths = np.array([e.length for e in episodes])
    return (
        f"return {returns.mean():.3f} ± {returns.std():.3f}, length {lengths.mean():.1f} ± {lengths.std():.1f} "
        f"over {len(episodes)} episode{'s' * (len(episodes) != 1)}"
    )


def write_episodes(path: Path, episodes: list[Episode]) -> None:
    """One row per episode."""
    rows = (
        {"episode": i, "seed": e.seed, "return": e.episode_return, "length": e.length} for i, e in enumerate(episodes)
    )
    write_csv(path, ["episode", "seed", "return", "length"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m recurl.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN")
    parser.add_argument("--episodes", type=positive_int, default=10, help="episodes to play (default 10)")
    parser.add_argument("--sampled", action="store_true", help="sample actions (default: the most likely action)")
    parser.add_argument("--checkpoint", type=Path, help="default: RUN/checkpoints/final.pt, else latest.pt")
    parser.add_argument(
        "--seed", type=seed_value,
        help=f"seed of episode 0 (default: {SEEDS_PER_RUN:,} x (the run's seed mod {RUN_SEEDS_APART:,}, + 1))",
    )
    parser.add_argument("--envs", type=positive_int, default=8, help="envs played at once (default 8)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.refuse(f"{args.run_dir} is not a folder")
    path = args.run_dir / "eval.csv"
    if path.is_dir():  # checked before the episodes are played, as is the folder below
        parser.refuse(f"cannot write {path}: it is a folder; move it away or remove it")
    if not os.access(args.run_dir, os.W_OK):
        parser.refuse(f"cannot write {path}: {args.run_dir} is read-only; make it writable")
    try:
        policy = load_policy(args.checkpoint or args.run_dir)
        seed = eval_seed(int(policy.config.seed)) if args.seed is None else args.seed
        episodes = evaluate_policy(policy, args.episodes, seed, deterministic=not args.sampled, num_envs=args.envs)
    except (ValueError, CheckpointError) as error:
        parser.refuse(str(error))
    try:
        write_episodes(path, episodes)
    except OSError as error:  # a full disk: the previous eval.csv, if any, is kept
        parser.refuse(f"cannot write {path}: {error.strerror}; free some space, or fix the folder, and evaluate again")
    mode = "sampled actions" if args.sampled else "most likely actions"
    print(f"{summary(episodes)} ({mode}, seeds {seed}..{seed + args.episodes - 1}); {path}", file=sys.stdout)


if __name__ == "__main__":
    main()
