"""Recurrent DQN's bookkeeping: sequence replay, stored states, burn-in, n-step targets, double Q, action spaces, runs."""

import csv
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from conftest import compose_config
from recurl.agents.actor import state_from_tensordict
from recurl.agents.dqn import DQN, DQNConfig
from recurl.agents.q_network import FlatActions
from recurl.agents.replay import SequenceReplay
from recurl.agents.returns import n_step_targets
from recurl.builder import setup
from recurl.checkpoint import load_checkpoint
from recurl.envs import COUNTER_ID, make_vector_env
from recurl.memory import MEMORIES, make_memory
from recurl.record import record_episodes
from recurl.training import prepare, run, train

CPU = torch.device("cpu")
TINY = [
    "agent=dqn", "total_steps=256", "env.num_envs=4", "memory.hidden_size=16", "agent.buffer_capacity=256",
    "agent.learning_starts=64", "agent.batch_size=4", "agent.sequence_length=4", "agent.burn_in=2", "agent.n_step=2",
    "agent.train_every=8", "agent.target_update_every=2", "torch_threads=1",
]


def counter_agent(memory="mingru", truncate=False, lengths=(3, 5, 4, 7), num_envs=3, device=CPU, **config):
    envs = make_vector_env(
        "gym", COUNTER_ID, num_envs, seed=0, env_kwargs={"episode_lengths": lengths, "truncate": truncate}
    )
    options = dict(
        buffer_capacity=num_envs * 48, learning_starts=0, batch_size=16, sequence_length=8, burn_in=4, n_step=3,
        train_every=80, gamma=0.9, epsilon_start=0.5, epsilon_end=0.5, value_rescaling=False,
    )
    config = DQNConfig(**{**options, **config})
    inputs = 2 + 2 * config.previous_action + config.previous_reward  # Counter: 2 numbers, Discrete(2) actions
    mem = make_memory(memory, inputs, 16, num_layers=2).double()
    return DQN(config, envs, mem.to(device), device=device, total_steps=10_000, seed=0)


def record_steps(agent):
    """Make ``agent.q_net.step`` log the observation and state it is given, call by call."""
    seen, step = [], agent.q_net.step

    def recording(inputs, state):
        seen.append((inputs["obs"].clone(), tuple(s.clone() for s in state)))
        return step(inputs, state)

    agent.q_net.step = recording
    return seen


def run_steps(net, steps, state):
    """Q of ``net`` stepped over [B, T] sequences (the recurrence, for comparing with the parallel unroll)."""
    qs = []
    for t in range(steps.batch_size[1]):
        q, state = net.step(steps[:, t], state)
        qs.append(q)
    return torch.stack(qs, dim=1)


def constant_head(net, value):
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(value)


def test_n_step_targets_match_a_hand_computed_case():
    gamma, n = 0.5, 2
    rewards = torch.tensor([[1.0, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1]])
    dones = torch.tensor([[False, False, True, False, False, False], [False, False, True, False, False, False]])
    # Row 0's episode is truncated at t=2 (final observation worth 10); row 1's terminates there.
    final_values = torch.tensor([[0.0, 0, 10, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    values = torch.tensor([[100.0, 200, 300, 400, 500, 600], [10, 20, 30, 40, 50, 60]])
    expected = torch.tensor([
        # 1 + .5*2 + .25*300;  2 + .5*(3 + .5*10);  3 + .5*10;  4 + .5*5 + .25*600
        [77.0, 6.0, 8.0, 156.5],
        # 1 + .5*1 + .25*30;   1 + .5*1 (ends);     1 (ends);   1 + .5*1 + .25*60
        [9.0, 1.5, 1.0, 16.5],
    ])
    torch.testing.assert_close(n_step_targets(rewards, dones, final_values, values, gamma, n), expected)


def test_replay_samples_exactly_the_whole_sequences_still_in_the_ring():
    """Steps carry their step count t: every sample is ``window`` consecutive steps of one env, starting where a state
    was stored, and over time every start that is whole in the ring (and no other) gets sampled."""
    num_envs, period, window, slots = 2, 4, 6, 12

    def record(t):
        return TensorDict(t=torch.full((num_envs,), t), env=torch.arange(num_envs), batch_size=[num_envs])
    replay = SequenceReplay(record(0), record(0), num_envs * slots + 1, period, window)
    generator = torch.Generator().manual_seed(0)
    for written in range(1, 41):
        replay.add(record(written - 1), record(written - 1))
        whole = {s for s in range(0, written, period) if s >= written - slots and s + window <= written}
        assert replay.num_sequences == len(whole) * num_envs and len(replay) == min(written, slots) * num_envs
        if not whole:
            continue
        batch = replay.sample(64, generator)
        assert set(batch["start"].tolist()) == whole
        assert torch.equal(batch["steps", "t"], batch["start"][:, None] + torch.arange(window))
        assert torch.equal(batch["steps", "env"], batch["env"][:, None].expand(64, window))
        assert torch.equal(batch["start_state", "t"], batch["start"]) and torch.equal(batch["start_state", "env"], batch["env"])


def test_a_ring_that_would_at_times_hold_no_whole_sequence_is_refused():
    """Sequences start every ``period`` steps; with fewer than window + period - 1 steps per env, some steps after the
    ring wraps find no start whole in it, and DQN would skip those updates without a word."""
    num_envs, period, window = 2, 8, 15

    def record(t):
        return TensorDict(t=torch.full((num_envs,), t), batch_size=[num_envs])
    with pytest.raises(ValueError, match="need 24 per env, so that one is always whole: give at least 48$"):
        SequenceReplay(record(0), record(0), num_envs * 16, period, window)
    replay = SequenceReplay(record(0), record(0), num_envs * 24, period, window)
    for written in range(1, 200):
        replay.add(record(written - 1), record(written - 1))
        assert replay.num_sequences > 0 or written < window


def test_sequences_never_mix_episodes_without_a_reset_flag():
    agent = counter_agent()
    agent.collect()
    steps = agent.replay.sample(128, agent.generator)["steps"]
    obs, resets = steps["obs"], steps["reset"]
    assert torch.equal(resets, obs[..., 1] == 0)  # a reset exactly on each episode's first observation
    assert torch.equal(obs[:, 1:, 0] != obs[:, :-1, 0], resets[:, 1:])  # the episode id changes only there
    assert torch.equal(steps["done"][:, :-1], resets[:, 1:])  # the step that ends an episode is the one before
    assert resets[:, 1:].any()  # sequences do cross episode starts
    assert torch.equal(steps["reward"], steps["action"].double())  # Counter's reward is the action of the same step


@pytest.mark.parametrize("name", MEMORIES)
def test_stored_states_and_steps_are_those_seen_while_acting(name):
    agent = counter_agent(name, train_every=85)  # 48 steps per env in the ring: 85 steps wrap around it, mid-period
    seen = record_steps(agent)
    agent.collect()
    assert agent.replay.written > agent.replay.slots
    batch = agent.replay.sample(64, agent.generator)
    for i, (env, start) in enumerate(zip(batch["env"].tolist(), batch["start"].tolist())):
        _, acting_state = seen[start]
        for stored, acted in zip(state_from_tensordict(batch["start_state"][i]), acting_state):
            assert torch.equal(stored, acted[env])
        acting_obs = torch.stack([seen[start + k][0][env] for k in range(agent.replay.window)])
        assert torch.equal(batch["steps", "obs"][i], acting_obs)


def test_burn_in_has_no_gradient_and_gets_no_loss():
    agent = counter_agent("minlstm")
    agent.collect()
    batch = agent.replay.sample(16, agent.generator)
    obs = batch["steps", "obs"].clone().requires_grad_()
    batch["steps", "obs"] = obs
    state = tuple(s.clone().requires_grad_() for s in state_from_tensordict(batch["start_state"]))
    for i, part in enumerate(state):
        batch["start_state", str(i)] = part
    loss, _, _ = agent.loss(batch)
    loss.backward()
    burn_in = agent.config.burn_in
    assert torch.all(obs.grad[:, :burn_in] == 0)
    assert obs.grad[:, burn_in:].abs().sum() > 0
    assert all(s.grad is None for s in state)
    # Rewards and actions of the burn-in do not enter the loss.
    changed = batch.clone()
    changed["steps", "reward"][:, :burn_in] += 5.0
    changed["steps", "action"][:, :burn_in] = 1 - changed["steps", "action"][:, :burn_in]
    assert agent.loss(changed)[0].item() == loss.item()


@pytest.mark.parametrize("name", MEMORIES)
def test_burn_in_never_reaches_back_past_an_episode_start(name):
    agent = counter_agent(name)
    agent.collect()
    batch = agent.replay.sample(4, agent.generator)
    steps, burn_in = batch["steps"], agent.config.burn_in
    steps["reset"][:] = False
    steps["reset"][0, 2] = True  # row 0: an episode starts inside the burn-in; the other rows continue their state
    q = agent.unroll(agent.q_net, batch)
    # Row 0 equals its episode replayed stepwise from its start, and nothing before the start changes it.
    fresh = agent.q_net.initial_state(1)
    stepped = run_steps(agent.q_net, steps[:1, 2:], fresh)
    torch.testing.assert_close(q[:1], stepped[:, burn_in - 2 :], rtol=1e-9, atol=1e-9)
    disturbed = batch.clone()
    disturbed["steps", "obs"][:, :2] += 3.0
    disturbed["start_state"] = disturbed["start_state"].apply(lambda s: torch.where(s.isfinite(), s + 1.0, s))
    q_disturbed = agent.unroll(agent.q_net, disturbed)
    assert torch.equal(q_disturbed[0], q[0])
    if name != "mlp":  # the rows without a reset do depend on what came before the learned steps
        assert not torch.allclose(q_disturbed[1:], q[1:])


@pytest.mark.parametrize("name", ["mingru", "lstm"])
def test_targets_unroll_the_target_network_over_the_same_sequence(name):
    agent = counter_agent(name)
    agent.collect()
    with torch.no_grad():
        for p in agent.target_net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = agent.replay.sample(8, agent.generator)
    steps, cfg = batch["steps"], agent.config
    start = state_from_tensordict(batch["start_state"])
    # The whole sequence stepped from the stored state, by each network; the burn-in prefix only sets the state.
    online = run_steps(agent.q_net, steps, start)[:, cfg.burn_in :]
    target = run_steps(agent.target_net, steps, start)[:, cfg.burn_in :]
    values = target.gather(-1, online.argmax(-1, keepdim=True)).squeeze(-1)
    after = steps[:, cfg.burn_in :]
    no_truncation = torch.zeros_like(after["reward"])  # Counter terminates its episodes here
    expected = n_step_targets(after["reward"], after["done"], no_truncation, values, cfg.gamma, cfg.n_step)
    q = agent.unroll(agent.q_net, batch)
    torch.testing.assert_close(agent.td_targets(batch, q), expected, rtol=1e-9, atol=1e-9)
    # and the loss compares them with Q of the action actually taken at each step
    taken = online[:, : cfg.sequence_length].gather(-1, after["action"][:, : cfg.sequence_length, None]).squeeze(-1)
    torch.testing.assert_close(agent.loss(batch)[0], F.smooth_l1_loss(taken, expected), rtol=1e-9, atol=1e-9)
    # the target network, not the online one, supplies the values
    online_values = online.max(-1).values
    assert not torch.allclose(
        expected, n_step_targets(after["reward"], after["done"], no_truncation, online_values, cfg.gamma, cfg.n_step)
    )


@pytest.mark.parametrize("bootstrap", ["learn", "collect"])
@pytest.mark.parametrize("truncate", [False, True])
def test_counter_targets_line_up_observations_actions_and_rewards(truncate, bootstrap):
    """With Q = c everywhere, each target is read off the Counter observations: sum gamma^k a_{t+k} up to the
    episode's end, then gamma^n c if the episode runs on past t+n-1, or gamma^(k+1) c (the final observation's value)
    after a truncated end at t+k, or nothing after a terminated one."""
    c, agent = 2.0, counter_agent(truncate=truncate, truncation_bootstrap=bootstrap)
    constant_head(agent.q_net, c)
    constant_head(agent.target_net, c)
    agent.collect()
    batch = agent.replay.sample(32, agent.generator)
    cfg = agent.config
    gamma, n = cfg.gamma, cfg.n_step
    steps = batch["steps"][:, cfg.burn_in :]
    obs, actions = steps["obs"], steps["action"].double()
    expected = torch.zeros(32, cfg.sequence_length, dtype=torch.float64)
    for b in range(32):
        for t in range(cfg.sequence_length):
            for k in range(n):
                expected[b, t] += gamma**k * actions[b, t + k]
                if obs[b, t + k + 1, 1] == 0:  # the next observation starts an episode: this one ended at t+k
                    expected[b, t] += gamma ** (k + 1) * c if truncate else 0.0
                    break
            else:
                expected[b, t] += gamma**n * c
    q = agent.unroll(agent.q_net, batch)
    torch.testing.assert_close(agent.td_targets(batch, q), expected, rtol=1e-9, atol=1e-9)


def test_target_network_updates_hard_or_polyak():
    agent = counter_agent(target_update_every=2, gradient_steps=2)
    agent.collect()
    agent.learn()
    for target, online in zip(agent.target_net.parameters(), agent.q_net.parameters()):
        assert torch.equal(target, online)
    polyak = counter_agent(target_tau=0.25, target_update_every=1, gradient_steps=1)
    polyak.collect()
    before = [p.clone() for p in polyak.target_net.parameters()]
    polyak.learn()
    for old, target, online in zip(before, polyak.target_net.parameters(), polyak.q_net.parameters()):
        torch.testing.assert_close(target, old + 0.25 * (online - old))
        assert not torch.equal(target, online)


def test_epsilon_falls_linearly_then_stays():
    agent = counter_agent(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_fraction=0.5)  # over 5000 of 10000 steps
    for step, epsilon in ((0, 1.0), (2500, 0.55), (5000, 0.1), (9000, 0.1)):
        agent.global_step = step
        assert agent.epsilon() == pytest.approx(epsilon)


def test_act_is_greedy_when_deterministic_and_epsilon_greedy_otherwise():
    agent = counter_agent(epsilon_start=1.0, epsilon_end=1.0)
    obs, reset = torch.rand(64, 2, dtype=torch.float64), torch.ones(64, dtype=torch.bool)
    step = TensorDict(obs=obs, reset=reset, batch_size=[64])
    state, net, generator = agent.q_net.initial_state(64), agent.q_net, torch.Generator().manual_seed(0)
    greedy = net.step(step, state)[0].argmax(-1)
    before = generator.get_state()
    action, next_state = net.act(step, state, True, generator=generator)
    assert torch.equal(action, greedy)
    assert torch.equal(generator.get_state(), before)  # greedy acting draws no random number (evaluation, videos)
    assert not torch.equal(net.act(step, state, False, generator=generator)[0], greedy)  # ε = 1: uniform
    for stepped, acted in zip(net.step(step, state)[1], next_state):
        assert torch.equal(stepped, acted)


def test_iterate_counts_env_steps_and_learns_after_learning_starts():
    agent = counter_agent(learning_starts=400, train_every=50, gradient_steps=2)
    metrics, _ = agent.iterate()
    assert agent.global_step == 150 and math.isnan(metrics["loss"]) and agent.updates == 0
    metrics, _ = agent.iterate()
    metrics, _ = agent.iterate()
    assert agent.global_step == 450 and math.isfinite(metrics["loss"]) and agent.updates == 2
    assert {"loss", "q_mean", "target_mean", "grad_norm", "epsilon", "replay_steps"} <= set(metrics)


def test_state_dict_restores_networks_optimizer_and_counters():
    trained = counter_agent(target_update_every=3)
    trained.iterate()
    fresh = counter_agent()
    fresh.load_state_dict(trained.state_dict())
    for net in ("q_net", "target_net"):
        for a, b in zip(getattr(trained, net).parameters(), getattr(fresh, net).parameters()):
            assert torch.equal(a, b)
    assert (fresh.global_step, fresh.iteration, fresh.updates) == (240, 1, 4)
    assert fresh.optimizer.state_dict()["state"][0]["step"] == 4


@pytest.mark.parametrize("bootstrap", ["learn", "collect"])
def test_envs_restarted_on_resume_end_the_replayed_episodes_at_the_cut(bootstrap):
    """Each env's last replayed step whose episode went on becomes a truncation that bootstraps from the observation
    the saved actor held (its Q value from the saved state, with ``collect``); steps that ended an episode stay."""
    trained = counter_agent(truncation_bootstrap=bootstrap, train_every=81, num_envs=4)
    trained.collect()
    saved = trained.state_dict()
    slot = (trained.replay.written - 1) % trained.replay.slots
    went_on = ~trained.replay.steps[:, slot]["done"]
    assert went_on.any() and not went_on.all()  # both kinds of env at the cut
    fresh = counter_agent(truncation_bootstrap=bootstrap, train_every=81, num_envs=4)
    fresh.load_state_dict(saved, envs_restarted=True)
    last, before = fresh.replay.steps[:, slot], trained.replay.steps[:, slot]
    assert last["done"].all()
    next_obs = trained.actor.next["obs"]
    if bootstrap == "learn":
        assert torch.equal(last["bootstrap"], before["bootstrap"] | went_on)
        torch.testing.assert_close(last["final"]["obs"][went_on], next_obs[went_on])
    else:
        rows = went_on.nonzero().squeeze(1)
        final = trained.actor.next[rows]
        q, _ = trained.q_net.step(final, tuple(s[rows] for s in trained.actor.state))
        torch.testing.assert_close(last["final_value"][rows], q.max(-1).values)
        torch.testing.assert_close(last["final_value"][~went_on], before["final_value"][~went_on])
    fresh_replay = fresh.replay.steps.exclude("final", "final_value", "bootstrap", "done")
    assert (fresh_replay == trained.replay.steps.exclude("final", "final_value", "bootstrap", "done")).all()


def test_replay_memory_is_proportional_to_capacity():
    sizes = {}
    for capacity in (960, 1920):
        agent = counter_agent("lstm", buffer_capacity=capacity)  # LSTM state: 2 layers x (h, c) x 16 float64
        sizes[capacity] = agent.replay.nbytes
        # obs, reset, action, reward, done, bootstrap flag, final obs; then the state and priority per sequence start
        per_step = 8 * 2 + 1 + 8 + 8 + 1 + 1 + 8 * 2 + (2 * 2 * 16 * 8 + 8) / agent.config.sequence_length
        assert sizes[capacity] == pytest.approx(per_step * capacity)
    assert sizes[1920] == 2 * sizes[960]


def test_replay_refuses_a_saved_buffer_of_another_shape():
    small, large = counter_agent(buffer_capacity=96, batch_size=8), counter_agent(buffer_capacity=192, batch_size=8)
    small.collect()
    with pytest.raises(ValueError, match="saved replay steps"):
        large.replay.load_state_dict(small.replay.state_dict())
    large.replay.load_state_dict(large.replay.state_dict())  # its own shape loads


def test_multidiscrete_actions_flatten_to_one_index_and_back():
    space = gym.spaces.MultiDiscrete(np.array([[2, 3], [4, 1]]), start=np.array([[1, 0], [-2, 5]]))
    actions = FlatActions(space)
    assert actions.n == 24
    joint = actions.to_env(torch.arange(24))
    assert joint.shape == (24, 2, 2) and all(space.contains(a) for a in joint)
    flat = np.ravel_multi_index(tuple((joint - space.start).reshape(24, -1).T), space.nvec.reshape(-1))
    assert flat.tolist() == list(range(24))  # distinct and in index order: the flattening is a bijection
    assert FlatActions(gym.spaces.Discrete(3, start=2)).to_env(torch.tensor([0, 2])).tolist() == [2, 4]


def test_box_actions_are_refused_with_the_ppo_hint():
    envs = make_vector_env("gym", "Pendulum-v1", 2, seed=0)
    with pytest.raises(ValueError, match=r"use PPO \(agent=ppo\)"):
        DQN(DQNConfig(), envs, make_memory("mlp", 3, 8), device=CPU, total_steps=100, seed=0)
    with pytest.raises(ValueError, match=r"agent=ppo"):
        setup(config("env=gym", "env.id=Pendulum-v1"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("priority_exponent", [0.0, 0.9])
def test_a_dqn_iteration_learns_on_cuda(priority_exponent):
    """The replay draws its sequences and importance weights on the CPU; the loss must meet them on the device."""
    agent = counter_agent(device=torch.device("cuda"), priority_exponent=priority_exponent)
    metrics, _ = agent.iterate()
    assert agent.updates > 0 and math.isfinite(metrics["loss"])


def test_config_mistakes_are_refused():
    with pytest.raises(ValueError, match="agent.gamma must be in"):
        DQNConfig(gamma=1.5)
    with pytest.raises(ValueError, match="agent.target_tau must be in"):
        DQNConfig(target_tau=0.0)
    with pytest.raises(ValueError, match="agent.sequence_length must be at least 1"):
        DQNConfig(sequence_length=0)
    with pytest.raises(ValueError, match="agent.buffer_capacity is too small"):
        counter_agent(buffer_capacity=40)


# ---- end to end -----------------------------------------------------------------------------------------------
def config(*overrides):
    return compose_config(*TINY, *overrides)


def assert_complete_run(run_dir, total_steps=256):
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["step"]) >= total_steps
    assert [int(r["step"]) for r in rows] == list(range(32, 32 * len(rows) + 1, 32))
    for key in ("episode_return", "episode_length", "sps", "loss", "q_mean", "epsilon"):
        assert key in rows[0]
    learned = [r for r in rows if int(r["step"]) >= 64]
    assert learned and all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["q_mean"])) for r in learned)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    final = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    assert final["agent"]["global_step"] == int(rows[-1]["step"]) and final["config"]["agent"]["name"] == "dqn"
    assert final["agent"]["updates"] == sum(r["loss"] != "nan" for r in rows) * final["config"]["agent"]["gradient_steps"]
    assert (run_dir / "checkpoints" / "latest.pt").is_file()


def metrics_rows(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in ("sps", "wall_time")} for row in csv.DictReader(f)]


def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path):
    """The checkpoint holds the replay, the sampling RNG and where acting stands: resuming changes nothing.
    (ε is held constant: its schedule follows total_steps, which the resumed run extends.)"""
    constant = ["agent.epsilon_start=0.3", "agent.epsilon_end=0.3", "checkpoint_every=3"]
    full, half = tmp_path / "full", tmp_path / "half"
    assert train(config(*constant, "total_steps=512"), full) == 0
    assert train(config(*constant, "total_steps=256"), half) == 0
    args = [f"resume={half}", "total_steps=512"]
    assert run(*prepare(config(*constant, *args), args, Path("unused"))) == 0
    assert len(metrics_rows(full)) == 16 and math.isfinite(float(metrics_rows(full)[-1]["loss"]))
    assert metrics_rows(half) == metrics_rows(full)


def test_a_dqn_run_can_be_recorded(tmp_path):
    train(config("memory=mingru", "env.id=popgym-RepeatPreviousEasy-v0"), tmp_path)
    (episode,) = record_episodes(tmp_path, episodes=1)
    assert episode.path.is_file() and episode.length > 0
