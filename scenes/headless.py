"""`python launch.py run`: explore a world without a browser and write every export.

The scene has geometry-aware memory (as in the studio) unless ``--no-memory``; the session written to
``OUT/session`` records the retrieval settings and which keyframes each frame was given. Steps are streamed
(RAM stays bounded), the session is autosaved every N steps / T seconds, a failure part-way saves what was
made, and ``--resume DIR`` goes on from a saved session (with the memory settings it was saved with)."""

from __future__ import annotations

import sys
from pathlib import Path

from memory.bank import MemoryConfig
from scenes.autosave import Autosaver, default_interval
from scenes.export import ExportError
from scenes.factory import make_scene
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError, save_session
from scenes.spill import install_signal_handlers
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
    out = Path(args.out).expanduser()
    out_existed = out.exists()

    def fail_before_any_frame(message: str) -> int:
        if not out_existed:  # a world that could not open leaves no empty --out folder behind
            remove_empty_folder(out)
        return fail(message)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"cannot create {out}: {e.strerror or e}; choose another --out folder")
    install_signal_handlers()  # SIGTERM: save what was made, then clean up
    if args.resume:
        try:  # the session's own world, settings and memory settings; frames spill beside --out
            scene = make_scene(session=args.resume, memory=not args.no_memory, spill_near=out)
        except SessionError as e:
            return fail_before_any_frame(str(e))
        done = scene.length - 1
        scene.seek(scene.length - 1)
        if done >= len(actions):
            print(f"{args.resume} already holds all {len(actions)} steps; writing the exports")
        actions = actions[done:]
    else:
        memory = False if args.no_memory else MemoryConfig(retrieval_rule=args.retrieval)
        try:
            scene = make_scene(args.world, args.seed, size=tuple(args.size) if args.size else None, memory=memory,
                               kinematics=Kinematics(step_m=args.step_m, yaw_deg=args.yaw_deg),
                               config=SceneConfig(voxel_size=args.voxel), reset=False, spill_near=out)
        except (WorldSpecError, ValueError, OSError) as e:
            return fail_before_any_frame(str(e))
        try:
            scene.reset(args.seed)
        except (ValueError, OSError, RuntimeError) as e:
            scene.close()
            return fail_before_any_frame(f"the world's first frame failed: {e}")
    every = default_interval(len(actions)) if args.autosave is None else args.autosave
    saver = Autosaver(scene, out / "session", every_steps=every,
                      every_s=args.autosave_seconds if every > 0 else 0.0)
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


def remove_empty_folder(folder: Path) -> None:
    """Remove ``folder`` when it is empty; leave it (and say nothing) otherwise."""
    try:
        folder.rmdir()
    except OSError:
        pass


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
