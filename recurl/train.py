"""``python -m recurl.train [overrides]``: train an agent with a memory backbone on an environment.

Hydra composes ``recurl/conf/config.yaml`` with the groups ``agent=``, ``memory=``, ``env=`` and any ``key=value``
overrides, and makes the run folder (``runs/<date>/<time>_<agent>_<memory>`` by default). The folder receives the
resolved config (``.hydra/config.yaml``), ``metrics.csv``, TensorBoard events under ``tensorboard/`` and
``checkpoints/latest.pt`` (rewritten every ``checkpoint_every`` env steps, and when the run stops) and
``checkpoints/final.pt``.

``resume=PATH`` (a run folder or a checkpoint file) continues that run in its own folder, with its saved config and
any overrides given beside ``resume`` (the backbone, agent and env cannot change). ``metrics.csv`` keeps its rows up to
the checkpoint's step and grows from there; on CPU a resumed run reproduces the uninterrupted one row for row.

A mistake in the config (an unknown id or option, a value out of range, a bad checkpoint) stops the run before
training with one line naming it; so do an env that raises, NaN/inf in observations or losses, Ctrl-C and SIGTERM,
each after saying where the last checkpoint is. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recurl.agents.errors import NonFiniteError
from recurl.builder import load_into, positive_int, setup
from recurl.checkpoint import save_checkpoint
from recurl.envs import EnvStepError
from recurl.envs.snapshot import snapshot
from recurl.resume import (
    existing_run,
    output_subdir_for,
    resolve_resume,
    resumed_config,
    run_dir_for,
    truncate_metrics,
)
from recurl.run_logger import RunLogger

#: Conditions that end a run early without being bugs: reported in one line, exit code 1.
RUN_STOPPERS = (EnvStepError, NonFiniteError)


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


def run(cfg: DictConfig, run_dir: Path, envs, agent) -> int:
    """Train ``agent`` until ``total_steps``; returns the process exit code (0, or non-zero when stopped early)."""
    latest = run_dir / "checkpoints" / "latest.pt"
    config = OmegaConf.to_container(cfg, resolve=True)
    resume_hint = f"resume with: python -m recurl.train resume={run_dir}"

    def checkpoint(*paths: Path) -> None:
        payload = {
            "agent": agent.state_dict(),
            "config": config,
            "envs": snapshot(envs) if cfg.env.vectorization == "sync" else None,
            "rng": {"torch": torch.get_rng_state()},
        }
        for path in paths:
            save_checkpoint(path, payload)

    logger = RunLogger(run_dir, cfg.total_steps, start_step=agent.global_step)
    try:
        with _StopRequest() as stop:
            while agent.global_step < cfg.total_steps and stop.signal is None:
                period = agent.global_step // cfg.checkpoint_every
                try:
                    metrics, episodes = agent.iterate()
                except RUN_STOPPERS as error:
                    kept = f"the last checkpoint, {latest}," if latest.exists() else "no checkpoint"
                    print(f"\nrecurl.train: stopped at step {agent.global_step}: {error}; {kept} is kept", file=sys.stderr)
                    return 1
                logger.log(agent.global_step, metrics, episodes)
                if agent.global_step // cfg.checkpoint_every > period or stop.signal is not None:
                    checkpoint(latest)
        if stop.signal is not None:
            name = signal.Signals(stop.signal).name
            print(f"\nrecurl.train: {name} at step {agent.global_step}: checkpoint saved; {resume_hint}", file=sys.stderr)
            return 128 + stop.signal
        checkpoint(latest, run_dir / "checkpoints" / "final.pt")
    finally:
        logger.close()
        envs.close()
    if cfg.video:
        from recurl.record import record_run  # matplotlib and PIL are imported only when asked for

        for path in record_run(run_dir):
            print(f"recurl.train: video {path}", file=sys.stderr)
    return 0


def train(cfg: DictConfig, run_dir: Path) -> int:
    """Programmatic entry point without resuming: ``setup`` then ``run`` (config mistakes raise ValueError)."""
    return run(cfg, run_dir, *setup(cfg))


OmegaConf.register_new_resolver("recurl_run_dir", run_dir_for, replace=True)
OmegaConf.register_new_resolver("recurl_output_subdir", output_subdir_for, replace=True)


def prepare(cfg: DictConfig, overrides: list[str], new_run_dir: Path):
    """Everything before training: a new run in ``new_run_dir``, or, with ``resume``, the saved run with
    ``overrides`` (the command line's) applied, restored from its checkpoint; ``existing`` says what happens when
    ``new_run_dir`` already holds a run. Returns (cfg, run_dir, envs, agent), or None when that run is finished."""
    if cfg.resume is None:
        found = existing_run(new_run_dir, cfg.existing, positive_int(cfg, "total_steps"))
        if found == "finished":
            print(f"recurl.train: {new_run_dir} already finished ({cfg.total_steps} steps)", file=sys.stderr)
            return None
        if found == "new":
            return cfg, new_run_dir, *setup(cfg)
    run_dir, checkpoint = resolve_resume(str(cfg.resume or new_run_dir))
    cfg = resumed_config(checkpoint, overrides)
    envs, agent = setup(cfg)
    load_into(checkpoint, envs, agent)
    truncate_metrics(run_dir / "metrics.csv", agent.global_step)
    return cfg, run_dir, envs, agent


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        prepared = prepare(cfg, list(hydra_cfg.overrides.task), Path(hydra_cfg.runtime.output_dir))
    except ValueError as error:
        print(f"recurl.train: error: {error}", file=sys.stderr)
        sys.exit(2)
    if prepared is None:
        return
    cfg, run_dir, envs, agent = prepared
    code = run(cfg, run_dir, envs, agent)
    if code:  # sys.exit(0) would end a Hydra multirun after its first job
        sys.exit(code)


if __name__ == "__main__":
    main()
