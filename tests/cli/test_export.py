"""recurl.export: the ONNX file of a trained run's stepwise policy acts as the live policy does, state included."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

import recurl
from conftest import compose_config
from recurl.agents.heads import make_action_head
from recurl.agents.q_network import FlatActions
from recurl.envs.encoding import make_encoder
from recurl.export import export_onnx, initial_state, main, metadata
from recurl.memory import MEMORIES
from recurl.memory.mlp import MLP
from recurl.onnx_graph import EnvAction, observation_inputs, observation_leaves
from recurl.training import train

TINY = ["total_steps=256", "env.num_envs=4", "agent.rollout_steps=16", "agent.minibatches=2", "memory.hidden_size=16"]
POPGYM = ["env=popgym", "env.id=RepeatPreviousEasy"]  # previous action on (POPGym's default)
#: The runs on other spaces than POPGym's RepeatPrevious, each with a backbone of its own: every backbone is exported
#: once (the export of each run takes seconds, most of the fixture's time).
OTHER_SPACES = {
    "minigrid": [  # Dict observations
        *TINY, "env=minigrid", "env.id=MiniGrid-MemoryS7-v0", "env.max_episode_steps=30", "memory=gru",
    ],
    "pendulum": [  # Box actions
        *TINY, "env=popgym", "env.id=PositionOnlyPendulumEasy", "env.max_episode_steps=40", "memory=minlstm",
    ],
    # MultiDiscrete actions (a flat Q index, unravelled in the graph), the previous reward as an input
    "dqn": ["total_steps=256", "env.num_envs=4", "memory.hidden_size=16", "agent=dqn", "env=popgym",
            "env.id=BattleshipEasy", "agent.learning_starts=64", "agent.batch_size=4", "agent.buffer_capacity=512",
            "agent.previous_reward=true", "env.max_episode_steps=40", "memory=lstm"],
}
ELSEWHERE = {option.split("=")[1] for run in OTHER_SPACES.values() for option in run if option.startswith("memory=")}
RUNS = {
    **{memory: [*TINY, *POPGYM, f"memory={memory}"] for memory in MEMORIES if memory not in ELSEWHERE},
    **OTHER_SPACES,
}


@pytest.fixture(scope="module")
def onnxruntime():
    for module in ("onnx", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[export]'")
    return pytest.importorskip("onnxruntime", reason="onnxruntime missing: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def exported(onnxruntime, tmp_path_factory):
    """name -> (run folder, ONNX file), each run trained and exported once."""
    torch.set_num_threads(1)
    folders = {}
    for name, overrides in RUNS.items():
        run = tmp_path_factory.mktemp(name)
        assert train(compose_config(*overrides), run) == 0
        export_onnx(recurl.load_policy(run), run / "policy.onnx")
        folders[name] = run, run / "policy.onnx"
    return folders


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal indices; Box actions equal to fp32 precision."""
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


def assert_close_states(got: np.ndarray, want: np.ndarray) -> None:
    """fp32 tolerance, relative to the state's scale: each side carries its own state, so the rounding differences
    of a step add up over an episode, more so where the state grows (LRU's |lambda| near 1 keeps values near 10)."""
    finite = np.isfinite(want)
    scale = max(1.0, float(np.abs(want[finite]).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", RUNS)
def test_the_file_acts_and_remembers_as_the_live_policy(exported, onnxruntime, name):
    """Several episodes on a vector env of raw observations, resets fed at each episode's first observation: the same
    most likely actions as ``load_policy(run).act`` at every step and the same next state, each side carrying its
    own state."""
    run, path = exported[name]
    policy = recurl.load_policy(run)
    session = onnxruntime.InferenceSession(str(path))
    num_envs, seed = 3, 5
    envs = policy.make_vector_env(num_envs)
    obs, _ = envs.reset(seed=seed)
    live, state = policy.initial_state(num_envs), initial_state(session, num_envs)
    reset, reward, episodes, steps = np.ones(num_envs, bool), np.zeros(num_envs, np.float32), 0, 0
    wants_reward = "prev_reward" in {i.name for i in session.get_inputs()}
    while episodes < num_envs + 1:
        action, live = policy.act(obs, live, reset, reward=reward)
        feeds = {**observation_inputs(obs, batched=True), "reset": reset, **state}
        if wants_reward:
            feeds["prev_reward"] = reward
        env_action, _, *next_state = session.run(None, feeds)
        assert_same(env_action, action)
        state = dict(zip(state, next_state))
        for i, part in enumerate(live["memory"].values()):
            assert_close_states(state[f"state_{i}"], part.numpy())
        if "prev_action" in state:
            assert_same(state["prev_action"], live["prev_action"].numpy())
        obs, reward, terminated, truncated, _ = envs.step(env_action)
        reset, reward = terminated | truncated, reward.astype(np.float32)
        episodes, steps = episodes + reset.sum(), steps + 1
        assert steps < 500, "too few episodes ended"
    envs.close()


def test_aaren_starts_from_minus_infinity_and_any_state_works_at_a_reset(exported, onnxruntime):
    """The metadata gives each state's initial value (Aaren's running max: -inf, which onnxruntime carries); a row
    whose reset is true ignores its state, even NaN."""
    session = onnxruntime.InferenceSession(str(exported["aaren"][1]))
    policy = recurl.load_policy(exported["aaren"][0])
    state = initial_state(session, 2)
    for i, part in enumerate(policy.initial_state(2)["memory"].values()):
        np.testing.assert_array_equal(state[f"state_{i}"], part.numpy())
    assert np.isneginf(state["state_0"]).all()
    feeds = {"obs": np.array([1, 3]), "reset": np.array([True, True])}
    fresh = session.run(None, {**feeds, **state})
    garbage = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else np.full_like(v, 2) for k, v in state.items()}
    for want, got in zip(fresh, session.run(None, {**feeds, **garbage})):
        np.testing.assert_array_equal(got, want)
    assert np.isfinite(fresh[2]).all()  # the running max after one step


def test_the_batch_dimension_is_dynamic_and_the_metadata_describes_the_file(exported, onnxruntime):
    session = onnxruntime.InferenceSession(str(exported["minigrid"][1]))
    described_file = metadata(session)
    assert described_file == json.loads(session.get_modelmeta().custom_metadata_map["recurl"])
    described = [(spec["name"], spec["shape"], spec["dtype"]) for spec in described_file["inputs"]]
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(n, s) for n, s, _ in described]
    assert [n for n, _, _ in described] == ["obs.direction", "obs.image", "reset", "state_0"]  # no mission string
    assert [o.name for o in session.get_outputs()] == ["action", "agent_action", "next_state_0"]
    assert described_file["env"]["id"] == "MiniGrid-MemoryS7-v0" and described_file["memory"]["name"] == "gru"
    env = recurl.load_policy(exported["minigrid"][0]).make_env()
    for batch in (1, 7):
        obs, _ = env.reset(seed=batch)
        feeds = {k: np.repeat(v, batch, axis=0) for k, v in observation_inputs(obs).items()}
        action, _, state = session.run(None, {**feeds, "reset": np.ones(batch, bool), **initial_state(session, batch)})
        assert action.shape == (batch,) and state.shape == (batch, 2, 16)


def test_the_readme_loop_plays_an_episode(exported, monkeypatch):
    readme = (Path(recurl.__file__).parents[1] / "README.md").read_text()
    loop = readme.split("## Exporting a policy")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(exported["mingru"][0])  # where policy.onnx is
    played = {}
    exec(loop, played)
    assert played["done"] and played["state"]["state_0"].shape == (1, 2, 16)
    assert played["env"].spec.id == "popgym-RepeatPreviousEasy-v0"  # the runs' env (RepeatPreviousEasy), from the file


ENCODED_SPACES = {
    "discrete with a start": spaces.Discrete(5, start=-2),
    "multidiscrete 2-D": spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]), start=np.array([[0, 1], [-1, 2]])),
    "uint8 image": spaces.Box(0, 255, (4, 3, 2), np.uint8),
    "float64 box": spaces.Box(-2.0, 3.0, (3,), np.float64),
    "multibinary": spaces.MultiBinary(4),
    "nested": spaces.Dict({"b": spaces.Tuple((spaces.Discrete(3), spaces.Box(-1, 1, (2,)))), "a": spaces.Discrete(2)}),
}


@pytest.mark.parametrize("space", ENCODED_SPACES.values(), ids=ENCODED_SPACES)
def test_the_graph_encodes_observations_as_recurl_envs_encoding_does(space):
    space.seed(0)
    samples = [space.sample() for _ in range(6)]
    encode = make_encoder(space)[0]
    feeds = [observation_inputs(sample) for sample in samples]
    encoded = torch.cat(
        [encoder(torch.as_tensor(np.concatenate([f[name] for f in feeds]))) for name, _, encoder in
         observation_leaves(space)], dim=-1,
    )
    np.testing.assert_array_equal(encoded.numpy(), np.stack([encode(sample) for sample in samples]))


ACTION_SPACES = {
    "discrete with a start": spaces.Discrete(4, start=3),
    "multidiscrete 2-D": spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]), start=np.array([[0, 1], [-1, 2]])),
    "box": spaces.Box(np.float32(-1), np.array([2.0, 0.5], np.float32), (2,), np.float32),
}


@pytest.mark.parametrize("space", ACTION_SPACES.values(), ids=ACTION_SPACES)
def test_the_graph_turns_agent_actions_into_env_actions_as_the_agents_do(space):
    head = make_action_head(space, 3)
    with torch.no_grad():
        actions = head(torch.randn(50, 3) * 3).sample()
    np.testing.assert_array_equal(EnvAction(space, flat_index=False)(actions).numpy(), head.to_env(actions))
    if not isinstance(space, spaces.Box):
        flat = FlatActions(space)
        index = torch.randint(flat.n, (50,))
        np.testing.assert_array_equal(EnvAction(space, flat_index=True)(index).numpy(), flat.to_env(index))


def test_the_cli_writes_a_file_and_refuses_what_it_cannot_export(exported, tmp_path, capsys, monkeypatch):
    run = exported["mlp"][0]
    out = tmp_path / "out" / "mlp.onnx"
    main([str(run), "--out", str(out), "--checkpoint", str(run / "checkpoints" / "final.pt")])
    assert out.stat().st_size > 1000 and capsys.readouterr().out.startswith(f"{out}: ")

    def refused(*argv: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main(list(argv))
        assert stop.value.code == 2
        return capsys.readouterr().err.strip()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert refused(str(empty), "--out", str(out)) == (
        f"recurl.export: error: {empty} has no checkpoints/final.pt or latest.pt"
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run / "checkpoints" / "final.pt").read_bytes()[:300])
    assert "is corrupt or not a recurl checkpoint" in refused(str(run), "--out", str(out), "--checkpoint", str(corrupt))
    assert refused(str(run), "--out", str(tmp_path)).endswith("is a folder; give a file name such as policy.onnx")
    written = out.read_bytes()

    def untranslatable_step(self, x, state, reset):  # torch.onnx translates no exp of complex numbers
        return self.net(torch.exp(torch.complex(x, x)).real), ()

    monkeypatch.setattr(MLP, "step", untranslatable_step)
    line = refused(str(run), "--out", str(out))
    assert line.startswith("recurl.export: error: memory mlp cannot be exported to ONNX: ") and "\n" not in line
    assert out.read_bytes() == written
    monkeypatch.setattr("recurl.export.EXTRA_MODULES", ("onnx", "onnxruntime_is_not_installed"))
    assert refused(str(run), "--out", str(out)) == (
        "recurl.export: error: exporting needs the [export] extra (onnxruntime_is_not_installed missing): "
        'pip install "recurl[export]" (in a checkout: pip install -e ".[export]")'
    )
