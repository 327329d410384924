"""Recurrent PPO's bookkeeping: GAE, episode boundaries, rollout/update agreement, truncation bootstrap."""

import pytest
import torch
from tensordict import TensorDict

from recurl.agents.actor import state_from_tensordict
from recurl.agents.gae import generalized_advantages
from recurl.agents.ppo import PPO, PPOConfig
from recurl.envs import COUNTER_ID, make_vector_env
from recurl.memory import MEMORIES, make_memory

CPU = torch.device("cpu")


def counter_agent(memory="mingru", truncate=False, lengths=(3, 5, 4, 7), num_envs=3, **config):
    envs = make_vector_env(
        "gym", COUNTER_ID, num_envs, seed=0, env_kwargs={"episode_lengths": lengths, "truncate": truncate}
    )
    config = PPOConfig(**{"rollout_steps": 20, "minibatches": num_envs, **config})
    inputs = 2 + 2 * config.previous_action + config.previous_reward  # Counter: 2 numbers, Discrete(2) actions
    mem = make_memory(memory, inputs, 16, num_layers=2).double()
    return PPO(config, envs, mem, device=CPU, total_steps=10_000, seed=0)


def test_gae_matches_a_hand_computed_case():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 0.0, 2.0, 1.0]])
    values = torch.tensor([[0.5, 1.0, 0.2, 0.4]])
    dones = torch.tensor([[False, True, False, False]])
    next_value = torch.tensor([3.0])
    # t=3: delta = 1 + .9*3 - .4 = 3.3;            A3 = 3.3
    # t=2: delta = 2 + .9*.4 - .2 = 2.16;          A2 = 2.16 + .72*3.3 = 4.536
    # t=1: done, delta = 0 - 1 = -1;               A1 = -1 (nothing flows back across the end)
    # t=0: delta = 1 + .9*1 - .5 = 1.4;            A0 = 1.4 + .72*(-1) = 0.68
    expected = torch.tensor([[0.68, -1.0, 4.536, 3.3]])
    advantages, returns = generalized_advantages(rewards, values, dones, next_value, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


def test_rollout_marks_each_episode_start_and_aligns_actions_with_rewards():
    agent = counter_agent()
    batch, episodes = agent.collect()
    steps = batch["steps"]
    obs, resets = steps["obs"], steps["reset"]
    # A reset flag exactly on the first observation of every episode (step_in_episode == 0), nowhere else.
    assert torch.equal(resets, obs[..., 1] == 0)
    # No transition spans two episodes: within a row the episode id only changes where a reset is flagged.
    changed = obs[:, 1:, 0] != obs[:, :-1, 0]
    assert torch.equal(changed, resets[:, 1:])
    # Counter's reward is the action taken: each stored reward belongs to the stored action of the same step.
    assert torch.equal(steps["reward"], steps["action"].to(steps["reward"].dtype))
    assert episodes and all(length in (3, 5, 4, 7) for _, length in episodes)


def test_previous_action_and_reward_are_the_last_steps_and_zero_at_an_episode_start():
    """Counter's reward is the action: the inputs at t hold a_{t-1} (one-hot) and r_{t-1} = a_{t-1}, except at an
    episode's first step, where both are zero, whatever the last episode ended with."""
    agent = counter_agent(previous_action=True, previous_reward=True)
    agent.collect()
    batch, _ = agent.collect()
    steps = batch["steps"]
    assert torch.equal(steps["prev_action"][:, 1:], steps["action"][:, :-1])
    assert torch.equal(steps["prev_reward"][:, 1:], steps["reward"][:, :-1])
    inputs = agent.network.inputs(steps)
    assert inputs.shape == (3, 20, 5)
    torch.testing.assert_close(inputs[..., :2], steps["obs"])
    fresh = steps["reset"]
    expected_action = torch.nn.functional.one_hot(steps["prev_action"], 2).double() * ~fresh[..., None]
    torch.testing.assert_close(inputs[..., 2:4], expected_action)
    torch.testing.assert_close(inputs[..., 4], steps["prev_reward"] * ~fresh)
    assert (inputs[fresh][:, 2:] == 0).all() and (inputs[~fresh][:, 2:4].sum(-1) == 1).all()
    # Episodes were cut, and some ended with action 1 (so reward 1): the zeros above were really zeroed.
    assert fresh[:, 1:].any() and steps["prev_action"][fresh].any()


@pytest.mark.parametrize("previous", [False, True], ids=["obs", "obs+previous"])
@pytest.mark.parametrize("name", MEMORIES)
def test_update_recomputes_exactly_what_the_rollout_saw(name, previous):
    """Replaying each whole trajectory through the parallel forward gives the rollout's log-probs and values."""
    agent = counter_agent(name, previous_action=previous, previous_reward=previous)
    agent.collect()  # start the next rollout mid-episode, from a non-trivial stored state
    batch, _ = agent.collect()
    log_prob, _, values = agent.evaluate(batch)
    torch.testing.assert_close(log_prob, batch["steps", "log_prob"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(values, batch["steps", "value"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("previous_action", [False, True], ids=["obs", "obs+previous_action"])
@pytest.mark.parametrize("name", MEMORIES)
def test_ratio_is_one_on_every_minibatch_when_nothing_is_learned(name, previous_action):
    envs = make_vector_env("popgym", "RepeatPreviousEasy", 4, seed=1)
    inputs = envs.single_observation_space.shape[0] + 4 * previous_action  # 4 actions
    agent = PPO(
        PPOConfig(rollout_steps=32, minibatches=2, learning_rate=0.0, previous_action=previous_action),
        envs, make_memory(name, inputs, 32, num_layers=2), device=CPU, total_steps=10_000, seed=1,
    )
    agent.collect()
    batch, _ = agent.collect()
    seen = []
    step = agent._minibatch_step
    agent._minibatch_step = lambda mb: seen.append(step(mb)) or seen[-1]
    agent.update(batch)
    assert len(seen) == agent.config.epochs * 2
    for stats in seen[:2]:  # the first epoch
        assert stats["max_ratio_deviation"] < 1e-5


def test_truncated_episodes_bootstrap_from_the_final_observation_with_the_continuing_state():
    gamma = 0.9
    agent = counter_agent(truncate=True, gamma=gamma, lengths=(3, 5), num_envs=2)
    batch, _ = agent.collect()
    steps = batch["steps"]
    network, checked = agent.network, 0
    for row in range(2):
        obs, resets = steps["obs"][row], steps["reset"][row]
        starts = resets.nonzero().squeeze(1).tolist() + [len(resets)]
        for begin, end in zip(starts, starts[1:]):
            if end == len(resets):
                break  # the episode runs on past the rollout
            # Replay the episode with the network's recurrent step, then value its final observation (eid, length).
            state = network.initial_state(1)
            for t in range(begin, end):
                _, _, state = network.step(steps[row, t][None], state)
            final = TensorDict(obs=torch.tensor([[obs[begin, 0], end - begin]], dtype=obs.dtype),
                               reset=torch.tensor([False]), batch_size=[1])
            _, final_value, _ = network.step(final, state)
            expected = steps["action"][row, end - 1] + gamma * final_value[0]
            torch.testing.assert_close(steps["reward"][row, end - 1], expected.to(steps["reward"].dtype))
            checked += 1
    assert checked >= 4


def test_terminated_episodes_do_not_bootstrap():
    agent = counter_agent(truncate=False)
    batch, _ = agent.collect()
    assert torch.equal(batch["steps", "reward"], batch["steps", "action"].to(torch.float64))


def test_stored_start_state_is_the_state_carried_between_rollouts():
    agent = counter_agent("lstm")
    agent.collect()
    carried = agent.actor.state
    batch, _ = agent.collect()
    for a, b in zip(state_from_tensordict(batch["start_state"]), carried):
        assert torch.equal(a, b)


def test_minibatches_cannot_outnumber_envs():
    envs = make_vector_env("gym", COUNTER_ID, 2, seed=0)
    with pytest.raises(ValueError, match="minibatches .* cannot exceed env.num_envs"):
        PPO(PPOConfig(minibatches=3), envs, make_memory("mlp", 2, 8), device=CPU, total_steps=100, seed=0)


def test_config_values_are_checked():
    with pytest.raises(ValueError, match="agent.gamma must be in"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="agent.epochs must be at least 1"):
        PPOConfig(epochs=0)


def test_gumbel_max_sampling_follows_the_softmax():
    """Chi-square test of 100k samples against softmax(logits) (a fixed seed; p < 0.001 fails)."""
    from recurl.agents.heads import GumbelCategorical

    logits = torch.tensor([0.0, 1.0, -1.0, 2.0, -3.0])
    draws = 100_000
    counts = torch.bincount(GumbelCategorical(logits.expand(draws, 5)).sample(), minlength=5).double()
    expected = torch.softmax(logits.double(), -1) * draws
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 18.47  # the 0.999 quantile of chi-square with 4 degrees of freedom
