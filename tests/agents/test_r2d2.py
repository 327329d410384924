"""R2D2's additions to recurrent DQN: value rescaling, prioritised sequence replay, the learning-time truncation
bootstrap, and the previous action and reward stored in replay."""

import math

import pytest
import torch
from tensordict import TensorDict

from recurl.agents.replay import SequenceReplay
from recurl.agents.returns import rescale, unrescale
from test_dqn import counter_agent


def test_value_rescaling_is_inverted_exactly():
    x = torch.cat([torch.linspace(-1e4, 1e4, 20001, dtype=torch.float64), torch.tensor([0.0, 1e-9, -3.5, 123.25])])
    torch.testing.assert_close(unrescale(rescale(x)), x, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(rescale(unrescale(x)), x, rtol=1e-10, atol=1e-9)
    # h squashes: sqrt growth for large returns, slope about 1/2 near zero, odd
    assert rescale(torch.tensor(1e6, dtype=torch.float64)).item() == pytest.approx(math.sqrt(1e6 + 1) - 1 + 1e3)
    assert rescale(torch.tensor(1e-6, dtype=torch.float64)).item() == pytest.approx(0.5e-6 + 1e-9, rel=1e-3)
    assert torch.equal(rescale(-x), -rescale(x))


def filled_replay(num_envs=2, period=4, window=6, steps=40):
    def record(t):
        return TensorDict(t=torch.full((num_envs,), t), batch_size=[num_envs])

    replay = SequenceReplay(record(0), record(0), num_envs * 20, period, window)
    for t in range(steps):
        replay.add(record(t), record(t))
    return replay


def test_sampling_frequency_follows_priority():
    """Chi-square test of the sampled starts against p^alpha / sum p^alpha (fixed seed; p > 0.001 is a bug)."""
    replay, alpha, draws = filled_replay(), 0.7, 40_000
    first, per_env = replay._starts()
    starts = torch.arange(per_env) * replay.period + first
    envs = torch.arange(replay.num_envs)
    env, start = (g.reshape(-1) for g in torch.meshgrid(envs, starts, indexing="ij"))
    priorities = torch.linspace(0.1, 3.0, len(env), dtype=torch.float64)
    replay.update_priorities(env, start, priorities)
    batch = replay.sample(draws, torch.Generator().manual_seed(1), priority_exponent=alpha)
    expected = priorities**alpha / (priorities**alpha).sum() * draws
    observed = torch.tensor([
        ((batch["env"] == e) & (batch["start"] == s)).sum().item() for e, s in zip(env.tolist(), start.tolist())
    ], dtype=torch.float64)
    assert observed.sum() == draws
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    degrees = len(env) - 1
    assert chi2 < degrees + 4 * math.sqrt(2 * degrees)  # ~p > 1e-3 for these degrees of freedom
    # the importance weights undo the sampling bias: w = (N P)^-beta / max (N P)^-beta, at most 1 (1 when beta = 0)
    assert (batch["weight"] == 1).all()
    probability = priorities**alpha / (priorities**alpha).sum()
    lookup = {(e, s): p for e, s, p in zip(env.tolist(), start.tolist(), probability.tolist())}
    weighted = replay.sample(draws, torch.Generator().manual_seed(1), priority_exponent=alpha, importance_exponent=0.5)
    drawn = torch.tensor(
        [lookup[(e, s)] for e, s in zip(weighted["env"].tolist(), weighted["start"].tolist())], dtype=torch.float64
    )
    torch.testing.assert_close(weighted["weight"], (drawn / probability.min()) ** -0.5)
    assert weighted["weight"].max() <= 1.0


def test_new_sequences_get_the_largest_priority_seen():
    replay = filled_replay(steps=12)
    replay.update_priorities(torch.tensor([0]), torch.tensor([0]), torch.tensor([7.0]))
    for t in range(12, 16):  # step 12 starts a new sequence of each env
        replay.add(TensorDict(t=torch.full((2,), t), batch_size=[2]), TensorDict(t=torch.full((2,), t), batch_size=[2]))
    slot = 12 // replay.period % replay.states.batch_size[1]
    assert replay.priorities[:, slot].tolist() == [7.0, 7.0]


def test_learning_sets_each_sampled_sequence_priority_from_its_td_errors():
    agent = counter_agent(priority_eta=0.75, priority_exponent=0.9)
    agent.collect()
    batch = agent.replay.sample(8, torch.Generator().manual_seed(3), 0.9, 0.6)
    cfg = agent.config
    q = agent.unroll(agent.q_net, batch)
    targets = agent.td_targets(batch, q.detach())
    taken = q[:, : cfg.sequence_length].gather(
        -1, batch["steps", "action"][:, cfg.burn_in : cfg.burn_in + cfg.sequence_length, None]
    ).squeeze(-1)
    errors = (taken - targets).abs()
    loss, priority, _ = agent.loss(batch)
    torch.testing.assert_close(priority, 0.75 * errors.max(1).values + 0.25 * errors.mean(1))
    per_sequence = torch.nn.functional.smooth_l1_loss(taken, targets, reduction="none").mean(1)
    torch.testing.assert_close(loss, (batch["weight"] * per_sequence).mean())
    agent.replay.update_priorities(batch["env"], batch["start"], priority)
    replay = agent.replay
    stored = replay.priorities[batch["env"], batch["start"] // replay.period % replay.states.batch_size[1]]
    sampled = list(zip(batch["env"].tolist(), batch["start"].tolist()))
    last_written = dict(zip(sampled, priority.tolist()))  # a sequence drawn twice keeps its last priority
    assert all(stored[i].item() == pytest.approx(last_written[key]) for i, key in enumerate(sampled))


def test_targets_with_value_rescaling_bootstrap_through_the_inverse():
    """h(r + gamma^n h^-1(Q')) with a constant Q' = c, Counter's rewards = actions, no truncation."""
    c, agent = 2.0, counter_agent(value_rescaling=True)
    for net in (agent.q_net, agent.target_net):
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.fill_(c)
    agent.collect()
    plain = counter_agent(value_rescaling=False)
    plain.load_state_dict(agent.state_dict())
    batch = agent.replay.sample(16, agent.generator)
    q = agent.unroll(agent.q_net, batch)
    raw = plain.td_targets(batch, q)  # the same sums, bootstrapping from c instead of h^-1(c)
    bootstrap = plain.config.gamma ** plain.config.n_step
    dones = batch["steps", "done"][:, agent.config.burn_in :]
    alive = ~dones.unfold(1, agent.config.n_step, 1)[:, : raw.shape[1]].any(-1)
    expected = rescale(raw + torch.where(alive, bootstrap * (unrescale(torch.tensor(c, dtype=torch.float64)) - c), 0.0))
    torch.testing.assert_close(agent.td_targets(batch, q), expected)


def test_replay_stores_and_replays_the_previous_action_and_reward():
    agent = counter_agent(previous_action=True, previous_reward=True)
    agent.collect()
    steps = agent.replay.sample(64, agent.generator)["steps"]
    assert torch.equal(steps["prev_action"][:, 1:], steps["action"][:, :-1])
    assert torch.equal(steps["prev_reward"][:, 1:], steps["reward"][:, :-1])
    inputs = agent.q_net.inputs(steps)
    fresh = steps["reset"]
    assert (inputs[fresh][:, 2:] == 0).all() and (inputs[~fresh][:, 2:4].sum(-1) == 1).all()
    # what learning unrolls equals what acting computed: the parallel Q over the sequence = the stepped Q
    q = agent.q_net(steps, agent.q_net.initial_state(64))[0]
    state, stepped = agent.q_net.initial_state(64), []
    for t in range(steps.batch_size[1]):
        q_t, state = agent.q_net.step(steps[:, t], state)
        stepped.append(q_t)
    torch.testing.assert_close(q, torch.stack(stepped, 1), rtol=1e-9, atol=1e-9)
