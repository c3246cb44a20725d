"""`python launch.py run`: explore a world without a browser and write every export."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from scenes.autosave import DEFAULT_EVERY_S, Autosaver, default_interval
from scenes.export import ExportError
from scenes.framestore import FrameStore
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError, load_session, save_session
from scenes.spill import install_signal_handlers
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
    out = Path(args.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"cannot create {out}: {e.strerror or e}; choose another --out folder")
    install_signal_handlers()  # SIGTERM: save what was made, then clean up
    resume = getattr(args, "resume", None)
    if resume:
        try:
            scene = load_session(resume, spill_near=out)
        except SessionError as e:
            return fail(str(e))
        done = scene.length - 1
        scene.seek(scene.length - 1)
        if done >= len(actions):
            print(f"{resume} already holds all {len(actions)} steps; writing the exports")
        actions = actions[done:]
    else:
        try:
            model = create_world(args.world, seed=args.seed, width=args.size[0], height=args.size[1],
                                 kinematics=Kinematics(step_m=args.step_m, yaw_deg=args.yaw_deg))
        except (WorldSpecError, ValueError, OSError) as e:
            return fail(str(e))
        scene = Scene(model, SceneConfig(voxel_size=args.voxel), store=FrameStore(spill_near=out))
        try:
            scene.reset(args.seed)
        except (ValueError, OSError, RuntimeError) as e:
            return fail(f"the world's first frame failed: {e}")
    every = getattr(args, "autosave", None)
    every = default_interval(len(actions)) if every is None else every
    saver = Autosaver(scene, out / "session", every_steps=every,
                      every_s=getattr(args, "autosave_seconds", DEFAULT_EVERY_S) if every > 0 else 0.0)
    try:
        if saver.enabled:
            print(f"autosaving the session to {out / 'session'} every {every} steps", file=sys.stderr)
        try:
            for _ in scene.steps(actions, progress=True):
                saver.step_done()
        except (Exception, KeyboardInterrupt, SystemExit) as e:  # noqa: BLE001 - keep what was made
            return _save_after_failure(scene, out, e)
        try:
            written = scene.export_all(out, progress=True, video=not args.no_video)
        except (ExportError, SessionError, OSError) as e:
            return fail(str(e))
        pts = len(scene.map)
        print(f"{scene.length} frames, {pts:,} map points -> {out}")
        for kind, path in written.items():
            print(f"  {kind:11s} {path}")
        return 0
    finally:
        scene.close()


def _save_after_failure(scene: Scene, out: Path, e: BaseException) -> int:
    """A walk stopped part-way: write the session made so far and say how to go on."""
    if isinstance(e, KeyboardInterrupt):
        why = "interrupted"
    elif isinstance(e, SystemExit):
        why = "stopped by a signal"
    else:
        why = f"step {scene.length} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    try:
        folder = save_session(scene, out / "session")
    except (SessionError, OSError) as save_error:
        return fail(f"{why}; the frames made so far could not be saved either ({save_error})")
    return fail(f"{why}; the {scene.length} frames made so far are saved in {folder}; "
                f"run the same command with --resume {folder} to go on")
