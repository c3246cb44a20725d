"""Nothing made is lost on a full disk: fault injection (writes raise ENOSPC), so no root and no skips."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from safetensors import SafetensorError

import scenes.framestore as framestore
import scenes.session as session_mod
from scenes.atomic import WriteError
from scenes.export import ExportError
from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError, load_session, save_session
from worldmodel.actions import parse_actions
from worldmodel.registry import create_world

SPILL = ".worldstudio-frames-"  # frames of an open session spill beside it (scenes.spill)


def tiny_scene(ram_frames: int = 2, steps: int = 3) -> Scene:
    scene = Scene(create_world("procedural", width=64, height=48), SceneConfig(voxel_size=0.3, ram_frames=ram_frames))
    scene.reset(0)
    scene.run(parse_actions("(FN)" * steps))
    return scene


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_enospc(*args, **kwargs):  # what safetensors really raises on a full disk
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')


def state(scene: Scene):
    return (scene.length, scene.cursor, scene.branch_name, sorted(scene.branches), len(scene.map),
            scene.current.c2w.copy())


@pytest.mark.parametrize("failure", [enospc, safetensors_enospc])
def test_full_disk_step_loses_no_frame_and_leaves_the_scene_as_it_was(monkeypatch, tmp_path, failure):
    scene = tiny_scene()
    before = state(scene)
    monkeypatch.setattr(framestore, "save_file", failure)
    with pytest.raises(WriteError, match="disk full: free space in"):
        scene.step(parse_actions("(FN)")[0])
    after = state(scene)
    assert after[:5] == before[:5] and np.array_equal(after[5], before[5])
    # a step from an earlier frame (a fork) that fails also leaves branches and map as they were
    scene.seek(1)
    with pytest.raises(WriteError):
        scene.step(parse_actions("(RN)")[0])
    assert sorted(scene.branches) == ["main"] and scene.branch_name == "main" and scene.cursor == 1
    assert len(scene.map) == before[4]
    monkeypatch.undo()
    scene.seek(scene.length - 1)
    scene.run(parse_actions("(FN)(FN)"))  # space freed: every frame is still there
    assert [f.index for f in scene.iter_frames()] == list(range(6))
    save_session(scene, tmp_path / "s")
    assert load_session(tmp_path / "s").length == 6
    assert not list(scene.store.root.glob("frames/*.tmp*"))
    scene.close()


def test_a_failed_fork_puts_the_memory_back_without_reading_a_frame(monkeypatch):
    """A fork whose new frame cannot be written (full disk, frames spilling: 2 in RAM) raises the write error
    and leaves the memory as it was: keyframes, and the observed frames it names by store id (the undo reads no
    frame, so it cannot fail on the same full disk)."""
    from memory import GeometricMemory

    scene = Scene(create_world("procedural", width=64, height=48), SceneConfig(voxel_size=0.3, ram_frames=2),
                  memory=GeometricMemory())
    scene.reset(0)
    scene.run(parse_actions("(FN)" * 3))
    before = scene.memory.state_dict()
    assert len(before["observed_pending_fid"]) == 4 and len(scene.memory) > 0
    monkeypatch.setattr(framestore, "save_file", enospc)
    scene.seek(1)
    with pytest.raises(WriteError, match="disk full: free space in"):
        scene.step(parse_actions("(RN)")[0])
    after = scene.memory.state_dict()
    assert sorted(after) == sorted(before) and all(np.array_equal(after[k], before[k]) for k in before)
    monkeypatch.undo()
    scene.step(parse_actions("(RN)")[0])  # space freed: the fork goes through
    assert scene.branch_name != "main" and len(scene.memory) > 0
    scene.close()


def test_failed_mp4_keeps_the_good_one(monkeypatch, tmp_path):
    import imageio_ffmpeg

    scene = tiny_scene()
    good = scene.export_mp4(tmp_path / "frames.mp4")
    good_bytes = good.read_bytes()
    real = imageio_ffmpeg.write_frames

    def cut_short(path, *args, **kwargs):  # ffmpeg on a nearly full disk: it ends, the file is cut short
        gen = real(path, *args, **kwargs)

        def wrapper():
            gen.send(None)
            yield
            try:
                while True:
                    gen.send((yield))
            except GeneratorExit:
                gen.close()
                with open(path, "r+b") as f:
                    f.truncate(3000)
        return wrapper()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", cut_short)
    with pytest.raises(ExportError, match="incomplete"):
        scene.export_mp4(tmp_path / "frames.mp4")
    assert (tmp_path / "frames.mp4").read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(SPILL)) == ["frames.mp4"]
    # export_all: the failed MP4 does not stop the session or the other files
    with pytest.raises(ExportError, match="mp4:.*written: session, ply, glb, trajectory, transforms"):
        scene.export_all(tmp_path / "out")
    assert load_session(tmp_path / "out" / "session").length == 4
    assert not (tmp_path / "out" / "frames.mp4").exists()
    scene.close()


@pytest.mark.parametrize("failure", [enospc, safetensors_enospc])
def test_full_disk_session_save_is_one_line_and_keeps_the_old_save(monkeypatch, tmp_path, failure):
    scene = tiny_scene()
    save_session(scene, tmp_path / "s")
    old = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    scene.run(parse_actions("(FN)"))
    monkeypatch.setattr(session_mod, "save_file", failure)
    with pytest.raises(SessionError) as e:
        save_session(scene, tmp_path / "s")
    assert "disk full: free space in" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(SPILL)) == ["s"]  # no .s.saving-* holding the space
    now = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert now == old
    scene.close()


def test_saving_over_a_session_keeps_the_users_other_files(tmp_path):
    scene = tiny_scene()
    folder = tmp_path / "s"
    save_session(scene, folder)
    (folder / "notes.txt").write_text("my notes")
    (folder / "renders").mkdir()
    (folder / "renders" / "a.png").write_bytes(b"png")
    scene.run(parse_actions("(FN)"))
    save_session(scene, folder)
    assert (folder / "notes.txt").read_text() == "my notes" and (folder / "renders" / "a.png").is_file()
    assert load_session(folder).length == 5
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(SPILL)) == ["s"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(SessionError, match="holds other files"):
        save_session(scene, other)
    assert sorted(p.name for p in other.iterdir() if not p.name.startswith(SPILL)) == ["notes.txt"]
    scene.close()


def test_a_save_removes_what_a_killed_save_left_behind(tmp_path):
    """A save killed with SIGKILL leaves its hidden work folders (a copy of the frames) beside the session; the
    next save of that session removes those of processes that are gone, and no other's."""
    import os
    import subprocess
    import sys

    from scenes.spill import this_host

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    alive = os.getppid()  # a process that still runs: its save may be under way
    scene = tiny_scene()
    folder = tmp_path / "s"
    host = this_host()
    left = [tmp_path / f".s.saving-{host}-{gone}-0badf00d", tmp_path / f".s.old-{host}-{gone}-0badf00d"]
    kept = [tmp_path / f".s.saving-{host}-{alive}-0badf00d", tmp_path / f".t.saving-{host}-{gone}-0badf00d",
            tmp_path / f".s.saving-0badf00d-{gone}-0badf00d",  # a running save; another session's; another host's
            tmp_path / ".s.saving-0badf00d", tmp_path / f".s.old-{host}-{gone}-my-backup"]  # not a save's names
    for path in left + kept:
        (path / "frames").mkdir(parents=True)
        (path / "frames" / "0000000.safetensors").write_bytes(b"frame")
    save_session(scene, folder)  # the first save (no session there yet) clears them too
    assert not any(p.exists() for p in left) and all(p.is_dir() for p in kept)
    assert load_session(folder).length == 4
    # a half-swapped folder (killed between the moves: no session.json) keeps every work folder for recovery
    for path in left:
        (path / "frames").mkdir(parents=True)
    (folder / "session.json").unlink()
    with pytest.raises(SessionError):
        save_session(scene, folder)
    assert all(p.is_dir() for p in left)
    scene.close()


def test_long_walks_and_exports_hold_a_bounded_number_of_frames(tmp_path):
    import gc
    import weakref

    from scenes.export import write_transforms_json

    scene = Scene(create_world("procedural", width=32, height=24), SceneConfig(voxel_size=0.5, ram_frames=2))
    scene.reset(0)
    made = []
    real_step = scene.model.step

    def step(action, context):
        frame = real_step(action, context)
        made.append(weakref.ref(frame))
        return frame

    scene.model.step = step
    last = scene.run(parse_actions("(FN)" * 30))
    gc.collect()
    alive = sum(r() is not None for r in made)
    assert last is not None and last.frame.index == 30
    assert alive <= scene.config.ram_frames + 1, f"{alive} of 30 frames still in RAM after run()"

    peak = []

    def frames():
        for f in scene.iter_frames():
            gc.collect()
            peak.append(sum(r() is not None for r in made))
            yield f

    write_transforms_json(tmp_path / "ds", frames())
    assert max(peak) <= scene.config.ram_frames + 2, f"transforms export held {max(peak)} frames at once"
    scene.close()


def test_a_frame_store_collected_while_a_spill_folder_is_made_does_not_hang(tmp_path):
    """The garbage collector can run a FrameStore's __del__ (which releases its spill folder) inside make_spill_dir
    while that thread holds the spill registry's lock: a suite run hung there for good (load_session ->
    FrameStore -> make_spill_dir -> a collected FrameStore -> release). The lock is taken again, not waited on."""
    import scenes.spill as spill

    folder = spill.make_spill_dir(tmp_path)
    with spill._lock:  # as make_spill_dir holds it when the collector runs a __del__
        assert spill._lock.acquire(timeout=2)  # (a plain Lock: False after 2 s; the release below hung)
        spill._lock.release()
        spill.release(folder)
    assert not folder.exists()
