"""Training, as ``python -m recurl.train [overrides]`` runs it (``hydra_main``) and as code calls it (``train``,
``prepare`` then ``run``): an agent with a memory backbone on an environment.

Hydra composes ``recurl/conf/config.yaml`` with the groups ``agent=``, ``memory=``, ``env=``, ``logger=`` and any
``key=value`` overrides, and makes the run folder (``runs/<date>/<time>_<env id>_<agent>_<memory>`` by default). The
folder receives the resolved config (``.hydra/config.yaml``), ``metrics.csv``, TensorBoard events under
``tensorboard/``, ``train.log`` (the lines the run printed), ``checkpoints/latest.pt`` (rewritten every
``checkpoint_every`` env steps, and when Ctrl-C or SIGTERM stops the run; an env error or a NaN keeps the last one as
it was) and ``checkpoints/final.pt``. With ``eval_every``, the live
policy is evaluated periodically (``recurl.periodic_eval``); ``logger=wandb|mlflow`` adds a tracker
(``recurl.trackers``).

``resume=PATH`` (a run folder or a checkpoint file) continues that run in its own folder, with its saved config and
any overrides given beside ``resume`` (the backbone, agent, env and seed cannot change). ``metrics.csv`` keeps its
rows up to the checkpoint's step and grows from there; on CPU a resumed run reproduces the uninterrupted one row for
row.

A mistake in the command line or config (an unknown group option or key, an override Hydra cannot parse, a value
of the wrong type or out of range, a bad checkpoint) is one line naming it and exit code 2, and leaves no run folder
behind (``recurl.cli_errors`` checks the command line before Hydra makes the folder; a value refused later removes
what Hydra wrote). An env that raises, NaN/inf in observations or losses, Ctrl-C and SIGTERM stop the run with one
line, after saying where the last checkpoint is. Every run ends with a summary line: the run folder, env steps, the
final return and the wall time. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from recurl.agents.errors import NonFiniteError
from recurl.builder import load_into, positive_int, setup
from recurl.checkpoint import save_checkpoint
from recurl.config_files import CONF, CONFIG_NAME
from recurl.envs import EnvStepError
from recurl.envs.snapshot import snapshot
from recurl.periodic_eval import PeriodicEvaluation, eval_every
from recurl.resume import (
    existing_run,
    holds_a_run,
    metrics_kept,
    output_subdir_for,
    record_config,
    record_resumed_config,
    resolve_resume,
    resumed_config,
    run_dir_for,
    write_metrics,
)
from recurl.run_logger import RunLogger, run_log
from recurl.trackers import check_logger, make_tracker


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a folder where the file goes); the previous one is intact."""


#: Conditions that end a run early without being bugs: reported in one line, exit code 1.
RUN_STOPPERS = (EnvStepError, NonFiniteError, CheckpointWriteError)


class _StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current update; a second SIGINT aborts."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run(cfg: DictConfig, run_dir: Path, envs, agent, returns_record: dict | None = None) -> int:
    """Train ``agent`` until ``total_steps``; returns the process exit code (0, non-zero when stopped early, 2 for a
    mistake in the evaluation or logger options, a damaged metrics.csv or a tracker that cannot start: one line, and
    nothing written).
    However training ends, the last line says so (``run_log``). ``returns_record``: a resumed run's last episode
    returns before its checkpoint (``load_into``), so that its final return is the run's, not the session's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    metrics = run_dir / "metrics.csv"
    try:
        every = eval_every(cfg)
        kept = metrics_kept(metrics, agent.global_step) if agent.global_step else None
        tracker = make_tracker(cfg, run_dir, config)
    except ValueError as error:
        envs.close()
        print(f"recurl.train: error: {error}", file=sys.stderr)
        return 2
    if agent.global_step:  # resumed, and nothing refused it: the rows past its checkpoint go, its config is recorded
        if kept is not None:
            write_metrics(metrics, kept)
        record_resumed_config(run_dir, config)  # what it runs with now, perhaps another total_steps, is compared by
    with run_log(run_dir) as log:
        logger = RunLogger(
            run_dir, cfg.total_steps, start_step=agent.global_step, tracker=tracker, config=config,
            returns_record=returns_record,
        )
        code, status = 1, "crashed"
        try:
            evaluation = PeriodicEvaluation(cfg, agent.network, every) if every else None
            code, status = _train(cfg, config, run_dir, envs, agent, logger, evaluation, log)
            if code == 0 and cfg.video:
                from recurl.record import record_run  # matplotlib and PIL are imported only when asked for

                for path in record_run(run_dir):
                    log.info(f"video {path}")
        except KeyboardInterrupt:
            code, status = 130, "aborted by a second Ctrl-C, no checkpoint written"
        finally:
            logger.close(finished=code == 0)
            envs.close()
            log.info(logger.summary(status, run_dir))
    return code


def _train(
    cfg: DictConfig, config: dict, run_dir: Path, envs, agent, logger: RunLogger, evaluation, log
) -> tuple[int, str]:
    """The training loop; returns the exit code and what happened, for the summary line."""
    latest = run_dir / "checkpoints" / "latest.pt"

    def checkpoint(*paths: Path) -> None:
        payload = {
            "agent": agent.state_dict(),
            "config": config,
            "envs": snapshot(envs) if cfg.env.vectorization == "sync" else None,
            "rng": {"torch": torch.get_rng_state()},
            "returns": logger.returns_record(),
        }
        for path in paths:
            try:
                save_checkpoint(path, payload)
            except OSError as error:
                raise CheckpointWriteError(f"cannot write {path}: {error.strerror or error}") from None

    try:
        with _StopRequest() as stop:
            while agent.global_step < cfg.total_steps and stop.signal is None:
                step_before = agent.global_step
                metrics, episodes = agent.iterate()
                results = None
                if evaluation is not None:
                    results = {}
                    if evaluation.due(step_before, agent.global_step, agent.global_step >= cfg.total_steps):
                        results, text = evaluation()
                        log.info(f"step {agent.global_step:,}: evaluation {text}")
                logger.log(agent.global_step, metrics, episodes, results)
                period_ended = agent.global_step // cfg.checkpoint_every > step_before // cfg.checkpoint_every
                if period_ended or stop.signal is not None:
                    checkpoint(latest)
        if stop.signal is None:
            checkpoint(latest, run_dir / "checkpoints" / "final.pt")
    except RUN_STOPPERS as error:
        kept = f"the last checkpoint, {latest}," if latest.exists() else "no checkpoint"
        log.error(f"stopped at step {agent.global_step}: {error}; {kept} is kept")
        return 1, "stopped early"
    if stop.signal is not None:
        name = signal.Signals(stop.signal).name
        resume_hint = f"resume with: python -m recurl.train resume={run_dir}"
        log.info(f"{name} at step {agent.global_step}: checkpoint saved; {resume_hint}")
        return 128 + stop.signal, f"stopped by {name}"
    return 0, "finished"


def train(cfg: DictConfig, run_dir: Path) -> int:
    """Programmatic entry point without resuming: ``setup`` then ``run`` (config mistakes raise ValueError)."""
    return run(cfg, run_dir, *setup(cfg))


OmegaConf.register_new_resolver("recurl_run_dir", run_dir_for, replace=True)
OmegaConf.register_new_resolver("recurl_output_subdir", output_subdir_for, replace=True)
OmegaConf.register_new_resolver("recurl_slug", lambda text: re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)), replace=True)


def prepare(cfg: DictConfig, overrides: list[str], new_run_dir: Path):
    """Everything before training: a new run in ``new_run_dir``, or, with ``resume``, the saved run with
    ``overrides`` (the command line's) applied, restored from its checkpoint; ``existing`` says what happens when
    ``new_run_dir`` already holds a run. Returns ``run``'s arguments (cfg, run_dir, envs, agent, returns_record), or
    None when that run is finished."""
    if cfg.resume is None:
        found = existing_run(new_run_dir, cfg.existing, positive_int(cfg, "total_steps"))
        if found == "finished":
            print(f"recurl.train: {new_run_dir} already finished ({cfg.total_steps} steps)", file=sys.stderr)
            return None
        if found in ("new", "restart"):
            envs, agent = setup(cfg)
            if found == "restart":
                record_config(new_run_dir, cfg)
            return cfg, new_run_dir, envs, agent, None
    run_dir, checkpoint = resolve_resume(str(cfg.resume or new_run_dir))
    cfg = resumed_config(checkpoint, overrides, cfg)
    envs, agent = setup(cfg)
    returns_record = load_into(checkpoint, envs, agent)
    return cfg, run_dir, envs, agent, returns_record


def check_run_options(cfg: DictConfig) -> None:
    """The options ``run`` reads beside ``setup``'s (video, evaluation, logger), checked before anything is built."""
    if not isinstance(cfg.video, bool):  # Hydra passes video=no on as the string 'no', which is true
        raise ValueError(f"video must be true or false, got {cfg.video!r}")
    eval_every(cfg)
    check_logger(cfg)


def forget_hydra_record(run_dir: Path, made_above: int = 0) -> None:
    """After a refusal: Hydra's record of the job (``.hydra``) goes, and its folder if that leaves it empty, unless
    the folder holds a run (then the record of the refused command is all that was added). So do the ``made_above``
    folders above it that Hydra's default layout made for it (``runs/<date>/`` and ``runs/``), where left empty."""
    if holds_a_run(run_dir):
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for folder in [run_dir, *run_dir.parents[:made_above]]:
        try:
            folder.rmdir()  # only an empty one
        except OSError:
            break


def _made_above(hydra_cfg) -> int:
    """How many folders above a single run's folder are the default layout's own (``runs/<date>/<run>``): none
    where ``hydra.run.dir`` names the folder (those above it may be the user's) or in a multirun."""
    named = any(o.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for o in hydra_cfg.overrides.hydra)
    return 0 if named or hydra_cfg.mode == RunMode.MULTIRUN else 2


@hydra.main(config_path=str(CONF), config_name=CONFIG_NAME, version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    try:
        check_run_options(cfg)
        prepared = prepare(cfg, overrides, output_dir)
    except ValueError as error:
        forget_hydra_record(output_dir, _made_above(hydra_cfg))
        print(f"recurl.train: error: {error}", file=sys.stderr)
        sys.exit(2)
    if prepared is None:
        return
    cfg, run_dir, envs, agent, returns_record = prepared
    code = run(cfg, run_dir, envs, agent, returns_record)
    if code == 2:  # refused before training: nothing of this command is kept
        forget_hydra_record(run_dir, _made_above(hydra_cfg))
    if code:  # sys.exit(0) would end a Hydra multirun after its first job
        sys.exit(code)
