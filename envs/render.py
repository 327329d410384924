"""Frames for videos of any environment: its own picture where it draws one, text drawn to pixels otherwise.

``make_render_env`` builds one env like a sub-env of ``make_vector_env`` (same id resolution and time limit; its
observations are the env's own, as ``recurl.load_policy``'s policies take them), asking for
``render_mode="rgb_array"`` where the env offers it (MiniGrid, POPGym's CartPole and Pendulum variants), else
``"ansi"``, else nothing: most POPGym games refuse a ``render_mode`` argument.

``make_frame`` draws the env's current state, whichever way it can:

- an RGB picture: the env's own ``render()``, upscaled by an integer factor when narrower than ``MIN_WIDTH``
  (MiniGrid's 7x7 grid is 224 px) so that the caption fits under it;
- text: POPGym's card and board games print their state (Battleship, Concentration, MineSweeper, CountRecall) or
  return it (HigherLower); it is captured and drawn in a monospace font on a ``TEXT_PANEL`` canvas;
- nothing (RepeatPrevious, Autoencode, bandits, ...): the same canvas shows the raw observation (before encoding),
  the action that led to it and its reward.

With ``overlay`` a caption bar is stacked *under* the picture (never over it): step, action, reward, return.
Every frame is padded to a multiple of ``BLOCK`` pixels, the macro-block size video encoders want, so that
imageio writes it as it is. All frames of one env have the same size.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import io
import re
import textwrap
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib
import numpy as np
from gymnasium.envs.registration import load_env_creator
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageDraw, ImageFont

from .make import make_env
from .registry import resolve_env_id

MIN_WIDTH = 400
TEXT_PANEL = (640, 384)  # width, height of text frames, before the caption
BLOCK = 16
FONT_SIZE = 20
CAPTION_FONT_SIZE = 18
MARGIN = 12
TEXT_FPS = 2  # text needs time to be read; pictures play at the env's own render_fps
BACKGROUND, FOREGROUND = (30, 30, 30), (235, 235, 235)
CAPTION_BACKGROUND = (0, 0, 0)

_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
_MONO, _FALLBACK = _FONTS / "DejaVuSansMono.ttf", _FONTS / "DejaVuSans.ttf"  # bundled with matplotlib
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class FrameInfo:
    """What happened just before a frame: ``step`` actions into the episode (0 = the reset observation, which has
    no ``action`` and no ``reward``) and the return accumulated so far."""

    step: int
    action: Any = None
    reward: float | None = None
    episode_return: float = 0.0


class RawObservation(gym.Wrapper):
    """Remembers the env's last observation as the env made it, before encoding, for frames that show it."""

    raw_observation: Any = None

    def reset(self, **kwargs):
        self.raw_observation, info = self.env.reset(**kwargs)
        return self.raw_observation, info

    def step(self, action):
        self.raw_observation, *rest = self.env.step(action)
        return self.raw_observation, *rest


def make_render_env(suite: str, env_id: str, *, max_episode_steps: int | None = None) -> gym.Env:
    """One env like a sub-env of ``make_vector_env`` (observations not encoded), rendering pictures where it can.

    Not reset: the caller seeds it with ``reset(seed=...)``.
    """
    full_id = resolve_env_id(suite, env_id)
    modes = _render_modes(full_id)
    mode = next((m for m in ("rgb_array", "ansi") if m in modes), None)
    try:
        env = make_env(suite, full_id, max_episode_steps=max_episode_steps, **({"render_mode": mode} if mode else {}))
    except TypeError as error:
        if "render_mode" not in str(error):
            raise
        # The class lists the mode but its __init__ takes no render_mode (POPGym's noisy CartPole and Pendulum
        # variants); its render() reads the attribute, as gymnasium's classic-control envs do.
        env = make_env(suite, full_id, max_episode_steps=max_episode_steps)
        env.unwrapped.render_mode = mode
    return RawObservation(env)


def _render_modes(full_id: str) -> list[str]:
    # resolve_env_id has imported the module of a "module:Env-v0" id; the registry knows the bare id.
    spec = gym.spec(full_id.rpartition(":")[2])
    creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    return list(getattr(creator, "metadata", {}).get("render_modes", []))


def default_fps(env: gym.Env) -> int:
    """The env's ``render_fps`` when it draws pictures, else ``TEXT_FPS``."""
    if env.render_mode == "rgb_array":
        return int(env.metadata.get("render_fps", 30))
    return TEXT_FPS


def env_picture(env: gym.Env) -> np.ndarray | str | None:
    """The env's own picture of its state: an RGB array, a text, or None when it draws nothing."""
    if env.render_mode == "rgb_array":
        return np.asarray(env.render())
    if env.render_mode == "ansi":
        text = _ANSI_ESCAPE.sub("", env.render())
    else:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                returned = env.unwrapped.render()
        except NotImplementedError:  # gymnasium's default render
            return None
        except Exception as error:  # a game's own render bug (POPGym's ConcentrationMedium): show the observation
            warnings.warn(f"{env.spec.id}: render() raised {error!r}; frames show the observation instead")
            return None
        text = returned if isinstance(returned, str) else printed.getvalue()
    text = textwrap.dedent(text).strip("\n")
    return text or None


def make_frame(env: gym.Env, info: FrameInfo, overlay: bool = True) -> np.ndarray:
    """The frame for ``env``'s current state, ``[height, width, 3]`` uint8 (see the module docstring)."""
    picture = env_picture(env)
    if isinstance(picture, np.ndarray):
        image = _upscale(picture[..., :3].astype(np.uint8), MIN_WIDTH)
    else:
        image = text_image(picture if picture is not None else _observation_text(env, info), TEXT_PANEL)
    if overlay:
        image = np.concatenate([image, caption_image(env, info, image.shape[1])], axis=0)
    return _pad(image, BLOCK)


def text_image(text: str, size: tuple[int, int]) -> np.ndarray:
    """``text`` drawn on a ``size`` canvas in a monospace font; lines too long are wrapped, lines too many cut."""
    font = _font(_MONO, FONT_SIZE)
    columns = max(1, int((size[0] - 2 * MARGIN) // font.getlength("M")))
    lines = [line[i : i + columns] for line in text.splitlines() for i in range(0, max(len(line), 1), columns)]
    image = Image.new("RGB", size, BACKGROUND)
    _draw_lines(ImageDraw.Draw(image), lines, FONT_SIZE, MARGIN)
    return np.asarray(image)


def caption_image(env: gym.Env, info: FrameInfo, width: int) -> np.ndarray:
    """A two-line bar: step and action, then reward and return."""
    action = "-" if info.step == 0 else describe_action(env, info.action)
    reward = "-" if info.reward is None else f"{info.reward:+.2f}"
    lines = [f"step {info.step}   action {action}", f"reward {reward}   return {info.episode_return:+.2f}"]
    line_height, pad = sum(_font(_MONO, CAPTION_FONT_SIZE).getmetrics()), MARGIN // 2
    image = Image.new("RGB", (width, len(lines) * line_height + 2 * pad), CAPTION_BACKGROUND)
    _draw_lines(ImageDraw.Draw(image), lines, CAPTION_FONT_SIZE, pad)
    return np.asarray(image)


def describe_action(env: gym.Env, action: Any) -> str:
    """An action as text; MiniGrid's integer actions also get their name (``2 (forward)``)."""
    names = getattr(env.unwrapped, "actions", None)
    if isinstance(names, type) and issubclass(names, enum.Enum) and np.ndim(action) == 0:
        return f"{int(action)} ({names(int(action)).name})"
    return format_value(action)


def format_value(value: Any) -> str:
    """Observations and actions as short text: numpy scalars as plain numbers, arrays without dtype noise."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {format_value(v)}" for key, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=3, threshold=256, max_line_width=10_000, suppress_small=True)
    if isinstance(value, np.generic):
        value = value.item()
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _observation_text(env: gym.Env, info: FrameInfo) -> str:
    action = "-" if info.step == 0 else describe_action(env, info.action)
    reward = "-" if info.reward is None else f"{info.reward:+.3f}"
    observation = format_value(env.get_wrapper_attr("raw_observation"))
    return f"observation  {observation}\naction       {action}\nreward       {reward}\n\n(this env draws no picture)"


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], size: int, margin: int) -> None:
    """Character by character on a monospace grid, so that glyphs missing from the monospace font (POPGym's ⚬)
    come from the fallback font without shifting the columns of a board."""
    mono, fallback = _font(_MONO, size), _font(_FALLBACK, size)
    has_glyph = _charmap(_MONO)
    advance, line_height = mono.getlength("M"), sum(mono.getmetrics())
    for row, line in enumerate(lines):
        for column, char in enumerate(line):
            if not char.isspace():
                font = mono if ord(char) in has_glyph else fallback
                draw.text((margin + column * advance, margin + row * line_height), char, font=font, fill=FOREGROUND)


@functools.cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@functools.cache
def _charmap(path: Path) -> frozenset[int]:
    return frozenset(FT2Font(str(path)).get_charmap())


def _upscale(image: np.ndarray, min_width: int) -> np.ndarray:
    """Nearest-neighbour upscaling by the smallest integer factor that makes ``image`` at least ``min_width`` wide."""
    factor = -(-min_width // image.shape[1])
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def _pad(image: np.ndarray, block: int) -> np.ndarray:
    height, width = image.shape[:2]
    return np.pad(image, ((0, -height % block), (0, -width % block), (0, 0)))
