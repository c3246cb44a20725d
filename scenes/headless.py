"""`python launch.py run`: explore a world without a browser and write every export.

The scene has geometry-aware memory (as in the studio) unless ``--no-memory``; the session written to
``OUT/session`` records the retrieval settings and which keyframes each frame was given."""

from __future__ import annotations

import sys
from pathlib import Path

from memory.bank import MemoryConfig
from scenes.export import ExportError
from scenes.factory import make_scene
from scenes.scene import SceneConfig
from scenes.session import SessionError
from worldmodel.actions import ActionParseError, Kinematics, generated_walk, parse_actions
from worldmodel.registry import WorldSpecError


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(args) -> int:
    if args.actions is not None:
        try:
            actions = parse_actions(args.actions)
        except ActionParseError as e:
            return fail(str(e))
    else:
        if args.steps < 1:
            return fail("--steps must be at least 1")
        actions = generated_walk(args.walk, args.steps, args.seed)
    memory = False if args.no_memory else MemoryConfig(retrieval_rule=args.retrieval)
    try:
        scene = make_scene(args.world, args.seed, size=tuple(args.size) if args.size else None, memory=memory,
                           kinematics=Kinematics(step_m=args.step_m, yaw_deg=args.yaw_deg),
                           config=SceneConfig(voxel_size=args.voxel))
    except (WorldSpecError, ValueError, OSError) as e:
        return fail(str(e))
    out = Path(args.out).expanduser()
    scene.run(actions, progress=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = scene.export_all(out, progress=True, video=not args.no_video)
    except (ExportError, SessionError, OSError) as e:
        return fail(str(e))
    pts = len(scene.map)
    print(f"{scene.length} frames, {pts:,} map points -> {out}")
    for kind, path in written.items():
        print(f"  {kind:11s} {path}")
    scene.close()
    return 0
