"""Action heads: features -> an action distribution for each gymnasium action space PPO can act in.

Every head's distribution returns ``log_prob`` and ``entropy`` summed over action dimensions (shape = batch shape),
and ``sample_rows(generators)``: one action per row of a batch, row ``i``'s noise drawn from ``generators[i]`` alone,
so that an env's sampled actions depend on its own stream, not on the rows beside it (``recurl.policy``). ``to_env``
turns sampled actions into what ``VectorEnv.step`` expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from recurl.agents.action_spaces import discrete_components
from recurl.agents.errors import UnsupportedActionSpaceError


def noise_per_row(
    draw: Callable[..., torch.Tensor], generators: Sequence[torch.Generator], shape: torch.Size, like: torch.Tensor
) -> torch.Tensor:
    """``[len(generators), *shape]`` noise whose row ``i`` ``draw`` (``torch.rand``, ``torch.randn``) takes from
    ``generators[i]`` (CPU generators), in ``like``'s dtype and device."""
    return torch.stack([draw(shape, generator=generator) for generator in generators]).to(like)


class GumbelCategorical(Categorical):
    """A categorical distribution sampled with the Gumbel-max trick, ``argmax(logits + Gumbel noise)``: the same
    distribution as ``Categorical.sample``, whose ``torch.multinomial`` validates its input with device syncs (~70 us a
    call on CPU, a fifth of a whole PPO acting step)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(logits=logits, validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape) + self.logits.shape[-1:]
        return self._gumbel_max(torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device))

    def sample_rows(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        return self._gumbel_max(noise_per_row(torch.rand, generators, self.logits.shape[-1:], self.logits))

    def _gumbel_max(self, uniform: torch.Tensor) -> torch.Tensor:
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
        return (self.logits + gumbel).argmax(-1)


class _MultiCategorical(Distribution):
    """Independent categoricals, one per MultiDiscrete component; log-probabilities and entropies add up."""

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, sizes: list[int]):
        self.parts = [GumbelCategorical(chunk) for chunk in logits.split(sizes, dim=-1)]
        super().__init__(batch_shape=logits.shape[:-1], validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return torch.stack([part.sample(sample_shape) for part in self.parts], dim=-1)

    def sample_rows(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        return torch.stack([part.sample_rows(generators) for part in self.parts], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return sum(part.log_prob(v) for part, v in zip(self.parts, value.unbind(-1)))

    def entropy(self) -> torch.Tensor:
        return sum(part.entropy() for part in self.parts)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([part.probs.argmax(-1) for part in self.parts], dim=-1)


class DiscreteHead(nn.Module):
    def __init__(self, space: spaces.Discrete, in_size: int):
        super().__init__()
        self.start = int(space.start)
        self.logits = nn.Linear(in_size, int(space.n))

    def forward(self, features: torch.Tensor) -> Distribution:
        return GumbelCategorical(self.logits(features))

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return action.cpu().numpy() + self.start


class MultiDiscreteHead(nn.Module):
    def __init__(self, space: spaces.MultiDiscrete, in_size: int):
        super().__init__()
        sizes, self.start = discrete_components(space)
        self.shape, self.sizes = space.shape, sizes.tolist()
        self.logits = nn.Linear(in_size, sum(self.sizes))

    def forward(self, features: torch.Tensor) -> Distribution:
        return _MultiCategorical(self.logits(features), self.sizes)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return (action.cpu().numpy() + self.start).reshape(-1, *self.shape)


class DiagonalGaussian(Independent):
    """Independent normals over the action's dimensions (log-probabilities and entropies add up)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__(Normal(mean, std, validate_args=False), 1)

    def sample_rows(self, generators: Sequence[torch.Generator]) -> torch.Tensor:
        mean, std = self.base_dist.loc, self.base_dist.scale
        return mean + std * noise_per_row(torch.randn, generators, mean.shape[-1:], mean)


class BoxHead(nn.Module):
    """A diagonal Gaussian with a state-independent log-std; samples are clipped to the bounds only for the env."""

    def __init__(self, space: spaces.Box, in_size: int):
        super().__init__()
        self.shape, self.low, self.high = space.shape, space.low.reshape(-1), space.high.reshape(-1)
        self.mean = nn.Linear(in_size, int(np.prod(space.shape)))
        self.log_std = nn.Parameter(torch.zeros(int(np.prod(space.shape))))

    def forward(self, features: torch.Tensor) -> Distribution:
        mean = self.mean(features)
        return DiagonalGaussian(mean, self.log_std.exp().expand_as(mean))

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        return np.clip(action.cpu().numpy(), self.low, self.high).reshape(-1, *self.shape)


def make_action_head(space: spaces.Space, in_size: int) -> nn.Module:
    if isinstance(space, spaces.Discrete):
        return DiscreteHead(space, in_size)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiDiscreteHead(space, in_size)
    if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return BoxHead(space, in_size)
    raise UnsupportedActionSpaceError(
        f"action space {space} is not supported: PPO acts in Discrete, MultiDiscrete and float Box spaces"
    )
