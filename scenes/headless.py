"""`python launch.py run`: explore a world without a browser and write every export."""

from __future__ import annotations

import sys
from pathlib import Path

from scenes.export import ExportError
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError
from worldmodel.actions import ActionParseError, Kinematics, generated_walk, parse_actions
from worldmodel.registry import WorldSpecError, create_world


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
    try:
        model = create_world(args.world, seed=args.seed, width=args.size[0], height=args.size[1],
                             kinematics=Kinematics(step_m=args.step_m, yaw_deg=args.yaw_deg))
    except (WorldSpecError, ValueError, OSError) as e:
        return fail(str(e))
    out = Path(args.out).expanduser()
    scene = Scene(model, SceneConfig(voxel_size=args.voxel))
    scene.reset(args.seed)
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
