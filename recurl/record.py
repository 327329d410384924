"""``python -m recurl.record RUN_DIR``: play a trained agent and write one mp4 per episode to ``RUN_DIR/videos/``.

The policy is loaded with ``recurl.load_policy`` (every agent type) and plays one env stepwise on its own
observations, carrying its recurrent state through the episode exactly as in training: the state is reset on the
episode's first observation.

A video of an episode of ``n`` steps has ``n + 1`` frames: the reset observation, then the state after each action
(frames come from ``recurl.envs.render``). Files are named ``<checkpoint>-ep<k>.mp4``, or
``<checkpoint>-sampled-ep<k>.mp4`` with sampled actions, and are overwritten by a later recording.
Episode ``k = 0`` starts from ``reset(seed=<the run's seed>)`` and later ones continue its random stream; sampled
actions of episode ``k`` come from a torch generator seeded with the run's seed + ``k``. So a recording is
reproducible.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import torch

from recurl.command_line import Parser, positive_int
from recurl.envs.render import FrameInfo, default_fps, make_frame, make_render_env
from recurl.policy import Policy, default_checkpoint, load_policy


@dataclass(frozen=True)
class RecordedEpisode:
    path: Path
    episode_return: float
    length: int


def record_episodes(
    run_dir: Path,
    episodes: int = 3,
    checkpoint: Path | None = None,
    deterministic: bool = True,
    overlay: bool = True,
    fps: int | None = None,
) -> list[RecordedEpisode]:
    """Play ``episodes`` episodes and write their videos; ``checkpoint`` defaults to ``default_checkpoint``."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if fps is not None and fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    run_dir = Path(run_dir)
    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint(run_dir)
    policy = load_policy(checkpoint)
    cfg = policy.config
    videos = videos_folder(run_dir)
    env = make_render_env(cfg.env.suite, str(cfg.env.id), max_episode_steps=cfg.env.max_episode_steps)
    stem = checkpoint.stem + ("" if deterministic else "-sampled")
    recorded = []
    try:
        for k in range(episodes):
            path = videos / f"{stem}-ep{k}.mp4"
            with imageio.get_writer(path, fps=fps or default_fps(env), codec="libx264") as writer:
                episode_return, length = play_episode(
                    policy, env, writer.append_data, seed=cfg.seed if k == 0 else None,
                    generator=torch.Generator().manual_seed(cfg.seed + k), deterministic=deterministic, overlay=overlay,
                )
            recorded.append(RecordedEpisode(path, episode_return, length))
    except OSError as error:  # ffmpeg could not write a video (a full disk); the earlier ones are kept
        raise ValueError(f"cannot write {path}: {str(error).splitlines()[0]}; fix that and record again") from None
    finally:
        env.close()
    return recorded


def videos_folder(run_dir: Path) -> Path:
    """``run_dir/videos``, made if missing; a ``ValueError`` naming it and the fix where videos cannot be written in
    it, before any episode is played."""
    videos = run_dir / "videos"
    try:
        videos.mkdir(exist_ok=True)
    except FileExistsError:  # a file of that name
        raise ValueError(f"cannot write videos in {videos}: it is a file; move it away or remove it") from None
    except OSError as error:  # a read-only run folder
        raise ValueError(f"cannot make {videos}: {error.strerror}; make {run_dir} writable") from None
    if not os.access(videos, os.W_OK):
        raise ValueError(f"cannot write videos in {videos}: it is read-only; make it writable")
    return videos


def play_episode(
    policy: Policy, env, add_frame, *, seed: int | None, deterministic: bool, overlay: bool, generator: torch.Generator
) -> tuple[float, int]:
    """One episode from ``env.reset(seed=seed)``, actions sampled (unless ``deterministic``) from ``generator``,
    passing each frame to ``add_frame``; returns (return, length)."""
    obs, _ = env.reset(seed=seed)
    state, reset, reward = policy.initial_state(), True, 0.0
    info = FrameInfo(step=0)
    add_frame(make_frame(env, info, overlay))
    done = False
    while not done:
        action, state = policy.act(
            obs, state, reset, reward=reward, deterministic=deterministic, generators=[generator]
        )
        obs, reward, terminated, truncated, _ = env.step(action)
        info = FrameInfo(info.step + 1, action, float(reward), info.episode_return + float(reward))
        add_frame(make_frame(env, info, overlay))
        reset, done = False, terminated or truncated
    return info.episode_return, info.step


def record_run(
    run_dir: Path,
    episodes: int = 3,
    checkpoint: Path | None = None,
    deterministic: bool = True,
    overlay: bool = True,
) -> list[Path]:
    """For training's ``video=true``: record ``episodes`` episodes of a run's agent; returns the video paths."""
    return [e.path for e in record_episodes(run_dir, episodes, checkpoint, deterministic, overlay)]


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m recurl.record",
        description="Play a run's trained agent and write one mp4 per episode to RUN_DIR/videos/.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--episodes", type=positive_int, default=3, help="episodes to record (default 3)")
    parser.add_argument("--checkpoint", type=Path, help="default: RUN_DIR/checkpoints/final.pt, else latest.pt")
    parser.add_argument("--sampled", action="store_true", help="sample actions (default: the most likely action)")
    parser.add_argument(
        "--overlay", action=argparse.BooleanOptionalAction, default=True, help="caption bar (default on)"
    )
    parser.add_argument("--fps", type=positive_int, help="default: the env's render_fps for pictures, 2 for text")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.refuse(f"{args.run_dir} is not a folder")
    try:
        recorded = record_episodes(
            args.run_dir, args.episodes, args.checkpoint, not args.sampled, args.overlay, args.fps
        )
    except ValueError as error:  # CheckpointError and setup's config errors included
        parser.refuse(str(error))
    for episode in recorded:
        print(f"{episode.path}  return {episode.episode_return:.3f}  length {episode.length}")


if __name__ == "__main__":
    main()
