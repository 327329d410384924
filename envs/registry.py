"""Resolve a ``(suite, env id)`` pair to an id that ``gymnasium.make`` accepts.

POPGym and MiniGrid register their ids in ``gymnasium.registry`` when their
package is imported. Both imports are slow and noisy, so they happen here,
lazily, only when that suite is asked for.
"""

from __future__ import annotations

import difflib
import importlib

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

SUITES = ("popgym", "minigrid", "gym")

# The package whose import registers a suite's ids; the same package is where
# those ids' entry points live, which is how a suite's ids are told apart.
_PACKAGES = {"popgym": "popgym", "minigrid": "minigrid"}
# Id prefixes, only to tell a user who passed an id to the wrong suite which one it belongs to.
_PREFIXES = {"popgym": ("popgym-",), "minigrid": ("MiniGrid-", "BabyAI-")}
# Registered only when their optional package can be imported (popgym.envs.has_mazelib): id -> that package.
_NEED_PACKAGE = {
    f"popgym-Labyrinth{game}{level}-v0": "mazelib"
    for game in ("Escape", "Explore")
    for level in ("Easy", "Medium", "Hard")
}
# Registered but unable to run: minigrid's wheel lacks the pattern images its WFC envs read when they reset.
_BROKEN_MODULES = {"minigrid.envs.wfc": "minigrid's wheel lacks the pattern images of its WFC envs"}
_WHERE_IDS_COME_FROM = {
    "popgym": "see popgym.envs.ALL",
    "minigrid": "MiniGrid-* and BabyAI-* ids registered by `import minigrid`",
    "gym": "see gymnasium.pprint_registry(); use 'module:Env-v0' to import the registering module first",
}


def import_suite(suite: str) -> None:
    """Import the package that registers ``suite``'s ids (nothing to import for ``"gym"``)."""
    if suite not in SUITES:
        raise ValueError(f"unknown env suite {suite!r}; choose one of {', '.join(SUITES)}")
    if suite in _PACKAGES:
        importlib.import_module(_PACKAGES[suite])


def resolve_env_id(suite: str, env_id: str) -> str:
    """Return the id to pass to ``gymnasium.make`` for ``env_id`` in ``suite``.

    - ``"popgym"``: a registered POPGym id (``popgym-RepeatFirstEasy-v0``) or
      its short name (``RepeatFirstEasy``); the full id is returned.
    - ``"minigrid"``: a registered MiniGrid or BabyAI id (``MiniGrid-MemoryS7-v0``).
    - ``"gym"``: any other id in ``gymnasium.registry``; ``"module:Env-v0"``
      first imports ``module``, as ``gymnasium.make`` does, and is returned as
      is so that a worker process that did not inherit the registry imports it too.

    Raises ``ValueError`` (one line: the id, the suite, close matches or where
    ids come from) for an unknown id or an id of another suite, and (naming the
    package to install) for a POPGym id registered only with an optional package.
    """
    import_suite(suite)
    if suite == "gym":
        return _resolve_gym(env_id)
    ids = sorted(spec.id for spec in gym.registry.values() if _entry_package(spec) == _PACKAGES[suite])
    if env_id in ids:
        broken = _BROKEN_MODULES.get(_entry_module(gym.registry[env_id]))
        if broken:
            raise ValueError(f"env id {env_id!r} cannot run: {broken}; choose another {suite} id")
        return env_id
    candidates = ids
    if suite == "popgym":
        full_id = env_id if env_id.startswith("popgym-") else f"popgym-{env_id}-v0"
        if full_id in ids:
            return full_id
        package = _NEED_PACKAGE.get(full_id)
        if package:
            raise ValueError(
                f"env {full_id} needs the {package} package, which is not installed: pip install {package}"
            )
        candidates = ids + [i.removeprefix("popgym-").removesuffix("-v0") for i in ids]
    raise ValueError(_unknown_id_message(suite, env_id, candidates))


def _resolve_gym(env_id: str) -> str:
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise ValueError(
                f"env id {env_id!r} (suite 'gym'): cannot import module {module!r} to register it: {e}"
            ) from e
    if name not in gym.registry:
        raise ValueError(_unknown_id_message("gym", name, list(gym.registry)))
    # Refused even when already registered, so that an id means the same in every process.
    for suite, package in _PACKAGES.items():
        if _entry_package(gym.registry[name]) == package:
            raise ValueError(f"env id {env_id!r} is a {suite} id, use suite {suite!r} instead of 'gym'")
    return env_id


def _entry_module(spec: EnvSpec) -> str:
    entry = spec.entry_point
    return entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")


def _entry_package(spec: EnvSpec) -> str:
    return _entry_module(spec).split(".")[0]


def _unknown_id_message(suite: str, env_id: str, candidates: list[str]) -> str:
    message = f"unknown env id {env_id!r} for suite {suite!r}"
    for other, prefixes in _PREFIXES.items():
        if other != suite and env_id.startswith(prefixes):
            return f"{message}: it looks like a {other} id, use suite {other!r}"
    if suite != "gym" and env_id in gym.registry:
        return f"{message}: it is a gymnasium id outside {suite}, use suite 'gym'"
    contained = [c for c in candidates if env_id.lower() in c.lower()]
    matches = list(dict.fromkeys(contained + difflib.get_close_matches(env_id, candidates, n=3)))[:3]
    hint = f"close matches: {', '.join(matches)}" if matches else "no close match"
    return f"{message}; {hint} ({_WHERE_IDS_COME_FROM[suite]})"
