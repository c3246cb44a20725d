"""`python launch.py run`: explore a world without a browser and write every export.

The scene has geometry-aware memory (as in the studio) unless ``--no-memory``; the session written to
``OUT/session`` records the retrieval settings and which keyframes each frame was given. Steps are streamed
(RAM stays bounded), the session is autosaved every N steps / T seconds, a failure part-way saves what was
made, and ``--resume DIR`` goes on from a saved session (with the memory settings it was saved with)."""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from memory.bank import MemoryConfig
from scenes.atomic import WriteError, remove_empty_folder, writable_folder
from scenes.autosave import DEFAULT_EVERY_S, Autosaver, default_interval
from scenes.export import ExportError
from scenes.factory import (START_FROM_A_SESSION_NOTE, command_kinematics, learned_weights, make_scene,
                            note_options_the_session_overrides, settings_not_kept, start_learned_from)
from scenes.scene import Scene, SceneConfig
from scenes.session import (SessionError, read_session_meta, save_session, saved_memory_config,
                            session_meant_by)
from scenes.spill import install_signal_handlers
from worldmodel.actions import ActionParseError, generated_walk, parse_actions
from worldmodel.registry import WorldSpecError
from worldmodel.replay import ReplayWorld


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(args) -> int:
    actions = None
    if args.actions is not None:
        try:
            actions = parse_actions(args.actions)
        except ActionParseError as e:
            return fail(str(e))
    elif args.steps < 1:
        return fail("--steps must be at least 1")
    out = Path(args.out).expanduser()
    out_existed = out.exists()
    if not args.resume and (out / "session" / "session.json").exists():  # a rerun must not overwrite a long walk
        return fail(f"{out / 'session'} holds a saved session; add --resume {shlex.quote(str(out / 'session'))} to "
                    "go on with it, or choose another --out")
    resume = Path(args.resume).expanduser() if args.resume else None
    meant = None if resume is None else session_meant_by(resume)
    if meant is not None:
        return fail(f"{resume} is {meant[1]}: pass --resume {shlex.quote(str(meant[0]))}")
    why_not = _why_not_write_into(out, args)
    if why_not:
        return fail(why_not)

    def fail_before_any_frame(message: str) -> int:
        if not out_existed:  # a world that could not open leaves no empty --out folder behind
            remove_empty_folder(out)
        return fail(message)

    try:  # every export goes here: found out now, not after the whole walk
        writable_folder(out)
    except WriteError as e:
        return fail_before_any_frame(f"{e} (--out)")
    with _only_run_in(out) as alone:
        if not alone:  # two runs saving one session break each other's saves
            return fail(f"another `launch.py run` is writing to {out}; wait for it to end, or choose another --out")
        return _walk(args, out, actions, fail_before_any_frame)


def _why_not_write_into(out: Path, args) -> str | None:
    """Why the bundle must not be written into ``out`` (None: it may): ``out`` is, or lies inside, the recording
    the run reads (``replay:``, a resumed session's recording, or ``--start-from``; a run wrote its exports over the
    frames it was playing), or it already holds files of the bundle (another run's, or the user's own scene.ply)
    and is not the folder of the session resumed."""
    from worldmodel.replay import parse_replay_arg

    world = args.world
    if args.resume:  # the session's own world: a resumed replay reads its recording again
        try:
            saved = read_session_meta(args.resume).get("world")
            world = f"replay:{saved['path']}" if saved.get("kind") == "replay" else ""
        except (SessionError, AttributeError, KeyError, TypeError):
            world = ""  # the resume's own opening says what is wrong with the session
    sources = [world.partition(":")[2]] if world.strip().lower().startswith("replay:") else []
    sources += [args.start_from] if args.start_from and not args.resume else []
    target = out.expanduser().resolve()
    for source in sources:
        try:
            path = parse_replay_arg(source)[0]
        except ValueError:
            continue  # the world's own opening says what is wrong with it
        if not path.strip():
            continue  # "replay:" names no folder (not the current one): the world's opening says so
        folder = Path(path).expanduser().resolve()
        if target == folder or folder in target.parents:
            return f"--out {out} is inside {folder}, which the run reads from; choose a folder outside it"
        if folder.is_file() and target == folder.parent:  # (the bundle would land among the files it reads)
            return f"--out {out} holds {folder.name}, which the run reads from; choose a folder beside it"
    if not out.is_dir() or (args.resume and (out / "session").resolve() == Path(args.resume).expanduser().resolve()):
        return None  # (a resume writes its exports again where its session is)
    held = [name for name in Scene.BUNDLE_NAMES if (out / name).exists()]
    if held:
        return (f"{out} already holds {', '.join(held[:4])}{'...' if len(held) > 4 else ''}, which the run would "
                "overwrite; choose an empty --out, or move those away")
    return None


def _walk(args, out: Path, actions: list | None, fail_before_any_frame: Callable[[str], int]) -> int:
    """The run itself, once ``out`` is checked and this process alone writes there."""
    install_signal_handlers()  # SIGTERM: save what was made, then clean up
    if args.resume:
        try:  # the session's own world, settings and memory (or none); frames spill beside --out
            meta = read_session_meta(args.resume)
            had_memory = saved_memory_config(meta) is not None
            if args.no_memory and had_memory:
                return fail_before_any_frame(f"{args.resume} was made with memory; resume it without --no-memory")
            scene = make_scene(session=args.resume, memory=had_memory, spill_near=out, session_meta=meta)
        except SessionError as e:
            return fail_before_any_frame(str(e))
        note_options_the_session_overrides(args, scene, "--resume goes on with the world and settings the "
                                           "session was made with")
        if actions is None:  # the walk of the session's own seed, as the first run made it
            actions = generated_walk(args.walk, args.steps, scene.seed)
        total, done = len(actions), steps_made(scene)
        mismatch = first_different_step(scene, actions)
        if mismatch is not None:
            scene.close()
            return fail(f"{args.resume} was made with other actions (step {mismatch + 1} differs); resume with the "
                        "--actions, or --steps, --walk and --seed, of the run that made it")
        scene.seek(scene.length - 1)
        if done >= len(actions):
            held = (f"all {done} steps" if done == len(actions) else f"{done} steps, more than the {len(actions)} "
                    "asked")
            print(f"{args.resume} already holds {held}; writing the exports")
        actions = actions[done:]
    else:
        memory = False if args.no_memory else MemoryConfig(retrieval_rule=args.retrieval)
        kinematics = command_kinematics(args)
        config = None if args.voxel is None else SceneConfig(voxel_size=args.voxel)  # None: fitted to the world
        if args.start_from is not None:  # the learned model goes on from a frame of a session or recording
            try:
                scene = start_learned_from(args.start_from, args.start_frame, weights=learned_weights(args.world),
                                           seed=args.seed, kinematics=kinematics, config=config, memory=memory,
                                           spill_near=out, progress=True)
            except (SessionError, ValueError, OSError) as e:  # WorldSpecError, WeightsError are ValueErrors
                return fail_before_any_frame(f"cannot start from {args.start_from}: {e}")
            note_options_the_session_overrides(args, scene, START_FROM_A_SESSION_NOTE)
        else:
            try:
                scene = make_scene(args.world, args.seed, size=tuple(args.size) if args.size else None,
                                   memory=memory, kinematics=kinematics, config=config, reset=False, spill_near=out)
            except (WorldSpecError, ValueError, OSError) as e:
                return fail_before_any_frame(str(e))
            try:
                scene.reset(args.seed)
            except (ValueError, OSError, RuntimeError) as e:
                scene.close()
                return fail_before_any_frame(f"the world's first frame failed: {e}")
            if not isinstance(scene.model, ReplayWorld):  # (a recording says it of its size itself, below)
                note = settings_not_kept(scene, tuple(args.size) if args.size else None, kinematics)
                if note is not None:
                    print(f"note: {note}", file=sys.stderr)
        if actions is None:  # the walk of the scene's seed (a session started from keeps its own)
            actions = generated_walk(args.walk, args.steps, scene.seed)
        total = len(actions)
    if isinstance(scene.model, ReplayWorld):  # a recording: what the reader noticed, and where it ends
        actions = _within_the_recording(scene.model, scene.length - 1, actions, resize=args.size is not None)
    every = default_interval(total) if args.autosave is None else args.autosave  # the whole walk's, resumed too
    every_s = args.autosave_seconds if args.autosave_seconds is not None else DEFAULT_EVERY_S if every > 0 else 0.0
    saver = Autosaver(scene, out / "session", every_steps=every, every_s=every_s)
    try:
        if saver.enabled:
            print(f"autosaving the session to {out / 'session'} every {every or '-'} steps / {every_s:g} s",
                  file=sys.stderr)
        failed_saves = 0
        try:
            for _ in scene.steps(actions, progress=True):
                try:
                    if saver.step_done():  # a save that worked: the next failure is a first one again
                        failed_saves = 0
                except (SessionError, OSError) as save_error:  # a full disk may clear: one retry, then stop
                    failed_saves += 1
                    if failed_saves > 1:
                        raise AutosaveFailed(steps_made(scene), save_error) from None
                    print(f"warning: autosave after step {steps_made(scene)} failed ({save_error}); going on, the next "
                          "autosave (an interval later) tries again", file=sys.stderr)
        except (Exception, KeyboardInterrupt, SystemExit) as e:  # noqa: BLE001 - keep what was made
            return _save_after_failure(scene, out, e)
        try:
            written = scene.export_all(out, progress=True, video=not args.no_video)
        except (ExportError, SessionError, OSError) as e:
            return fail(f"{e}{_earlier_save(out, scene.length)}")
        pts = len(scene.map)
        print(f"{scene.length} frames, {pts:,} map points -> {out}")
        if not pts and (scene.current.depth > 0).any():
            print(f"warning: the map is empty: no frame had depth within the fuse range (0..{scene.config.max_depth:g} "
                  "m); check the recording's depth scale (depth_scale in its worldstudio.json)", file=sys.stderr)
        elif not pts:
            print("warning: the map is empty: the frames have no valid depth (all 0, NaN or negative)",
                  file=sys.stderr)
        for kind, path in written.items():
            print(f"  {kind:11s} {path}")
        return 0
    finally:
        scene.close()


@contextmanager
def _only_run_in(out: Path) -> Iterator[bool]:
    """Hold an exclusive lock on the folder ``out`` itself (nothing is written; released when the process ends,
    however it ends) for the block; yields False when another process holds it."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _within_the_recording(world: ReplayWorld, done: int, actions: list, resize: bool) -> list:
    """Print the recording's notes (frames skipped, intrinsics assumed...) and cut ``actions`` (those after
    step ``done``) at its last frame: past it a replay only repeats that frame."""
    for note in world.sequence.notes:
        print(f"note: {note}", file=sys.stderr)
    if resize:
        print("note: --size does not apply to a recording: its frames keep their own size", file=sys.stderr)
    left = max(0, len(world) - 1 - done)
    if len(actions) > left:
        print(f"note: the recording has {len(world)} frames: the walk stops at its end, after {done + left} steps "
              f"(not {done + len(actions)})", file=sys.stderr)
        return actions[:left]
    return actions


class AutosaveFailed(RuntimeError):
    """Two autosaves in a row failed: the walk stops (its frames are saved once more if the disk allows)."""

    def __init__(self, step: int, error: BaseException):
        super().__init__(f"autosave failed twice, the last after step {step} ({str(error).splitlines()[0]})")


def steps_made(scene: Scene) -> int:
    """Steps the world made on the current branch: its frames after the one it went on from (frames handed over
    before that one, ``Branch.handed``, are no steps)."""
    return scene.length - 1 - scene.branch.handed


def first_different_step(scene: Scene, actions: list) -> int | None:
    """Index of the first of ``actions`` that the session's own frames were not made by (every step is compared;
    a frame's action is read from its file's header); None when they agree."""
    first = scene.branch.handed  # the frame the world went on from: the steps follow it
    fids = scene.branch.fids
    for i in range(min(steps_made(scene), len(actions))):
        if scene.store.action(fids[first + i + 1]) != actions[i]:
            return i
    return None


def _earlier_save(out: Path, frames_made: int | None = None) -> str:
    """When the session of this run could not be saved (a full disk): what ``out/session`` still holds, an earlier
    save (saves swap in whole), and how to go on from it, as a clause to add to the error; "" when it holds none
    (or all ``frames_made``)."""
    try:  # the frames of its current branch, the one the run went on with (frame_ids: every branch's)
        meta = read_session_meta(out / "session")
        branches = {branch["name"]: branch for branch in meta["branches"]}
        earlier_frames = len(branches[meta["current_branch"]]["fids"])
    except (SessionError, KeyError, TypeError):
        return ""
    if frames_made is not None and earlier_frames >= frames_made:
        return ""
    made = "" if frames_made is None else f", not the {frames_made} made (the other exports may hold them)"
    return (f"; the session in {out / 'session'} holds the {earlier_frames} frames of an earlier save{made}: run the "
            f"same command with --resume {shlex.quote(str(out / 'session'))} to go on from it")


def _save_after_failure(scene: Scene, out: Path, e: BaseException) -> int:
    """A walk stopped part-way: write the session made so far and say how to go on."""
    if isinstance(e, KeyboardInterrupt):
        why = "interrupted"
    elif isinstance(e, SystemExit):
        why = "stopped by a signal"
    elif isinstance(e, AutosaveFailed):
        why = str(e)
    else:
        why = f"step {steps_made(scene) + 1} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    try:
        folder = save_session(scene, out / "session")
    except (SessionError, OSError) as save_error:
        return fail(f"{why}; the frames made so far could not be saved either ({save_error}){_earlier_save(out)}")
    return fail(f"{why}; the {scene.length} frames made so far are saved in {folder}; "
                f"run the same command with --resume {shlex.quote(str(folder))} to go on")
