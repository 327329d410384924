"""Experiment trackers beside metrics.csv and TensorBoard: Weights & Biases (``logger=wandb``) and MLflow
(``logger=mlflow``), chosen with the ``logger`` config group (``recurl/conf/logger/``; ``none`` by default).

A tracker run is named after the run folder. It receives the resolved config once, every row of metrics.csv (step =
env steps; entries that are NaN, such as the return of an update in which no episode ended, are left out) and, when
the run ends, its final return and whether it finished. A resumed run is a new tracker run of the same name from the
checkpoint's step on. Each package is imported only when its logger is chosen.
"""

from __future__ import annotations

import math
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from recurl.config_keys import flatten

#: logger name -> (the package it needs, the options its config accepts beside ``name``).
TRACKERS = {
    "none": (None, ()),
    "wandb": ("wandb", ("project", "entity", "mode")),
    "mlflow": ("mlflow", ("tracking_uri", "experiment_name")),
}
WANDB_MODES = ("online", "offline", "disabled", "shared")
MLFLOW_BATCH = 100  # MLflow takes at most 100 params in one log_batch call


class Tracker(Protocol):
    def log(self, step: int, row: dict[str, float]) -> None: ...

    def close(self, finished: bool, final_return: float) -> None: ...


def logger_options(cfg: DictConfig) -> dict[str, Any]:
    """The config's ``logger`` group as a dict (``name: none`` for configs saved before the group existed)."""
    node = OmegaConf.select(cfg, "logger")
    return OmegaConf.to_container(node) if isinstance(node, DictConfig) else {"name": "none"}


def check_logger(cfg: DictConfig) -> None:
    """Refuse an unknown logger, its unknown options, or one whose package is not installed (ValueError)."""
    options = logger_options(cfg)
    name = options.pop("name", None)
    if name not in TRACKERS:
        raise ValueError(f"logger.name={name}: choose one of {', '.join(TRACKERS)}")
    package, accepted = TRACKERS[name]
    if set(accepted) - set(options):  # logger.name changed alone: the group's other keys are another logger's
        raise ValueError(f"logger.name={name}: choose the logger with logger={name}, which brings its options")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it accepts {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"logger {name}: unknown option(s) {', '.join(unknown)}; {takes}")
    for key, value in options.items():  # names and addresses; W&B's project and entity, MLflow's URI may be null
        if not isinstance(value, str) and (value is not None or key == "experiment_name"):
            kind = "a name" if key == "experiment_name" else "a string or null"
            raise ValueError(f"logger.{key}={value}: give {kind}")
    if name == "wandb" and options["mode"] not in (None, *WANDB_MODES):
        raise ValueError(f"logger.mode={options['mode']}: choose one of {', '.join(WANDB_MODES)} (or null)")
    if package is not None and find_spec(package) is None:
        raise ValueError(f"logger={name} needs the {package} package: pip install 'recurl[{name}]'")


def make_tracker(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> Tracker | None:
    """The tracker the config chooses, started for ``run_dir`` with the resolved ``config``; None for ``none``.
    A tracker that cannot start (not logged in, no server) is a ValueError naming the logger."""
    check_logger(cfg)
    options = logger_options(cfg)
    name = options.pop("name")
    if name == "none":
        return None
    start = {"wandb": WandbTracker, "mlflow": MlflowTracker}[name]
    try:
        return start(run_dir, config, **options)
    except Exception as error:  # the trackers' own errors have no common base class
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"logger={name} could not start a run: {first_line}") from None


def metric_values(row: dict[str, float]) -> dict[str, float]:
    """A metrics row without its step and without NaN entries."""
    return {key: value for key, value in row.items() if key != "step" and not _is_nan(value)}


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


class WandbTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, entity: str | None, mode: str | None):
        import wandb

        self.run = wandb.init(
            project=project, entity=entity, mode=mode, name=run_dir.name, dir=str(run_dir), config=config,
        )

    def log(self, step: int, row: dict[str, float]) -> None:
        self.run.log(metric_values(row), step=step)

    def close(self, finished: bool, final_return: float) -> None:
        self.run.summary["final_return"] = final_return
        self.run.finish(exit_code=0 if finished else 1)


class MlflowTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], tracking_uri: str | None, experiment_name: str):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(experiment_name)
            except Exception:  # another job of the sweep created it meanwhile
                experiment_id = self.client.get_experiment_by_name(experiment_name).experiment_id
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(
            experiment_id, run_name=run_dir.name, tags={"recurl.run_dir": str(run_dir.resolve())}
        ).info.run_id
        params = [Param(key, str(value)) for key, value in flatten(config).items()]
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_BATCH])

    def log(self, step: int, row: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in metric_values(row).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, finished: bool, final_return: float) -> None:
        if not math.isnan(final_return):
            self.client.log_metric(self.run_id, "final_return", final_return)
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")
