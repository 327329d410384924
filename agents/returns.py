"""DQN's targets: n-step returns cut at episode ends, and R2D2's value rescaling.

Value rescaling (Pohlen et al. 2018, used by R2D2): the network learns Q in a squashed space,
``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``, so that returns of very different scales train alike. A target is
``h(G)``, where ``G`` bootstraps from ``h^-1`` of the networks' outputs.
"""

from __future__ import annotations

import torch

#: R2D2's eps of the value rescaling.
RESCALE_EPS = 1e-3


def rescale(x: torch.Tensor, eps: float = RESCALE_EPS) -> torch.Tensor:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1) - 1) + eps * x


def unrescale(x: torch.Tensor, eps: float = RESCALE_EPS) -> torch.Tensor:
    """h^-1(x) = sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1), the inverse of ``rescale``."""
    root = (torch.sqrt(1 + 4 * eps * (x.abs() + 1 + eps)) - 1) / (2 * eps)
    return torch.sign(x) * (root.square() - 1)


def n_step_targets(
    rewards: torch.Tensor, dones: torch.Tensor, final_values: torch.Tensor, values: torch.Tensor, gamma: float, n: int
) -> torch.Tensor:
    """n-step returns of the first ``T - n`` steps of [B, T] sequences, cut at episode ends.

    ``dones[t]``: the episode ended at step t; ``final_values[t]``: the value of the final observation where a
    truncated episode ended at t, 0 elsewhere; ``values[t]``: the bootstrap value of observation t. For each t,

        G_t = sum_{k<m} gamma^k r_{t+k} + (gamma^m final_values_{t+m-1} if the episode ended at t+m-1 < t+n
                                           else gamma^n values_{t+n})

    so nothing after an episode's end (the next episode, which the same sequence holds) is summed or bootstrapped.
    """
    length = rewards.shape[1] - n
    returns = torch.zeros_like(rewards[:, :length])
    alive = torch.ones_like(dones[:, :length])
    discount = 1.0
    for k in range(n):
        reward = rewards[:, k : k + length] + gamma * final_values[:, k : k + length]
        returns = returns + torch.where(alive, discount * reward, 0.0)
        alive = alive & ~dones[:, k : k + length]
        discount *= gamma
    return returns + torch.where(alive, discount * values[:, n:], 0.0)
