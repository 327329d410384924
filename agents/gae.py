"""Generalised advantage estimation (Schulman et al. 2016) as a reversed linear scan.

    delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

``done_t`` means the episode ended at step t, so nothing after it is bootstrapped. A truncated episode is not a
terminal state: the collector has already added ``gamma * V(final observation)`` to its last reward. The recursion for
A is the recurrence h_t = a_t h_{t-1} + b_t run backwards in time, so it uses ``linear_scan`` (a done is a zero gate).
"""

from __future__ import annotations

import torch

from recurl.kernels import linear_scan


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rewards``, ``values``, ``dones`` [B, T]; ``next_value`` [B] (value of the observation after the last step).

    Returns advantages and value targets (advantages + values), each [B, T].
    """
    continues = (~dones).to(values.dtype)
    following = torch.cat([values[:, 1:], next_value[:, None]], dim=1)
    deltas = rewards + gamma * continues * following - values
    gates = gamma * gae_lambda * continues
    # Reversed in time, A_t depends on A_{t+1} through the gate of step t.
    advantages = linear_scan(gates.flip(1)[..., None], deltas.flip(1)[..., None])[..., 0].flip(1)
    return advantages, advantages + values
