"""Session save/load: a folder that reproduces a Scene exactly, in JSON + safetensors only (no Python object files).

Layout::

    session.json            format, world description, scene config, branches, cursor (written last)
    map.safetensors         the fused point map of the current branch (VoxelPointMap.state_dict)
    memory.safetensors      the memory bank's state, when the scene has one that can save itself
    frames/0000000.safetensors ...   every frame referenced by a branch (rgb, depth, K, c2w [, confidence])

A folder without session.json is not a session (a save that failed half-way leaves none). A save works in
hidden folders beside it (``.NAME.saving-HOST-PID-*``, ``.NAME.old-HOST-PID-*``); those a killed process of this
machine left behind are removed by the next save of the same session from this machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from recon.pointmap import VoxelPointMap
from scenes.atomic import SwapNotUndone, move_entry, replacing, signals_deferred, swap_in, write_error
from scenes.export import TRANSFORMS_NAMES
from scenes.framestore import FrameFileError, FrameStore
from scenes.scene import Branch, MemoryProvider, Scene, SceneError, scene_config_from_dict
from scenes.session_schema import MAX_JSON_BYTES, check_session_meta
from scenes.spill import process_alive, this_host
from worldmodel.checks import CheckError
from worldmodel.registry import WorldSpecError, world_from_description

FORMAT = "worldstudio-session"
VERSION = 1


class SessionError(ValueError):
    """A session cannot be saved or opened; the one-line message says why and what to do."""


def save_session(scene: Scene, folder: str | Path, progress: bool = False) -> Path:
    """Write ``scene`` to ``folder`` (created if needed). Returns the folder."""
    folder = Path(folder).expanduser()
    if scene.cursor < 0:
        raise SessionError("nothing to save yet; generate a frame first")
    saved = {fid for b in scene.branches.values() for fid in b.fids}
    fids = sorted(saved)
    if folder.exists() and not folder.is_dir():
        raise SessionError(f"cannot save to {folder}: it is a file; choose a folder")
    finish_interrupted_save(folder)  # a save of it that a killed process left half-done: then this one replaces it
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "session.json").is_file():
        raise SessionError(f"cannot save to {folder}: it holds other files; choose an empty or new folder")
    # Everything is written to a staging folder beside the target, which then replaces it: a save that
    # fails (disk full, no permission) leaves the previous session as it was.
    _remove_leftovers(folder)
    staging = _work_folder(folder, "saving")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(fids), desc="session frames", unit="frame")
        scene.store.save_to(staging, fids, progress=bar.update if bar else None)
        if bar:
            bar.close()
        with replacing(staging / "map.safetensors") as tmp:  # with the usual permissions (see replacing)
            save_file(scene.map.state_dict(), str(tmp))
        if scene.memory is not None:
            with replacing(staging / "memory.safetensors") as tmp:
                save_file(scene.memory.state_dict(), str(tmp))
        meta = {
            "format": FORMAT, "version": VERSION,
            "world": scene.model.describe(),
            "scene": dataclasses.asdict(scene.config),
            "seed": scene.seed,
            "frame_ids": fids,
            "branches": [dataclasses.asdict(b) for b in scene.branches.values()],
            "current_branch": scene.branch_name,
            "cursor": scene.cursor,
            # the retrieval choices: the memory's settings and which keyframes each generated frame was given
            "memory": None if scene.memory is None else scene.memory.describe(),
            "retrievals": {str(fid): {"fids": f, "scores": s} for fid, (f, s) in sorted(scene.retrievals.items())
                           if fid in saved},
        }
        (staging / "session.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            _swap_session_files(staging, folder)
        else:
            os.replace(staging, folder)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)  # a failed or interrupted save leaves no staging folder
        if not isinstance(e, (OSError, SafetensorError)):
            raise
        if isinstance(e, SwapNotUndone):
            raise SessionError(f"cannot save session to {folder}: {e} (the scene in memory is unchanged)") from None
        raise SessionError(f"cannot save session to {folder}: {write_error(e, folder)} (the scene in memory "
                           "and any earlier save are unchanged)") from None
    return folder


SESSION_ENTRIES = ("frames", "map.safetensors", "memory.safetensors", "session.json")  # session.json last
# The built-in worlds whose frames show the sky as depth 0. Frame files saved before they said what depth 0
# means (Frame.zero_depth_is_sky) are read with it from the world of their session.
WORLDS_WITH_SKY_AT_DEPTH_0 = ("procedural", "neural")


def _swap_session_files(staging: Path, folder: Path) -> None:
    """Replace the session's own entries in ``folder`` by those in ``staging`` (:func:`scenes.atomic.swap_in`:
    session.json leaves first and arrives last, so a half-swapped folder is no session); anything else in
    ``folder`` (a user's notes) stays. While it swaps, a mark in ``folder`` named by ``staging`` (:data:`SWAP_MARK`)
    tells a half-done swap's folder from one made since under its name."""
    mark = folder / f".{staging.name}"
    (staging / SWAP_MARK).write_text(mark.name)
    mark.touch()
    swap_in(staging, folder, list(SESSION_ENTRIES), _work_folder(folder, "old"))
    mark.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


WORK_KINDS = ("saving", "old")  # a save's staging folder, and the folder the swap moves the old entries to
# in a save's staging folder while it swaps into an existing folder: the name of the empty mark it put in that
# folder, so that a swap a killed process left half-done is finished only into that folder, not into one made
# since under its name (a user's own files; the same inode number, often)
SWAP_MARK = "swap-mark"


def _work_folder(folder: Path, kind: str) -> Path:
    """A hidden folder beside ``folder`` for a save's work: ``.NAME.KIND-HOST-PID-RANDOM`` (host and PID tell a
    later save whether the process that made it still runs)."""
    return folder.parent / f".{folder.name}.{kind}-{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_leftovers(folder: Path) -> None:
    """Remove the work folders of saves of ``folder`` whose process is gone (killed mid-save: kill -9, a power
    cut), which would otherwise hold a copy of the session's frames for good. Only while ``folder`` is a whole
    session or absent: the swap moves session.json out first and in last, so then no entry of a save is only
    in a work folder (a half-swapped folder, without session.json, is finished first: finish_interrupted_save).
    The mark a swap killed after it was done left in ``folder`` (:data:`SWAP_MARK`) goes too."""
    if folder.exists() and not (folder / "session.json").is_file():
        return
    try:
        siblings = list(folder.parent.iterdir())
    except OSError:
        return
    ours = re.compile(rf"\.{re.escape(folder.name)}\.(?:{'|'.join(WORK_KINDS)})-{this_host()}-(\d+)-[0-9a-f]{{8}}")
    for path in siblings:
        named = ours.fullmatch(path.name)
        if (named and int(named[1]) != os.getpid() and not process_alive(int(named[1])) and path.is_dir()
                and not path.is_symlink()):
            shutil.rmtree(path, ignore_errors=True)
    for mark in folder.glob(f"..{folder.name}.saving-*") if folder.is_dir() else ():  # a swap's, killed after it
        named = ours.fullmatch(mark.name[1:])
        if named and not process_alive(int(named[1])) and mark.is_file():
            mark.unlink(missing_ok=True)


def _interrupted_save(folder: Path) -> tuple[Path, list[Path]] | None:
    """The staging folder (and the folders of old entries) of a save of ``folder`` that a killed process (kill -9,
    a power cut) left half-swapped: ``folder`` has no session.json while that staging folder still holds the new
    one (it arrives last). None when there is none."""
    if (folder / "session.json").exists() or not folder.is_dir():
        return None
    try:
        siblings = list(folder.parent.iterdir())
    except OSError:
        return None
    ours = re.compile(rf"\.{re.escape(folder.name)}\.(saving|old)-{this_host()}-(\d+)-[0-9a-f]{{8}}")
    found: dict[int, dict[str, list[Path]]] = {}
    for path in siblings:
        named = ours.fullmatch(path.name)
        if named and path.is_dir() and not path.is_symlink():
            found.setdefault(int(named[2]), {"saving": [], "old": []})[named[1]].append(path)
    for pid, work in sorted(found.items()):
        staged = [p for p in work["saving"] if (p / "session.json").is_file()]
        # only a save whose swap had begun (swap_in makes its "old" folder before it moves a thing): a staging
        # folder alone is a save killed before its swap, or before it renamed itself into a new folder; it was
        # never in ``folder``, which may since hold other files
        if (pid != os.getpid() and work["old"] and not process_alive(pid) and len(staged) == 1
                and _swaps_into(staged[0], folder)):
            return staged[0], work["old"]
    return None


def _swaps_into(staging: Path, folder: Path) -> bool:
    """Whether ``staging`` was swapping into ``folder`` itself, not a folder since deleted and made again under its
    name: its :data:`SWAP_MARK` is in ``folder`` (a staging folder of a save that did not write one: true)."""
    try:
        mark = (staging / SWAP_MARK).read_text()
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return mark.startswith(".") and "/" not in mark and (folder / mark).is_file()


def finish_interrupted_save(folder: str | os.PathLike) -> bool:
    """Finish the save of ``folder`` that a killed process left half-swapped (:func:`_interrupted_save`), so that
    ``folder`` holds that save whole: the new entries still in its staging folder are moved in, after the old
    entries still in ``folder`` are moved out when the new ones had not begun to arrive (the swap moves every old
    entry out before the first new one, "frames", in; session.json arrives last). True when it finished one."""
    folder = Path(folder).expanduser()
    interrupted = _interrupted_save(folder)
    if interrupted is None:
        return False
    found, retired = interrupted
    aside, staging = _work_folder(folder, "old"), _work_folder(folder, "saving")
    with signals_deferred():
        try:
            aside.mkdir()
            # claimed first (a rename: one process wins): another process finishing it at the same time moved
            # the entries this one had just moved in aside as old ones, and removed them. Killed after this,
            # this process's folders are a save half-swapped in turn, finished the same way.
            try:
                os.rename(found, staging)
            except FileNotFoundError:  # another process took it
                aside.rmdir()
                return (folder / "session.json").is_file()
            found = staging
            arrived = not (staging / SESSION_ENTRIES[0]).exists()  # the new entries had begun to arrive
            for rel in SESSION_ENTRIES:
                if not arrived and ((folder / rel).exists() or (folder / rel).is_symlink()):
                    move_entry(folder / rel, aside / rel)  # an old entry the swap had not moved out yet
                if (staging / rel).exists():
                    move_entry(staging / rel, folder / rel)  # (session.json last)
        except OSError as e:
            raise SessionError(f"{folder}: cannot finish the save that a killed process left half-done "
                               f"({write_error(e, folder)}); its new entries are in {found}") from None
    for work in (aside, staging, *retired):
        shutil.rmtree(work, ignore_errors=True)
    for mark in folder.glob(f"..{folder.name}.saving-*"):  # the swap's mark (SWAP_MARK)
        mark.unlink(missing_ok=True)
    print(f"note: {folder}: finished the save that a killed process had left half-done", file=sys.stderr)
    return True


def _fail(folder: Path, why: str) -> SessionError:
    return SessionError(f"{folder} is not a usable WorldStudio session: {why}")


def is_session_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a session.json (a saved session, whole or not: opening it says which), or is a
    session whose save a killed process left half-done (opening it finishes that save)."""
    folder = Path(folder).expanduser()
    return (folder / "session.json").is_file() or _interrupted_save(folder) is not None


# what only a run writes beside its session/ (its bundle, less the nerfstudio export a recording may hold too)
RUN_EXPORTS = tuple(name for name in Scene.BUNDLE_NAMES if name not in ("session", *TRANSFORMS_NAMES))


def session_meant_by(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(the session folder, why) when ``path`` points at a saved session without being its folder: a run's --out
    folder (its ``session/`` beside the run's exports, :data:`RUN_EXPORTS`, or alone: a run killed before them) or
    a session's session.json file; None otherwise (a session folder itself, a recording that holds a session saved
    in it, or nothing of a session). ``why`` completes "PATH is ...", e.g. "a run's folder; its session is in
    RUN/session"."""
    from worldmodel.recordings import detect_format

    path = Path(path).expanduser()
    if path.name == "session.json" and path.is_file() and is_session_folder(path.parent):
        return path.parent, f"the session file of {path.parent}"
    if not path.is_dir() or is_session_folder(path) or not is_session_folder(path / "session"):
        return None
    if not any((path / name).exists() for name in RUN_EXPORTS):
        try:
            detect_format(path)
            return None  # a recording, with a session saved in it: the recording is what is meant
        except ValueError:
            pass
    return path / "session", f"a run's folder; its session is in {path / 'session'}"


def read_session_meta(folder: str | Path) -> dict:
    """The session.json of ``folder``, read and every value checked (:func:`check_session_meta`); SessionError
    naming the folder and the bad value."""
    folder = Path(folder).expanduser()
    path = folder / "session.json"
    meant = session_meant_by(folder)
    if meant is not None:
        raise SessionError(f"{folder} is {meant[1]}: pass {meant[0]}")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "no such folder"
        raise SessionError(f"{folder}: {what}; pick the folder that contains session.json")
    if not path.is_file() and not finish_interrupted_save(folder):
        raise _fail(folder, "session.json is missing; pick the folder that contains session.json")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise _fail(folder, f"session.json is larger than {MAX_JSON_BYTES >> 20} MB")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, a 5000-digit number
        why = "it is nested too deeply" if isinstance(e, RecursionError) else str(e)[:80]
        raise _fail(folder, f"session.json is unreadable ({why})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(folder, "session.json is not a WorldStudio session file")
    if meta.get("version") != VERSION:
        raise _fail(folder, f"session version {meta.get('version')} is not supported (this build reads {VERSION})")
    try:
        check_session_meta(meta)  # every value, before a caller builds anything from it (its memory, say)
    except CheckError as e:
        raise _fail(folder, str(e)) from None
    return meta


def load_session(folder: str | Path, memory: MemoryProvider | None = None, ram_frames: int | None = None,
                 spill_near: str | Path | None = None, meta: dict | None = None) -> Scene:
    """Open a saved session: same world, branches, cursor and the identical fused map.

    memory: the memory to restore into (from memory.safetensors, else rebuilt from the frames); None: none.
    spill_near: where the scene's own frame files go (default: beside the session folder).
    meta: the folder's session.json as :func:`read_session_meta` returned it (read here when None)."""
    folder = Path(folder).expanduser()
    meta = read_session_meta(folder) if meta is None else meta
    try:
        checked = check_session_meta(meta)
        config = scene_config_from_dict(checked.scene)
        if ram_frames is not None:
            config.ram_frames = int(ram_frames)
        model = world_from_description(meta["world"])
    except (CheckError, WorldSpecError) as e:
        raise _fail(folder, str(e)) from None
    except (KeyError, TypeError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        why = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise _fail(folder, f"its world description is unusable ({why})") from None
    fids = checked.frame_ids
    branches = {name: Branch(name, bf, parent, fork, handed) for name, bf, parent, fork, handed in checked.branches}
    try:
        store = FrameStore.open_existing(folder, fids, ram_frames=config.ram_frames,
                                         spill_near=spill_near or folder.parent,
                                         zero_depth_is_sky_when_unsaid=model.name in WORLDS_WITH_SKY_AT_DEPTH_0)
    except FrameFileError as e:
        raise SessionError(str(e)) from None
    try:
        try:
            scene = Scene(model, config, memory=memory, store=store)
        except SceneError as e:  # the world it names does not keep the contract (a plugin)
            raise _fail(folder, str(e)) from None
        try:
            map_state = load_file(str(folder / "map.safetensors"))
        except FileNotFoundError:
            raise _fail(folder, "map.safetensors is missing") from None
        except (SafetensorError, ValueError, OSError) as e:
            raise _fail(folder, f"map.safetensors is corrupt ({str(e).splitlines()[0][:100]})") from None
        lacking = {c for c in VoxelPointMap.COLUMNS if c not in map_state}
        if lacking and lacking <= set(VoxelPointMap.ADDED_COLUMNS):
            map_state = None  # an older build's map: rebuilt from the session's frames
        memory_state = saved_memory_state(folder, set(fids)) if memory is not None else None
        try:
            scene.restore(branches, checked.current_branch, checked.cursor, seed=checked.seed, map_state=map_state,
                          memory_state=memory_state, retrievals=checked.retrievals)
        except FrameFileError as e:  # a frame file needed to rebuild the memory
            raise SessionError(str(e)) from None
        except SceneError as e:
            raise _fail(folder, str(e)) from None
        except ValueError as e:
            raise _fail(folder, f"map.safetensors is corrupt ({str(e).splitlines()[0][:100]})") from None
        try:
            scene.frame_at(checked.cursor)  # read one frame now: a corrupt file is reported at open, not at a step
        except FrameFileError as e:
            raise SessionError(str(e)) from None
    except BaseException:
        store.close()  # the private copy of the frames goes with the failed load
        raise
    return scene


def saved_memory_state(folder: Path, known: set[int]) -> dict | None:
    """memory.safetensors when present and readable and the frames it names are frames of the session; else None
    (Scene.restore then rebuilds the memory from the frames: memory is derived from them)."""
    path = folder / "memory.safetensors"
    if not path.is_file():
        return None
    try:
        state = load_file(str(path))
        named = {fid for key in ("fid", "observed_pending_fid")  # keyframes, observed frames not fused yet
                 for fid in np.asarray(state.get(key, [])).reshape(-1).tolist()}
        if not named <= known:  # (the memory reads its named frames later, not at open)
            return None  # it names frames that are not in the session
        return state
    except (SafetensorError, ValueError, OSError):
        return None


def saved_memory_config(meta: dict) -> dict | None:
    """The memory settings a session was saved with (``GeometricMemory.describe()``) from its
    :func:`read_session_meta`, or None."""
    mem = meta.get("memory")
    return mem if isinstance(mem, dict) else None
