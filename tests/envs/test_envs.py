"""Tests of recurl.envs: observation encoding, env ids, vector envs, same-step autoreset, seeding."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from recurl.envs import (
    COUNTER_ID,
    CounterEnv,
    UnsupportedSpaceError,
    encode_observations,
    encoded_size,
    env_seeds,
    final_observations,
    finished_episodes,
    make_vector_env,
    resolve_env_id,
)
from recurl.envs.encoding import MAX_ONE_HOT, make_encoder
from recurl.envs.registry import import_suite

# gymnasium's env checker: popgym's CountRecall returns the same info dict at every step
pytestmark = pytest.mark.filterwarnings("ignore:.*share an object:UserWarning")


def encode(space, obs):
    encoder, box = make_encoder(space)
    out = encoder(obs)
    assert out.dtype == np.float32 and out.shape == (encoded_size(space),) == box.shape
    return out


# ---------------------------------------------------------------- encoding


def test_discrete_is_one_hot_from_start():
    np.testing.assert_array_equal(encode(spaces.Discrete(3, start=1), 2), [0, 1, 0])
    np.testing.assert_array_equal(encode(spaces.Discrete(3), np.int64(0)), [1, 0, 0])


def test_multi_discrete_is_concatenated_one_hots():
    space = spaces.MultiDiscrete([2, 3], start=[0, -1])
    np.testing.assert_array_equal(encode(space, np.array([1, 1])), [0, 1, 0, 0, 1])
    grid = spaces.MultiDiscrete([[2, 2], [3, 2]])  # multi-dimensional nvec, row-major
    np.testing.assert_array_equal(encode(grid, np.array([[0, 1], [2, 0]])), [1, 0, 0, 1, 0, 0, 1, 1, 0])


def test_multi_binary_and_boxes():
    np.testing.assert_array_equal(encode(spaces.MultiBinary(3), np.array([1, 0, 1], np.int8)), [1, 0, 1])
    image = spaces.Box(0, 255, (2, 2), np.uint8)
    encoder, box = make_encoder(image)
    np.testing.assert_allclose(encoder(np.array([[0, 255], [51, 102]], np.uint8)), [0, 1, 0.2, 0.4])
    assert box.low.min() == 0 and box.high.max() == 1
    small_ints = spaces.Box(0, 10, (2,), np.uint8)  # not an image: values kept
    np.testing.assert_array_equal(encode(small_ints, np.array([3, 10], np.uint8)), [3, 10])
    unbounded = spaces.Box(-np.inf, np.inf, (2, 1), np.float64)
    encoder, box = make_encoder(unbounded)
    np.testing.assert_array_equal(encoder(np.array([[1e6], [-2.5]])), [1e6, -2.5])
    assert np.isneginf(box.low).all() and np.isposinf(box.high).all()


def test_tuple_and_nested_dict_in_sorted_key_order():
    tup = spaces.Tuple((spaces.Discrete(2), spaces.Box(-1, 1, (2,), np.float32)))
    np.testing.assert_array_equal(encode(tup, (1, np.array([0.5, -0.5], np.float32))), [0, 1, 0.5, -0.5])
    # OrderedDict keeps "b" first in the space itself; the encoding sorts keys anyway.
    nested = spaces.Dict(
        OrderedDict(
            b=spaces.Discrete(2),
            a=spaces.Dict(OrderedDict(y=spaces.MultiBinary(1), x=spaces.Tuple((spaces.Discrete(3),)))),
        )
    )
    obs = {"b": 0, "a": {"y": np.array([1], np.int8), "x": (2,)}}
    # a.x = one-hot(2 of 3), a.y = 1, b = one-hot(0 of 2)
    np.testing.assert_array_equal(encode(nested, obs), [0, 0, 1, 1, 1, 0])


def test_encoder_returns_a_new_array_each_call():
    encoder, _ = make_encoder(spaces.Discrete(2))
    first = encoder(0)
    encoder(1)
    np.testing.assert_array_equal(first, [1, 0])


def test_out_of_range_discrete_values_fail_instead_of_setting_a_neighbouring_bit():
    encoder, _ = make_encoder(spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))))
    with pytest.raises(ValueError, match=r"observation\[0\]"):
        encoder((2, 0))
    encoder, _ = make_encoder(spaces.MultiDiscrete([2, 2]))
    with pytest.raises(ValueError, match="outside"):
        encoder(np.array([0, 2]))


@pytest.mark.parametrize(
    ("space", "path", "kind"),
    [
        (spaces.Dict({"mission": spaces.Text(5), "x": spaces.Discrete(2)}), "observation['mission']", "Text"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Sequence(spaces.Discrete(2)))), "observation[1]", "Sequence"),
        (spaces.Graph(spaces.Box(0, 1, (2,)), None), "observation", "Graph"),
        (spaces.Text(3), "observation", "Text"),
        (spaces.Dict({"a": spaces.Tuple((spaces.Discrete(MAX_ONE_HOT + 1),))}), "observation['a'][0]", "MAX_ONE_HOT"),
        (spaces.Tuple(()), "observation", "empty"),
    ],
)
def test_unsupported_spaces_name_the_path(space, path, kind):
    with pytest.raises(UnsupportedSpaceError) as error:
        encoded_size(space)
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert message.startswith(path + ":") and kind in message


def test_unsupported_space_fails_when_the_env_is_wrapped_not_at_the_first_step():
    class TextEnv(gym.Env):
        observation_space = spaces.Dict({"mission": spaces.Text(4)})
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            raise AssertionError("must not be reached")

    with pytest.raises(UnsupportedSpaceError, match=r"observation\['mission'\]: Text"):
        encode_observations(TextEnv())


def _box(shape, kind):
    if kind == "float32":
        return spaces.Box(-2.0, 3.0, shape, np.float32)
    if kind == "float64_unbounded":
        return spaces.Box(-np.inf, np.inf, shape, np.float64)
    if kind == "half_bounded":
        return spaces.Box(0.0, np.inf, shape, np.float32)
    if kind == "image":
        return spaces.Box(0, 255, shape, np.uint8)
    return spaces.Box(-5, 5, shape, np.int64)


_leaf_spaces = st.one_of(
    st.builds(lambda n, s: spaces.Discrete(n, start=s), st.integers(1, 6), st.integers(-3, 3)),
    st.builds(
        lambda nvec, s: spaces.MultiDiscrete(nvec, start=[s] * len(nvec)),
        st.lists(st.integers(1, 5), min_size=1, max_size=3),
        st.integers(-2, 2),
    ),
    st.builds(spaces.MultiBinary, st.integers(1, 4)),
    st.builds(
        _box,
        st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
        st.sampled_from(["float32", "float64_unbounded", "half_bounded", "image", "int64"]),
    ),
)
_nested_spaces = st.recursive(
    _leaf_spaces,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(spaces.Tuple),
        st.dictionaries(st.text("abxyz", min_size=1, max_size=2), children, min_size=1, max_size=3).map(spaces.Dict),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(space=_nested_spaces, seed=st.integers(0, 2**31 - 1))
def test_encoding_of_random_nested_spaces_has_declared_size_and_bounds(space, seed):
    encoder, box = make_encoder(space)
    space.seed(seed)
    vector = encoder(space.sample())
    assert vector.shape == (encoded_size(space),)
    assert np.isfinite(vector).all()
    assert box.contains(vector)


def test_minigrid_image_is_one_hot_per_cell_per_channel():
    import minigrid  # noqa: F401  registers MiniGrid-* ids
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    space = gym.make("MiniGrid-MemoryS7-v0").observation_space
    per_cell = len(OBJECT_TO_IDX) + len(COLOR_TO_IDX) + len(STATE_TO_IDX)
    assert per_cell == 20
    assert encoded_size(space) == 4 + 7 * 7 * per_cell  # direction, then image; mission ignored
    image = np.zeros((7, 7, 3), np.uint8)
    image[0, 1] = (OBJECT_TO_IDX["door"], COLOR_TO_IDX["grey"], STATE_TO_IDX["locked"])
    vector = encode(space, {"direction": 1, "image": image, "mission": "whatever"})
    np.testing.assert_array_equal(vector[:4], [0, 1, 0, 0])
    cell_01 = vector[4 + per_cell : 4 + 2 * per_cell]  # row-major: cell (0, 1) is the second block
    assert np.flatnonzero(cell_01).tolist() == [4, 11 + 5, 17 + 2]
    assert vector.sum() == 1 + 7 * 7 * 3
    image[0, 0, 2] = 3  # a state minigrid's tables do not have (e.g. a fully observable agent)
    with pytest.raises(ValueError, match="observation\\['image'\\]"):
        encode(space, {"direction": 1, "image": image, "mission": "whatever"})


# ---------------------------------------------------------------- ids and vector envs


@pytest.mark.parametrize(
    ("suite", "env_id", "expected"),
    [
        ("popgym", "RepeatFirstEasy", "popgym-RepeatFirstEasy-v0"),
        ("popgym", "popgym-RepeatFirstEasy-v0", "popgym-RepeatFirstEasy-v0"),
        ("minigrid", "MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS7-v0"),
        ("gym", "CartPole-v1", "CartPole-v1"),
        ("gym", COUNTER_ID, COUNTER_ID),
    ],
)
def test_resolve_env_id(suite, env_id, expected):
    assert resolve_env_id(suite, env_id) == expected


@pytest.mark.parametrize(
    ("suite", "env_id", "expected_words"),
    [
        ("popgym", "RepeatFirstEasyy", ["'RepeatFirstEasyy'", "'popgym'", "RepeatFirstEasy", "popgym.envs.ALL"]),
        ("popgym", "MiniGrid-MemoryS7-v0", ["'MiniGrid-MemoryS7-v0'", "'popgym'", "use suite 'minigrid'"]),
        ("popgym", "CartPole-v1", ["'CartPole-v1'", "use suite 'gym'"]),
        ("minigrid", "MemoryS7", ["'MemoryS7'", "'minigrid'", "MiniGrid-MemoryS7-v0"]),
        ("minigrid", "popgym-RepeatFirstEasy-v0", ["use suite 'popgym'"]),
        ("gym", "CartPole-v9", ["'CartPole-v9'", "'gym'", "CartPole-v1"]),
        ("gym", "MiniGrid-MemoryS7-v0", ["'MiniGrid-MemoryS7-v0'", "use suite 'minigrid'"]),
        ("gym", "no_such_module:Env-v0", ["'no_such_module'"]),
        ("atari", "Pong-v5", ["'atari'", "popgym, minigrid, gym"]),
    ],
)
def test_unknown_or_misplaced_ids_fail_with_a_helpful_one_line_message(suite, env_id, expected_words):
    with pytest.raises(ValueError) as error:
        resolve_env_id(suite, env_id)
    message = str(error.value)
    assert "\n" not in message
    for word in expected_words:
        assert word in message


def test_importing_recurl_envs_does_not_import_popgym_or_minigrid():
    code = "import sys, recurl.envs; print('popgym' in sys.modules, 'minigrid' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("suite", "env_id", "raw_id"),
    [
        ("popgym", "RepeatPreviousEasy", "popgym-RepeatPreviousEasy-v0"),
        ("popgym", "popgym-AutoencodeEasy-v0", "popgym-AutoencodeEasy-v0"),
        ("popgym", "CountRecallEasy", "popgym-CountRecallEasy-v0"),
        ("minigrid", "MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS7-v0"),
        ("gym", "CartPole-v1", "CartPole-v1"),
    ],
)
def test_make_vector_env_gives_flat_float32_batches(suite, env_id, raw_id):
    num_envs = 3
    envs = make_vector_env(suite, env_id, num_envs, seed=0)
    try:
        size = encoded_size(gym.make(raw_id).observation_space)
        assert envs.single_observation_space.shape == (size,)
        assert envs.single_observation_space.dtype == np.float32
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        obs, _ = envs.reset(seed=0)
        for _ in range(5):
            assert obs.shape == (num_envs, size) and obs.dtype == np.float32
            assert all(envs.single_observation_space.contains(row) for row in obs)
            obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
            assert reward.shape == terminated.shape == truncated.shape == (num_envs,)
    finally:
        envs.close()


def test_bad_vectorization_and_num_envs_are_rejected():
    with pytest.raises(ValueError, match="sync, async"):
        make_vector_env("gym", COUNTER_ID, 2, 0, vectorization="threads")
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("gym", COUNTER_ID, 0, 0)


def _trace(envs, steps, seed):
    """Everything the vector env returns over ``steps`` random steps, as plain lists."""
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    trace = [obs.tolist()]
    for _ in range(steps):
        action = rng.integers(0, 2, envs.num_envs)
        obs, reward, terminated, truncated, info = envs.step(action)
        final = final_observations(obs, info)
        trace.append([obs.tolist(), reward.tolist(), terminated.tolist(), truncated.tolist(), final.tolist()])
    return trace


def test_async_matches_sync_including_final_observations():
    kwargs = dict(env_kwargs={"episode_lengths": [2, 3]})
    sync = make_vector_env("gym", COUNTER_ID, 2, 0, **kwargs)
    asyn = make_vector_env("gym", COUNTER_ID, 2, 0, vectorization="async", **kwargs)
    try:
        assert asyn.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert _trace(sync, 8, 0) == _trace(asyn, 8, 0)
    finally:
        sync.close()
        asyn.close()


def test_popgym_streams_depend_on_the_seed_only():
    def stream(seed):
        envs = make_vector_env("popgym", "RepeatPreviousEasy", 2, seed)
        try:
            obs, _ = envs.reset(seed=seed)
            out = [obs]
            for _ in range(60):
                out.append(envs.step(envs.action_space.sample())[0])
            return np.stack(out)
        finally:
            envs.close()

    np.testing.assert_array_equal(stream(0), stream(0))
    assert not np.array_equal(stream(0), stream(1))


# ---------------------------------------------------------------- same-step autoreset


def test_counter_env_refuses_steps_outside_an_episode():
    env = CounterEnv(episode_lengths=[1])
    with pytest.raises(RuntimeError):
        env.step(0)
    env.reset(seed=0)
    env.step(1)
    with pytest.raises(RuntimeError):
        env.step(1)


@pytest.mark.parametrize("truncate", [False, True])
def test_same_step_autoreset_reports_real_transitions(truncate):
    lengths = [2, 3, 4]
    num_envs = 3
    envs = make_vector_env(
        "gym", COUNTER_ID, num_envs, seed=0, env_kwargs={"episode_lengths": lengths, "truncate": truncate}
    )
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=0)
    # sub-env i is seeded i: its episode k lasts lengths[(i + k) % 3]
    episode = [0] * num_envs
    step = [0] * num_envs
    episode_return = [0.0] * num_envs
    assert obs.tolist() == [[0, 0]] * num_envs
    ended_somewhere = 0
    for _ in range(20):
        action = rng.integers(0, 2, num_envs)
        obs, reward, terminated, truncated, info = envs.step(action)
        np.testing.assert_array_equal(reward, action)  # every step is a real one: no ignored action, no fake 0
        expected_finished = []
        for i in range(num_envs):
            step[i] += 1
            episode_return[i] += float(action[i])
            ends = step[i] == lengths[(i + episode[i]) % 3]
            assert (terminated[i], truncated[i]) == ((ends and not truncate), (ends and truncate))
            if ends:
                assert info["_final_obs"][i]
                assert info["final_obs"][i].tolist() == [episode[i], step[i]]
                assert info["final_obs"][i].dtype == np.float32
                expected_finished.append((episode_return[i], step[i]))
                episode[i] += 1
                step[i] = 0
                episode_return[i] = 0.0
            elif "_final_obs" in info:
                assert not info["_final_obs"][i]
            assert obs[i].tolist() == [episode[i], step[i]]  # after an end: the next episode's first obs
        assert finished_episodes(info) == expected_finished
        ended_somewhere += bool(expected_finished)
    assert ended_somewhere >= 5
    envs.close()


def test_time_limit_truncates_and_final_observations_holds_the_last_obs():
    envs = make_vector_env("gym", COUNTER_ID, 2, seed=0, max_episode_steps=3, env_kwargs={"episode_lengths": [10]})
    for _ in range(2):
        obs, reward, terminated, truncated, info = envs.step(np.ones(2, np.int64))
        assert "_final_obs" not in info and finished_episodes(info) == []
        np.testing.assert_array_equal(final_observations(obs, info), obs)
    obs, reward, terminated, truncated, info = envs.step(np.ones(2, np.int64))
    assert truncated.all() and not terminated.any()
    assert obs.tolist() == [[1, 0], [1, 0]]
    assert final_observations(obs, info).tolist() == [[0, 3], [0, 3]]
    assert finished_episodes(info) == [(3.0, 3), (3.0, 3)]
    envs.close()


def test_minigrid_final_obs_is_encoded():
    envs = make_vector_env("minigrid", "MiniGrid-MemoryS7-v0", 2, seed=0, max_episode_steps=2)
    envs.step(envs.action_space.sample())
    obs, _, _, truncated, info = envs.step(envs.action_space.sample())
    assert truncated.all()
    final = final_observations(obs, info)
    assert final.shape == obs.shape == (2, 984) and final.dtype == np.float32
    assert (final.sum(axis=1) == 1 + 49 * 3).all()  # direction + one bit per cell per channel
    envs.close()


class _NeedsAMissingPackage(gym.Env):
    def __init__(self):
        raise gym.error.DependencyNotInstalled("Box2D is not installed, you can install it by run `pip install swig`")


def test_an_env_whose_package_is_missing_is_one_line_naming_it():
    """gymnasium raises DependencyNotInstalled, not a ValueError, for a registered env it cannot build (CarRacing
    without Box2D): it becomes a config mistake, one line and exit code 2 from recurl.train."""
    gym.register("RecurlTestNeedsBox2D-v0", entry_point=_NeedsAMissingPackage)
    try:
        with pytest.raises(ValueError) as error:
            make_vector_env("gym", "RecurlTestNeedsBox2D-v0", 2, seed=0)
    finally:
        gym.registry.pop("RecurlTestNeedsBox2D-v0")
    assert str(error.value) == (
        "env RecurlTestNeedsBox2D-v0 cannot run here: Box2D is not installed, you can install it by run "
        "`pip install swig`"
    )


@pytest.mark.parametrize(
    ("env_id", "full_id"),
    [("LabyrinthExploreEasy", "popgym-LabyrinthExploreEasy-v0"), ("popgym-LabyrinthEscapeHard-v0",) * 2],
)
def test_a_labyrinth_id_without_mazelib_names_the_package_to_install(env_id, full_id, monkeypatch):
    """popgym registers its Labyrinth ids only when mazelib imports; without it they are not unknown ids (whose close
    matches would be other games) but ids that need mazelib. Its absence is simulated where it is installed."""
    import_suite("popgym")
    for game in ("Escape", "Explore"):
        for level in ("Easy", "Medium", "Hard"):
            monkeypatch.delitem(gym.registry, f"popgym-Labyrinth{game}{level}-v0", raising=False)
    with pytest.raises(ValueError) as error:
        resolve_env_id("popgym", env_id)
    assert str(error.value) == f"env {full_id} needs the mazelib package, which is not installed: pip install mazelib"


def test_env_seeds_are_distinct_across_run_seeds():
    assert len(set(env_seeds(0, 64)) | set(env_seeds(1, 64))) == 128
    assert env_seeds(3, 8)[:4] == env_seeds(3, 4)  # more envs add streams, keep the first ones
