"""recurl.record and recurl.envs.render: videos of a trained agent, one frame per step plus the reset frame."""

import errno
import os
import shutil
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from conftest import compose_config
from recurl.envs.registry import import_suite
from recurl.envs.render import BLOCK, FrameInfo, env_picture, make_frame, make_render_env
from recurl.record import main as record_main
from recurl.record import record_episodes, record_run
from recurl.training import train

TINY = ["total_steps=128", "env.num_envs=4", "agent.rollout_steps=16", "agent.minibatches=2", "memory.hidden_size=16",
        "torch_threads=1"]
ENVS = {
    "text": ["env=popgym", "env.id=popgym-MineSweeperEasy-v0"],
    "cartpole": ["env=popgym", "env.id=popgym-PositionOnlyCartPoleEasy-v0"],
    "minigrid": ["env=minigrid", "env.id=MiniGrid-Empty-5x5-v0", "env.max_episode_steps=20"],
}


def read_frames(path):
    with imageio.get_reader(path) as reader:
        return [frame for frame in reader]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny trained runs, one per kind of frame, keyed like ``ENVS``."""
    torch.set_num_threads(1)
    runs = {}
    for name, overrides in ENVS.items():
        cfg = compose_config(*TINY, *overrides)
        runs[name] = tmp_path_factory.mktemp(name)
        train(cfg, runs[name])
    return runs


@pytest.mark.parametrize("name", list(ENVS))
def test_videos_have_one_frame_per_step_plus_the_reset_frame(trained, name):
    episodes = record_episodes(trained[name], episodes=2)
    assert [e.path.name for e in episodes] == ["final-ep0.mp4", "final-ep1.mp4"]
    sizes = set()
    for episode in episodes:
        frames = read_frames(episode.path)
        assert len(frames) == episode.length + 1
        sizes |= {frame.shape for frame in frames}
        if name == "minigrid":
            assert 1 <= episode.length <= 20  # env.max_episode_steps=20 of the run's config also caps the recording
    (height, width, _), = sizes
    assert height % BLOCK == 0 and width % BLOCK == 0
    assert frames[0].std() > 10  # not a blank frame


def test_record_run_falls_back_to_latest_and_can_sample(trained):
    run = trained["cartpole"]
    (run / "checkpoints" / "final.pt").rename(run / "checkpoints" / "kept.pt")
    try:
        paths = record_run(run, episodes=1, deterministic=False, overlay=False)
    finally:
        (run / "checkpoints" / "kept.pt").rename(run / "checkpoints" / "final.pt")
    assert paths == [run / "videos" / "latest-sampled-ep0.mp4"]
    assert len(read_frames(paths[0])) >= 2


def test_deterministic_recordings_repeat(trained):
    first = record_episodes(trained["text"], episodes=1)[0]
    frames = read_frames(first.path)
    again = record_episodes(trained["text"], episodes=1)[0]
    assert (again.length, again.episode_return) == (first.length, first.episode_return)
    assert len(read_frames(again.path)) == len(frames)


def test_sampled_recordings_repeat(trained):
    """Each episode samples from a generator of its own, whatever torch's global stream."""
    first = record_episodes(trained["text"], episodes=2, deterministic=False)
    frames = [read_frames(e.path) for e in first]
    torch.manual_seed(123)
    again = record_episodes(trained["text"], episodes=2, deterministic=False)
    assert [(e.length, e.episode_return) for e in again] == [(e.length, e.episode_return) for e in first]
    for episode, want in zip(again, frames):  # the captions show every action
        np.testing.assert_array_equal(read_frames(episode.path), want)


def test_cli_fails_in_one_line_without_a_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        record_main([str(tmp_path)])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"recurl.record: error: {tmp_path} has no checkpoints/final.pt or latest.pt"


def _not_played(*args, **kwargs):
    raise AssertionError("an episode was played before the refusal")


def test_a_videos_folder_that_cannot_be_written_is_refused_before_playing(trained, tmp_path, capsys, monkeypatch):
    """RUN_DIR/videos a file (kept as it was), or read-only, or not to be made in a read-only RUN_DIR (both faked:
    root writes in read-only folders too): one line, exit 2."""
    run = shutil.copytree(trained["text"], tmp_path / "run", ignore=shutil.ignore_patterns("videos"))
    monkeypatch.setattr("recurl.record.play_episode", _not_played)
    (run / "videos").write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        record_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.record: error: cannot write videos in {run / 'videos'}: it is a file; move it away or remove it\n"
    )
    assert (run / "videos").read_text() == "not a folder"
    (run / "videos").unlink()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != run / "videos")
    with pytest.raises(SystemExit) as stop:
        record_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.record: error: cannot write videos in {run / 'videos'}: it is read-only; make it writable\n"
    )
    (run / "videos").rmdir()

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(SystemExit) as stop:
        record_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.record: error: cannot make {run / 'videos'}: Permission denied; make {run} writable\n"
    )


class _BrokenPipeWriter:
    """imageio's ffmpeg writer once ffmpeg has died (a full disk): appending a frame raises its multi-line error."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def append_data(self, frame):
        raise OSError("[Errno 32] Broken pipe\n\nFFMPEG COMMAND:\nffmpeg ...\n\nFFMPEG STDERR OUTPUT:\n")


def test_a_video_whose_write_fails_is_one_line(trained, tmp_path, capsys, monkeypatch):
    run = shutil.copytree(trained["text"], tmp_path / "run")
    monkeypatch.setattr(imageio, "get_writer", lambda path, **options: _BrokenPipeWriter())
    with pytest.raises(SystemExit) as stop:
        record_main([str(run)])
    assert stop.value.code == 2 and capsys.readouterr().err == (
        f"recurl.record: error: cannot write {run / 'videos' / 'final-ep0.mp4'}: [Errno 32] Broken pipe; fix that and "
        "record again\n"
    )


@pytest.mark.parametrize(
    "env_id, kind",
    [
        ("popgym-PositionOnlyCartPoleEasy-v0", np.ndarray),  # rgb_array
        ("popgym-BattleshipEasy-v0", str),  # prints its board
        ("popgym-HigherLowerEasy-v0", str),  # returns its card
        ("popgym-RepeatPreviousEasy-v0", type(None)),  # draws nothing: the frame shows the observation
    ],
)
def test_frames_of_each_kind_of_env_have_one_size(env_id, kind):
    env = make_render_env("popgym", env_id)
    env.reset(seed=0)
    assert isinstance(env_picture(env), kind)
    frames = [make_frame(env, FrameInfo(0))]
    for step in range(1, 4):
        action = env.action_space.sample()
        _, reward, *_ = env.step(action)
        frames.append(make_frame(env, FrameInfo(step, action, float(reward), float(reward))))
    assert len({f.shape for f in frames}) == 1 and frames[0].dtype == np.uint8
    bare = make_frame(env, FrameInfo(3, action, 0.0, 0.0), overlay=False)
    assert bare.shape[1] == frames[0].shape[1] and bare.shape[0] < frames[0].shape[0]  # the caption goes under
    env.close()


@pytest.mark.filterwarnings("ignore:popgym-ConcentrationMedium-v0")
def test_every_popgym_env_can_be_drawn():
    """Every id POPGym registers gives frames of one size (its picture, its text, or its observation), including the
    ids whose class lists rgb_array but refuses render_mode, and the one whose own render() is broken."""
    import_suite("popgym")
    ids = sorted(env_id for env_id in gym.registry if env_id.startswith("popgym-"))
    assert len(ids) >= 40
    for env_id in ids:
        env = make_render_env("popgym", env_id)
        env.reset(seed=0)
        frames = [make_frame(env, FrameInfo(0))]
        for step in (1, 2):
            action = env.action_space.sample()
            env.step(action)
            frames.append(make_frame(env, FrameInfo(step, action, 0.0, 0.0)))
        assert len({f.shape for f in frames}) == 1 and frames[0].std() > 10, env_id
        env.close()


def test_every_minigrid_env_can_be_drawn():
    """Every MiniGrid and BabyAI id renders its own picture, of one size through an episode. The WFC ids are left
    out: minigrid's wheel lacks their pattern images, so they cannot even reset (nor train)."""
    import_suite("minigrid")
    ids = sorted(i for i in gym.registry if i.startswith(("MiniGrid-", "BabyAI-")) and "-WFC-" not in i)
    assert len(ids) >= 60
    for env_id in ids:
        env = make_render_env("minigrid", env_id)
        env.reset(seed=0)
        assert isinstance(env_picture(env), np.ndarray), env_id
        frames = [make_frame(env, FrameInfo(0))]
        action = env.action_space.sample()
        env.step(action)
        frames.append(make_frame(env, FrameInfo(1, action, 0.0, 0.0)))
        assert len({f.shape for f in frames}) == 1, env_id
        env.close()
