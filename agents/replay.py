"""Sequence replay for recurrent DQN (R2D2, Kapturowski et al. 2019): per-env rings of steps, sliced into sequences.

Layout. Each of the ``num_envs`` envs owns a ring of ``slots`` steps (``capacity // num_envs`` rounded down to a
multiple of ``period``); the env's step ``t`` (counted from the first ``add``) lives in slot ``t % slots``. One ``add``
writes one step of every env, so all envs share the count of written steps. A step is whatever TensorDict the agent
adds (DQN: the observation, its episode-start flag, the action, the reward, ``done`` and the truncation bootstrap).

The recurrent state the actor carried *into* step ``t`` (before ``t``'s reset flag is applied, as ``mem.step`` takes
it) is stored only when ``t`` is a multiple of ``period``, and sequences start only there. A sequence is steps
``t .. t + window - 1`` of one env plus the state stored at ``t``: sequences overlap by ``window - period`` steps. A
sequence may span episodes; its reset flags say where each starts, and the memory restarts its state there. It is
sampled only while all its steps are in the ring, so it never mixes steps of different passes over the ring.

Prioritised sampling (R2D2, after Schaul et al. 2016). Each sequence start has a priority (the agent sets it from the
sequence's TD errors with ``update_priorities``; a new start gets the largest priority seen so far, so it is sampled
soon). ``sample`` draws a start with probability ``P_i = p_i^alpha / sum_j p_j^alpha`` (``alpha = 0``: uniform) and
returns the importance weights ``w_i = (N P_i)^-beta / max_j (N P_j)^-beta`` that correct the loss for the bias.

Memory, proportional to ``capacity``: per stored step, the step's own bytes (DQN: the observation, its flag, the action,
reward and done flag, the previous action and reward when the agent sees them, and with the learning-time truncation
bootstrap a second observation, the final one of a truncated episode) plus the state's bytes and an 8-byte priority
divided by ``period``. ``nbytes`` reports the total. With DQN's defaults (capacity 100k, period 40, minGRU 2x64,
float32): POPGym RepeatFirstEasy with the previous action ~76 B/step, 7.6 MB; MiniGrid MemoryS7 (984-float
observations) ~7.9 kB/step, 790 MB.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict


def _zeros_like_rows(example: TensorDict, rows: int) -> TensorDict:
    """Zeros shaped like ``example`` [num_envs] with a second batch dim of ``rows``."""
    return example.unsqueeze(1).expand(example.batch_size[0], rows).apply(
        lambda t: torch.zeros(t.shape, dtype=t.dtype, device=t.device)
    )


def _shapes(td: TensorDict) -> dict:
    return {key: tuple(t.shape) for key, t in td.items(include_nested=True, leaves_only=True)}


class SequenceReplay:
    def __init__(self, step: TensorDict, state: TensorDict, capacity: int, period: int, window: int):
        """``step`` and ``state`` are examples [num_envs] of what ``add`` receives (only shapes, dtypes and device
        count).

        ``period``: steps between stored states (= between sequence starts); ``window``: steps per sequence.
        """
        num_envs = step.batch_size[0]
        self.slots = capacity // num_envs // period * period
        # Sequences start every ``period`` steps, and one can be sampled while it lies whole in the ring: its start
        # in [written - slots, written - window]. Only a span of period - 1 or more always holds a start; a shorter
        # one holds none at some steps once the ring wraps, and those updates would be skipped.
        needed = -(-(window + period - 1) // period) * period
        if self.slots < needed:
            raise ValueError(
                f"replay capacity {capacity} holds {self.slots} steps per env (a multiple of {period}); sequences of "
                f"{window} steps starting every {period} need {needed} per env, so that one is always whole: give at "
                f"least {needed * num_envs}"
            )
        self.num_envs, self.period, self.window = num_envs, period, window
        self.steps = _zeros_like_rows(step, self.slots)
        self.states = _zeros_like_rows(state, self.slots // period)
        self.priorities = torch.zeros(num_envs, self.slots // period, dtype=torch.float64)
        self.max_priority = 1.0
        self.written = 0  # steps written per env

    def add(self, step: TensorDict, state: TensorDict) -> None:
        """Append one step [num_envs]; ``state`` [num_envs] (the state carried into it) is kept every ``period``
        steps."""
        if self.written % self.period == 0:
            start_slot = self.written // self.period % self.states.batch_size[1]
            self.states[:, start_slot] = state
            self.priorities[:, start_slot] = self.max_priority
        self.steps[:, self.written % self.slots] = step
        self.written += 1

    def __len__(self) -> int:
        """Steps stored, over all envs."""
        return min(self.written, self.slots) * self.num_envs

    def state_dict(self) -> dict:
        """Everything stored, as plain tensors and numbers (checkpoints refuse other objects)."""
        return {
            "steps": self.steps.to_dict(), "states": self.states.to_dict(), "written": self.written,
            "priorities": self.priorities, "max_priority": self.max_priority,
        }

    def load_state_dict(self, saved: dict) -> None:
        """Refill from ``state_dict``; a buffer of another shape (capacity, envs, observation size) raises
        ValueError."""
        for name in ("steps", "states"):
            mine, theirs = getattr(self, name), TensorDict(saved[name])
            if _shapes(theirs) != _shapes(mine):  # update_ alone would broadcast a smaller buffer silently
                raise ValueError(f"the saved replay {name} {_shapes(theirs)} do not fit this run's {_shapes(mine)}")
            mine.update_(theirs)
        self.priorities.copy_(saved["priorities"])
        self.written, self.max_priority = saved["written"], saved["max_priority"]

    @property
    def nbytes(self) -> int:
        return self.steps.bytes() + self.states.bytes() + self.priorities.nbytes

    def _starts(self) -> tuple[int, int]:
        """First sequence start (a step count) still whole in the ring, and how many starts per env can be sampled."""
        first = -(-max(0, self.written - self.slots) // self.period) * self.period
        last = self.written - self.window
        return first, (last - first) // self.period + 1 if last >= first else 0

    @property
    def num_sequences(self) -> int:
        return self._starts()[1] * self.num_envs

    def sample(
        self, batch_size: int, generator: torch.Generator, priority_exponent: float = 0.0,
        importance_exponent: float = 0.0,
    ) -> TensorDict:
        """``batch_size`` sequences drawn with replacement, with probability ``priority ** priority_exponent``.

        Returns ``steps`` [B, window], ``start_state`` [B], where each came from: ``env`` and ``start`` (the step count
        of its first step) [B], and its importance ``weight`` [B] (``importance_exponent`` is beta; all 1 when
        sampling is uniform). ``env``, ``start`` and ``weight`` are on the CPU, with the priorities; the sequences
        are where the replay stores them.
        """
        first, per_env = self._starts()
        if per_env == 0:
            raise RuntimeError(f"replay holds no whole sequence of {self.window} steps yet")
        count = per_env * self.num_envs
        if priority_exponent == 0:
            pick = torch.randint(count, (batch_size,), generator=generator)
            weight = torch.ones(batch_size, dtype=torch.float64)
        else:
            # Candidates in the order pick = k * num_envs + env, k counting starts from ``first``.
            slots = (first // self.period + torch.arange(per_env)) % self.states.batch_size[1]
            mass = self.priorities[:, slots].T.reshape(-1) ** priority_exponent
            pick = torch.multinomial(mass, batch_size, replacement=True, generator=generator)
            probability = mass / mass.sum()
            weight = (probability[pick] / probability.min()) ** -importance_exponent
        env = pick % self.num_envs
        start = first + pick // self.num_envs * self.period
        times = start[:, None] + torch.arange(self.window)
        # CPU indices work for storage on any device.
        steps = self.steps[env[:, None], times % self.slots]
        start_state = self.states[env, start // self.period % self.states.batch_size[1]]
        return TensorDict(
            steps=steps, start_state=start_state, env=env, start=start, weight=weight, batch_size=[batch_size]
        )

    def update_priorities(self, env: torch.Tensor, start: torch.Tensor, priorities: torch.Tensor) -> None:
        """Set the priorities of the sequences starting at step count ``start`` of ``env`` (as ``sample`` returned
        them); floored at a tiny positive value so that every sequence can still be drawn."""
        priorities = priorities.detach().to("cpu", torch.float64).clamp_min(1e-6)
        self.priorities[env.cpu(), (start.cpu() // self.period) % self.states.batch_size[1]] = priorities
        self.max_priority = max(self.max_priority, priorities.max().item())
