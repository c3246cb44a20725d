"""The one check of a session.json: every value's type and range, before anything is built from it.

:func:`check_session_meta` returns the values load_session needs, already converted; any bad value raises
CheckError naming the field (load_session turns it into a one-line SessionError naming the session).
"""

from __future__ import annotations

from dataclasses import dataclass

from scenes.scene import SCENE_RANGES
from worldmodel.checks import MAX_SEED, CheckError, boolean, number, text

MAX_FRAMES = 10_000_000
MAX_BRANCHES = 100_000
MAX_JSON_BYTES = 256 * 2**20



@dataclass
class SessionMeta:
    scene: dict
    world: dict
    seed: int
    frame_ids: list[int]
    branches: list[tuple[str, list[int], str | None, int | None, int]]
    current_branch: str
    cursor: int
    retrievals: dict[int, tuple[list[int], list[float]]]


def _fids(value, name: str, known: set[int] | None = None) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_FRAMES:
        raise CheckError(f"{name} must be a list of frame ids")
    out = [number(v, f"{name}[{i}]", 0, 2**62, integer=True) for i, v in enumerate(value)]
    if known is not None and not set(out) <= known:
        raise CheckError(f"{name} refers to frames that are not in the session")
    return out


def check_scene_config(d) -> dict:
    """SceneConfig values (unknown keys are ignored, missing ones keep their defaults)."""
    if not isinstance(d, dict):
        raise CheckError("scene must be an object of settings")
    out = {}
    for key, (lo, hi, integer) in SCENE_RANGES.items():
        if key in d:
            out[key] = number(d[key], f"scene.{key}", lo, hi, integer)
    if "carve" in d:
        out["carve"] = None if d["carve"] is None else boolean(d["carve"], "scene.carve")
    return out


def check_session_meta(meta: dict) -> SessionMeta:
    """Check a parsed session.json (format and version already checked) -> the values, converted."""
    scene = check_scene_config(meta.get("scene"))
    world = meta.get("world")
    if not isinstance(world, dict):
        raise CheckError("world must be an object describing the world")
    seed = number(meta.get("seed", 0), "seed", 0, MAX_SEED, integer=True)
    fids = _fids(meta.get("frame_ids"), "frame_ids")
    if fids != sorted(set(fids)):
        raise CheckError("frame_ids must be sorted unique numbers")
    known = set(fids)
    raw = meta.get("branches")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_BRANCHES:
        raise CheckError("branches must be a non-empty list")
    branches, names = [], set()
    for i, b in enumerate(raw):
        if not isinstance(b, dict):
            raise CheckError(f"branches[{i}] must be an object")
        name = text(b.get("name"), f"branches[{i}].name", 200)
        if name in names:
            raise CheckError(f"branch name {name!r} is used twice")
        names.add(name)
        bf = _fids(b.get("fids"), f"branch {name!r} fids", known)
        if not bf:
            raise CheckError(f"branch {name!r} has no frames")
        parent = b.get("parent")
        parent = None if parent is None else text(parent, f"branch {name!r} parent", 200)
        fork = b.get("fork_position")
        fork = None if fork is None else number(fork, f"branch {name!r} fork_position", 0, len(bf) - 1, True)
        handed = number(b.get("handed", 0), f"branch {name!r} handed", 0, len(bf) - 1, True)  # older saves: 0
        branches.append((name, bf, parent, fork, handed))
    current = text(meta.get("current_branch"), "current_branch", 200)
    if current not in names:
        raise CheckError(f"current_branch {current!r} is not one of the branches")
    length = len(next(b[1] for b in branches if b[0] == current))
    cursor = number(meta.get("cursor"), "cursor", 0, length - 1, integer=True)
    memory = meta.get("memory")
    if memory is not None and not isinstance(memory, dict):
        raise CheckError("memory must be an object of retrieval settings or null")
    if isinstance(memory, dict) and memory.get("kind", "geometric") == "geometric":
        from memory.bank import GeometricMemory

        GeometricMemory.from_description(memory)  # every setting in range (CheckError names it)
    return SessionMeta(scene, world, seed, fids, branches, current, cursor, check_retrievals(meta.get("retrievals"), known))


def check_retrievals(value, known: set[int]) -> dict[int, tuple[list[int], list[float]]]:
    """The retrieval choices (frame id -> keyframe ids and scores): generated frames of the session, one finite
    score per keyframe. Missing or null: none."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_FRAMES:
        raise CheckError("retrievals must be an object of frame id -> {fids, scores}")
    out = {}
    for key, r in value.items():
        try:
            fid = int(key)
        except ValueError:
            raise CheckError(f"retrievals: {key[:20]!r} is not a frame id") from None
        if fid not in known:
            raise CheckError(f"retrievals: frame {fid} is not in the session")
        if not isinstance(r, dict):
            raise CheckError(f"retrievals[{fid}] must be an object with fids and scores")
        kf = _fids(r.get("fids"), f"retrievals[{fid}].fids")
        scores = r.get("scores")
        if not isinstance(scores, list) or len(scores) != len(kf):
            raise CheckError(f"retrievals[{fid}].scores must be one number per keyframe")
        out[fid] = (kf, [number(v, f"retrievals[{fid}].scores[{i}]", -1e9, 1e9) for i, v in enumerate(scores)])
    return out

