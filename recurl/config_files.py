"""recurl's Hydra config: the folder ``python -m recurl.train`` composes it from, and composing it without running
Hydra's app (the benches, the tests)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF = Path(__file__).parent / "conf"
CONFIG_NAME = "config"


def compose_config(*overrides: str) -> DictConfig:
    """The training config with ``overrides``, as the command line composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="train"):
        return compose(CONFIG_NAME, overrides=list(overrides))
