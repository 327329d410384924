"""The training command line, checked before Hydra runs it: a mistake in it is one line, before any folder is made.

Hydra reports an unknown option of a config group (``memory=gru9000``), an unknown key (``foo=1``) or an override it
cannot parse (``seed``) in six to twelve lines and exit code 1, and it adds any key given with ``+`` (``+foo=1``)
without complaint. ``command_line_error`` composes the config as Hydra will (Hydra's own argument and override parsers
and config loader, over the same config folder), once for every combination of the group options a multirun sweeps,
and names the first mistake with the valid choices; ``recurl.train`` prints it and exits with code 2 before Hydra
starts.

Keys added under a group (``+memory.num_heads=4``, ``+agent.momentum=0.9``) are left to the code that builds the
group, which knows what each backbone or agent accepts and refuses the rest in one line. Values are checked there
too, once Hydra has made the run folder; ``recurl.train`` then removes what Hydra wrote. Commands that only ask Hydra
for something (``--help``, ``--hydra-help``, ``--info``, shell completion) and those that point Hydra at other config
folders (``--config-path``, ``--config-name``, ``--config-dir``) are not checked here.

A resumed run keeps its agent, backbone and env, whatever the defaults are; ``with_saved_groups`` adds its choices of
those groups to a ``resume=`` command line, so that the overrides beside it are composed (by Hydra) and checked (here)
against that run's groups (``resume=RUN agent.epsilon_end=0.05`` for a DQN run), not the defaults'. ``recurl.train``
passes the same command line to both.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser  # the parser hydra.main itself uses: the same flags
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recurl.command_line import file_on_path
from recurl.config_files import CONF, CONFIG_NAME
from recurl.resume import FIXED, resolve_resume, saved_config

#: Groups whose own keys the code building them checks (backbone cell, agent dataclass, env keys, tracker options).
SELF_CHECKED_GROUPS = ("agent", "memory", "env", "logger")
OVERRIDE_SYNTAX = "write key=value (e.g. seed=3), +key=value to add a key, ~key to delete one"


def with_saved_groups(argv: list[str]) -> list[str]:
    """``argv`` with ``agent=``, ``memory=`` and ``env=`` of the run its ``resume=`` names appended where it chooses
    none; ``argv`` itself without one (or with a sweep of them, or one naming no checkpoint: ``recurl.train``
    refuses it later)."""
    args, _ = get_args_parser().parse_known_args(argv)
    try:
        overrides = OverridesParser.create().parse_overrides(list(args.overrides))
    except OverrideParseException:
        return argv  # command_line_error names it
    resumes = [o for o in overrides if o.key_or_group == "resume" and not o.is_delete()]
    if not resumes or resumes[-1].is_sweep_override() or resumes[-1].value() is None:
        return argv
    try:
        saved = saved_config(resolve_resume(str(resumes[-1].value()))[1])
    except ValueError:
        return argv
    chosen = {o.key_or_group for o in overrides}
    kept = [group for group in ("agent", "memory", "env") if group not in chosen]
    return argv + [f"{group}={OmegaConf.select(saved, FIXED[group])}" for group in kept]


def command_line_error(argv: list[str]) -> str | None:
    """What is wrong with ``python -m recurl.train ARGV``'s overrides, in one line, or None (also for commands this
    does not check: see the module's docstring)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun:
        return None
    if args.config_path or args.config_name or args.config_dir:
        return None
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        try:
            return _overrides_error(loader, list(args.overrides), RunMode.MULTIRUN if args.multirun else RunMode.RUN)
        except HydraException as error:
            return _one_line(error)


def _overrides_error(loader, overrides: list[str], mode: RunMode) -> str | None:
    parser = OverridesParser.create(config_loader=loader)
    parsed: list[Override] = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException:
            return f"cannot parse {text!r}: {OVERRIDE_SYNTAX}"
    for override in parsed:
        problem = _output_folder_error(override)
        if problem:
            return problem
    job = [override for override in parsed if not override.is_hydra_override()]
    # Hydra's own settings that change what there is to choose from (hydra.searchpath adds config folders)
    hydra = [o.input_line for o in parsed if o.is_hydra_override() and not o.is_sweep_override()]
    groups = set(loader.list_groups("")) - {"hydra"}
    group_overrides = [o for o in job if o.key_or_group in groups and not o.is_delete()]
    choices = []
    for override in group_overrides:
        options = loader.get_group_options(override.key_or_group, config_name=CONFIG_NAME, overrides=hydra)
        values = _values(override)
        for value in values:
            if value not in options:
                return (
                    f"{override.input_line}: {override.key_or_group} has no option {value!r}; "
                    f"choose one of {', '.join(options)}"
                )
        choices.append([f"{override.get_key_element()}={value}" for value in values])
    key_overrides = [o for o in job if o.key_or_group not in groups]
    for combination in itertools.product(*choices):
        cfg = loader.load_configuration(CONFIG_NAME, [*hydra, *combination], RunMode.RUN)
        for override in key_overrides:
            problem = _key_error(cfg, override)
            if problem:
                return problem
    loader.load_configuration(CONFIG_NAME, overrides, mode)  # whatever else Hydra objects to
    return None


def _output_folder_error(override: Override) -> str | None:
    """``hydra.run.dir=PATH`` (or ``hydra.sweep.dir``) where PATH, or a folder on the way to it, is a file: Hydra's
    makedirs would fail with a traceback."""
    if override.key_or_group not in ("hydra.run.dir", "hydra.sweep.dir") or override.is_sweep_override():
        return None
    value = str(override.value())  # unquoted
    if "${" in value:  # interpolated when Hydra runs
        return None
    file = file_on_path(Path(value))
    return f"{override.input_line}: {file} is a file; give a folder (it is made if missing)" if file else None


def _values(override: Override) -> list[str]:
    """The option(s) a group override chooses: one, or each of a multirun's sweep."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [str(override.value())]  # unquoted: memory='lstm' is memory=lstm


_ABSENT = object()


def _key_error(cfg: DictConfig, override: Override) -> str | None:
    """Why ``override`` (of a key, not a group) does not fit ``cfg``'s keys, or None."""
    key = override.key_or_group
    exists = OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT
    adds = override.is_add() or override.is_force_add()
    if override.is_add() and exists:
        return f"{override.input_line}: {key} is already a key; set it without the +: {override.input_line[1:]}"
    if override.is_delete() and exists and "." not in key and not isinstance(cfg[key], DictConfig):
        return f"{override.input_line}: recurl needs its key {key}; set it instead ({key}=...)"
    if exists or (adds and "." in key and key.split(".")[0] in SELF_CHECKED_GROUPS):
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=_ABSENT) if parent else cfg
    if not isinstance(node, DictConfig):
        return f"{override.input_line}: recurl's config has no key {key!r}"
    keys = ", ".join(sorted(k for k in node if parent or k != "hydra"))
    if parent in SELF_CHECKED_GROUPS:
        choice = cfg.hydra.runtime.choices[parent]
        return f"{override.input_line}: {parent}={choice} has no key {leaf!r}; its keys are {keys}"
    where = f"{parent} has" if parent else "recurl's config has"
    return f"{override.input_line}: {where} no key {leaf!r}; its keys are {keys}"


def _one_line(error: HydraException) -> str:
    """Hydra's message for ``error``, in one line."""
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option}: {group} has no option {option!r}; choose one of {', '.join(error.options)}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return "; ".join(lines) or type(error).__name__
