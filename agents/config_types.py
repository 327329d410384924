"""``check_field_types``: an agent config's values have the types its dataclass annotates, or the run is refused in
one line (Hydra passes ``agent.learning_rate=abc`` on as the string ``'abc'``); and the value checks the agents
share."""

from __future__ import annotations

import dataclasses
import typing

#: How each annotated type is named to the user.
EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _fits(value, kind: type) -> bool:
    """An int is a number; a bool is neither an integer nor a number; 2.0 is not an integer."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_field_types(config) -> None:
    """Raise ValueError naming the first field of the agent ``config`` (a dataclass) whose value has not the
    annotated type (``float | None`` accepts a number or null)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        kinds = typing.get_args(hints[field.name]) or (hints[field.name],)
        value = getattr(config, field.name)
        if not any(_fits(value, kind) for kind in kinds):
            expected = " or ".join(EXPECTED[kind] for kind in kinds)
            raise ValueError(f"agent.{field.name} must be {expected}, got {value!r}")


def check_max_grad_norm(value: float | None) -> None:
    """Gradient clipping's norm: positive, or None for no clipping. 0 would scale every gradient to zero: a run that
    trains without learning."""
    if value is not None and value <= 0:
        raise ValueError(f"agent.max_grad_norm must be positive (null: no clipping), got {value}")
