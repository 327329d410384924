"""Continuing a run in place: find its checkpoint, rebuild its config, and trim its metrics to the checkpoint.

Hydra makes a run folder before any code of ours runs, so ``config.yaml`` points ``hydra.run.dir`` at the resumed run's
folder through ``run_dir_for`` and puts Hydra's record of the resuming command in ``.hydra/resume-<time>/``
(``output_subdir_for``): the run's original ``.hydra/config.yaml`` stays as it was, and the config the run continues
with goes to ``.hydra/resumed.yaml`` (``record_resumed_config``). A *new* run pointed at a folder that already holds a
run (``holds_a_run``) gets no Hydra record at all, so that nothing there is overwritten before ``recurl.train`` refuses
it, or, with ``existing=resume`` (``existing_run``), skips it when it is finished or continues it in place when it was
interrupted. That is how a re-run sweep (``recurl.suite``) picks up where it stopped.
"""

from __future__ import annotations

import csv
import datetime
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from recurl.atomic_file import replacing
from recurl.config_files import CONF
from recurl.config_keys import flatten

#: A resumed run's config as it runs now (written at each resume, which may change a run's ``total_steps`` or learning
#: rate); Hydra's ``.hydra/config.yaml`` keeps the one the run started with.
RESUMED_CONFIG = Path(".hydra") / "resumed.yaml"
#: The ``experiment=`` presets.
PRESETS = CONF / "experiment"
#: What a checkpoint was made for: override key -> the config key it must agree with on resume. (The seed made the
#: weights, envs and random streams the checkpoint holds: a resume with another would only mislabel the run.)
FIXED = {
    "agent": "agent.name", "agent.name": "agent.name",
    "memory": "memory.name", "memory.name": "memory.name",
    "env": "env.suite", "env.suite": "env.suite", "env.id": "env.id",
    "seed": "seed",
}


def _checkpoint_of(path: Path) -> Path:
    return path / "checkpoints" / "latest.pt" if path.is_dir() else path


def _run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent


def run_dir_for(resume: str | None, default: str) -> str:
    """Hydra's run folder: the resumed run's own, or ``default`` (also when ``resume`` names no checkpoint of a run
    folder, so that Hydra creates no folder at a mistyped path nor writes into another run's; ``resolve_resume``'s
    refusal is reported later)."""
    if resume is None:
        return default
    try:
        return str(resolve_resume(resume)[0])
    except ValueError:
        return default


def holds_a_run(run_dir: Path) -> bool:
    """Whether a run already wrote metrics or checkpoints in ``run_dir`` (a folder with only Hydra's record holds a
    run that stopped before its first update: nothing of value)."""
    return (run_dir / "metrics.csv").exists() or (run_dir / "checkpoints").exists()


def _read(checkpoint: Path) -> dict:
    from recurl.checkpoint import load_checkpoint  # torch: only when a checkpoint is read, not to check a command line

    return load_checkpoint(checkpoint)


#: What a new run does when its folder already holds a run (the ``existing`` config key).
EXISTING = ("refuse", "resume")


def is_finished(run_dir: Path, total_steps: int) -> bool:
    """Whether ``run_dir`` holds a run that trained ``total_steps`` steps or more (``checkpoints/final.pt``)."""
    final = run_dir / "checkpoints" / "final.pt"
    return final.is_file() and _read(final)["agent"]["global_step"] >= total_steps


def existing_run(run_dir: Path, existing: str, total_steps: int) -> str:
    """What a new run in ``run_dir`` does about a run already there: ``"new"`` (start one), ``"finished"`` (nothing to
    do), ``"resume"`` (continue it from ``checkpoints/latest.pt``) or ``"restart"`` (start one in place of a run that
    stopped before its first checkpoint, whose rows are dropped here; ``record_config`` then replaces its record).
    ``existing=refuse`` refuses any run there."""
    if existing not in EXISTING:
        raise ValueError(f"existing={existing}: choose one of {', '.join(EXISTING)}")
    if not holds_a_run(run_dir):
        return "new"
    if existing == "refuse":
        raise ValueError(
            f"{run_dir} already holds a run; continue it with resume={run_dir} (or existing=resume), "
            "or choose another folder"
        )
    if is_finished(run_dir, total_steps):
        return "finished"
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        return "resume"
    (run_dir / "metrics.csv").unlink(missing_ok=True)
    return "restart"


def output_subdir_for(resume: str | None, output_dir: str) -> str | None:
    """Where Hydra records the job's config inside its folder ``output_dir``; None (no record) for a new run in a
    folder that already holds one."""
    if resume is not None:
        return f".hydra/resume-{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}"
    return None if holds_a_run(Path(output_dir)) else ".hydra"


def resolve_resume(resume: str) -> tuple[Path, Path]:
    """``resume`` (a run folder or a checkpoint file in its ``checkpoints/``) -> (run folder, checkpoint file). A file
    kept elsewhere is refused: the run folder the resumed run writes to would be a guess, maybe another run's."""
    checkpoint = _checkpoint_of(Path(resume))
    if not checkpoint.is_file():
        raise ValueError(f"resume={resume}: no checkpoint at {checkpoint}")
    if checkpoint.parent.name != "checkpoints":
        raise ValueError(
            f"resume={resume}: the checkpoint is not in a run folder's checkpoints/, so there is no run to continue; "
            "give the run folder, or a checkpoint in RUN_DIR/checkpoints/"
        )
    return _run_dir_of(checkpoint), checkpoint


def saved_config(checkpoint: Path) -> DictConfig:
    """The config the run that wrote ``checkpoint`` ran with."""
    return OmegaConf.create(_read(checkpoint)["config"])


def resumed_config(checkpoint: Path, overrides: list[str], composed: DictConfig) -> DictConfig:
    """The checkpoint's config with the command line's overrides applied (``resume`` kept). ``composed`` is the config
    Hydra composed from the command line: a group chosen there (``logger=wandb``) is taken from it whole, since an
    override names the group's option, not its content."""
    cfg = saved_config(checkpoint)
    _check_belongs(checkpoint, cfg)
    parsed = OverridesParser.create().parse_overrides(overrides)  # as Hydra reads them for a new run
    for override in parsed:
        key, line = override.key_or_group, override.input_line
        value = override.value()  # unquoted, typed: as Hydra reads it
        if key in FIXED:
            saved = OmegaConf.select(cfg, FIXED[key])
            if override.is_delete() or not _same(FIXED[key], str(value), saved, cfg):
                raise ValueError(f"{line}: a resumed run keeps its {FIXED[key]} ({saved}); start a new run instead")
        elif key == "experiment":
            _check_preset(str(value), cfg, {o.key_or_group for o in parsed})
        elif override.is_delete():  # a group's key (recurl.cli_errors refuses the top-level ones): its default
            saved = OmegaConf.select(cfg, key)
            if value is not None and value != saved:  # ~key=value deletes only that value, as Hydra's does
                raise ValueError(f"{line}: the run's {key} is {saved}, not {value}; leave out the value to delete it")
            parent, _, leaf = key.rpartition(".")
            OmegaConf.select(cfg, parent).pop(leaf, None)
        elif isinstance(composed.get(key), DictConfig):
            cfg[key] = composed[key]
        else:
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _same(key: str, given: str, saved, cfg: DictConfig) -> bool:
    """Whether the command line's ``key=given`` names the run's ``saved`` value: an env id in either of its forms
    (``RepeatFirstEasy`` is ``popgym-RepeatFirstEasy-v0``)."""
    if given == str(saved):
        return True
    if key != "env.id":
        return False
    from recurl.envs import resolve_env_id  # gymnasium and the suite: only to compare two spellings of an id

    try:
        return resolve_env_id(cfg.env.suite, given) == resolve_env_id(cfg.env.suite, str(saved))
    except ValueError:
        return False


def _check_belongs(checkpoint: Path, cfg: DictConfig) -> None:
    """A checkpoint is its run folder's own: the run that wrote it had the folder's agent, memory, env and seed (one
    copied in from another run would continue this run as that one). Folders without Hydra's record (runs made
    through ``recurl.training.train``) are not checked."""
    run_dir = _run_dir_of(checkpoint)
    recorded = recorded_config(run_dir)
    if not recorded.is_file():
        return
    folder = OmegaConf.load(recorded)
    for key in dict.fromkeys(FIXED.values()):
        theirs, ours = OmegaConf.select(cfg, key), OmegaConf.select(folder, key)
        if theirs != ours:
            raise ValueError(
                f"{checkpoint} is not this run's: it was made with {key}={theirs}, the run in {run_dir} has "
                f"{key}={ours}; resume the run that made it, or put this run's checkpoint back"
            )


def _check_preset(name: str, cfg: DictConfig, given: set[str]) -> None:
    """A preset beside a resume is accepted only as the one the run was made with (as when a suite, or any command
    with ``existing=resume``, is run again): each setting it makes must equal the run's, unless the command line
    sets that key itself. Otherwise a ValueError names the first that differs."""
    preset = OmegaConf.load(PRESETS / f"{name}.yaml")
    preset.pop("defaults", None)
    for key, value in flatten(OmegaConf.to_container(preset)).items():
        saved = OmegaConf.select(cfg, key)
        if key not in given and saved != value:
            raise ValueError(
                f"experiment={name}: this run was not made with it ({key} is {saved}, the preset's {value}); a "
                "resumed run keeps its own settings, so leave the preset out"
            )


def recorded_config(run_dir: Path) -> Path:
    """The file holding the config ``run_dir``'s run runs with now: the last resume's, else Hydra's record (which may
    not exist: a run made through ``recurl.training.train``)."""
    resumed = run_dir / RESUMED_CONFIG
    return resumed if resumed.is_file() else run_dir / ".hydra" / "config.yaml"


def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """Replace Hydra's record of the config (``.hydra/config.yaml``) by ``cfg``'s: for a run restarted in place, where
    Hydra wrote no record and the one there is the stopped attempt's, which ``compare`` and a later resume would
    read as this run's."""
    _save_config(run_dir / ".hydra" / "config.yaml", cfg)


def record_resumed_config(run_dir: Path, config: dict) -> None:
    """Write the config a resumed run now runs with (``RESUMED_CONFIG``), replacing the last resume's at once: what
    ``recurl.compare`` groups the run by."""
    _save_config(run_dir / RESUMED_CONFIG, config)


def _save_config(path: Path, config: DictConfig | dict) -> None:
    path.parent.mkdir(exist_ok=True)  # a run trained through recurl.training.train, not Hydra, has no .hydra yet
    with replacing(path) as f:
        OmegaConf.save(OmegaConf.create(config), f)


def metrics_kept(path: Path, step: int) -> list[list[str]] | None:
    """The rows of ``path`` (a run's metrics.csv) that a resume from ``step`` keeps, header first, or None when it
    keeps them all (or there is no file). Rows past ``step`` were written after the checkpoint, and the resumed run
    writes them again; so was a last row cut short by a crash mid-write, which goes too. Damage anywhere else is
    refused (ValueError) before anything is written: only the run's owner can tell what the file should hold."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0] if rows else []
    if header[:1] != ["step"] or "wall_time" not in header:
        raise ValueError(f"{path} has no metrics header (step, ..., wall_time); move the file aside to resume")
    complete = rows[1:]
    if complete and not _is_row(complete[-1], header):
        complete = complete[:-1]  # written when the run died
    for number, row in enumerate(complete, 2):
        if not _is_row(row, header):
            raise ValueError(f"{path}: line {number} is damaged ({','.join(row)[:60]}); repair or remove that line")
    kept = [row for row in complete if int(row[0]) <= step]
    return None if len(kept) == len(rows) - 1 else [header, *kept]


def _is_row(row: list[str], header: list[str]) -> bool:
    return len(row) == len(header) and row[0].isdigit()


def write_metrics(path: Path, rows: list[list[str]]) -> None:
    """Replace ``path`` by ``rows`` (``metrics_kept``'s) at once."""
    with replacing(path, newline="") as f:
        csv.writer(f).writerows(rows)
