"""``python -m recurl.bench {ppo,dqn}``: end-to-end env steps/s of an agent per backbone, and a learning table.

Speed: a short training run per backbone (and per ``--num-envs``) with the agent's default config on a POPGym task, in
this process, with torch's default threads, on ``--device``. Two rates: env steps over the whole wall time (acting,
env stepping and updates), and the same from the end of the first iteration on (a PPO update; a DQN round of acting
and learning), without its one-off costs (CUDA context, Triton's and cuDNN's first compilations): the rate a long run
settles at.

Learning: POPGym's RepeatPreviousEasy, RepeatFirstEasy, CountRecallEasy, AutoencodeEasy and
PositionOnlyCartPoleEasy, every backbone (``mlp`` is the memory-less control), three seeds, default hyperparameters,
a fixed step budget (see ``learning.py``: a Hydra multirun, then ``recurl.compare``).
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from recurl.bench.learning import RunFailed, run_sweep, summarise
from recurl.bench.options import available_device
from recurl.bench.timing import device_name
from recurl.command_line import Parser, folder, positive_int, seed_value
from recurl.config_files import compose_config
from recurl.envs import resolve_env_id
from recurl.memory import MEMORIES
from recurl.training import train

TASKS = ["RepeatPreviousEasy", "RepeatFirstEasy", "CountRecallEasy", "AutoencodeEasy", "PositionOnlyCartPoleEasy"]
#: Env steps per learning run: the budgets the agents' targets are stated for (issues 3 and 4).
LEARNING_STEPS = {"ppo": 200_000, "dqn": 300_000}


def speed_config(agent: str, memory: str, task: str, device: torch.device, num_envs: int | None) -> DictConfig:
    """The agent's default config for ``task`` on ``device`` (with ``num_envs`` envs, else the env config's)."""
    overrides = [f"agent={agent}", f"memory={memory}", f"env.id={task}", f"device={device}"]
    overrides += [] if num_envs is None else [f"env.num_envs={num_envs}"]
    return compose_config(*overrides)


def measure_sps(cfg: DictConfig) -> tuple[float, float]:
    """(env steps/s over the whole run, env steps/s from the first logged row (an update) to the last: NaN when
    there is only one) of one training run of ``cfg``."""
    with tempfile.TemporaryDirectory() as run_dir:
        code = train(cfg, Path(run_dir))
        if code:  # a run stopped early has no speed to report
            raise RunFailed(f"the speed run of {cfg.memory.name} stopped with exit code {code}; its line above says so")
        with (Path(run_dir) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    whole = int(last["step"]) / float(last["wall_time"])
    if len(rows) == 1:
        return whole, math.nan
    return whole, (int(last["step"]) - int(first["step"])) / (float(last["wall_time"]) - float(first["wall_time"]))


def speed_table(agent: str, args: argparse.Namespace, device: torch.device) -> None:
    print(f"# {agent} end-to-end env steps/s, {args.tasks[0]}, {device_name(device)}")
    print("| backbone | envs | env steps/s | after the first update |\n|---|---|---|---|")
    for memory in args.memories:
        for num_envs in args.num_envs or [None]:
            cfg = speed_config(agent, memory, args.tasks[0], device, num_envs)
            per_env = args.speed_steps_per_env
            cfg.total_steps = args.speed_steps if per_env is None else per_env * cfg.env.num_envs
            whole, steady = measure_sps(cfg)
            steady_text = "—" if math.isnan(steady) else f"{steady:.0f}"
            print(f"| {memory} | {cfg.env.num_envs} | {whole:.0f} | {steady_text} |", flush=True)


def check_options(args: argparse.Namespace) -> None:
    """Refuse an unknown task before any run, not in the sweep after the speed table."""
    for task in args.tasks:
        try:
            resolve_env_id("popgym", task)  # as training does
        except ValueError as error:
            raise ValueError(f"--tasks: {error}") from None


def main(argv: list[str] | None, agent: str) -> None:
    parser = Parser(prog=f"python -m recurl.bench {agent}", description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["speed", "learning", "all"], default="all")
    parser.add_argument("--memories", nargs="+", default=list(MEMORIES), choices=list(MEMORIES))
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=seed_value, default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=positive_int, default=LEARNING_STEPS[agent], help="env steps per learning run"
    )
    parser.add_argument("--speed-steps", type=positive_int, default=40_960, help="env steps per speed run")
    parser.add_argument("--speed-steps-per-env", type=positive_int,
                        help="instead: env steps per speed run = this x the run's env count (PPO: 64 per update)")
    parser.add_argument(
        "--num-envs", type=positive_int, nargs="+", help="speed: env counts to time (default: the env config's)"
    )
    parser.add_argument(
        "--device", type=available_device, default="auto",
        help="speed: auto (CUDA if visible, else CPU), cpu, cuda, cuda:N",
    )
    parser.add_argument(
        "--jobs", type=positive_int, default=2, help="learning runs at a time (Hydra's joblib launcher)"
    )
    parser.add_argument("--out", type=folder, default=Path("runs/bench"))
    args = parser.parse_args(argv)
    try:
        check_options(args)
    except ValueError as error:
        parser.refuse(str(error))
    try:
        if args.part in ("speed", "all"):
            speed_table(agent, args, args.device)
        if args.part in ("learning", "all"):
            sweep_dir = run_sweep(agent, args.tasks, args.memories, args.seeds, args.steps, args.out, args.jobs)
            summarise(sweep_dir, sweep_dir / "learning.png")
    except RunFailed as error:
        parser.refuse(str(error), code=1)
