"""Build a world model from a short spec string (CLI/UI) or from a saved description (sessions).

Spec strings: ``procedural`` (walks on the terrain), ``procedural:fly`` (keeps its height),
``replay:PATH`` (a recorded sequence, see worldmodel/replay.py); other backends register themselves in
``_FACTORIES`` / ``_FROM_DESCRIPTION``.
"""

from __future__ import annotations

from typing import Callable

from worldmodel.actions import Kinematics
from worldmodel.frame import WorldModel


class WorldSpecError(ValueError):
    """An unknown or malformed world spec; the message lists what is accepted."""


def _procedural(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel:
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    if arg not in ("", "walk", "fly"):
        raise WorldSpecError(f"unknown procedural option {arg!r}; use 'procedural' or 'procedural:fly'")
    cfg = ProceduralConfig(width=width, height=height, fly=arg == "fly", kinematics=kinematics)
    return ProceduralWorld(cfg, seed=seed)


def _replay(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel:
    """``replay:PATH[?up=+z&stride=2&max_frames=N]``; frames keep the recording's size (width/height unused)."""
    from worldmodel.replay import ReplayWorld, parse_replay_arg

    if not arg:
        raise WorldSpecError("replay needs a folder: replay:/path/to/sequence (TUM, 7-Scenes, generic or PLY folder)")
    try:
        path, opts = parse_replay_arg(arg)
    except ValueError:
        raise WorldSpecError(f"bad replay options in {arg!r}; use e.g. replay:/data/seq?up=+z&stride=2") from None
    return ReplayWorld.open(path, **opts)


_FACTORIES: dict[str, Callable[..., WorldModel]] = {"procedural": _procedural, "replay": _replay}


def _procedural_from(desc: dict) -> WorldModel:
    from worldmodel.procedural import ProceduralWorld

    return ProceduralWorld.from_description(desc)


def _replay_from(desc: dict) -> WorldModel:
    from worldmodel.replay import ReplayWorld

    try:
        return ReplayWorld.from_description(desc)
    except ValueError as e:  # SequenceError and friends: say that it is the recording, not the session file
        raise WorldSpecError(f"its replay recording cannot be opened: {e}") from None


_FROM_DESCRIPTION: dict[str, Callable[[dict], WorldModel]] = {"procedural": _procedural_from, "replay": _replay_from}


def register(kind: str, factory: Callable[..., WorldModel], from_description: Callable[[dict], WorldModel]) -> None:
    """Add a backend: ``factory(arg, seed, width, height, kinematics)`` and ``from_description(desc)``."""
    _FACTORIES[kind] = factory
    _FROM_DESCRIPTION[kind] = from_description


def create_world(spec: str, seed: int = 0, width: int = 256, height: int = 256,
                 kinematics: Kinematics | None = None) -> WorldModel:
    """``"procedural"``, ``"procedural:fly"``, ... -> a world model (not yet reset)."""
    kind, _, arg = spec.partition(":")
    factory = _FACTORIES.get(kind.strip().lower())
    if factory is None:
        raise WorldSpecError(f"unknown world {spec!r}; choose one of {', '.join(sorted(_FACTORIES))}")
    return factory(arg.strip(), int(seed), int(width), int(height), kinematics or Kinematics())


def world_from_description(desc: dict) -> WorldModel:
    """Rebuild a world from ``model.describe()`` (as stored in a session)."""
    kind = desc.get("kind") if isinstance(desc, dict) else None
    build = _FROM_DESCRIPTION.get(kind)  # type: ignore[arg-type]
    if build is None:
        raise WorldSpecError(f"session names an unknown world {kind!r}; known: {', '.join(sorted(_FROM_DESCRIPTION))}")
    return build(desc)
