"""``python -m recurl.suite --tasks T --memories M --seeds S --steps N --dir DIR [--agent ppo|dqn] [-- OVERRIDES]``:
train every task x memory x seed, then print the leaderboard.

The grid is one Hydra multirun of ``recurl.train`` (``python -m recurl.train -m ...``) on whichever launcher the
overrides after ``--`` choose (``hydra/launcher=joblib hydra.launcher.n_jobs=4`` on this machine,
``hydra/launcher=submitit_slurm ...`` on a cluster): recurl has no job runner. Each run's folder is named by what it
is, ``DIR/<env id>_<agent>_<memory>_seed<seed>``, not by Hydra's job number (which shifts when the grid changes), and
every job runs with ``existing=resume``: running the same command again skips the finished runs and continues the
interrupted ones (Ctrl-C or SIGTERM stops the training at the end of an update, with its run saved, and the suite
with it). When every run of the grid is finished, Hydra is not started at all. Training that stops on a mistake
``recurl.train`` refuses (exit code 2: an unknown key, a bad value) stops the suite with exit code 2 and asks for the
fix, since running the command again would stop the same way.

``DIR/suite.yaml`` records the agent, the step budget and the overrides that change what is learned, in any order
(not the launcher's, nor ``compare.BOOKKEEPING`` keys such as ``torch_threads``); a later command into the same DIR
must agree with them (it may add tasks, memories and seeds), because a finished run would otherwise be taken for a
run of that command. The suite ends by writing the leaderboard of the runs under DIR (``recurl.leaderboard``:
``leaderboard.csv`` and ``leaderboard.png`` in DIR) and printing it, as ``python -m recurl.compare DIR --leaderboard``
does.

Tasks: task sets (``TASK_SETS``, from POPGym's own lists: ``popgym-all`` is every id POPGym registers, which includes
the Labyrinth tasks only where ``mazelib`` is installed) or POPGym ids, full or short, comma separated. Memories: names
of ``recurl.memory.MEMORIES``. A name that is neither, or a ``--dir`` that is empty or a file, is refused before
anything runs (exit code 2).
"""

from __future__ import annotations

import difflib
import shlex
import signal
import subprocess
import sys
from argparse import ArgumentTypeError
from pathlib import Path

from omegaconf import OmegaConf

from recurl.checkpoint import CheckpointError
from recurl.command_line import Parser, folder, positive_int, seed_value
from recurl.config_files import CONF
from recurl.envs import resolve_env_id
from recurl.leaderboard import write_leaderboard
from recurl.memory import MEMORIES
from recurl.resume import holds_a_run, is_finished
from recurl.run_groups import BOOKKEEPING, CompareError

#: The agents ``agent=`` accepts: the training config's agent group (read, not imported: importing agents is slow).
AGENTS = sorted(path.stem for path in (CONF / "agent").glob("*.yaml"))
#: Task set -> the dict of ``popgym.envs`` listing its envs (POPGym registers exactly the envs of ``ALL``).
TASK_SETS = {"popgym-easy": "ALL_EASY", "popgym-medium": "ALL_MEDIUM", "popgym-hard": "ALL_HARD", "popgym-all": "ALL"}
#: Hydra's run folder for a job: what the job is. ``run_folder`` must name the same folder.
SUBDIR = "${env.id}_${agent.name}_${memory.name}_seed${seed}"
#: Training config keys the suite sets itself -> the option to use instead of an override after ``--``.
SET_BY_SUITE = {
    "agent": "--agent", "agent.name": "--agent", "memory": "--memories", "memory.name": "--memories",
    "env": "--tasks", "env.suite": "--tasks", "env.id": "--tasks", "seed": "--seeds", "total_steps": "--steps",
    "hydra.sweep.dir": "--dir", "hydra.sweep.subdir": "--dir", "existing": "--dir", "resume": "--dir",
}


def task_set(name: str) -> list[str]:
    """The POPGym ids of the task set ``name``, in POPGym's order."""
    import popgym.envs  # slow and noisy: only when a set is asked for

    return [spec["id"] for spec in getattr(popgym.envs, TASK_SETS[name]).values()]


def parse_tasks(text: str) -> list[str]:
    """Full POPGym ids of ``text``'s task sets and ids, each once, in the order given."""
    tasks: list[str] = []
    for item in filter(None, text.split(",")):
        sets = difflib.get_close_matches(item, list(TASK_SETS), n=1, cutoff=0.8)
        if sets and item not in TASK_SETS:
            raise ValueError(f"--tasks: unknown task set {item!r}; did you mean {sets[0]}? ({', '.join(TASK_SETS)})")
        try:
            tasks += task_set(item) if item in TASK_SETS else [resolve_env_id("popgym", item)]
        except ValueError as error:
            raise ValueError(f"--tasks: {error}; or a task set: {', '.join(TASK_SETS)}") from None
    if not tasks:
        raise ValueError(f"--tasks is empty; give POPGym ids or a task set: {', '.join(TASK_SETS)}")
    return list(dict.fromkeys(tasks))


def parse_memories(text: str) -> list[str]:
    memories = list(dict.fromkeys(filter(None, text.split(","))))
    for name in memories:
        if name not in MEMORIES:
            matches = difflib.get_close_matches(name, list(MEMORIES), n=3)
            hint = f"did you mean {' or '.join(matches)}? " if matches else ""
            raise ValueError(f"--memories: unknown memory {name!r}; {hint}(choose from {', '.join(MEMORIES)})")
    if not memories:
        raise ValueError(f"--memories is empty; choose from {', '.join(MEMORIES)}")
    return memories


def parse_seeds(text: str) -> list[int]:
    try:
        return list(dict.fromkeys(seed_value(item) for item in text.split(",")))
    except ArgumentTypeError as error:
        raise ValueError(f"--seeds {text}: {error}; separate seeds with commas, e.g. 0,1,2") from None


def check_overrides(overrides: list[str]) -> None:
    for override in overrides:
        key = override.lstrip("+~").split("=")[0]
        if key in SET_BY_SUITE:
            raise ValueError(f"{override}: the suite sets {key} itself; use {SET_BY_SUITE[key]} instead")


def run_folder(out: Path, task: str, agent: str, memory: str, seed: int) -> Path:
    """The folder Hydra gives the job (``SUBDIR``)."""
    return out / f"{task}_{agent}_{memory}_seed{seed}"


def record_settings(out: Path, agent: str, steps: int, overrides: list[str]) -> None:
    """Write ``out/suite.yaml``, or refuse a command whose settings differ from those it records while ``out`` holds
    runs (a suite whose runs all stopped before training, say on a mistyped override, takes the new settings)."""
    learned = [
        override for override in overrides
        if not override.startswith(("hydra.", "hydra/")) and override.lstrip("+~").split("=")[0] not in BOOKKEEPING
    ]
    settings = {"agent": agent, "steps": steps, "overrides": sorted(learned)}  # sorted: their order changes nothing
    path = out / "suite.yaml"
    recorded = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else settings
    recorded["overrides"] = sorted(recorded.get("overrides", []))  # a suite.yaml may predate the sorting
    differences = [
        f"{key} {recorded.get(key)} (here {value})" for key, value in settings.items() if recorded.get(key) != value
    ]
    if differences and any(holds_a_run(folder) for folder in out.iterdir()):
        raise ValueError(
            f"{out} holds a suite with other settings: {'; '.join(differences)}; its finished runs would pass for "
            "runs of this command, so use another --dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(settings), path)


def all_finished(folders: list[Path], steps: int) -> bool:
    try:
        return all(is_finished(folder, steps) for folder in folders)
    except CheckpointError:
        return False  # the job that meets it says what is wrong


def grid_command(
    sweep_dir: Path, agent: str, tasks: list[str], memories: list[str], seeds: list[int], steps: int, *overrides: str
) -> list[str]:
    """``python -m recurl.train -m`` over POPGym ``tasks`` x ``memories`` x ``seeds`` into ``sweep_dir``, with
    ``overrides`` after the grid's own."""
    quoted = "'" + str(sweep_dir).replace("'", "\\'") + "'"  # a path may hold , or =, which Hydra would read
    return [
        sys.executable, "-m", "recurl.train", "-m", f"hydra.sweep.dir={quoted}", f"agent={agent}", "env=popgym",
        f"env.id={','.join(tasks)}", f"memory={','.join(memories)}", f"seed={','.join(map(str, seeds))}",
        f"total_steps={steps}", *overrides,
    ]


def train_grid(out: Path, agent: str, tasks: list[str], memories: list[str], seeds: list[int], steps: int,
               overrides: list[str]) -> tuple[int, int | None]:
    """Run the grid as one Hydra multirun; returns its exit code and the first SIGINT or SIGTERM the suite got
    meanwhile (None if none), which stops the training after saving its runs."""
    command = grid_command(
        out, agent, tasks, memories, seeds, steps, f"hydra.sweep.subdir={SUBDIR}", "existing=resume", *overrides
    )
    print(f"recurl.suite: {shlex.join(['python', *command[1:]])}", file=sys.stderr, flush=True)
    received: list[int] = []

    def stop_training(signum, frame):
        # The suite waits for the training, which saves its run and stops after the current update on its first
        # SIGINT or SIGTERM, and aborts on a second SIGINT. Ctrl-C at a terminal (and timeout -s INT) signals the
        # whole process group, the training too; kill signals the suite alone. The suite cannot tell which, so it
        # passes on its first signal as SIGTERM, a stop request either way, where a SIGINT might be the training's
        # second. Later signals are not passed on: a second Ctrl-C reaches the training from the terminal.
        if not received:
            training.send_signal(signal.SIGTERM)
        received.append(signum)

    training = subprocess.Popen(command, stdout=2)  # Hydra's log to stderr: stdout is the leaderboard alone
    previous = {sig: signal.signal(sig, stop_training) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = training.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return (128 - code if code < 0 else code), (received[0] if received else None)  # -N: ended by signal N


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = Parser(
        prog="python -m recurl.suite",
        description="Train every task x memory x seed as one Hydra multirun (resumable), then print the leaderboard. "
        "Hydra overrides after -- go to every run (e.g. -- hydra/launcher=joblib hydra.launcher.n_jobs=4 "
        "torch_threads=1).",
    )
    parser.add_argument(
        "--tasks", required=True, help=f"comma-separated POPGym ids or task sets ({', '.join(TASK_SETS)})"
    )
    parser.add_argument("--memories", required=True, help=f"comma-separated, of {', '.join(MEMORIES)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    parser.add_argument("--steps", type=positive_int, required=True, help="env steps per run (total_steps)")
    parser.add_argument(
        "--dir", type=folder, required=True, help="the suite's folder: one run folder per task x memory x seed"
    )
    parser.add_argument("--agent", default="ppo", choices=AGENTS)
    args = parser.parse_args(ours)
    try:
        tasks, memories, seeds = parse_tasks(args.tasks), parse_memories(args.memories), parse_seeds(args.seeds)
        check_overrides(overrides)
        record_settings(args.dir, args.agent, args.steps, overrides)
    except ValueError as error:
        parser.refuse(str(error))
    folders = [run_folder(args.dir, t, args.agent, m, s) for t in tasks for m in memories for s in seeds]
    if all_finished(folders, args.steps):
        print(f"recurl.suite: all {len(folders)} runs in {args.dir} are finished", file=sys.stderr)
    else:
        code, stopped_by = train_grid(args.dir, args.agent, tasks, memories, seeds, args.steps, overrides)
        if code and stopped_by:  # the code of the suite's own signal, not of the training's SIGTERM
            parser.exit(128 + stopped_by, f"recurl.suite: stopped by {signal.Signals(stopped_by).name}; run the same "
                        "command again to resume it (each run from its last checkpoint)\n")
        if code == 2:  # recurl.train's code for a mistake in the command line, config or a checkpoint
            parser.refuse("training refused its settings (the recurl.train error above names the mistake); fix that "
                          "override or option, then run the command again")
        if code:
            parser.refuse(
                f"training stopped (exit code {code}); run the same command again to resume it, or see the runs so far "
                f"with python -m recurl.compare {args.dir} --leaderboard",
                code=code,
            )
    out = args.dir / "leaderboard.png"
    try:
        print(write_leaderboard([args.dir], out))
    except CompareError as error:
        parser.refuse(str(error))
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
