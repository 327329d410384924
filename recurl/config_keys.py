"""A nested config as dotted keys: the form of MLflow params, TensorBoard hparams, and the keys runs are grouped and
checked by."""

from __future__ import annotations

from typing import Any


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent": {"gamma": 0.99}}`` -> ``{"agent.gamma": 0.99}``; lists are values, not subtrees."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
