"""`python launch.py run`: explore a world without a browser and write every export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scenes.export import ExportError
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError
from worldmodel.actions import Action, ActionParseError, Kinematics, parse_actions
from worldmodel.registry import WorldSpecError, create_world


def generated_walk(kind: str, steps: int, seed: int) -> list[Action]:
    """A walk of ``steps`` actions: 'forward', 'orbit' (forward while turning left) or 'random' (seeded wander)."""
    if kind == "forward":
        return [Action("F", "N")] * steps
    if kind == "orbit":
        return [Action("F", "L")] * steps
    rng = np.random.default_rng(seed)
    walk, turn = [], "N"
    for _ in range(steps):
        if rng.random() < 0.15:  # change the turn now and then, so the walk wanders instead of jittering
            turn = rng.choice(["N", "N", "L", "R"])
        translation = rng.choice(["F", "F", "F", "fL", "fR", "S"])
        walk.append(Action(str(translation), str(turn)))
    return walk


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
