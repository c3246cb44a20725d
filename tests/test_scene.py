"""Scene orchestration, history and branches, sessions, and the headless `launch.py run`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.pointmap import VoxelPointMap
from scenes.export import read_ply, read_tum_trajectory
from scenes.scene import Scene, SceneConfig, SceneError, fuse_frame
from scenes.session import SESSION_ENTRIES, SessionError, load_session, save_session
from worldmodel.actions import Action, TargetPose, parse_actions
from worldmodel.registry import WorldSpecError, create_world

ROOT = Path(__file__).resolve().parents[1]

SPILL = ".worldstudio-frames-"  # frames of an open session spill beside it (scenes.spill)


def make_scene(ram_frames: int = 256, seed: int = 5) -> Scene:
    scene = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.2, ram_frames=ram_frames))
    scene.reset(seed)
    return scene


def same_map(a: VoxelPointMap, b: VoxelPointMap) -> bool:
    return len(a) == len(b) and all(np.array_equal(getattr(a, c)[: len(a)], getattr(b, c)[: len(b)])
                                    for c in VoxelPointMap.COLUMNS)


def test_step_fuses_and_reports_timings():
    scene = make_scene()
    n0 = len(scene.map)
    r = scene.step(Action("F", "N"))
    assert r.frame.index == 1 and scene.length == 2 and scene.cursor == 1
    assert len(scene.map) > n0 and r.fused.points_in > 0
    assert r.model_ms > 0 and r.fuse_ms > 0
    assert np.linalg.norm(r.frame.position[[0, 2]] - scene.frame_at(0).position[[0, 2]]) == pytest.approx(0.5, abs=1e-6)


def test_carving_follows_the_depth_source():
    assert not make_scene().map.carve  # ray-cast depth is exact
    forced = Scene(create_world("procedural", width=32, height=24), SceneConfig(carve=True))
    forced.reset(0)
    assert forced.map.carve


def test_same_seed_same_frames_and_map():
    walks = []
    for _ in range(2):
        s = make_scene(seed=11)
        s.run(parse_actions("(FN)(fLL)(FR)(BN)"))
        walks.append(s)
    a, b = walks
    for fa, fb in zip(a.iter_frames(), b.iter_frames()):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
    assert same_map(a.map, b.map)


def test_a_world_handed_the_frames_before_it_remembers_them_as_its_own():
    """reset(prelude=): the frames given before the model's first frame are the branch's first frames, fused and
    remembered as if the world had made them: the same map and keyframes as the walk they came from."""
    from memory.bank import GeometricMemory

    walked = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.2),
                   memory=GeometricMemory())
    walked.reset(3)
    walked.run(parse_actions("(FN)(fLL)(FL)(FN)(SR)"))
    handed = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.2),
                   memory=GeometricMemory())
    first = handed.reset(3, start=walked.current.c2w, prelude=walked.iter_frames(upto=walked.cursor - 1))
    assert first.index == 5 and handed.length == 6 and handed.cursor == 5
    for a, b in zip(walked.iter_frames(), handed.iter_frames()):
        assert a.index == b.index and np.array_equal(a.rgb, b.rgb) and np.allclose(a.c2w, b.c2w)
    assert same_map(walked.map, handed.map)
    assert np.array_equal(walked.memory.frame_indices, handed.memory.frame_indices)
    assert np.allclose(walked.memory.poses, handed.memory.poses)
    handed.step(Action("F", "N"))  # and it goes on from its first frame
    assert handed.length == 7 and handed.current.index == 6
    # a scene can be handed its own frames (they are read as the reset goes); one that cannot be read half-way
    # leaves it empty, not with half a map
    handed.reset(3, start=walked.current.c2w, prelude=walked.iter_frames(upto=walked.cursor - 1))
    handed.reset(3, start=handed.current.c2w, prelude=handed.iter_frames(upto=handed.cursor - 1))
    assert handed.length == 6 and same_map(walked.map, handed.map)

    def unreadable():
        yield from walked.iter_frames(upto=2)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        handed.reset(3, prelude=unreadable())
    assert handed.length == 0 and len(handed.map) == 0 and len(handed.memory) == 0
    # a frame of another size is refused in one line, and the scene is left empty (not half-made)
    other = create_world("procedural", width=48, height=36).reset(3)
    with pytest.raises(SceneError, match="48x36, its frames are 96x72: resize"):
        handed.reset(3, prelude=[other])
    assert handed.length == 0 and len(handed.map) == 0 and len(handed.memory) == 0


def test_frames_spill_to_disk_and_read_back_identical():
    scene = make_scene(ram_frames=3)
    scene.run(parse_actions("(FN)" * 8))
    assert scene.store.ram_bytes <= 3 * (96 * 72 * 3 + 96 * 72 * 4)
    ref = make_scene(ram_frames=100)
    ref.run(parse_actions("(FN)" * 8))
    for fa, fb in zip(scene.iter_frames(), ref.iter_frames()):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.c2w, fb.c2w) and fa.action == fb.action


def test_seek_shows_the_past_and_stepping_forks_a_branch():
    scene = make_scene()
    scene.run(parse_actions("(FN)(FN)(FN)(FL)(FL)"))
    full = len(scene.map_points()[0])
    scene.seek(2)
    assert len(scene.map_points()[0]) < full
    import tempfile

    import trimesh

    with tempfile.TemporaryDirectory() as tmp:  # the GLB shows the scene as at the cursor: cameras, points
        glb = trimesh.load(scene.export_glb(Path(tmp) / "s.glb"))
        drawn = np.concatenate([g.vertices for g in glb.geometry.values() if isinstance(g, trimesh.path.Path3D)])
        centres = scene.poses()[:, :3, 3]
        near = [np.min(np.linalg.norm(drawn - c, axis=1)) < 1e-5 for c in centres]
        assert near == [True, True, True, False, False, False], near
    r = scene.step(Action("B", "R"))
    assert r.forked_from == "main" and scene.branch_name != "main"
    assert scene.length == 4 and scene.branches["main"].fids[:3] == scene.branch.fids[:3]
    # the rebuilt map is exactly the map of the new branch's frames fused from scratch
    ref = VoxelPointMap(scene.config.voxel_size, scene.config.max_depth)
    for f in scene.iter_frames():
        fuse_frame(ref, f, scene.config.fuse_stride)
    assert same_map(scene.map, ref)
    forked = scene.branch_name
    scene.switch_branch("main")
    assert scene.length == 6 and scene.cursor == 5
    scene.discard_branch(forked)
    assert list(scene.branches) == ["main"]
    with pytest.raises(SceneError, match="current"):
        scene.discard_branch("main")
    with pytest.raises(SceneError, match="no branch"):
        scene.switch_branch("nope")


def test_session_roundtrip_reproduces_map_and_continues(tmp_path):
    scene = make_scene()
    scene.run(parse_actions("(FN)(FN)(fLN)(FL)"))
    scene.seek(2)
    scene.step(TargetPose(scene.frame_at(1).c2w))
    save_session(scene, tmp_path / "s")
    loaded = load_session(tmp_path / "s")
    assert same_map(scene.map, loaded.map)
    assert loaded.branch_name == scene.branch_name and loaded.cursor == scene.cursor
    assert {n: b.fids for n, b in loaded.branches.items()} == {n: b.fids for n, b in scene.branches.items()}
    for fa, fb in zip(scene.iter_frames(), loaded.iter_frames()):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.c2w, fb.c2w)
        assert str(fa.action) == str(fb.action)
    # both continue identically
    ra, rb = scene.step(Action("F", "R")), loaded.step(Action("F", "R"))
    assert np.array_equal(ra.frame.rgb, rb.frame.rgb) and same_map(scene.map, loaded.map)
    # saving again over the same session folder works; the loaded scene never writes into it
    save_session(loaded, tmp_path / "s")
    assert load_session(tmp_path / "s").length == loaded.length


def test_restore_without_a_map_state_rebuilds_the_same_map(tmp_path):
    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)(FN)"))
    twin = Scene(create_world("procedural", seed=5, width=96, height=72), dataclasses.replace(scene.config),
                 store=scene.store)
    twin.restore(scene.branches, scene.branch_name, 2, seed=scene.seed)  # no map state: fused from the frames
    assert same_map(scene.map, twin.map) and twin.cursor == 2 and twin.current.index == 2
    with pytest.raises(SceneError, match="out of range"):
        twin.restore(scene.branches, "nope", 0)


def test_models_and_memory_are_not_probed_with_getattr():
    """The contract lives in worldmodel.frame.WorldModel / scenes.scene.MemoryProvider: no getattr probing."""
    import ast

    for folder in ("scenes", "studio"):
        for path in (ROOT / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
                    target = ast.unparse(node.args[0])
                    assert "model" not in target and "memory" not in target, f"{path.name}: {ast.unparse(node)}"


def test_discarded_branch_and_failed_save_lose_nothing(tmp_path, monkeypatch):
    scene = make_scene()
    scene.run(parse_actions("(FN)(FN)(FN)"))
    scene.seek(1)
    scene.step(Action("B", "N"))          # fork: frames of 'main' past position 1 are only in 'main'
    forked = scene.branch_name
    scene.switch_branch("main")
    scene.discard_branch(forked)          # the saved frame ids now have a gap
    folder = save_session(scene, tmp_path / "s")
    loaded = load_session(folder)
    assert same_map(scene.map, loaded.map) and loaded.length == scene.length
    # a save over it that fails half-way (disk full) leaves the earlier save intact and no litter
    scene.step(Action("F", "N"))
    import scenes.session as session_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(session_module, "save_file", disk_full)
    with pytest.raises(SessionError, match="disk full: free space in"):
        save_session(scene, folder)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(SPILL)) == ["s"]
    again = load_session(folder)
    assert again.length == loaded.length and same_map(again.map, loaded.map)
    # Ctrl-C (or SIGTERM) between two of the renames that swap the new save in waits for the swap: the folder then
    # holds the new save, whole (it was left without session.json, or lost the old frames to the cleanup)
    import signal

    real_replace, renames = session_module.os.replace, []

    def interrupted(src, dst):
        if Path(dst).parent == folder:  # moving a staged entry in
            renames.append(src)
            if len(renames) == 2:
                signal.raise_signal(signal.SIGINT)
        return real_replace(src, dst)

    monkeypatch.setattr(session_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_session(scene, folder)
    monkeypatch.undo()
    assert len(renames) == 3  # frames, map, session.json: every entry moved in before the interrupt
    again = load_session(folder)
    assert again.length == scene.length and same_map(again.map, scene.map)
    # a rename that fails half-way puts every old entry back, whatever had moved
    failing_at = []

    def failing(src, dst):
        if Path(dst).parent == folder and Path(src).parent.name.startswith(".s.saving-"):
            failing_at.append(src)
            if len(failing_at) == 2:
                raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    scene.step(Action("F", "N"))
    monkeypatch.setattr(session_module.os, "replace", failing)
    with pytest.raises(SessionError):
        save_session(scene, folder)
    monkeypatch.undo()
    again = load_session(folder)
    assert again.length == scene.length - 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(SPILL)) == ["s"]
    # ... and when putting them back fails too, the line says where the old entries are, and does not promise
    # that the earlier save is unchanged

    def failing_both_ways(src, dst):
        if Path(src).parent == folder and Path(dst).parent.name.startswith(".s.saving-"):  # the undo
            raise OSError(5, "Input/output error")
        return failing(src, dst)

    failing_at.clear()
    monkeypatch.setattr(session_module.os, "replace", failing_both_ways)
    with pytest.raises(SessionError, match=r"could not be undone: remove the new frames from .*, then move the "
                                           r"entries of .*\.s\.old-.* back into") as e:
        save_session(scene, folder)
    monkeypatch.undo()
    assert "earlier save" not in str(e.value) and "the scene in memory is unchanged" in str(e.value)
    retired = next(p for p in tmp_path.iterdir() if p.name.startswith(".s.old-"))
    names = {p.name for p in retired.iterdir()}  # the old save, whole, to move back (no memory in this scene)
    assert {"frames", "map.safetensors", "session.json"} <= names <= set(SESSION_ENTRIES)
    assert not (folder / "session.json").exists()  # and the half-swapped folder does not pass for a session
    with pytest.raises(SessionError, match="session.json is missing"):
        load_session(folder)
    shutil.rmtree(folder / "frames")  # doing as the line says gives the earlier save back, whole
    for entry in retired.iterdir():
        entry.rename(folder / entry.name)
    again = load_session(folder)
    assert again.length == scene.length - 1

def test_corrupt_sessions_give_one_line_errors(tmp_path):
    scene = make_scene()
    scene.run(parse_actions("(FN)(FN)"))
    folder = save_session(scene, tmp_path / "s")
    with pytest.raises(SessionError, match="session.json is missing"):
        load_session(tmp_path)
    with pytest.raises(SessionError, match="no such folder; pick the folder that contains session.json"):
        load_session(tmp_path / "does" / "not" / "exist")
    run = save_session(scene, tmp_path / "run" / "session").parent  # a run's folder, and a session's own file
    with pytest.raises(SessionError, match=f"run is a run's folder; its session is in {run / 'session'}: pass "):
        load_session(run)
    with pytest.raises(SessionError, match=f"session.json is the session file of {run / 'session'}: pass "):
        load_session(run / "session" / "session.json")
    (folder / "frames" / "0000001.safetensors").write_bytes(b"garbage")
    with pytest.raises(SessionError, match=r"s/frames/0000001.safetensors is corrupt"):
        load_session(folder)
    (folder / "frames" / "0000002.safetensors").unlink()
    with pytest.raises(SessionError, match="lacks frames/0000002"):
        load_session(folder)
    (folder / "map.safetensors").write_bytes(b"\x00" * 20)
    meta = json.loads((folder / "session.json").read_text())
    meta["world"]["kind"] = "mystery"
    (folder / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match="unknown world"):
        load_session(folder)
    (folder / "session.json").write_text("{not json")
    with pytest.raises(SessionError, match="unreadable"):
        load_session(folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SessionError, match="other files"):
        save_session(scene, other)
    assert (other / "notes.txt").read_text() == "mine"


def test_unknown_world_spec():
    with pytest.raises(WorldSpecError, match="procedural"):
        create_world("minecraft")


def _run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_headless_run_writes_every_export(tmp_path):
    out = tmp_path / "out"
    res = _run_cli("run", "--world", "procedural", "--seed", "0", "--size", "96", "72",
                   "--actions", "(FN)(FN)(fLN)(FR)(FN)", "--out", str(out))
    assert res.returncode == 0, res.stderr
    for name in ("scene.ply", "scene.glb", "frames.mp4", "trajectory.txt", "transforms.json",
                 "session/session.json"):
        assert (out / name).is_file(), name
    pts, cols = read_ply(out / "scene.ply")
    assert len(pts) > 1000 and cols.dtype == np.uint8
    ts, poses = read_tum_trajectory(out / "trajectory.txt")
    assert len(poses) == 6
    loaded = load_session(out / "session")
    assert len(loaded.map.points()[0]) == len(pts)
    assert np.allclose(loaded.poses(), poses, atol=1e-6)
    # headless runs have memory (as the studio) and the session records the retrieval choices
    meta = json.loads((out / "session" / "session.json").read_text())
    assert meta["memory"]["retrieval_rule"] == "ours" and (out / "session" / "memory.safetensors").is_file()
    assert meta["retrievals"] and all(len(r["fids"]) == len(r["scores"]) >= 1 for r in meta["retrievals"].values())
    assert set(int(f) for f in meta["retrievals"]) <= set(meta["frame_ids"])
    assert loaded.retrievals == {int(f): (r["fids"], r["scores"]) for f, r in meta["retrievals"].items()}


def test_headless_run_rejects_bad_actions_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("already made")
    res = _run_cli("run", "--actions", "(FN)(FN)(fR_L)", "--out", str(out))
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "position 11" in lines[0] and "'_'" in lines[0]
    assert "Traceback" not in res.stderr
    assert (out / "keep.txt").read_text() == "already made" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # a world that cannot open leaves no empty --out folder behind, and an existing one as it was
    res = _run_cli("run", "--world", "minecraft", "--steps", "2", "--out", str(tmp_path / "new"))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "new").exists()
    res = _run_cli("run", "--world", "minecraft", "--steps", "2", "--out", str(out))
    assert res.returncode != 0 and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_nan_pose_is_refused_and_the_scene_stays_as_it_was(monkeypatch):
    """A NaN target pose is refused when the action is made; a world that returns anyway a frame a saved session
    could not hold (a NaN or not quite rigid camera, a K without a focal length, another size, not a Frame)
    stores nothing, and the next step works."""
    scene = make_scene()
    scene.step(Action("F", "N"))
    bad = scene.current.c2w.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite 4x4"):
        TargetPose(bad)
    sheared = scene.current.c2w.copy()
    sheared[:3, :3] *= 1.002  # 0.2 % off a rotation (an easy output for a learned pose head)
    real_step = scene.model.step
    before = (scene.length, scene.cursor, len(scene.map))
    for change, said in (({"c2w": bad}, "has a camera pose that is not a finite rigid transform \\(not a finite 4x4"),
                         ({"c2w": sheared}, "has a camera pose that is not a finite rigid transform \\(a rotation that "
                                            "is not orthonormal"),
                         ({"K": np.zeros((3, 3))}, "has intrinsics K that are not finite with positive focal lengths"),
                         ({"rgb": np.zeros((24, 32, 3), np.uint8), "depth": np.ones((24, 32), np.float32)},
                          "is 32x24, the frames before it 96x72"),
                         (None, "is a NoneType, not a Frame")):
        monkeypatch.setattr(scene.model, "step", lambda action, context, change=change: None if change is None
                            else dataclasses.replace(real_step(action, context), **change))
        with pytest.raises(SceneError, match=f"a frame returned by the procedural world {said}.*; nothing was stored"):
            scene.step(Action("F", "N"))
        assert (scene.length, scene.cursor, len(scene.map)) == before
    monkeypatch.undo()
    assert scene.step(Action("F", "N")).frame.index == 2
    handed = dataclasses.replace(scene.current, c2w=sheared)  # a frame handed over (a prelude) is held to it too
    with pytest.raises(SceneError, match="a frame handed to the procedural world has a camera pose that is not"):
        scene.reset(5, prelude=[handed])


def test_a_step_given_text_or_another_type_says_how_to_make_an_action_and_forks_nothing():
    """Scene.step takes an Action or a TargetPose; text such as "(FN)" (a script's first try) is refused before a
    branch is forked, with the function that parses it named."""
    scene = make_scene()
    scene.run(parse_actions("(FN)(FN)"))
    scene.seek(0)  # a step from here would fork a branch
    before = (scene.length, scene.cursor, scene.branch_name, sorted(scene.branches), len(scene.map))
    with pytest.raises(TypeError, match=r"takes an Action or a TargetPose, got str '\(FN\)'.*parse_actions"):
        scene.step("(FN)")
    with pytest.raises(TypeError, match="got ndarray"):
        scene.step(scene.current.c2w)  # a bare pose: TargetPose(c2w) makes it an action
    assert (scene.length, scene.cursor, scene.branch_name, sorted(scene.branches), len(scene.map)) == before
    assert scene.step(parse_actions("(FL)")[0]).frame.index == 1


def test_a_save_killed_half_way_through_its_swap_is_finished_when_the_session_is_next_opened(tmp_path):
    """kill -9 (or a power cut) while an autosave swaps the new session in left a folder without session.json:
    `--resume` and `info` said "session.json is missing", and a later save refused the folder. Killed after
    each move of the swap, the session opens whole: as it was when nothing had moved yet, else as the new save."""
    import os

    import scenes.atomic
    from scenes.session import finish_interrupted_save, is_session_folder

    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)"))
    for kill_after in range(7):  # the swap moves session.json, map and frames out, then frames, map, session.json in
        folder = tmp_path / f"killed_after_{kill_after}" / "session"
        save_session(scene, folder)  # 3 frames
        scene.step(Action("F", "N"))  # the new save holds 4
        pid = os.fork()
        if pid == 0:  # the child saves, and dies (os._exit: nothing is undone) at its move number kill_after
            moves = []
            real_move = scenes.atomic.move_entry

            def dying_move(source, dest):
                if len(moves) == kill_after:
                    os._exit(0)
                moves.append(source)
                real_move(source, dest)

            scenes.atomic.move_entry = dying_move
            try:
                save_session(scene, folder)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        left_whole = (folder / "session.json").is_file()
        assert left_whole == (kill_after in (0, 6)) and is_session_folder(folder)  # (6: the swap was done)
        assert load_session(folder).length == (3 if kill_after == 0 else 4)
        assert not finish_interrupted_save(folder)
        if kill_after:  # the work folders went with the finished save (killed before it moved a thing: at the next)
            assert sorted(p.name for p in folder.parent.iterdir()) == ["session"]
        save_session(load_session(folder), folder)  # and nothing of the killed save is left after the next save
        assert sorted(p.name for p in folder.parent.iterdir()) == ["session"]
        assert sorted(p.name for p in folder.iterdir()) == ["frames", "map.safetensors", "session.json"]
        scene = make_scene()  # 3 frames again
        scene.run(parse_actions("(FN)(FL)"))


def test_finishing_a_killed_save_takes_only_a_swap_that_began_and_one_process_at_a_time(tmp_path, monkeypatch):
    """A staging folder whose save never began its swap (killed before it renamed itself into a new folder) was
    finished into whatever folder of that name was made later: the user's own frames/ were moved aside and
    deleted. Two processes finishing the same half-swapped save at once (info while the studio opens it) left
    it empty: the second moved the entries the first had moved in aside as old ones, and removed them. A folder
    made again under a half-swapped one's name (deleted by hand) is not finished into either."""
    import os

    import scenes.atomic
    import scenes.session as session_module
    from scenes.session import finish_interrupted_save, is_session_folder, read_session_meta

    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)"))

    def killed_save(folder, dies):  # a child process saves and dies (os._exit: nothing is undone) where told
        pid = os.fork()
        if pid == 0:
            try:
                dies()
                save_session(scene, folder)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    new = tmp_path / "new"
    real_replace = os.replace
    killed_save(new, lambda: setattr(session_module.os, "replace",
                                     lambda a, b: os._exit(0) if Path(b) == new else real_replace(a, b)))
    assert any(p.name.startswith(".new.saving-") for p in tmp_path.iterdir()) and not new.exists()
    (new / "frames").mkdir(parents=True)  # the user's own folder of that name, made later
    (new / "frames" / "mine.png").write_bytes(b"mine")
    assert not is_session_folder(new) and not finish_interrupted_save(new)
    with pytest.raises(SessionError, match="session.json is missing"):
        read_session_meta(new)
    with pytest.raises(SessionError, match="holds other files"):
        save_session(scene, new)
    assert (new / "frames" / "mine.png").read_bytes() == b"mine"

    folder = tmp_path / "both" / "session"
    save_session(scene, folder)
    scene.step(Action("F", "N"))

    def dies_at_third_move():
        moves, real_move = [], scenes.atomic.move_entry

        def dying_move(source, dest):
            if len(moves) == 3:
                os._exit(0)
            moves.append(source)
            real_move(source, dest)
        scenes.atomic.move_entry = dying_move
    killed_save(folder, dies_at_third_move)
    assert not (folder / "session.json").exists()
    real_work_folder = session_module._work_folder
    others = []

    def another_process_finishes_meanwhile(where, kind):  # it runs after this one has looked at the folder
        if not others:
            others.append(None)
            others[0] = finish_interrupted_save(folder)
        return real_work_folder(where, kind)
    monkeypatch.setattr(session_module, "_work_folder", another_process_finishes_meanwhile)
    assert finish_interrupted_save(folder) and others == [True]
    monkeypatch.undo()
    assert load_session(folder).length == 4
    assert sorted(p.name for p in folder.parent.iterdir()) == ["session"]

    # a half-swapped folder deleted by hand and made again with the user's own files: not that save's folder
    scene.step(Action("F", "N"))
    killed_save(folder, dies_at_third_move)
    assert not (folder / "session.json").exists() and is_session_folder(folder)
    shutil.rmtree(folder)
    (folder / "frames").mkdir(parents=True)
    (folder / "frames" / "mine.png").write_bytes(b"mine")
    assert not is_session_folder(folder) and not finish_interrupted_save(folder)
    with pytest.raises(SessionError, match="session.json is missing"):
        read_session_meta(folder)
    assert (folder / "frames" / "mine.png").read_bytes() == b"mine"


def test_every_file_of_a_saved_session_has_the_usual_permissions(tmp_path):
    """safetensors writes its files 0o600: frames, map and memory were unreadable to anyone else (a shared
    session failed to open for them as "corrupt"), while session.json was not."""
    import os
    import stat

    from scenes.factory import make_scene as scene_with_memory

    old = os.umask(0o022)
    try:
        scene = scene_with_memory("procedural", 5, size=(64, 48))
        scene.run(parse_actions("(FN)(FL)"))
        folder = save_session(scene, tmp_path / "s")
        scene.close()
    finally:
        os.umask(old)
    modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in folder.rglob("*") if p.is_file()}
    assert "map.safetensors" in modes and "memory.safetensors" in modes and any(k.startswith("frames/") for k in modes)
    assert set(modes.values()) == {0o644}, modes


def test_a_session_saved_before_free_space_carving_opens_with_its_map_rebuilt(tmp_path):
    """Maps saved by builds before carving lack its two columns; such a session opens (its map is fused again
    from its frames) instead of being called corrupt. A map lacking any other array still is."""
    from safetensors.numpy import load_file, save_file

    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)(FN)"))
    folder = save_session(scene, tmp_path / "s")
    state = load_file(str(folder / "map.safetensors"))
    save_file({k: v for k, v in state.items() if k not in ("seen_frames", "free_frames")},
              str(folder / "map.safetensors"))
    older = load_session(folder)
    assert older.length == scene.length and same_map(older.map, scene.map)
    older.step(Action("F", "N"))
    older.close()
    save_file({k: v for k, v in state.items() if k != "weight"}, str(folder / "map.safetensors"))
    with pytest.raises(SessionError, match="lacks arrays \\['weight'\\]"):
        load_session(folder)
    scene.close()


def test_a_step_that_fails_or_is_interrupted_while_fusing_leaves_nothing_half_done(monkeypatch):
    """A step at the end of a branch that fails while its frame is fused leaves the scene as before: it used to
    keep the frame in the branch with none of its points in the map (a session then saved that mismatch).
    Ctrl-C during the fusion waits until the frame is whole in the map, then interrupts."""
    import signal

    import scenes.scene as scene_module

    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)"))
    length, points = scene.length, len(scene.map)
    real = scene_module.fuse_frame

    calls = []

    def failing(pointmap, frame, stride=None):
        calls.append(1)
        stats = real(pointmap, frame, stride)
        if len(calls) == 1:  # the step's own fusion: done, then a failure (the rebuild that follows works)
            raise RuntimeError("disk gone")
        return stats

    monkeypatch.setattr(scene_module, "fuse_frame", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        scene.step(Action("F", "N"))
    assert scene.length == length and scene.cursor == length - 1 and len(scene.map) == points

    def interrupted(pointmap, frame, stride=None):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the fusion
        return real(pointmap, frame, stride)

    monkeypatch.setattr(scene_module, "fuse_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        scene.step(Action("F", "N"))
    monkeypatch.undo()
    assert scene.length == length + 1  # the step finished before the interrupt
    rebuilt = make_scene()
    rebuilt.run(parse_actions("(FN)(FL)(FN)"))
    assert same_map(scene.map, rebuilt.map)
    scene.close()
    rebuilt.close()
    from worldmodel.frame import Frame

    with pytest.raises(ValueError, match="confidence must be"):
        Frame(0, np.zeros((4, 6, 3), np.uint8), np.ones((4, 6), np.float32), np.eye(3), np.eye(4),
              confidence=np.ones((2, 3), np.float32))


def test_a_branch_knows_how_many_of_its_frames_were_handed_over_and_a_session_keeps_it(tmp_path):
    """Branch.handed: the frames Scene.reset(prelude=) gave before the one the world went on from (a resumed
    headless run counts its steps after that one). A fork from inside them goes on from its fork frame; a
    session saves and checks the number; a session of an older build, without it, has none."""
    walked = make_scene()
    walked.run(parse_actions("(FN)(fLL)(FL)(FN)(SR)"))
    scene = make_scene()
    scene.reset(5, start=walked.current.c2w, prelude=walked.iter_frames(upto=walked.cursor - 1))
    scene.run(parse_actions("(FN)(FN)"))
    assert scene.branch.handed == 5 and scene.length == 8
    scene.seek(2)
    scene.step(Action("F", "L"))  # forked inside the handed frames: it goes on from the third
    inside = scene.branch_name
    scene.switch_branch("main")
    scene.seek(6)
    scene.step(Action("F", "L"))  # forked after them: all 5
    assert scene.branches[inside].handed == 2 and scene.branch.handed == 5 and scene.branches["main"].handed == 5
    save_session(scene, tmp_path / "s")
    loaded = load_session(tmp_path / "s")
    assert {n: b.handed for n, b in loaded.branches.items()} == {n: b.handed for n, b in scene.branches.items()}
    loaded.close()
    meta_path = tmp_path / "s" / "session.json"
    meta = json.loads(meta_path.read_text())
    for bad in (-1, 8, "5", 2.5):
        meta["branches"][0]["handed"] = bad
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(SessionError, match="branch 'main' handed"):
            load_session(tmp_path / "s")
    for branch in meta["branches"]:
        del branch["handed"]
    meta_path.write_text(json.dumps(meta))
    older = load_session(tmp_path / "s")
    assert all(b.handed == 0 for b in older.branches.values())
    older.close()
    assert make_scene().branch.handed == 0


def test_settings_a_saved_session_would_refuse_are_refused_when_made(tmp_path):
    """Every setting is checked when the config is made, as a saved session's are when it is opened: a scene
    could save what it could never open again. numpy's numbers pass as Python's do."""
    from worldmodel.actions import Kinematics
    from worldmodel.checks import CheckError
    from worldmodel.procedural import ProceduralConfig

    for make, said in ((lambda: SceneConfig(memory_k=100), "memory_k must be a whole number between 0 and 64"),
                       (lambda: SceneConfig(max_depth=0), "max_depth must be a number between 0.01 and"),
                       (lambda: Kinematics(step_m=500), "kinematics.step_m must be a number between 0 and 100"),
                       (lambda: ProceduralConfig(width=8), "width must be a whole number between 16 and 4096"),
                       (lambda: ProceduralConfig(fly=1), "fly must be true or false"),
                       (lambda: ProceduralConfig(load_radius_chunks=8), "chunk_cache \\(160\\) must hold every "
                                                                        "loaded chunk: at least 289")):
        with pytest.raises(CheckError, match=said):
            make()
    config = SceneConfig(carve=np.bool_(True), ram_frames=np.float32(8), voxel_size=np.float64(0.2))
    assert config.carve is True and config.ram_frames == 8 and isinstance(config.ram_frames, int)
    scene = Scene(create_world("procedural", width=48, height=32), config)
    scene.reset(np.int64(3))
    with pytest.raises(CheckError, match="seed must be a whole number between 0 and"):
        scene.reset(-1)
    scene.close()


def test_stepping_from_the_second_to_last_frame_forks_and_the_map_shows_exactly_the_frames_up_to_the_cursor():
    """The boundaries of seek/fork: a cursor one before the end forks (the branch keeps its last frame), the new
    branch shares frames 0..p with its parent and says so (fork_position p, also after a session round trip), and
    the map shown at cursor p holds exactly the voxels that frames 0..p saw (ground truth: a map fused from them)."""
    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)(FN)(FR)"))
    main = list(scene.branch.fids)
    for p in (1, 3):
        scene.seek(p)
        ref = VoxelPointMap(scene.config.voxel_size, scene.config.max_depth, carve=scene.map.carve)
        for f in scene.iter_frames(upto=p):
            fuse_frame(ref, f, scene.config.fuse_stride)
        assert [f.index for f in scene.iter_frames(upto=p)] == list(range(p + 1))
        assert len(scene.map_points()[0]) == len(ref), p
    r = scene.step(Action("F", "N"))  # from position 3 of 5: a fork, not a sixth frame of main
    assert r.forked_from == "main" and scene.branches["main"].fids == main
    b = scene.branch
    assert b.parent == "main" and b.fork_position == 3 and b.fids[:4] == main[:4] and len(b.fids) == 5
    assert scene.cursor == 4 and r.frame.index == 4
    first = scene.branch_name
    scene.switch_branch("main")
    scene.seek(0)
    scene.step(Action("F", "N"))
    assert scene.branch_name != first and scene.branch.fork_position == 0 and len(scene.branch.fids) == 2


def test_autosave_saves_on_the_nth_step_and_a_failed_save_is_tried_again_an_interval_later(tmp_path, monkeypatch):
    """Autosaver's boundaries: with every_steps=3 it saves on steps 3 and 6 (not 4), a failed save waits a whole
    interval (not every step) before it is tried again, and the saved session holds the frames walked so far.
    default_interval turns autosave on only for runs longer than AUTOSAVE_FROM_STEPS."""
    import scenes.session
    from scenes.autosave import AUTOSAVE_FROM_STEPS, DEFAULT_EVERY_STEPS, Autosaver, default_interval

    assert default_interval(AUTOSAVE_FROM_STEPS) == 0
    assert default_interval(AUTOSAVE_FROM_STEPS + 1) == DEFAULT_EVERY_STEPS
    scene = make_scene()
    saver = Autosaver(scene, tmp_path / "auto", every_steps=3, every_s=0.0)
    assert saver.enabled and not Autosaver(scene, tmp_path / "x", every_steps=0, every_s=0.0).enabled
    assert Autosaver(scene, tmp_path / "x", every_steps=0, every_s=5.0).enabled
    saved = []
    for i in range(1, 7):
        scene.step(Action("F", "N"))
        if saver.step_done():
            saved.append(i)
    assert saved == [3, 6] and saver.saves == 2
    loaded = load_session(tmp_path / "auto")
    assert loaded.length == 7 and same_map(loaded.map, scene.map)
    loaded.close()
    real, calls = scenes.session.save_session, []

    def failing_once(*a, **k):
        calls.append(scene.length)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(scenes.session, "save_session", failing_once)
    outcome = []
    for _ in range(6):
        scene.step(Action("F", "N"))
        try:
            outcome.append(saver.step_done())
        except OSError:
            outcome.append("failed")
    assert outcome == [False, False, "failed", False, False, True] and calls == [10, 13]


def test_the_frame_store_evicts_the_least_recently_used_frame_and_files_keep_what_depth_0_means(tmp_path):
    """FrameStore is an LRU of ram_frames full frames: a frame read again stays in RAM and the one used longest
    ago is written out; a frame read back from its file equals the one stored, zero_depth_is_sky included (sky
    and no-measurement both ways). A store opened over saved frames with gaps in their ids gives new frames ids
    after the largest, and asking for an id it never gave raises KeyError."""
    from scenes.framestore import FrameStore
    from worldmodel.frame import Frame

    K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 5.5], [0.0, 0.0, 1.0]])

    def frame(i: int) -> Frame:
        rgb = np.full((12, 16, 3), 10 * i, np.uint8)
        depth = np.full((12, 16), 1.0 + i, np.float32)
        depth[0] = 0.0
        c2w = np.eye(4)
        c2w[:3, 3] = [i, 0.5 * i, -i]
        return Frame(i, rgb, depth, K, c2w, action=Action("F", "N") if i else None, zero_depth_is_sky=i % 2 == 0)

    store = FrameStore(tmp_path / "store", ram_frames=2)
    frames = [frame(i) for i in range(4)]
    assert [store.add(f) for f in frames[:2]] == [0, 1]
    assert not store.path_of(0).exists()  # two fit
    store.add(frames[2])
    assert store.path_of(0).exists() and not store.path_of(1).exists()
    store.get(1)  # used now: frame 2 is the least recently used
    store.add(frames[3])
    assert store.path_of(2).exists() and not store.path_of(1).exists()
    for fid, want in enumerate(frames):
        got = store.get(fid)
        assert np.array_equal(got.rgb, want.rgb) and np.array_equal(got.depth, want.depth)
        assert np.array_equal(got.c2w, want.c2w) and got.action == want.action
        assert got.zero_depth_is_sky == want.zero_depth_is_sky, fid
    with pytest.raises(KeyError):
        store.get(4)
    store.flush()
    opened = FrameStore.open_existing(tmp_path / "store", [0, 2, 3])
    assert opened.add(frame(4)) == 4 and len(opened) == 5
    assert opened.get(2).zero_depth_is_sky and not opened.get(3).zero_depth_is_sky
    opened.close()
    store.close()


def test_a_frame_file_from_before_zero_depth_metadata_takes_what_its_world_says(tmp_path):
    """A frame file written before files said what depth 0 means has no zero_depth_is_sky metadata: it is read
    as the world that made it says (zero_depth_is_sky_when_unsaid), both ways, directly and through a store."""
    from safetensors.numpy import save_file

    from scenes.framestore import FrameStore, frame_file_name, read_frame

    (tmp_path / "frames").mkdir()
    path = tmp_path / "frames" / frame_file_name(0)
    c2w = np.eye(4)
    save_file({"rgb": np.zeros((4, 6, 3), np.uint8), "depth": np.zeros((4, 6), np.float32),
               "K": np.array([[5.0, 0.0, 2.5], [0.0, 5.0, 1.5], [0.0, 0.0, 1.0]]), "c2w": c2w},
              str(path), metadata={"index": "0", "action": ""})
    for sky in (True, False):
        assert read_frame(path, zero_depth_is_sky_when_unsaid=sky).zero_depth_is_sky is sky
        store = FrameStore.open_existing(tmp_path, [0], zero_depth_is_sky_when_unsaid=sky)
        assert store.get(0).zero_depth_is_sky is sky
        store.close()


def test_export_all_without_video_writes_the_rest_and_they_read_back_as_the_scene():
    """export_all(video=False) writes no frames.mp4 and returns the other entries; what it wrote reads back as the
    scene at the cursor: the trajectory's poses and the PLY's points."""
    import tempfile

    scene = make_scene()
    scene.run(parse_actions("(FN)(FL)"))
    with tempfile.TemporaryDirectory() as tmp:
        written = scene.export_all(Path(tmp) / "out", video=False)
        assert set(written) == {"session", "ply", "glb", "trajectory", "transforms"}
        assert not (Path(tmp) / "out" / "frames.mp4").exists()
        _, poses = read_tum_trajectory(written["trajectory"])
        assert np.allclose(poses, scene.poses(), atol=1e-5)
        pts, _ = read_ply(written["ply"])
        assert len(pts) == len(scene.map_points()[0])
