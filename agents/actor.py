"""One acting loop for every agent: the ``Actor`` steps a vector env with a network's stepwise form.

It owns where acting stands, and checkpoints it (``state_dict``): each env's next step (observation, episode-start
flag, previous action and reward; see ``recurl.agents.inputs``) and the memory state carried into it. Each ``step``:

1. asks the agent to ``decide`` on the next step, given the memory state: an action, the next state, and anything
   the agent wants kept with the transition (PPO: log-probability and value);
2. steps the envs, and refuses NaN or inf in observations or rewards (``NonFiniteError``);
3. returns the ``Transition``: what the network saw, the action, the reward, how episodes ended, and for a truncated
   episode (one that did not terminate) the inputs of its final observation and the state that continues it, for
   the agent to bootstrap from.

Episode ends follow gymnasium's SAME_STEP autoreset (``recurl.envs.make``): the step that ends an episode returns the
next episode's first observation, so the next step's reset flag is ``terminated | truncated``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tensordict import TensorDict

from recurl.agents.errors import check_finite
from recurl.agents.inputs import AgentInputs
from recurl.envs import env_seeds, final_observations, finished_episodes
from recurl.memory.cell import State

#: ``decide(step, state) -> (action, next_state, extras)``: the agent's choice for a step TensorDict ``[N]``.
Decide = Callable[[TensorDict, State], tuple[torch.Tensor, State, dict[str, torch.Tensor]]]


def state_to_tensordict(state: State, batch_size: int) -> TensorDict:
    """A memory state (a tuple of ``[B, ...]`` tensors) as a TensorDict with keys ``"0"``, ``"1"``, ... ."""
    return TensorDict({str(i): part for i, part in enumerate(state)}, batch_size=[batch_size])


def state_from_tensordict(td: TensorDict) -> State:
    return tuple(td[str(i)] for i in range(len(td.keys())))


@dataclass
class Transition:
    """One step of every env. ``seen`` [N] is what the network was given; the rest came back from the envs."""

    seen: TensorDict
    action: torch.Tensor
    extras: dict[str, torch.Tensor]
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    #: Rows whose episode was truncated (not terminated): a value target should bootstrap from their final observation.
    bootstrap_rows: torch.Tensor
    #: [len(bootstrap_rows)]: the final observations of those rows as a step (not a reset; None when there are no such
    #: rows), and the state continuing them.
    final: TensorDict | None
    final_state: State
    episodes: list[tuple[float, int]]

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


class Actor:
    def __init__(
        self,
        envs: VectorEnv,
        inputs: AgentInputs,
        initial_state: State,
        to_env: Callable[[torch.Tensor], np.ndarray],
        *,
        dtype: torch.dtype,
        device: torch.device,
        seed: int,
    ):
        self.envs, self.to_env, self.dtype, self.device = envs, to_env, dtype, device
        obs, _ = envs.reset(seed=env_seeds(seed, envs.num_envs))  # as make_vector_env reset them
        self.next = inputs.first_step(self._tensor(obs))
        self.state = initial_state

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """Env output as a tensor in the network's dtype and device."""
        return torch.as_tensor(array, dtype=self.dtype, device=self.device)

    def step(self, decide: Decide) -> Transition:
        seen = self.next
        action, state, extras = decide(seen, self.state)
        env_action = self.to_env(action)
        next_obs, reward, terminated, truncated, info = self.envs.step(env_action)
        check_finite(next_obs, reward)
        reward_t = self._tensor(reward)
        next_step = TensorDict(
            obs=self._tensor(next_obs), reset=torch.as_tensor(terminated | truncated, device=self.device),
            batch_size=seen.batch_size,
        )
        if "prev_action" in seen.keys():
            next_step["prev_action"] = torch.as_tensor(env_action, device=self.device).to(seen["prev_action"].dtype)
        if "prev_reward" in seen.keys():
            next_step["prev_reward"] = reward_t
        bootstrap = truncated & ~terminated
        rows = torch.as_tensor(np.flatnonzero(bootstrap), device=self.device)
        final = None
        if len(rows):
            final = next_step[rows].clone()
            final["reset"].zero_()
            final["obs"] = self._tensor(final_observations(next_obs, info)[bootstrap])
        self.next, self.state = next_step, state
        return Transition(
            seen=seen, action=action, extras=extras, reward=reward_t,
            terminated=torch.as_tensor(terminated, device=self.device),
            truncated=torch.as_tensor(truncated, device=self.device),
            bootstrap_rows=rows, final=final, final_state=tuple(s[rows] for s in state),
            episodes=finished_episodes(info),
        )

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The next step of every env and the memory state carried into it, as plain tensors."""
        num_envs = self.next.batch_size[0]
        return {"next": self.next.to_dict(), "memory_state": state_to_tensordict(self.state, num_envs).to_dict()}

    def load_state_dict(self, saved: dict) -> None:
        next_step = TensorDict(saved["next"], batch_size=self.next.batch_size).to(self.device)
        if set(next_step.keys()) != set(self.next.keys()):
            raise ValueError(
                f"the saved acting state holds {sorted(next_step.keys())}, this agent reads {sorted(self.next.keys())}"
            )
        memory_state = TensorDict(saved["memory_state"], batch_size=self.next.batch_size).to(self.device)
        self.next, self.state = next_step, state_from_tensordict(memory_state)
