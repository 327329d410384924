"""``python -m recurl.bench {ppo,dqn}``: end-to-end env steps/s of an agent per backbone, and a learning table.

Speed: a short training run per backbone with the agent's default config on a POPGym task, in this process, with
torch's default threads; steps/s counts env steps over the whole wall time, updates included.

Learning: POPGym's RepeatPreviousEasy, RepeatFirstEasy, CountRecallEasy, AutoencodeEasy and
PositionOnlyCartPoleEasy, every backbone (``mlp`` is the memory-less control), three seeds, default hyperparameters,
a fixed step budget (see ``learning.py``: a Hydra multirun, then ``recurl.compare``).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import recurl
from recurl.bench.learning import run_sweep, summarise
from recurl.bench.timing import device_name
from recurl.memory import MEMORIES
from recurl.train import train

TASKS = ["RepeatPreviousEasy", "RepeatFirstEasy", "CountRecallEasy", "AutoencodeEasy", "PositionOnlyCartPoleEasy"]
#: Env steps per learning run: the budgets the agents' targets are stated for (issues 3 and 4).
LEARNING_STEPS = {"ppo": 200_000, "dqn": 300_000}


def measure_sps(agent: str, memory: str, task: str, steps: int) -> float:
    with initialize_config_dir(config_dir=str(Path(recurl.__file__).parent / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"agent={agent}", f"memory={memory}", f"env.id={task}", f"total_steps={steps}"])
    with tempfile.TemporaryDirectory() as run_dir:
        train(cfg, Path(run_dir))
        with (Path(run_dir) / "metrics.csv").open() as f:
            last = list(csv.DictReader(f))[-1]
    return int(last["step"]) / float(last["wall_time"])


def main(argv: list[str] | None, agent: str) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m recurl.bench {agent}", description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["speed", "learning", "all"], default="all")
    parser.add_argument("--memories", nargs="+", default=list(MEMORIES), choices=list(MEMORIES))
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=LEARNING_STEPS[agent], help="env steps per learning run")
    parser.add_argument("--speed-steps", type=int, default=40_960)
    parser.add_argument("--jobs", type=int, default=2, help="learning runs at a time (Hydra's joblib launcher)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args(argv)
    if args.part in ("speed", "all"):
        print(f"# {agent} end-to-end env steps/s, {args.tasks[0]}, {device_name(torch.device('cpu'))}")
        print("| backbone | env steps/s |\n|---|---|")
        for memory in args.memories:
            print(f"| {memory} | {measure_sps(agent, memory, args.tasks[0], args.speed_steps):.0f} |", flush=True)
    if args.part in ("learning", "all"):
        sweep_dir = run_sweep(agent, args.tasks, args.memories, args.seeds, args.steps, args.out, args.jobs)
        summarise(sweep_dir, sweep_dir / "learning.png")
