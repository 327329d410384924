"""Conditions that stop training without being bugs of the agent."""

import numpy as np
import torch


class UnsupportedActionSpaceError(ValueError):
    """An action space an agent cannot act in (a config mistake: the message names the space and what to use)."""


class NonFiniteError(RuntimeError):
    """NaN or inf in observations, rewards or a loss: continuing would only spread it through the weights."""


def check_finite(obs: np.ndarray, reward: np.ndarray) -> None:
    """Refuse an env step whose observations or rewards hold NaN or inf (checked in numpy: no device sync)."""
    for name, values in (("obs", obs), ("reward", reward)):
        if not np.isfinite(values).all():
            envs = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)).tolist()
            raise NonFiniteError(f"the env returned NaN or inf in {name} (sub-envs {envs})")


def check_finite_loss(agent: str, step: int, loss: torch.Tensor, **parts: torch.Tensor) -> None:
    """Refuse a loss that is NaN or inf, naming its parts' values."""
    if not torch.isfinite(loss):
        detail = ", ".join(f"{name} {value.item()}" for name, value in parts.items())
        raise NonFiniteError(f"{agent} loss is {loss.item()} at step {step}" + (f" ({detail})" if detail else ""))
