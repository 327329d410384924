"""``RecurrentAgent``: what PPO and DQN share — a network built from the config, Adam, the ``Actor``, counters and
the checkpoint of all four. Each agent adds its own way to act (``decide``), learn and checkpoint what else it keeps."""

from __future__ import annotations

import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from recurl.agents.actor import Actor
from recurl.agents.inputs import AgentInputs
from recurl.memory import Memory


class RecurrentAgent:
    @classmethod
    def make_network(cls, config, memory: Memory, observation_size: int, action_space: spaces.Space):
        """The network that acts (``recurl.agents.ActingNetwork``), reading what ``config`` says it sees."""
        inputs = AgentInputs(observation_size, action_space, config.previous_action, config.previous_reward)
        return cls.build_network(config, inputs, memory, action_space).to(memory.input_proj.weight.dtype)

    @staticmethod
    def build_network(config, inputs: AgentInputs, memory: Memory, action_space: spaces.Space):
        raise NotImplementedError

    def __init__(self, config, envs: VectorEnv, memory: Memory, *, device: torch.device, seed: int):
        self.config, self.device = config, device
        self.network = self.make_network(
            config, memory, envs.single_observation_space.shape[0], envs.single_action_space
        ).to(device)
        # fused: one kernel for all parameters instead of a loop over them (a PPO network has dozens of small ones)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate, eps=1e-5, fused=True)
        self.iteration = 0
        self.global_step = 0
        self.actor = Actor(
            envs, self.network.inputs, self.network.initial_state(envs.num_envs, device), self.network.to_env,
            dtype=memory.input_proj.weight.dtype, device=device, seed=seed,
        )

    def state_dict(self) -> dict:
        """Weights, optimiser, counters, and where acting stands (``Actor.state_dict``)."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "actor": self.actor.state_dict(),
        }

    def load_state_dict(self, state: dict, envs_restarted: bool = False) -> None:
        """``envs_restarted``: the envs were reset rather than restored (a checkpoint without their episodes, as
        ``async`` vectorization keeps none); the actor then keeps the fresh episodes' first step and initial memory it
        has, since the saved ones belong to episodes that are gone."""
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The config's rate, not the saved one: an override beside resume= applies. (PPO's annealing recomputes the
        # rate from it before every update, so its schedule continues from this iteration with the new base rate.)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate
        self.iteration, self.global_step = state["iteration"], state["global_step"]
        if not envs_restarted:
            self.actor.load_state_dict(state["actor"])
