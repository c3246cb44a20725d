"""`python launch.py info PATH`: what a saved session holds, after the same checks as opening it; or, for a
recording, what its reader sees (format, frames, camera, path, notes) without fusing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scenes.session import SessionError, is_session_folder, load_session, saved_memory_state, session_meant_by


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def session_info(folder: str | Path) -> dict:
    """{world, frames, branches, handed, current_branch, cursor, map_points, bytes} of the session in ``folder``
    (handed: frames given before the one the world went on from, per branch that has any).

    Opens it as the studio would (every check runs), so a session that passes here opens there."""
    folder = Path(folder).expanduser()
    scene = load_session(folder)
    try:
        desc = scene.model.describe()
        f = scene.current
        fids = {fid for b in scene.branches.values() for fid in b.fids}
        memory = "none"
        if (folder / "memory.safetensors").is_file():
            memory = "saved" if saved_memory_state(folder, fids) is not None else "unreadable"
        return {
            "world": desc.get("kind", "?") + (f" {desc['path']}" if "path" in desc else f" seed {scene.seed}"),
            "frame_size": f"{f.width}x{f.height}",
            "frames": len(fids),
            "branches": {name: len(b.fids) for name, b in scene.branches.items()},
            "handed": {name: b.handed for name, b in scene.branches.items() if b.handed},
            "current_branch": scene.branch_name, "cursor": scene.cursor,
            "voxel_size": scene.config.voxel_size, "map_points": len(scene.map),
            "memory": memory,
            "bytes": folder_bytes(folder),
        }
    finally:
        scene.close()


def recording_info(path: str) -> dict:
    """{path, format, world_up, frames, frame_size, K, path_m, notes, agreement, floor, levelled, has_depth, voxel} of
    the recording ``path`` (``PATH?stride=2`` options as ``--world replay:`` takes them); agreement: how well its
    poses and depth agree (:func:`worldmodel.recordings.checks.pose_agreement`), floor: the floor-like plane in its
    depth (:func:`worldmodel.recordings.checks.floor_plane`, or None), voxel: (metres, why) as ``view`` and ``run``
    fuse it (:func:`scenes.factory.voxel_for_recording`); a few frames are decoded for each.
    Raises worldmodel.recordings.SequenceError (one line)."""
    from scenes.factory import voxel_for_recording, voxel_frames
    from worldmodel.recordings.checks import (floor_plane_frames, pose_agreement, pose_agreement_frames,
                                              read_ascending)
    from worldmodel.replay import open_recording

    seq = open_recording(path)
    try:
        whole_recording = seq.options.get("stride", 1) == 1 and seq.options.get("max_frames") is None
        floor_frames = floor_plane_frames(seq) if whole_recording else []
        frames = read_ascending(seq, [0, *pose_agreement_frames(seq), *floor_frames,  # a video is decoded once
                                      *voxel_frames(seq)])
        first = frames[0]
        centres = seq.c2ws[:, :3, 3]
        return {"path": str(seq.named_path or seq.path), "format": seq.format, "world_up": seq.world_up,
                "frames": len(seq), "frame_size": f"{first.width}x{first.height}", "K": first.K,
                "path_m": float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()), "notes": list(seq.notes),
                "agreement": pose_agreement(seq, frames=frames),
                "floor": _floor_of_recording(path, seq, frames if whole_recording else None),
                "levelled": "level_turn" in seq.options,
                "has_depth": seq.has_depth, "voxel": voxel_for_recording(seq, frames)}
    finally:
        seq.close()


def _floor_of_recording(path: str, seq, frames: dict | None) -> dict | None:
    """:func:`worldmodel.recordings.checks.floor_plane` of the whole recording ``path`` (``seq`` opened from it;
    ``frames``: its frames already read, when ``seq`` is the whole recording): as ``level=1`` finds it, whatever
    frames ``stride`` and ``max_frames`` keep."""
    from worldmodel.recordings.checks import floor_plane
    from worldmodel.replay import open_recording

    if frames is not None:
        return floor_plane(seq, frames)
    whole = open_recording(path, stride=1, max_frames=None)
    try:
        return floor_plane(whole)
    finally:
        whole.close()


def _agreement_lines(agreement: dict, fmt: str) -> list[str]:
    """The ``poses`` line of ``info`` and, when a misreading fits far better, a note saying what to do."""
    from worldmodel.recordings.checks import (AGREE_RELATIVE, MIN_MOTION_DEG, MIN_MOTION_M, PAIRS_WITHIN,
                                              misreading_note)

    shares, pairs = agreement["shares"], agreement["pairs"]
    if not shares:
        why = ("the frames have no depth" if pairs else f"the camera moves less than {MIN_MOTION_M * 100:.0f} cm or "
               f"{MIN_MOTION_DEG:g}° over the first {PAIRS_WITHIN} frames")
        return [f"poses     not checked: {why}"]
    others = ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if name != "as read")
    lines = [f"poses     {shares['as read']:.0%} of the depth moved between {len(pairs)} pairs of frames agrees with "
             f"the other frame's within {AGREE_RELATIVE:.0%} (read {others})"]
    note = misreading_note(shares, fmt)
    return lines + ([f"note: {note}"] if note else [])


LEVEL_NOTE_DEG = 5.0  # info suggests level=1 when the floor tilts more than this


def _floor_lines(floor: dict | None, levelled: bool, has_depth: bool) -> list[str]:
    """The ``floor`` line of ``info`` and, when the floor tilts and the world was not levelled, what to do."""
    from worldmodel.recordings.checks import LEVEL_MAX_DEG

    if not has_depth:
        return ["floor     not looked for: the recording has no depth"]
    if floor is None:
        return ["floor     no floor or table top found in the depth"]
    lines = [f"floor     a plane {floor['below_m']:.2f} m from the cameras ({floor['share']:.0%} of the depth "
             f"sampled) is {floor['tilt_deg']:.1f}° from level"]
    if LEVEL_NOTE_DEG < floor["tilt_deg"] <= LEVEL_MAX_DEG and not levelled:
        lines.append("note: if that plane is the floor, it tilts: open the recording as PATH?level=1 (or put "
                     "\"level\": true in its worldstudio.json) to turn it level")
    return lines


def _recording_main(path: str) -> int:
    from worldmodel.recordings import SequenceError

    try:
        info = recording_info(path)
    except SequenceError as e:
        print(f"error: {path} is not a saved session (no session.json), and as a recording: {e}", file=sys.stderr)
        return 2
    K = info["K"]
    print(f"recording {info['path']} ({info['format']}, world up {info['world_up']} -> +Y)")
    print(f"frames    {info['frames']}, {info['frame_size']}, fx={K[0, 0]:g} fy={K[1, 1]:g} cx={K[0, 2]:g} "
          f"cy={K[1, 2]:g} (frame 0)")
    print(f"camera    {info['path_m']:.2f} m of path over the {info['frames']} frames")
    voxel, why = info["voxel"]  # as view and run fuse it
    print(f"voxel     {why or f'the map voxels are {voxel:g} m, the default (--voxel sets another size)'}")
    floor = _floor_lines(info["floor"], info["levelled"], info["has_depth"])
    for line in _agreement_lines(info["agreement"], info["format"]) + floor:
        print(line)
    for note in info["notes"]:
        print(f"note: {note}")
    return 0


def _handed(count: int) -> str:
    return f", the first {count} handed over" if count else ""


def main(args) -> int:
    folder = Path(args.path).expanduser()
    meant = session_meant_by(folder)  # a run's --out folder, a session.json file
    if meant is not None:
        print(f"error: {folder} is {meant[1]}: pass {meant[0]}", file=sys.stderr)
        return 2
    if not is_session_folder(folder):
        return _recording_main(args.path)
    try:
        info = session_info(args.path)
    except SessionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    branches = ", ".join(f"{n} ({k} frames{_handed(info['handed'].get(n, 0))}"
                         f"{', current' if n == info['current_branch'] else ''})" for n, k in info["branches"].items())
    print(f"session   {Path(args.path).expanduser().resolve()}")
    print(f"world     {info['world']}, frames {info['frame_size']}")
    print(f"frames    {info['frames']} (cursor at {info['cursor']} of {info['current_branch']})")
    print(f"branches  {branches}")
    print(f"map       {info['map_points']:,} points at {info['voxel_size']:g} m voxels"
          + {"none": "", "saved": "; memory saved",
             "unreadable": "; memory.safetensors unreadable: the memory is rebuilt from the frames"}[info["memory"]])
    print(f"on disk   {info['bytes'] / 2**20:.1f} MB")
    return 0
