"""What a network reads at each step: the observation, and optionally the previous action and reward.

POPGym's baselines and R2D2 feed the agent its previous action (and R2D2 its previous reward) beside the observation:
in a partially observable task the agent cannot always infer what it did from what it sees. Both are zero at an
episode's first step, whatever the previous episode ended with.

Acting and learning build the network's input with the same ``AgentInputs`` from the same stored fields, so learning
sees exactly what acting saw. A step is a TensorDict with batch shape ``[B]`` (acting) or ``[B, T]`` (learning):

- ``obs``: the encoded observation ``[..., obs_size]``;
- ``reset``: bool, the observation starts an episode (the memory's reset flag, too);
- ``prev_action``: the action taken before it, as the env received it (an index for ``Discrete``, the array of
  indices for ``MultiDiscrete``, the clipped vector for ``Box``), present when ``previous_action`` is on;
- ``prev_reward``: the reward that came with the observation, present when ``previous_reward`` is on.

Encodings: ``Discrete`` one-hot, ``MultiDiscrete`` one one-hot per component, ``Box`` the raw (clipped) vector.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn

from recurl.agents.action_spaces import discrete_components
from recurl.agents.errors import UnsupportedActionSpaceError


class PreviousActionEncoding(nn.Module):
    """An env action (as stored in ``prev_action``) -> a float vector of ``size``."""

    def __init__(self, space: spaces.Space):
        super().__init__()
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
            self.kind, self.shape = "one_hot", space.shape
            sizes, start = (part.tolist() for part in discrete_components(space))
        elif isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
            self.kind, self.shape, sizes, start = "vector", space.shape, [int(np.prod(space.shape))], [0]
        else:
            raise UnsupportedActionSpaceError(
                f"action space {space} cannot be fed back as the previous action (Discrete, MultiDiscrete and float "
                "Box can); set agent.previous_action=false"
            )
        self.sizes = sizes
        self.size = sum(sizes)
        self.register_buffer("start", torch.tensor(start, dtype=torch.long), persistent=False)
        self.dtype = torch.long if self.kind == "one_hot" else torch.float32

    def empty(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """A placeholder previous action for ``batch_size`` fresh episodes (its encoding is masked to zero)."""
        fill = self.start.to(device) if self.kind == "one_hot" else torch.zeros(self.sizes, device=device)
        return fill.reshape(self.shape).expand(batch_size, *self.shape).to(self.dtype).clone()

    def forward(self, action: torch.Tensor, batch_dims: int) -> torch.Tensor:
        flat = action.reshape(*action.shape[:batch_dims], -1)
        if self.kind == "vector":
            return flat.float()
        index = flat.long() - self.start
        return torch.cat([F.one_hot(index[..., k], n) for k, n in enumerate(self.sizes)], dim=-1).float()


class AgentInputs(nn.Module):
    """The network's input vector of a step TensorDict: ``obs``, then the previous action and reward if enabled."""

    def __init__(
        self, observation_size: int, action_space: spaces.Space, previous_action: bool, previous_reward: bool
    ):
        super().__init__()
        self.previous_action = PreviousActionEncoding(action_space) if previous_action else None
        self.previous_reward = previous_reward
        self.size = observation_size + (self.previous_action.size if previous_action else 0) + int(previous_reward)

    def first_step(self, obs: torch.Tensor) -> TensorDict:
        """The fields of ``obs`` [B, obs_size] as the first observations of fresh episodes."""
        batch, device = obs.shape[0], obs.device
        step = TensorDict(obs=obs, reset=torch.ones(batch, dtype=torch.bool, device=device), batch_size=[batch])
        if self.previous_action is not None:
            step["prev_action"] = self.previous_action.empty(batch, device)
        if self.previous_reward:
            step["prev_reward"] = torch.zeros(batch, dtype=obs.dtype, device=device)
        return step

    def forward(self, step: TensorDict) -> torch.Tensor:
        obs = step["obs"]
        if self.previous_action is None and not self.previous_reward:
            return obs
        batch_dims = step.batch_dims
        fresh = step["reset"][..., None]
        parts = [obs]
        if self.previous_action is not None:
            encoded = self.previous_action(step["prev_action"], batch_dims).to(obs.dtype)
            parts.append(torch.where(fresh, 0.0, encoded))
        if self.previous_reward:
            parts.append(torch.where(fresh, 0.0, step["prev_reward"][..., None].to(obs.dtype)))
        return torch.cat(parts, dim=-1)
