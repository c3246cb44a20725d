"""Recorded data in: importers (TUM, 7-Scenes, generic, per-frame PLY), the replay backend, eval-recon.

Real data: ``../shared/data/tum_fr1_rpy`` next to the repository (90 Kinect frames with motion-capture
poses); its README states what a correct reader sees. Synthetic folders are written here from the
procedural world, whose frames are exact, and must read back to the same poses and depth.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldmodel.camera import invert_pose, reproject_depth, unproject_depth
from recon.pointmap import VoxelPointMap
from scenes import evaluate
from scenes.export import depth_to_png_mm, read_tum_trajectory, write_mp4, write_ply
from worldmodel.recordings import SequenceError, detect_format, interpolate_poses, open_sequence, up_rotation
from scenes.scene import Scene, SceneConfig, fuse_frame
from scenes.session import load_session, save_session
from worldmodel.actions import Action, TargetPose
from worldmodel.frame import Context
from worldmodel.registry import create_world, world_from_description
from worldmodel.replay import ReplayWorld, parse_replay_arg

TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr1_rpy"


@pytest.fixture(scope="module")
def tum_path() -> Path:
    if not (TUM / "rgb.txt").is_file():
        pytest.fail(f"real test data missing: expected the TUM fr1/rpy excerpt at {TUM} "
                    "(../shared/data/tum_fr1_rpy next to the repository)")
    return TUM


@pytest.fixture(scope="module")
def tum(tum_path):
    return open_sequence(tum_path)


@pytest.fixture()
def mini_tum(tum_path, tmp_path) -> Path:
    """A copy of the first 5 TUM frames (index files trimmed, full ground truth)."""
    out = tmp_path / "mini_tum"
    (out / "rgb").mkdir(parents=True)
    (out / "depth").mkdir()
    for name in ("rgb.txt", "depth.txt"):
        lines = (tum_path / name).read_text().splitlines()
        head = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if ln.strip() and not ln.startswith("#")][:5]
        (out / name).write_text("\n".join(head + body) + "\n")
        for ln in body:
            rel = ln.split()[1]
            shutil.copy(tum_path / rel, out / rel)
    shutil.copy(tum_path / "groundtruth.txt", out / "groundtruth.txt")
    return out


# ----------------------------------------------------------------------------------------------- TUM


def test_tum_all_90_frames_import(tum):
    assert detect_format(TUM) == "tum" and tum.format == "tum"
    assert len(tum) == 90, tum.notes
    assert np.all(np.diff(tum.timestamps) > 0)
    for f in tum:  # lazily, one frame at a time
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
        assert np.isfinite(f.depth).all() and f.depth.min() >= 0 and 0.3 < f.depth.max() < 10
        assert (f.depth > 0).mean() > 0.5
        np.testing.assert_allclose(f.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
        R = f.c2w[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) > 0
    assert len(tum._cache) <= tum.cache_size


def test_tum_reprojection_matches_the_data_readme(tum):
    """Frame j re-projected into frame 0: ~6 / 13 / 23 mm (README); world-to-camera reading: 8-33 cm."""
    f0 = tum[0]
    raw = invert_pose(up_rotation("+z"))  # back to the mocap world, to read the poses the wrong way round
    for j, readme in ((3, 0.006), (10, 0.013), (20, 0.023)):
        fj = tum[j]
        good = reproject_depth(fj.depth, fj.K, fj.c2w, f0.depth, f0.K, f0.c2w, stride=2)
        assert len(good) > 5000
        assert np.median(good) < 1.5 * readme, (j, np.median(good))
        bad = reproject_depth(fj.depth, fj.K, invert_pose(raw @ fj.c2w), f0.depth, f0.K,
                              invert_pose(raw @ f0.c2w), stride=2)
        assert len(bad) < 0.2 * len(good) or np.median(bad) > 0.06, (j, len(bad), np.median(bad))


def test_tum_world_is_y_up(tum_path, tum):
    """Gravity along -Y: the desk and floor (the dominant planes) are horizontal, cameras above them,
    every camera's image 'down' points to the ground side. Without the conversion they are not."""
    import open3d as o3d

    def dominant_plane(seq):
        pts = np.concatenate([unproject_depth(seq[i].depth, seq[i].K, seq[i].c2w, stride=8)[0]
                              for i in range(0, 90, 10)])
        o3d.utility.random.seed(0)
        model, inliers = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)).segment_plane(0.02, 3, 1000)
        return np.asarray(model), len(inliers) / len(pts)

    model, share = dominant_plane(tum)
    n = model[:3] / np.linalg.norm(model[:3])
    assert share > 0.2
    assert np.degrees(np.arccos(abs(n[1]))) < 5.0  # horizontal plane
    heights = (tum.c2ws[:, :3, 3] @ n + model[3]) * np.sign(n[1])
    assert np.all(heights > 0.3)                   # cameras above the desk
    down_dot_minus_y = -tum.c2ws[:, 1, 1]           # camera +y (image down) against world -Y
    assert down_dot_minus_y.min() > 0.5 and down_dot_minus_y.mean() > 0.6

    unconverted = open_sequence(tum_path, world_up="+y", max_frames=90)
    model_u, _ = dominant_plane(unconverted)
    assert np.degrees(np.arccos(abs(model_u[1] / np.linalg.norm(model_u[:3])))) > 45.0
    assert (-unconverted.c2ws[:, 1, 1]).mean() < 0.3


def test_tum_poses_are_the_ground_truth_at_each_colour_images_time(tum_path, tum):
    """Guards the TUM association against ground truth recomputed here: each frame carries its colour image's
    timestamp (rgb.txt), the depth image nearest in time (within 0.02 s), and the motion-capture pose interpolated
    at the colour time (linear translation, slerp rotation: TUM's tools), turned z-up -> +Y-up; stride and
    max_frames keep every stride-th of those frames from the first."""
    from scipy.spatial.transform import Rotation, Slerp

    def listed(name):
        rows = [r.split() for r in (tum_path / name).read_text().splitlines() if r.strip() and not r.startswith("#")]
        return {r[1]: float(r[0]) for r in rows}

    rgb_t, depth_t = listed("rgb.txt"), listed("depth.txt")
    times = np.array([rgb_t[f"rgb/{p.name}"] for p in tum.rgb_files])
    np.testing.assert_array_equal(tum.timestamps, times)
    d_names, d_times = list(depth_t), np.array(list(depth_t.values()))
    for t, d in zip(times, tum.depth_files):
        assert f"depth/{d.name}" == d_names[int(np.argmin(np.abs(d_times - t)))]
        assert abs(depth_t[f"depth/{d.name}"] - t) <= 0.02
    gt = np.array([[float(v) for v in r.split()] for r in (tum_path / "groundtruth.txt").read_text().splitlines()
                   if r.strip() and not r.startswith("#")])
    expected = np.tile(np.eye(4), (len(times), 1, 1))
    expected[:, :3, :3] = Slerp(gt[:, 0], Rotation.from_quat(gt[:, 4:8]))(times).as_matrix()
    expected[:, :3, 3] = np.stack([np.interp(times, gt[:, 0], gt[:, c]) for c in (1, 2, 3)], axis=1)
    np.testing.assert_allclose(tum.c2ws, up_rotation("+z") @ expected, atol=1e-9)

    part = open_sequence(tum_path, stride=3, max_frames=7)
    np.testing.assert_array_equal(part.timestamps, tum.timestamps[0:21:3])
    np.testing.assert_array_equal(part.c2ws, tum.c2ws[0:21:3])
    assert [p.name for p in part.rgb_files] == [p.name for p in tum.rgb_files[0:21:3]]


def test_tum_association_takes_the_closest_pairs_first():
    """Guards TUM's associate.py rule: candidate pairs are taken by increasing time difference, not in list
    order, so a depth image goes to the colour image it is closest to."""
    from worldmodel.recordings import associate

    assert associate(np.array([1.0, 1.01]), np.array([1.008])) == [(1, 0)]
    assert associate(np.array([1.0, 1.01, 1.05]), np.array([1.008, 1.004, 1.049])) == [(0, 1), (1, 0), (2, 2)]


def test_eval_recon_on_tum_reports_both_methods(tum_path, tmp_path, capsys, monkeypatch):
    """30 frames at 2 cm: the fused maps agree with every frame's depth (median per frame, then over frames).
    Measured: ours ~11 mm, the TSDF ~9 mm on these 30 frames (the TSDF averages Kinect noise along rays;
    a voxel-mean map keeps the noisy front layer) -- asserted as 'within 2 cm' and 'ours <= 1.5x peer'."""
    out = tmp_path / "eval.json"
    rc = evaluate.main(Namespace(path=str(tum_path), voxel=0.02, reference=None, max_frames=30, json=str(out),
                                   no_carve=False))
    assert rc == 0
    table = capsys.readouterr().out
    assert "ours (voxel map)" in table and "peer (open3d TSDF)" in table and "median |dz|" in table
    m = json.loads(out.read_text())
    for key in ("fuse_ms_per_frame", "peer_tsdf_ms_per_frame", "median_abs_dz_m", "peer_median_abs_dz_m",
                "map_points", "peer_points"):
        assert isinstance(m[key], (int, float)) and np.isfinite(m[key]) and m[key] > 0, key
    assert m["frames"] == 30
    assert m["median_abs_dz_m"] < 0.02 and m["peer_median_abs_dz_m"] < 0.02
    # a --json that is a folder, or a reference that is no mesh, is one line before any frame is fused
    (tmp_path / "notes.txt").write_text("not a mesh")
    for json_path, reference, says in ((str(tmp_path), None, "is a folder"),
                                       (None, str(tmp_path / "notes.txt"), "cannot read reference")):
        fused = []
        monkeypatch.setattr(evaluate, "auto_stride", lambda *a, **k: fused.append(1) or 4)  # called per frame fused
        rc = evaluate.main(Namespace(path=str(tum_path), voxel=0.02, reference=reference, max_frames=3,
                                     json=json_path, no_carve=False))
        err = capsys.readouterr().err
        assert rc == 2 and says in err and not fused, err
    assert m["median_abs_dz_m"] <= 1.5 * m["peer_median_abs_dz_m"]
    assert m["map_points"] > 10_000 and m["peer_points"] > 10_000
    # the recording's options as --world replay: takes them (--max-frames wins over max_frames=)
    rc = evaluate.main(Namespace(path=f"{tum_path}?stride=10&max_frames=2", voxel=0.05, reference=None,
                                 max_frames=None, json=str(out), no_carve=False))
    assert rc == 0 and json.loads(out.read_text())["frames"] == 2 and "tum, 2 frames" in capsys.readouterr().out
    rc = evaluate.main(Namespace(path=f"{tum_path}?stride=ten", voxel=0.05, reference=None, max_frames=None,
                                 json=None, no_carve=False))
    assert rc == 2 and "stride must be a whole number" in capsys.readouterr().err


def test_eval_recon_json_on_a_full_disk_is_printed_not_lost(tum_path, tmp_path, capsys, monkeypatch):
    """The --json write comes after the fusion: on a full disk the figures go to the terminal (exit 1), and no
    half-written file or temporary file is left beside it."""
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "eval.json"
    monkeypatch.setattr(Path, "write_text", full_disk)
    rc = evaluate.main(Namespace(path=str(tum_path), voxel=0.05, reference=None, max_frames=3, json=str(out),
                                 no_carve=False))
    captured = capsys.readouterr()
    assert rc == 1 and "disk full" in captured.err and "printed above" in captured.err, captured.err
    printed = json.loads(captured.out[captured.out.index("{"):])
    assert printed["frames"] == 3 and printed["map_points"] > 0
    assert list(tmp_path.iterdir()) == []
    # what could not be measured is null, not NaN (which strict JSON readers refuse)
    monkeypatch.undo()
    monkeypatch.setattr(evaluate, "accuracy_completeness", lambda *a, **k: (float("nan"), 0.0))
    reference = tmp_path / "box.ply"
    write_ply(reference, np.random.default_rng(0).uniform(0, 1, (50, 3)), np.zeros((50, 3), np.uint8))
    rc = evaluate.main(Namespace(path=str(tum_path), voxel=0.05, reference=str(reference), max_frames=2,
                                 json=str(out), no_carve=False))
    capsys.readouterr()

    def no_nan(constant):
        raise AssertionError(f"{constant} in the JSON")

    written = json.loads(out.read_text(), parse_constant=no_nan)
    assert rc == 0 and written["frames"] == 2 and None in written.values()
    # --json through a symbolic link writes its target (as a shell's > would), and the link stays a link
    (tmp_path / "results").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "results" / "run1.json")
    rc = evaluate.main(Namespace(path=str(tum_path), voxel=0.05, reference=None, max_frames=2, json=str(link),
                                 no_carve=False))
    assert rc == 0 and link.is_symlink() and json.loads((tmp_path / "results" / "run1.json").read_text())["frames"] == 2


def test_map_agreement_detects_a_wrong_pose(tum):
    """The agreement metric can fail: the map re-projected with a pose 5 cm off disagrees."""
    m = VoxelPointMap(0.02, 20.0)
    for i in range(0, 10, 2):
        f = tum[i]
        m.fuse(f.depth, f.rgb, f.K, f.c2w, i, stride=evaluate.auto_stride(f.depth, f.K, 0.02))
    pts, _ = m.points()
    f = tum[4]
    good = np.median(evaluate.map_depth_agreement(pts, f, 0.02))
    shifted = f.c2w.copy()
    shifted[:3, 3] += 0.05 * shifted[:3, 2]  # 5 cm along the view direction
    from dataclasses import replace

    bad = np.median(evaluate.map_depth_agreement(pts, replace(f, c2w=shifted), 0.02))
    assert good < 0.015 and bad > 0.035, (good, bad)


# ----------------------------------------------------------------------------------------------- synthetic folders


def _write_7scenes(folder: Path, frames) -> None:
    folder.mkdir(parents=True)
    A = up_rotation("-y")  # 7-Scenes worlds are y-down; the 180-degree turn is its own inverse
    np.savetxt(folder / "camera-intrinsics.txt", frames[0].K)
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / f"frame-{i:06d}.color.png")
        mm = depth_to_png_mm(f.depth)
        mm[mm == 0] = 65535
        Image.fromarray(mm).save(folder / f"frame-{i:06d}.depth.png")
        np.savetxt(folder / f"frame-{i:06d}.pose.txt", A @ f.c2w, fmt="%.12g")


def _expected_mm_depth(depth: np.ndarray) -> np.ndarray:
    return depth_to_png_mm(depth).astype(np.float32) * np.float32(0.001)


def test_7scenes_folder_round_trips(walk_frames, tmp_path):
    folder = tmp_path / "seq-01"
    _write_7scenes(folder, walk_frames)
    assert detect_format(folder) == "7scenes"
    seq = open_sequence(folder)
    assert len(seq) == len(walk_frames) and seq.world_up == "-y"
    for f, g in zip(walk_frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        assert ((g.depth == 0) == (depth_to_png_mm(f.depth) == 0)).all()  # 65535 -> invalid
    # intrinsics in the parent folder (3DMatch layout) are found too
    (folder / "camera-intrinsics.txt").rename(tmp_path / "camera-intrinsics.txt")
    np.testing.assert_allclose(open_sequence(folder)[0].K, walk_frames[0].K)


def test_level_turns_a_first_camera_world_so_its_floor_is_level(tum, tmp_path, capsys):
    """Real data: TUM fr1/rpy's frames written as 7-Scenes would hold them (the world is the first camera's, y down:
    KinectFusion's), so the floor tilts by that camera's pitch. ``level`` finds the floor in the depth and turns
    the world to the gravity of TUM's own levelled world (within 1°) without moving any frame against another;
    ``info`` suggests it; a session reopens with the same turn; a sequence without depth is refused."""
    frames = [tum[i] for i in range(0, 90, 12)]
    first_from_world = invert_pose(frames[0].c2w)
    A = up_rotation("-y")
    _write_7scenes(tmp_path / "seq", [dataclasses.replace(f, c2w=A @ first_from_world @ f.c2w) for f in frames])
    seq = open_sequence(tmp_path / "seq")
    from worldmodel.recordings.checks import floor_plane

    tilted = floor_plane(seq)
    assert tilted is not None and tilted["tilt_deg"] > 20  # the first camera looks down at the desk
    assert evaluate_info(tmp_path / "seq", capsys).count("open the recording as PATH?level=1") == 1
    level = open_sequence(tmp_path / "seq", level=True)
    truth = open_sequence(tum.path, level=True)  # TUM's own world, levelled the same way (its z is 1.5° off)

    def up_in_first_camera(s) -> np.ndarray:
        return s.c2ws[0, :3, :3].T @ np.array([0.0, 1.0, 0.0])

    angle = np.degrees(np.arccos(np.clip(up_in_first_camera(level) @ up_in_first_camera(truth), -1, 1)))
    assert angle < 1.0, angle
    assert np.degrees(np.arccos(up_in_first_camera(seq) @ up_in_first_camera(truth))) > 20
    for i in range(1, len(frames)):  # the frames keep their relative poses
        np.testing.assert_allclose(invert_pose(level.c2ws[0]) @ level.c2ws[i], invert_pose(seq.c2ws[0]) @ seq.c2ws[i],
                                   atol=1e-9)
    np.testing.assert_allclose(level.world_from_source() @ up_rotation("-y")[:3, :3].T,
                               level.c2ws[0, :3, :3] @ seq.c2ws[0, :3, :3].T, atol=1e-9)
    assert floor_plane(level)["tilt_deg"] < 0.5 and any("level: the world is turned" in n for n in level.notes)
    strided = open_sequence(tmp_path / "seq", level=True, stride=3, max_frames=2)  # one recording, one world
    np.testing.assert_allclose(strided.options["level_turn"], level.options["level_turn"], atol=1e-12)
    # a floor 90° from level is a wall or a wrong up axis (here: TUM's z-up world read as x-up): not turned
    sideways = open_sequence(tum.path, world_up="+x", level=True)
    np.testing.assert_allclose(sideways.c2ws, open_sequence(tum.path, world_up="+x").c2ws, atol=1e-12)
    assert any("more than a tilted floor" in n for n in sideways.notes), sideways.notes
    assert "level=1" not in evaluate_info(f"{tum.path}?up=+x", capsys)
    def floor_line(spec: str) -> list[str]:
        return [line for line in evaluate_info(spec, capsys).splitlines() if line.startswith("floor")]

    assert floor_line(str(tum.path)) and floor_line(str(tum.path)) == floor_line(f"{tum.path}?stride=7&max_frames=4")
    from worldmodel.recordings.checks import levelling_rotation

    np.testing.assert_allclose(levelling_rotation(np.array([0.0, -1.0, 0.0])) @ [0, -1, 0], [0, 1, 0], atol=1e-12)
    assert "PATH?level=1" not in evaluate_info(f"{tmp_path / 'seq'}?level=1", capsys)
    # a session keeps the turn it was saved with
    scene = Scene(create_world(f"replay:{tmp_path / 'seq'}?level=1"), SceneConfig(voxel_size=0.05, max_depth=10.0))
    scene.reset(0)
    scene.run([Action("F", "N")] * 2)
    folder = save_session(scene, tmp_path / "session")
    scene.close()
    again = load_session(folder)
    np.testing.assert_allclose(again.model.sequence.c2ws, level.c2ws[:len(again.model.sequence)], atol=1e-9)
    again.close()
    with pytest.raises(ValueError, match="level must be 1 or 0"):
        parse_replay_arg(f"{tmp_path / 'seq'}?level=maybe")
    meta = json.loads((folder / "session.json").read_text())  # a mirror in a session is refused, not replayed
    meta["world"]["level_turn"] = np.diag([1.0, 1.0, -1.0]).tolist()
    (folder / "session.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="level_turn is not a 3x3 rotation"):
        load_session(folder)
    (tmp_path / "seq" / "worldstudio.json").write_text('{"level": "yes"}')
    with pytest.raises(SequenceError, match='"level" must be true or false'):
        open_sequence(tmp_path / "seq")
    plys = tmp_path / "plys"
    plys.mkdir()
    write_ply(plys / "frame0.ply", np.random.default_rng(0).random((50, 3)) + [0, 0, 2], np.full((50, 3), 9, np.uint8))
    with pytest.raises(SequenceError, match="level needs depth"):
        open_sequence(plys, level=True)


def evaluate_info(path, capsys) -> str:
    """What ``launch.py info PATH`` prints for a recording."""
    from scenes.info import main as info_main

    capsys.readouterr()
    assert info_main(Namespace(path=str(path))) == 0
    return capsys.readouterr().out


def test_a_12_scenes_folder_takes_its_depth_camera_from_info_txt(walk_frames, tmp_path):
    """12-Scenes (BundleFusion's export, 7-Scenes' frame names): info.txt in the scene folder holds the depth
    camera's K and depth shift, and the colour camera is larger than the depth; colour is resized to the depth's
    size, geometry comes from the depth camera. (Refused before: 'register depth to colour first'.)"""
    frames = walk_frames[:3]
    data = tmp_path / "apt1" / "kitchen" / "data"
    _write_7scenes(data, frames)
    (data / "camera-intrinsics.txt").unlink()
    h, w = frames[0].depth.shape
    for i, f in enumerate(frames):  # a colour camera 2x the depth's (and jpg, as 12-Scenes ships)
        (data / f"frame-{i:06d}.color.png").unlink()
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.NEAREST).save(data / f"frame-{i:06d}.color.jpg", quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(data / f"frame-{i:06d}.depth.png")  # 0 = invalid here
    K = frames[0].K
    K4 = " ".join(f"{v:g}" for v in np.block([[K, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]).ravel())
    (data.parent / "info.txt").write_text(
        f"m_versionNumber = 4\nm_colorWidth = {2 * w}\nm_colorHeight = {2 * h}\nm_depthWidth = {w}\n"
        f"m_depthHeight = {h}\nm_depthShift = 1000\nm_calibrationColorIntrinsic = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n"
        f"m_calibrationDepthIntrinsic = {K4}\nm_frames.size = 3\n")
    seq = open_sequence(data)
    assert seq.format == "7scenes" and len(seq) == 3
    assert any(f"resized to the depth's {w}x{h}" in n for n in seq.notes), seq.notes
    for f, g in zip(frames, seq):
        assert g.rgb.shape == f.rgb.shape
        assert np.abs(g.rgb.astype(float) - f.rgb).mean() < 8  # jpg and the resize
        np.testing.assert_allclose(g.K, K, atol=1e-3)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)


def test_generic_folders_round_trip(walk_frames, tmp_path):
    # (a) .npy depth in metres, 16-number c2w lines, intrinsics.txt 'fx fy cx cy'
    a = tmp_path / "generic_npy"
    (a / "rgb").mkdir(parents=True)
    (a / "depth").mkdir()
    K = walk_frames[0].K
    (a / "intrinsics.txt").write_text(" ".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])) + "\n")
    with open(a / "poses.txt", "w") as fp:
        for i, f in enumerate(walk_frames):
            Image.fromarray(f.rgb).save(a / "rgb" / f"{i:04d}.png")
            np.save(a / "depth" / f"{i:04d}.npy", f.depth)
            fp.write(" ".join(repr(float(v)) for v in f.c2w.reshape(-1)) + "\n")
    assert detect_format(a) == "generic"
    seq = open_sequence(a)
    assert len(seq) == len(walk_frames)
    for f, g in zip(walk_frames, seq):
        np.testing.assert_array_equal(g.depth, f.depth)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-12)
        np.testing.assert_array_equal(g.rgb, f.rgb)

    # (b) 16-bit PNG depth with the scale in worldstudio.json, TUM pose lines, OpenGL cameras, K in JSON
    b = tmp_path / "generic_png"
    (b / "rgb").mkdir(parents=True)
    (b / "depth").mkdir()
    (b / "worldstudio.json").write_text(json.dumps({"depth_scale": 0.001, "camera": "opengl", "K": K.tolist()}))
    from scenes.export import write_tum_trajectory

    gl = np.stack([f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0]) for f in walk_frames])
    write_tum_trajectory(b / "poses.txt", gl)
    for i, f in enumerate(walk_frames):
        Image.fromarray(f.rgb).save(b / "rgb" / f"{i:04d}.jpg", quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(b / "depth" / f"{i:04d}.png")
    seq = open_sequence(b)
    for f, g in zip(walk_frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-6)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        assert np.abs(g.rgb.astype(int) - f.rgb).mean() < 6  # JPEG
    # the synthetic folder evaluates: exact depth -> near-zero disagreement, accurate against the true surface
    ref = tmp_path / "reference.ply"
    pts = np.concatenate([unproject_depth(f.depth, f.K, f.c2w, max_depth=40)[0] for f in walk_frames])
    write_ply(ref, pts, None)
    m = evaluate.evaluate_sequence(open_sequence(a), voxel=0.1, reference=ref, max_depth=40.0)
    assert m["median_abs_dz_m"] < 0.005 and m["peer_median_abs_dz_m"] < 0.1  # exact depth: ours ~0.3 mm, TSDF ~6 cm
    assert m["accuracy_m"] < 0.03 and m["completeness"] > 0.95
    assert np.isfinite(m["peer_accuracy_m"])
    # a recording in z-up coordinates comes with its reference in them too: both are turned to +Y-up (the
    # reference was left as it was: accuracy 1.2 m on a box room)
    to_z_up = np.linalg.inv(up_rotation("+z"))[:3, :3]  # our +Y-up world -> the recording's z-up coordinates
    write_ply(tmp_path / "reference_z_up.ply", pts @ to_z_up.T, None)
    m = evaluate.evaluate_sequence(walk_frames, voxel=0.1, reference=tmp_path / "reference_z_up.ply",
                                   max_depth=40.0, peer=False, reference_up="+z")  # frames: as the reader turned them
    assert m["accuracy_m"] < 0.03 and m["completeness"] > 0.95


def test_ply_folder_with_video_fuses(walk_frames, tmp_path):
    """DeepVerse layout: generated_video.mp4 (RGB | depth panels) + generated_video_frame{i}.ply every 8 frames,
    points in the first camera's OpenCV (y-down) world."""
    folder = tmp_path / "deepverse_out"
    folder.mkdir()
    write_mp4(folder / "generated_video.mp4", walk_frames, fps=10)
    A = up_rotation("-y")
    originals = {}
    for i in (0, 8):
        f = walk_frames[i]
        pts, pix = unproject_depth(f.depth, f.K, f.c2w, max_depth=40)
        cols = f.rgb.reshape(-1, 3)[pix]
        originals[i] = pts
        write_ply(folder / f"generated_video_frame{i}.ply", pts @ A[:3, :3].T, cols)
    assert detect_format(folder) == "ply"
    seq = open_sequence(folder)
    assert len(seq) == 2 and not seq.has_depth
    for k, i in enumerate((0, 8)):
        g = seq[k]
        assert g.world_points is not None and (g.depth == 0).all()
        np.testing.assert_allclose(g.world_points, originals[i], atol=1e-3)
        assert g.rgb.shape == walk_frames[i].rgb.shape  # the left (RGB) panel of the video frame i
        assert np.abs(g.rgb.astype(int) - walk_frames[i].rgb).mean() < 12
    pm = VoxelPointMap(0.1)
    for g in seq:
        fuse_frame(pm, g)
    pts, _ = pm.points()
    assert len(pts) > 1000
    m = evaluate.evaluate_sequence(seq, voxel=0.1)
    assert m["map_points"] == len(pts) and "peer_tsdf_ms_per_frame" not in m
    # the video is decoded on demand, a few frames kept (it was decoded into RAM whole at open): a PLY per video
    # frame, read backwards (every read a seek back) and forwards, gives the same images, and the cache stays small
    for i in range(len(walk_frames)):
        f = walk_frames[i]
        pts_i, pix = unproject_depth(f.depth, f.K, f.c2w, max_depth=40)
        write_ply(folder / f"generated_video_frame{i}.ply", pts_i[::50] @ A[:3, :3].T, f.rgb.reshape(-1, 3)[pix][::50])
    every = open_sequence(folder)
    every.VIDEO_CACHE_FRAMES = 4
    backwards = [every[k].rgb for k in reversed(range(len(every)))][::-1]
    forwards = [every[k].rgb for k in range(len(every))]
    assert len(every) == len(walk_frames) == 16
    assert all(np.array_equal(a, b) for a, b in zip(backwards, forwards)) and len(every._video.cache) == 4
    assert all(np.abs(g.astype(int) - f.rgb).mean() < 12 for g, f in zip(forwards, walk_frames))
    # closing a scene over the recording stops its decoder (an ffmpeg process) now, not when it is collected
    scene = Scene(ReplayWorld(every))
    scene.reset(0)
    decoder = every._video._reader
    assert decoder is not None and decoder.gi_frame is not None
    scene.close()
    assert decoder.gi_frame is None and every._video._reader is None
    assert np.array_equal(every[5].rgb, forwards[5])  # and reading again starts a new one
    every.close()

    (folder / "generated_video.mp4").unlink()  # without the video: small placeholder previews
    g = open_sequence(folder)[1]
    assert g.rgb.shape == (96, 128, 3) and g.rgb.std() > 0


# ----------------------------------------------------------------------------------------------- errors


def test_a_ply_folders_points_turn_with_its_world_up(tmp_path):
    """Guards the point clouds' turn to +Y up for an up axis whose turn is not its own inverse (+z; the default -y
    is): a point up the source's z axis lands up +Y, and its y axis becomes -Z, as the cameras turn."""
    folder = tmp_path / "plys"
    folder.mkdir()
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    write_ply(folder / "cloud_frame0.ply", pts, np.full((3, 3), 200, np.uint8))
    seq = open_sequence(folder, world_up="+z")
    np.testing.assert_allclose(seq[0].world_points, [[0.0, 2.0, 0.0], [0.0, 0.0, -1.0], [3.0, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(seq.c2ws[0], up_rotation("+z"), atol=1e-12)


def test_partial_or_corrupt_folders_name_the_file(mini_tum, tmp_path):
    assert len(open_sequence(mini_tum)) == 5

    gt = mini_tum / "groundtruth.txt"
    gt.rename(tmp_path / "gt.bak")
    with pytest.raises(SequenceError, match="groundtruth.txt"):
        open_sequence(mini_tum)
    (tmp_path / "gt.bak").rename(gt)

    third_depth = [ln.split()[1] for ln in (mini_tum / "depth.txt").read_text().splitlines()
                   if ln.strip() and not ln.startswith("#")][2]
    (mini_tum / third_depth).rename(tmp_path / "depth.bak")
    with pytest.raises(SequenceError, match=Path(third_depth).name) as e:
        open_sequence(mini_tum)
    assert "depth.txt" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "depth.bak").rename(mini_tum / third_depth)

    first_rgb = sorted((mini_tum / "rgb").iterdir())[0]
    first_rgb.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(SequenceError, match=first_rgb.name):
        open_sequence(mini_tum)  # frame 0 is decoded at open
    seq = open_sequence(mini_tum, check_first=False)
    with pytest.raises(SequenceError, match=first_rgb.name):
        seq[0]


def test_bad_paths_and_folders(tmp_path, walk_frames, capsys):
    with pytest.raises(SequenceError, match="no such folder"):
        open_sequence(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SequenceError, match="not a recognised sequence folder"):
        detect_format(empty)
    _write_7scenes(tmp_path / "scene" / "seq-01", walk_frames[:2])
    with pytest.raises(SequenceError, match="seq-01"):
        detect_format(tmp_path / "scene")
    (tmp_path / "scene" / "seq-01" / "frame-000001.pose.txt").unlink()
    with pytest.raises(SequenceError, match="frame-000001.pose.txt"):
        open_sequence(tmp_path / "scene" / "seq-01")
    g = tmp_path / "generic"
    (g / "rgb").mkdir(parents=True)
    (g / "depth").mkdir()
    Image.fromarray(walk_frames[0].rgb).save(g / "rgb" / "0.png")
    np.save(g / "depth" / "0.npy", walk_frames[0].depth)
    with pytest.raises(SequenceError, match="poses.txt"):
        open_sequence(g)
    with pytest.raises(SequenceError, match="world_up"):
        up_rotation("up")

    import launch

    rc = launch.main(["eval-recon", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- replay backend


def test_replay_world_plays_the_recording(mini_tum):
    world = create_world(f"replay:{mini_tum}")
    assert isinstance(world, ReplayWorld) and len(world) == 5
    seq = world.sequence
    frames = [world.reset(0)]
    for _ in range(6):  # past the end: stays on the last frame
        frames.append(world.step(Action("F", "N"), Context(recent=frames[-4:])))
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.c2w, seq.c2ws[min(k, 4)])
        assert f.index == k
    assert world.finished and frames[3].action == Action("F", "N")
    target = world.step(TargetPose(seq.c2ws[2] + 1e-3), Context(recent=frames[-1:]))
    np.testing.assert_array_equal(target.c2w, seq.c2ws[2])
    assert not world.finished
    np.testing.assert_array_equal(world.predict_c2w(target, Action("F", "N")), seq.c2ws[3])
    desc = world.describe()
    assert desc["kind"] == "replay" and desc["path"] == str(mini_tum.resolve()) and json.dumps(desc)
    assert len(world_from_description(desc)) == 5
    assert parse_replay_arg("/a/b?up=+z&stride=2") == ("/a/b", {"world_up": "+z", "stride": 2})
    assert parse_replay_arg("/a/what?x") == ("/a/what?x", {})
    assert len(create_world(f"replay:{mini_tum}?stride=2")) == 3


def test_replay_in_a_scene_with_session_round_trip(mini_tum, tmp_path):
    scene = Scene(create_world(f"replay:{mini_tum}"), SceneConfig(voxel_size=0.05, max_depth=10.0))
    seq = scene.model.sequence
    scene.reset(0)
    scene.run([Action("F", "N")] * 3)
    assert scene.length == 4 and len(scene.map) > 1000
    np.testing.assert_array_equal(scene.current.c2w, seq.c2ws[3])
    scene.seek(1)
    scene.step(Action("F", "N"))  # forks: the frame after recorded frame 1
    assert scene.branch_name != "main"
    np.testing.assert_array_equal(scene.current.c2w, seq.c2ws[2])
    scene.switch_branch("main")

    saved = save_session(scene, tmp_path / "session")
    meta = json.loads((saved / "session.json").read_text())
    assert meta["world"]["kind"] == "replay"
    loaded = load_session(saved)
    assert isinstance(loaded.model, ReplayWorld)
    np.testing.assert_array_equal(loaded.map.points()[0], scene.map.points()[0])
    loaded.step(Action("F", "N"))  # continues the recording after the saved cursor (recorded frame 3)
    np.testing.assert_array_equal(loaded.current.c2w, seq.c2ws[4])
    scene.close()
    loaded.close()

    moved = mini_tum.with_name(mini_tum.name + "_moved")
    mini_tum.rename(moved)  # a recording moved away: the session says where it was
    with pytest.raises(ValueError, match=f"replay recording cannot be opened: it was at {mini_tum}, and is not there "
                                         "now; put it back there"):
        load_session(saved)
    moved.rename(mini_tum)
    shutil.rmtree(mini_tum / "rgb")
    with pytest.raises(ValueError, match="replay recording"):
        load_session(saved)


def test_a_recordings_depth_dropouts_are_not_far_field(mini_tum, tmp_path):
    """Depth 0 in a recording is a dropout (no measurement), not the sky: the memory's far-field panorama
    (what lies beyond the fuse range, by direction) keeps none of it, while a simulator's sky fills it. What
    depth 0 means is kept with each frame in a session."""
    from memory.bank import GeometricMemory, MemoryConfig
    from scenes.framestore import FrameFileError, read_frame, write_frame

    scene = Scene(create_world(f"replay:{mini_tum}"), SceneConfig(voxel_size=0.05, max_depth=10.0),
                  memory=GeometricMemory(MemoryConfig()))
    scene.reset(0)
    scene.run([Action("F", "N")] * 3)
    dropouts = [float((scene.frame_at(i).depth == 0).mean()) for i in range(scene.length)]
    assert min(dropouts) > 0.01  # every frame has some
    assert not scene.memory.far.valid.any() and not scene.current.zero_depth_is_sky
    recorded = scene.current
    scene.close()

    sim = create_world("procedural", width=64, height=48)
    scene = Scene(sim, SceneConfig(voxel_size=0.2), memory=GeometricMemory(MemoryConfig()))
    first = scene.reset(0)
    assert first.zero_depth_is_sky and (first.depth == 0).any() and scene.memory.far.valid.any()
    for frame in (first, recorded):
        write_frame(tmp_path / "f.safetensors", frame)
        assert read_frame(tmp_path / "f.safetensors").zero_depth_is_sky == frame.zero_depth_is_sky
    # frame files written before they said it: read as the session's world made them (a simulator's: sky)
    scene.run([Action("F", "N")] * 2)
    saved = save_session(scene, tmp_path / "old_session")
    scene.close()
    from safetensors import safe_open
    from safetensors.numpy import save_file
    for path in sorted((saved / "frames").iterdir()):
        with safe_open(str(path), framework="numpy") as f:
            meta, arrays = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        del meta["zero_depth_is_sky"]
        save_file(arrays, str(path), metadata=meta)
    assert not read_frame(path).zero_depth_is_sky  # alone, a file that does not say is no measurement
    loaded = load_session(saved)
    assert all(loaded.frame_at(i).zero_depth_is_sky for i in range(loaded.length))
    loaded.close()
    save_file(arrays, str(path), metadata={**meta, "zero_depth_is_sky": "yes"})
    with pytest.raises(FrameFileError, match="corrupt"):
        read_frame(path)


def test_reference_mesh_accuracy_and_completeness(tmp_path):
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    for name in ("box.ply", "box.glb"):
        box.export(tmp_path / name)
        ref = evaluate.load_reference(tmp_path / name, voxel=0.02)
        assert len(ref) >= 10_000 and np.abs(ref).max() <= 0.5 + 1e-9
        top = ref[ref[:, 1] > 0.499]  # one face of six, lifted 1 cm
        acc, comp = evaluate.accuracy_completeness(top + [0.0, 0.01, 0.0], ref, voxel=0.02)
        assert 0.009 < acc < 0.011 and 0.12 < comp < 0.25
    with pytest.raises(evaluate.EvalError, match="does not exist"):
        evaluate.load_reference(tmp_path / "none.ply", 0.02)


def test_a_fixed_camera_replays_the_right_frame_after_a_seek_a_fork_and_a_reopen(tmp_path):
    """Frames may share a pose (a fixed camera watching a changing scene; a PLY folder without poses): after a
    seek, a fork or a reopened session the next step is the recorded frame after the one on screen (it was
    frame 4 after seek(1), and the recording started over after a reopen)."""
    folder = tmp_path / "fixed"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    (folder / "intrinsics.txt").write_text("60 60 32 24\n")
    c2w = " ".join(repr(float(v)) for v in np.eye(4).reshape(-1))
    (folder / "poses.txt").write_text((c2w + "\n") * 6)
    for i in range(6):  # recorded frame i is grey level 40 * i
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(folder / "rgb" / f"{i:04d}.png")
        np.save(folder / "depth" / f"{i:04d}.npy", np.full((48, 64), 2.0, np.float32))

    def recorded(scene) -> int:
        return int(scene.current.rgb[0, 0, 0]) // 40

    scene = Scene(create_world(f"replay:{folder}"), SceneConfig(voxel_size=0.2))
    scene.reset(0)
    scene.run([Action("F", "N")] * 3)
    assert recorded(scene) == 3
    scene.seek(1)
    scene.step(Action("F", "N"))  # a fork from frame 1
    assert recorded(scene) == 2
    scene.switch_branch("main")
    scene.step(Action("F", "N"))
    assert recorded(scene) == 4
    saved = save_session(scene, tmp_path / "s")
    scene.close()
    reopened = load_session(saved)
    assert recorded(reopened) == 4
    reopened.step(Action("F", "N"))
    assert recorded(reopened) == 5
    reopened.run([Action("F", "N")] * 3)  # past the end: the last frame again
    reopened.seek(2)
    reopened.step(Action("F", "N"))
    assert recorded(reopened) == 3
    reopened.close()


def small_tum_copy(tum_path: Path, folder: Path, n: int = 4) -> list[str]:
    """The first ``n`` frames of the TUM sample in ``folder`` (same files, same lists); -> their rgb.txt lines."""
    lines = {}
    for name in ("rgb", "depth"):
        (folder / name).mkdir(parents=True)
        rows = [r for r in (tum_path / f"{name}.txt").read_text().splitlines() if r and not r.startswith("#")][:n]
        for r in rows:
            shutil.copy(tum_path / r.split()[1], folder / r.split()[1])
        lines[name] = rows
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n")
    shutil.copy(tum_path / "groundtruth.txt", folder / "groundtruth.txt")
    return lines["rgb"]


def test_tum_lists_are_read_as_tum_tools_read_them(tum_path, tmp_path):
    """Time order whatever the order of rgb.txt's lines; a UTF-8 byte-order mark (Windows editors) and macOS's
    ``._name`` files beside the images change nothing; a camera of another size with no intrinsics given is
    refused (TUM's default K is for 640x480; the map was off by 0.2-1 m with no word)."""
    small_tum_copy(tum_path, tmp_path / "plain")
    reference = open_sequence(tmp_path / "plain")
    folder = tmp_path / "odd"
    rows = small_tum_copy(tum_path, folder)
    (folder / "rgb.txt").write_text("\ufeff" + "\r\n".join(reversed(rows)) + "\r\n", encoding="utf-8")
    (folder / "rgb" / "._x.png").write_bytes(b"\0\5\26\7")  # an AppleDouble file, not an image
    seq = open_sequence(folder)
    assert len(seq) == len(reference) == 4 and np.all(np.diff(seq.timestamps) > 0)
    np.testing.assert_array_equal(seq.c2ws, reference.c2ws)
    np.testing.assert_array_equal(seq[2].rgb, reference[2].rgb)

    small = tmp_path / "small"
    small_tum_copy(tum_path, small)
    for p in list((small / "rgb").iterdir()) + list((small / "depth").iterdir()):
        im = Image.open(p)
        im.resize((320, 240), Image.NEAREST).save(p)
    with pytest.raises(SequenceError, match=r"320x240, but no intrinsics were given .*worldstudio\.json"):
        open_sequence(small)[0]
    (small / "worldstudio.json").write_text(json.dumps({"K": [[262.5, 0, 159.75], [0, 262.5, 119.75], [0, 0, 1]]}))
    assert open_sequence(small)[0].K[0, 0] == 262.5


def sparse_tum_copy(tum_path: Path, folder: Path, every: int = 6, n: int = 4) -> list[tuple[str, str]]:
    """Every ``every``-th colour image of the TUM sample (n of them, ~0.2 s apart) with its nearest depth image,
    in ``folder``'s rgb/ and depth/ (no lists written) -> [(rgb line, depth line)]."""
    rows = {name: [r for r in (tum_path / f"{name}.txt").read_text().splitlines() if r and not r.startswith("#")]
            for name in ("rgb", "depth")}
    depth_t = np.array([float(r.split()[0]) for r in rows["depth"]])
    out = []
    for name in ("rgb", "depth"):
        (folder / name).mkdir(parents=True)
    for r in rows["rgb"][::every][:n]:
        d = rows["depth"][int(np.argmin(np.abs(depth_t - float(r.split()[0]))))]
        for line in (r, d):
            shutil.copy(tum_path / line.split()[1], folder / line.split()[1])
        out.append((r, d))
    return out


def test_tum_ground_truth_once_per_image_associations_and_calibration(tum_path, tmp_path):
    """Valid TUM-format folders that differ from the TUM downloads: ground truth written once per image at 5 Hz
    (ICL-NUIM's, or a SLAM system's own), associate.py's associations.txt instead of rgb.txt/depth.txt (depth
    first, as ICL-NUIM writes it) with a lone *.gt.freiburg trajectory, and ETH3D's calibration.txt. Each reads
    the same poses as the full 100 Hz ground truth; poses that only bracket images from 0.2 s apart are still
    refused, saying why."""
    from worldmodel.tum import format_tum, read_tum_rows

    gt = read_tum_rows(tum_path / "groundtruth.txt")

    def gt_at(times) -> str:  # one pose per time, interpolated from the full ground truth
        poses, ok = interpolate_poses(gt, np.asarray(times))
        assert ok.all()
        return format_tum(poses, np.asarray(times))

    full = tmp_path / "full"
    pairs = sparse_tum_copy(tum_path, full)
    (full / "rgb.txt").write_text("".join(r + "\n" for r, _ in pairs))
    (full / "depth.txt").write_text("".join(d + "\n" for _, d in pairs))
    shutil.copy(tum_path / "groundtruth.txt", full / "groundtruth.txt")
    reference = open_sequence(full)
    assert len(reference) == 4 and np.diff(reference.timestamps).min() > 0.15
    assert any("TUM's default fx=fy=525" in n for n in reference.notes)  # what it assumed is said
    times = [float(r.split()[0]) for r, _ in pairs]

    per_image = tmp_path / "per_image"
    sparse_tum_copy(tum_path, per_image)
    for name in ("rgb.txt", "depth.txt"):
        shutil.copy(full / name, per_image / name)
    (per_image / "groundtruth.txt").write_text(gt_at(times))
    np.testing.assert_allclose(open_sequence(per_image).c2ws, reference.c2ws, atol=1e-9)
    lines = gt_at(times).splitlines()  # a SLAM system's trajectory writes NaN where it lost tracking
    lines[-3] = f"{times[1]:.6f}" + " nan" * 7
    (per_image / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    lost = open_sequence(per_image)
    assert len(lost) == 3 and [p.name for p in lost.rgb_files] == [reference.rgb_files[i].name for i in (0, 2, 3)]
    np.testing.assert_allclose(lost.c2ws, reference.c2ws[[0, 2, 3]], atol=1e-9)
    assert "1 lines of groundtruth.txt hold NaN/inf or a zero quaternion (tracking lost?): no pose is taken from them" \
        in lost.notes and any("1 frames lie outside the ground truth or in a gap" in n for n in lost.notes)
    (per_image / "groundtruth.txt").write_text("".join(f"{t} 0 0 0 0 0 0 0\n" for t in times))
    with pytest.raises(SequenceError, match="every pose holds NaN/inf or a zero quaternion"):
        open_sequence(per_image)
    (per_image / "groundtruth.txt").write_text(gt_at([t - 0.05 for t in times]))  # none within 0.02 s
    with pytest.raises(SequenceError, match=r"no pose within 0.02 s of any image .* more than 0.1 s apart"):
        open_sequence(per_image)

    # ICL-NUIM's release: associations.txt (depth first), a lone *.gt.freiburg whose poses live in the renderer's
    # left-handed y-up world (S C S of the true OpenCV pose C, S = diag(1, -1, 1, 1)), and its own camera
    icl = tmp_path / "icl_like"
    sparse_tum_copy(tum_path, icl)
    (icl / "associations.txt").write_text("".join(f"{d} {r}\n" for r, d in pairs))  # depth first
    true_c2ws = up_rotation("+z").T @ reference.c2ws  # the TUM sample's poses as the file holds them
    S = np.diag([1.0, -1.0, 1.0, 1.0])
    (icl / "living_room0.gt.freiburg").write_text(format_tum(S @ true_c2ws @ S, np.asarray(times)))
    seq = open_sequence(icl)
    assert seq.format == "tum" and [p.name for p in seq.rgb_files] == [p.name for p in reference.rgb_files]
    assert [p.name for p in seq.depth_files] == [p.name for p in reference.depth_files]
    np.testing.assert_allclose(seq.c2ws, up_rotation("-y") @ true_c2ws, atol=1e-9)  # right-handed, y down
    assert seq.world_up == "-y" and np.linalg.det(seq.c2ws[:, :3, :3]).min() > 0.999
    np.testing.assert_array_equal(seq[1].depth, reference[1].depth)
    np.testing.assert_allclose(seq[0].K, [[481.2, 0, 319.5], [0, 480.0, 239.5], [0, 0, 1]])  # a positive fy
    assert any("ICL-NUIM's camera" in n for n in seq.notes) and any("reflected" in n for n in seq.notes)
    # its reference mesh (in the renderer's coordinates, as the poses were) is reflected with them: the camera
    # centres of the file land where the frames' are
    file_poses = S @ true_c2ws @ S
    np.testing.assert_allclose(file_poses[:, :3, 3] @ seq.world_from_source().T, seq.c2ws[:, :3, 3], atol=1e-9)
    np.testing.assert_allclose(reference.world_from_source(), up_rotation("+z")[:3, :3])

    # the same, renamed as SLAM repositories' download scripts leave it: groundtruth.txt, rgb.txt and depth.txt
    # with frame numbers for times
    renamed = tmp_path / "icl_renamed"
    sparse_tum_copy(tum_path, renamed)
    (renamed / "rgb.txt").write_text("".join(f"{k + 1} {r.split()[1]}\n" for k, (r, _) in enumerate(pairs)))
    (renamed / "depth.txt").write_text("".join(f"{k + 1} {d.split()[1]}\n" for k, (_, d) in enumerate(pairs)))
    (renamed / "groundtruth.txt").write_text(format_tum(S @ true_c2ws @ S, np.arange(1.0, len(pairs) + 1)))
    again = open_sequence(renamed)
    np.testing.assert_allclose(again.c2ws, seq.c2ws, atol=1e-9)
    assert again.world_up == "-y" and again[0].K[1, 1] == 480.0
    (renamed / "worldstudio.json").write_text(json.dumps({"icl_nuim": False}))  # another dataset's frame numbers
    other = open_sequence(renamed)
    np.testing.assert_allclose(other.c2ws, up_rotation("+z") @ S @ true_c2ws @ S, atol=1e-9)
    assert other[0].K[1, 1] == 525.0 and not any("ICL-NUIM" in n for n in other.notes)

    # TUM's own sequence with a calibration.txt (as badslam asks for) stays z-up
    calibrated = tmp_path / "tum_calibrated"
    shutil.copytree(full, calibrated)
    (calibrated / "calibration.txt").write_text("517.3 516.5 318.6 255.3\n")  # fr1's own camera
    calibrated = open_sequence(calibrated)
    assert calibrated[0].K[0, 0] == 517.3 and not any("default" in n for n in calibrated.notes)
    assert calibrated.world_up == "+z" and not any("assumed" in n for n in calibrated.notes)
    # another TUM-format folder with its own camera (ETH3D's calibration.txt): up is the cameras' mean up, y or z
    eth3d = tmp_path / "eth3d_like"
    shutil.copytree(full, eth3d)
    (eth3d / "calibration.txt").write_text("520.9 521.0 325.1 249.7\n")  # ETH3D's fx fy cx cy
    (eth3d / "groundtruth.txt").write_text(format_tum(true_c2ws, np.asarray(times)))  # no freiburg bag named
    calibrated = open_sequence(eth3d)
    assert calibrated[0].K[0, 0] == 520.9 and calibrated[0].K[1, 2] == 249.7
    assert calibrated.world_up == "+z" and any("world up +z assumed" in n for n in calibrated.notes)
    y_up = tmp_path / "eth3d_y_up"  # the same cameras in a y-up world
    shutil.copytree(eth3d, y_up)
    (y_up / "groundtruth.txt").write_text(format_tum(up_rotation("+z") @ true_c2ws, np.asarray(times)))
    np.testing.assert_allclose(open_sequence(y_up).c2ws, reference.c2ws, atol=1e-9)


def test_generic_folders_from_scanner_exports(walk_frames, tmp_path):
    """ScanNet-style generic folders: a 4x4 intrinsics file, -inf poses where tracking was lost (those frames
    are skipped, with a note), and depth in a format the reader does not take is named as such."""
    from tests.test_recording_checks import generic

    folder = generic(tmp_path / "scan", walk_frames[:4])
    (folder / "worldstudio.json").unlink()
    K4 = np.eye(4)
    K4[:3, :3] = walk_frames[0].K
    (folder / "intrinsics.txt").write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in K4) + "\n")
    lines = (folder / "poses.txt").read_text().splitlines()
    lines[2] = " ".join(["-inf"] * 16)
    (folder / "poses.txt").write_text("\n".join(lines) + "\n")
    seq = open_sequence(folder)
    assert len(seq) == 3 and [p.name for p in seq.rgb_files] == ["0000.png", "0001.png", "0003.png"]
    assert "1 frames have an inf/NaN pose in poses.txt (tracking lost): skipped" in seq.notes
    np.testing.assert_allclose(seq[2].K, walk_frames[0].K, atol=1e-6)
    np.testing.assert_allclose(seq.c2ws[2], walk_frames[3].c2w, atol=1e-6)

    import OpenEXR  # float depth as Blender and Record3D write it: metres in an EXR's Z channel

    (folder / "depth" / "0003.png").unlink()
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"Z": walk_frames[3].depth.astype(np.float32)}) as exr:
        exr.write(str(folder / "depth" / "0003.exr"))
    np.testing.assert_array_equal(open_sequence(folder)[2].depth, walk_frames[3].depth)
    (folder / "depth" / "0003.exr").write_bytes(b"v/1\x01 not an image")
    with pytest.raises(SequenceError, match=r"cannot read .*0003\.exr: not a valid EXR image"):
        open_sequence(folder)[2]

    (folder / "depth" / "0001.png").rename(folder / "depth" / "0001.tif")
    with pytest.raises(SequenceError, match=r"0001\.tif: \.tif depth is not read; convert it to \.npy or \.exr"):
        open_sequence(folder)


def test_hidden_files_are_not_frames_of_a_generic_or_ply_folder(tmp_path):
    folder = tmp_path / "generic"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    (folder / "intrinsics.txt").write_text("60 60 32 24\n")
    (folder / "poses.txt").write_text(" ".join(repr(float(v)) for v in np.eye(4).reshape(-1)) + "\n")
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(folder / "rgb" / "0000.png")
    np.save(folder / "depth" / "0000.npy", np.full((48, 64), 2.0, np.float32))
    (folder / "rgb" / "._0000.png").write_bytes(b"\0\5\26\7")
    (folder / "depth" / "._0000.npy").write_bytes(b"\0\5\26\7")
    assert len(open_sequence(folder)) == 1
    plys = tmp_path / "plys"
    plys.mkdir()
    write_ply(plys / "frame0.ply", np.random.default_rng(0).random((50, 3)).astype(np.float32) + [0, 0, 2],
              np.full((50, 3), 128, np.uint8))
    (plys / "._frame0.ply").write_bytes(b"\0\5\26\7")
    assert detect_format(plys) == "ply" and len(open_sequence(plys)) == 1


def test_a_headless_replay_stops_at_the_recordings_end_and_prints_its_notes(tum_path, tmp_path, capsys,
                                                                             monkeypatch):
    """`run` on a recording says what its reader noticed and stops at its last frame (it padded the walk with
    copies of the last frame, into the MP4, trajectory and transforms, without a word), and says --size does
    not apply. The recording is opened once (its voxel was picked from a second opening)."""
    import worldmodel.recordings
    from launch import main

    opened = []
    real_open = worldmodel.recordings.open_sequence
    monkeypatch.setattr(worldmodel.recordings, "open_sequence", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    out = tmp_path / "out"
    assert main(["run", "--world", f"replay:{tum_path}?max_frames=4", "--steps", "9", "--size", "64", "48",
                 "--no-video", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "the recording has 4 frames: the walk stops at its end, after 3 steps (not 9)" in err
    assert "--size does not apply to a recording" in err
    assert len(read_tum_trajectory(out / "trajectory.txt")[0]) == 4
    # a room 1.2 m from its camera is fused at 2 cm unless --voxel says otherwise (0.1 m lost 4.6 dB on return)
    assert "note: the map's voxels are 2 cm, for a recording 1.2 m from its camera" in err
    assert load_session(out / "session").config.voxel_size == 0.02
    assert len(opened) == 2  # one to play it, one to reopen the saved session (load_session above)


def test_a_recordings_voxel_follows_its_depth(monkeypatch):
    """1/50 of the median depth, rounded down to 2 or 5 cm; the generated worlds' 0.1 m from 5 m on; several
    frames decide, not a first frame up close to a wall or nearly empty (it made a room 1 cm: 1.9M points). The
    recording is fitted as the scene opens it: it is opened once (it was opened a second time to pick the size),
    and the size is said among its notes."""
    import worldmodel.recordings
    from scenes.factory import DEFAULT_VOXEL, make_scene, recording_notes, voxel_for_depth, voxel_fitted_to

    for median, voxel in ((0.4, 0.02), (1.2, 0.02), (3.0, 0.05), (5.0, DEFAULT_VOXEL), (30.0, DEFAULT_VOXEL)):
        depth = np.full((8, 8), median, np.float32)
        depth[0] = np.nan  # (no measurement does not count)
        assert voxel_for_depth(depth) == (voxel, pytest.approx(median))
    assert voxel_for_depth(np.zeros((8, 8), np.float32)) == (DEFAULT_VOXEL, None)
    assert voxel_fitted_to(create_world("procedural", width=32, height=24)) == DEFAULT_VOXEL
    opened = []
    real_open = worldmodel.recordings.open_sequence
    monkeypatch.setattr(worldmodel.recordings, "open_sequence", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    # the kind as the registry reads it: "Replay:PATH" opens the recording too, so it follows its depth too
    scene = make_scene(f"Replay:{TUM}?max_frames=30", memory=False, config=SceneConfig(voxel_size=0.3),
                       fit_voxel=True)
    try:
        assert scene.config.voxel_size == scene.map.voxel_size == 0.02 and len(opened) == 1
        assert recording_notes(scene)[-1].startswith("the map's voxels are 2 cm, for a recording 1.")
    finally:
        scene.close()
    scene = make_scene(f"replay:{TUM}?max_frames=3", memory=False, config=SceneConfig(voxel_size=0.3))
    try:  # a config given and no fit asked for: its size, and no note of one
        assert scene.map.voxel_size == 0.3 and not any("voxels" in n for n in recording_notes(scene))
    finally:
        scene.close()
    scene = make_scene(f"replay:{TUM}?max_frames=3", memory=False)  # a script's plain call: as `run` opens it
    try:
        assert scene.map.voxel_size == 0.02
    finally:
        scene.close()


def test_a_point_cloud_recordings_voxel_follows_its_points_depth(tmp_path):
    """A PLY folder (DeepVerse / Aether output) has no depth image: its voxel follows its points' z-depth in
    their cameras (it kept 0.1 m for any scale). A room's wall 1.2 m in front of the camera (OpenCV source world,
    the cameras walking along it) -> 2 cm; the same wall 30 m away -> 0.1 m."""
    from scenes.factory import DEFAULT_VOXEL, voxel_for_recording

    rng = np.random.default_rng(0)
    for distance, voxel in ((1.2, 0.02), (30.0, DEFAULT_VOXEL)):
        folder = tmp_path / f"plys_{distance}"
        folder.mkdir()
        poses = []
        for i in range(6):
            pose = np.eye(4)
            pose[0, 3] = 0.1 * i  # sideways along the wall
            poses.append(pose)
            pts = np.c_[rng.uniform(-1, 1, (4000, 2)) * distance + [0.1 * i, 0], np.full(4000, distance)]
            write_ply(folder / f"frame{i}.ply", pts.astype(np.float32), np.full((4000, 3), 99, np.uint8))
        rows = (" ".join(repr(float(v)) for v in pose.reshape(-1)) for pose in poses)
        (folder / "poses.txt").write_text("\n".join(rows) + "\n")
        sequence = open_sequence(folder)
        assert sequence[0].world_points is not None and (sequence[0].depth == 0).all()
        fitted, note = voxel_for_recording(sequence)
        assert fitted == voxel and (note is None) == (voxel == DEFAULT_VOXEL)
        if note is not None:
            assert f"a recording {distance:.1f} m from its camera" in note


def test_a_recordings_first_frame_alone_does_not_pick_its_voxel(tum_path, tmp_path):
    """The voxel follows the depth of frames spread over a recording's start: a first frame that sees only a far
    wall (here 8 m) or holds almost no depth leaves a room 1.2 m away at 2 cm."""
    from scenes.factory import voxel_for_recording

    folder = tmp_path / "room"
    small_tum_copy(tum_path, folder, n=12)
    first = folder / (folder / "depth.txt").read_text().splitlines()[0].split()[1]
    for depth_mm in (8000, 0):
        Image.fromarray(np.full((480, 640), depth_mm, np.uint16)).save(first)
        assert voxel_for_recording(open_sequence(folder))[0] == 0.02
    last = folder / (folder / "depth.txt").read_text().splitlines()[-1].split()[1]
    last.write_bytes(last.read_bytes()[:100])  # a frame that cannot be read: the frames before it decide
    assert voxel_for_recording(open_sequence(folder))[0] == 0.02


def test_the_studio_started_on_a_recording_prints_what_its_reader_noticed(tum_path, capsys):
    """`launch.py view --world replay:PATH` says what the reader assumed (here TUM's default intrinsics: there is
    no calibration.txt) and the voxel fitted to it, as `run` and *Open world* do (it said only the voxel); `info`
    says that voxel too."""
    from launch import build_parser, main
    from studio.app import build_scene

    scene = build_scene(build_parser().parse_args(["view", "--world", f"replay:{tum_path}?max_frames=6"]))
    try:
        err = capsys.readouterr().err
        assert "note: no calibration.txt: using TUM's default fx=fy=525" in err
        assert "note: the map's voxels are 2 cm" in err and scene.map.voxel_size == 0.02
    finally:
        scene.close()
    scene = build_scene(build_parser().parse_args(["view", "--world", f"replay:{tum_path}?max_frames=6",
                                                   "--voxel", "0.05"]))
    try:  # a size asked for is kept, and no other is said
        assert scene.map.voxel_size == 0.05 and "voxels are" not in capsys.readouterr().err
    finally:
        scene.close()
    assert main(["info", f"{tum_path}?max_frames=6"]) == 0  # info says the size they fuse it at
    assert "voxel     the map's voxels are 2 cm, for a recording 1." in capsys.readouterr().out


def test_the_studio_says_what_a_recordings_reader_noticed(tum_path, tmp_path):
    from types import SimpleNamespace

    from studio.app import Studio
    from studio.bench_util import free_port

    folder = tmp_path / "tum"
    rows = small_tum_copy(tum_path, folder, n=4)
    (folder / "rgb.txt").write_text("\n".join(rows + ["1305031299.000000 rgb/late.png"]) + "\n")  # no depth for it
    scene = Scene(create_world("procedural", width=48, height=36), SceneConfig(voxel_size=0.3))
    scene.reset(0)
    studio = Studio(scene, port=free_port(), root=tmp_path)
    notes = []
    studio.notify = lambda client, title, body, error=False: notes.append((title, body, error))
    try:
        studio.exports.world.value = "replay:tum"
        studio.exports._new_world(SimpleNamespace(client=None))
        assert studio.worker.wait_idle(60)
        assert studio.worker.scene.model.name == "replay"
        said = [body for title, body, error in notes if title == "Recording opened" and not error]
        assert said and said[0].startswith("1 colour images have no depth within 0.02 s (skipped); "), notes
        # fused at the voxel its depth calls for (the procedural scene's 0.3 m is not carried over), and said
        assert studio.worker.scene.config.voxel_size == 0.02 and "the map's voxels are 2 cm" in said[0]
        assert studio.inspect.voxel.value == 0.02
    finally:
        studio.close()
        studio.worker.scene.close()


def test_a_16_bit_grey_camera_is_scaled_to_8_bits_not_clipped(tmp_path):
    """An IR or mono camera's 16-bit grey images: 65535 is white and 32768 mid-grey (every pixel above 255 came
    out white)."""
    folder = tmp_path / "mono"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    (folder / "intrinsics.txt").write_text("60 60 32 24\n")
    (folder / "poses.txt").write_text(" ".join(repr(float(v)) for v in np.eye(4).reshape(-1)) + "\n")
    grey = np.zeros((48, 64), np.uint16)
    grey[:, 16:32], grey[:, 32:] = 32768, 65535
    Image.fromarray(grey).save(folder / "rgb" / "0000.png")
    np.save(folder / "depth" / "0000.npy", np.full((48, 64), 2.0, np.float32))
    rgb = open_sequence(folder)[0].rgb
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 20].tolist() == [128] * 3 and rgb[0, 40].tolist() == [255] * 3


def test_a_nerfstudio_dataset_opens_as_a_recording(walk_frames, tmp_path):
    """transforms.json with depth: this tool's own export reopens exactly (its "world_up" keeps our +Y-up
    world), and a phone capture's layout (Polycam / Record3D through nerfstudio: a colour image 2x its depth's,
    intrinsics per frame, frames listed out of order, nerfstudio's z-up world) gives the same frames at the
    depth's size. Without depth, or with a fisheye camera, it says why in one line."""
    from scenes.export import write_transforms_json

    frames = walk_frames[:4]
    ours = tmp_path / "export"
    write_transforms_json(ours, frames)
    assert detect_format(ours) == "nerfstudio"
    seq = open_sequence(ours)
    assert len(seq) == 4 and seq.world_up == "+y"
    for f, g in zip(frames, seq):
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)  # nerfstudio's half-pixel principal point undone
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)

    phone = tmp_path / "polycam"
    (phone / "images").mkdir(parents=True)
    (phone / "depth").mkdir()
    h, w = frames[0].depth.shape
    to_z_up = np.linalg.inv(up_rotation("+z"))  # our +Y-up world -> nerfstudio's z-up one
    entries = []
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(phone / "images" / f"frame_{i + 1}.jpg",
                                                                          quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(phone / "depth" / f"frame_{i + 1}.png")
        K2 = f.K * [[2], [2], [1]]  # the colour camera, in nerfstudio's convention (pixel centres at +0.5)
        entries.append({"file_path": f"images/frame_{i + 1}.jpg", "depth_file_path": f"depth/frame_{i + 1}.png",
                        "fl_x": K2[0, 0], "fl_y": K2[1, 1], "cx": 2 * (f.K[0, 2] + 0.5), "cy": 2 * (f.K[1, 2] + 0.5),
                        "w": 2 * w, "h": 2 * h,
                        "transform_matrix": (to_z_up @ f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()})
    (phone / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "k1": 0.01,
                                                       "frames": entries[::-1]}))
    seq = open_sequence(phone)
    assert seq.format == "nerfstudio" and seq.world_up == "+z" and len(seq) == 4
    assert [p.name for p in seq.rgb_files] == ["frame_1.jpg", "frame_2.jpg", "frame_3.jpg", "frame_4.jpg"]
    assert any("k1" in n and "ignored" in n for n in seq.notes)
    for f, g in zip(frames, seq):
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < 8
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
    assert any(f"resized to their depth's size ({w}x{h})" in n for n in seq.notes), seq.notes
    assert any("world up +z assumed: of y and z, the axis nearer the cameras' mean up" in n for n in seq.notes)

    # an ARKit (Record3D) world is y-up and nerfstudio keeps it: the cameras say so; depth as millimetre .npy
    meta = json.loads((phone / "transforms.json").read_text())
    for e in meta["frames"]:
        e["transform_matrix"] = (up_rotation("+z") @ np.asarray(e["transform_matrix"])).tolist()  # back to +Y up
        e["depth_file_path"] = e["depth_file_path"].replace(".png", ".npy")
        mm = np.asarray(Image.open(phone / e["depth_file_path"].replace(".npy", ".png")), np.float32)
        np.save(phone / e["depth_file_path"], mm)
    (phone / "transforms.json").write_text(json.dumps({**meta, "depth_unit_scale_factor": 0.001}))
    seq = open_sequence(phone)
    assert seq.world_up == "+y" and any("world up +y assumed" in n for n in seq.notes)
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)  # nerfstudio's scale, as PNG
    assert open_sequence(phone, world_up="+z").world_up == "+z"  # ?up= still decides
    (phone / "transforms.json").write_text(json.dumps({**meta, "orientation_override": "none"}))
    assert open_sequence(phone).world_up == "+z"  # nerfstudio oriented it (its Polycam export): z-up, no guess

    del meta["frames"][2]["depth_file_path"]  # the list is backwards: this is frame_2's entry
    (phone / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(SequenceError, match=r"frame images/frame_2\.jpg has no depth_file_path; this tool needs a "
                                            r"depth image per frame"):
        open_sequence(phone)
    (phone / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV_FISHEYE", "frames": entries}))
    with pytest.raises(SequenceError, match="OPENCV_FISHEYE is not a pinhole camera; undistort"):
        open_sequence(phone)


def test_instant_ngp_fields_of_view_give_each_axis_its_focal_length(walk_frames, tmp_path):
    """Guards instant-ngp's camera_angle_x / camera_angle_y (radians, no fl_x / fl_y) on a non-square image: fx is
    half the width over tan(angle_x / 2), fy half the height over tan(angle_y / 2)."""
    from scenes.export import write_transforms_json

    f = walk_frames[0]
    h, w = f.depth.shape
    folder = tmp_path / "ngp"
    tj = write_transforms_json(folder, [f])
    meta = json.loads(tj.read_text())
    fx, fy = meta.pop("fl_x"), meta.pop("fl_y")
    meta.update(camera_angle_x=2 * np.arctan(0.5 * w / fx), camera_angle_y=2 * np.arctan(0.5 * h / fy))
    tj.write_text(json.dumps(meta))
    np.testing.assert_allclose(open_sequence(folder)[0].K, f.K, atol=1e-9)


def test_a_nerfcapture_folder_as_splatam_writes_it(walk_frames, tmp_path):
    """NeRFCapture through SplaTAM's script: rgb/N.png, depth/N.png (metres x 65535 / 10), transforms.json with
    ``depth_path`` and instant-ngp's ``integer_depth_scale`` (metres per unit), ARKit's OpenGL cameras in its
    y-up world. It has rgb/ + depth/ like a generic folder, but the transforms.json decides; without either a
    poses.txt or a transforms.json the one line says what a folder of rgb/ + depth/ lacks."""
    frames = walk_frames[:3]
    folder = tmp_path / "capture"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    h, w = frames[0].depth.shape
    K = frames[0].K
    entries = []
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / "rgb" / f"{i}.png")
        units = np.clip(np.round(np.nan_to_num(f.depth) * 65535 / 10.0), 0, 65535).astype(np.uint16)
        Image.fromarray(units).save(folder / "depth" / f"{i}.png")
        entries.append({"file_path": f"rgb/{i}.png", "depth_path": f"depth/{i}.png",
                        "transform_matrix": (f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()})
    (folder / "transforms.json").write_text(json.dumps({
        "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5, "w": w, "h": h,
        "integer_depth_scale": 10.0 / 65535, "frames": entries}))
    assert detect_format(folder) == "nerfstudio"
    seq = open_sequence(folder)
    assert len(seq) == 3 and seq.world_up == "+y"
    for f, g in zip(frames, seq):
        np.testing.assert_array_equal(g.rgb, f.rgb)
        valid = np.isfinite(f.depth) & (f.depth > 0) & (f.depth < 10)
        np.testing.assert_allclose(g.depth[valid], f.depth[valid], atol=0.5 * 10 / 65535 + 1e-6)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)

    (folder / "transforms.json").unlink()
    with pytest.raises(SequenceError, match=r"holds rgb/ and depth/ but no poses\.txt, and no other layout this "
                                            r"tool reads; for a generic folder write poses\.txt"):
        open_sequence(folder)


def test_a_scannet_export_opens_at_the_depth_cameras_size(walk_frames, tmp_path):
    """ScanNet's SensReader export (color/N.jpg at the colour camera's size, depth/N.png in mm, pose/N.txt with
    -inf where tracking was lost, intrinsic/intrinsic_depth.txt): colour resized to the depth's size, the depth
    camera's K, lost frames skipped with a note, ScanNet's z-up world turned to +Y up."""
    frames = walk_frames[:4]
    scan = tmp_path / "scene0000_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scan / sub).mkdir(parents=True)
    h, w = frames[0].depth.shape
    to_z_up = np.linalg.inv(up_rotation("+z"))
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(scan / "color" / f"{i}.jpg", quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(scan / "depth" / f"{i}.png")
        pose = np.full((4, 4), -np.inf) if i == 1 else to_z_up @ f.c2w
        (scan / "pose" / f"{i}.txt").write_text("\n".join(" ".join(f"{v:.9f}" for v in r) for r in pose) + "\n")
    K4 = np.eye(4)
    K4[:3, :3] = frames[0].K
    (scan / "intrinsic" / "intrinsic_depth.txt").write_text("\n".join(" ".join(f"{v:g}" for v in r) for r in K4))
    assert detect_format(scan) == "scannet"
    seq = open_sequence(scan)
    assert len(seq) == 3 and seq.world_up == "+z" and list(seq.timestamps) == [0, 2, 3]
    assert "1 frames have an inf/NaN pose in pose/ (tracking lost): skipped" in seq.notes
    for f, g in zip([frames[0], frames[2], frames[3]], seq):
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < 8
        np.testing.assert_allclose(g.K, f.K, atol=1e-4)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-7)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
    (scan / "intrinsic" / "intrinsic_depth.txt").rename(scan / "intrinsics_depth.txt")  # scannet_frames_25k's
    np.testing.assert_allclose(open_sequence(scan)[0].K, frames[0].K, atol=1e-4)
    (scan / "intrinsics_depth.txt").unlink()
    with pytest.raises(SequenceError, match=r"intrinsic_depth\.txt is missing; export the intrinsics"):
        open_sequence(scan)
    # the colour camera's K on colour already at the depth's size (resized exports): refused, not fused wrong
    K4[:3, :3] = frames[0].K * [[2], [2], [1]]
    (scan / "intrinsic" / "intrinsic_color.txt").write_text("\n".join(" ".join(f"{v:g}" for v in r) for r in K4))
    for i in (0, 2, 3):
        Image.fromarray(frames[i].rgb).save(scan / "color" / f"{i}.jpg", quality=95)
    with pytest.raises(SequenceError, match=rf"intrinsics fx=.* do not fit a {w}x{h} image"):
        open_sequence(scan)


def test_eval_recon_on_depth_in_the_wrong_unit_is_one_line(walk_frames, tmp_path, capsys):
    """Depth that lies beyond the fuse range everywhere (metres written where millimetres were meant, or a
    wrong depth_scale) is one line from eval-recon, not open3d's "No block is touched" traceback."""
    from tests.test_recording_checks import generic

    from launch import main

    folder = generic(tmp_path / "seq", walk_frames[:3], depth_scale=1.0)  # millimetre PNGs read as metres
    assert main(["eval-recon", str(folder), "--voxel", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no frame has depth within 0..") and "frame 0's median depth:" in err[-1]
    assert "check the recording's depth scale" in err[-1]
    (tmp_path / "flat.obj").write_text("v 1 2\nv 2 3\n")  # 2-D vertices: a numpy traceback before
    assert main(["eval-recon", str(folder), "--reference", str(tmp_path / "flat.obj")]) == 2
    assert "its points are not 3-D" in capsys.readouterr().err
    (tmp_path / "cut.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    assert main(["eval-recon", str(folder), "--reference", str(tmp_path / "cut.ply")]) == 2
    assert "cut.ply: it lacks 'y'" in capsys.readouterr().err  # (a bare 'y' before)


def test_a_generic_folder_with_depth_smaller_than_colour(walk_frames, tmp_path):
    """A phone capture as a generic folder (Stray Scanner, Record3D: colour 2x its depth's size, K of the
    colour camera): colour is resized to the depth's size and K with it; images of another shape than their
    depth are still refused, since they are not one camera."""
    from tests.test_recording_checks import generic

    frames = walk_frames[:3]
    h, w = frames[0].depth.shape
    K2 = frames[0].K.copy()
    K2[:2] = [[2 * K2[0, 0], 0, 2 * K2[0, 2] + 0.5], [0, 2 * K2[1, 1], 2 * K2[1, 2] + 0.5]]  # centres kept
    folder = generic(tmp_path / "phone", frames, K=K2)
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(folder / "rgb" / f"{i:04d}.png")
    seq = open_sequence(folder)
    for f, g in zip(frames, seq):
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < 8
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
    assert any("resized to their depth's size" in n and "intrinsics with them" in n for n in seq.notes)
    Image.fromarray(frames[1].rgb[:, : w // 2]).save(folder / "rgb" / "0001.png")
    with pytest.raises(SequenceError, match=rf"depth is {w}x{h} but its colour image 0001\.png is {w // 2}x{h}; "
                                            "register depth to colour first"):
        open_sequence(folder)[1]


def test_a_colour_image_of_a_slightly_other_aspect_keeps_each_axis_own_scale(walk_frames, tmp_path):
    """Guards the K of a colour image resized to its depth's size when the two aspect ratios differ a little, as
    ScanNet's do (colour 1296x968, depth 640x480; here a quarter of that colour): x scales by the widths' ratio,
    y by the heights' (pixel centres kept). Swapped, cx is off by over a pixel on ScanNet's sizes."""
    from tests.test_recording_checks import generic

    frames = walk_frames[:2]
    h, w = frames[0].depth.shape
    cw, ch = 324, 242
    Kc = np.array([[300.0, 0.0, 161.2], [0.0, 290.0, 120.7], [0.0, 0.0, 1.0]])
    folder = generic(tmp_path / "scannet_like", frames, K=Kc)
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((cw, ch), Image.BILINEAR).save(folder / "rgb" / f"{i:04d}.png")
    sx, sy = w / cw, h / ch
    expected = np.array([[300.0 * sx, 0.0, 161.7 * sx - 0.5], [0.0, 290.0 * sy, 121.2 * sy - 0.5], [0.0, 0.0, 1.0]])
    seq = open_sequence(folder)
    assert seq[0].rgb.shape == (h, w, 3)
    np.testing.assert_allclose(seq[0].K, expected, atol=1e-9)


def test_a_replica_folder_as_nice_slam_ships_it(walk_frames, tmp_path):
    """Replica in NICE-SLAM's / SplaTAM's layout: results/frame*.jpg + depth*.png (value / 6553.5 m), traj.txt
    (row-major OpenCV c2w per line), cam_params.json in the parent folder; z-up world. Without cam_params.json
    Replica's documented camera is assumed, and said, and a frame of another size than it is refused."""
    frames = walk_frames[:3]
    scene = tmp_path / "Replica" / "room0"
    (scene / "results").mkdir(parents=True)
    to_z_up = np.linalg.inv(up_rotation("+z"))
    with open(scene / "traj.txt", "w") as fp:
        for i, f in enumerate(frames):
            Image.fromarray(f.rgb).save(scene / "results" / f"frame{i:06d}.jpg", quality=95)
            units = np.where(f.depth > 0, np.rint(f.depth * 6553.5), 0)
            Image.fromarray(np.where(units <= 65535, units, 0).astype(np.uint16)).save(
                scene / "results" / f"depth{i:06d}.png")
            fp.write(" ".join(repr(float(v)) for v in (to_z_up @ f.c2w).ravel()) + "\n")
    K = frames[0].K
    h, w = frames[0].depth.shape
    (scene.parent / "cam_params.json").write_text(json.dumps({"camera": {
        "w": w, "h": h, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "scale": 6553.5}}))
    assert detect_format(scene) == "replica"
    seq = open_sequence(scene)
    assert len(seq) == 3 and seq.world_up == "+z" and not seq.notes
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, K, atol=1e-9)
        near = (f.depth > 0) & (f.depth < 9.0)
        np.testing.assert_allclose(g.depth[near], f.depth[near], atol=1e-4)
        assert np.abs(g.rgb.astype(float) - f.rgb).mean() < 6
    (scene.parent / "cam_params.json").unlink()
    seq = open_sequence(scene, check_first=False)
    assert any("no cam_params.json: using Replica's fx=fy=600" in n for n in seq.notes)
    with pytest.raises(SequenceError, match=rf"is {w}x{h}, but no intrinsics were given and the replica default is "
                                            "for 1200x680 frames"):
        seq[0]
    with open(scene / "traj.txt", "a") as fp:
        fp.write(" ".join(["0"] * 16) + "\n")
    with pytest.raises(SequenceError, match="traj.txt:4: the pose is a rotation that is not orthonormal"):
        open_sequence(scene)


def test_replica_as_semantic_nerf_and_vmap_render_it(tmp_path):
    """Replica rendered by Habitat (Semantic-NeRF, vMAP): rgb/rgb_N.png, depth/depth_N.png (mm), traj_w_c.txt (line N:
    OpenCV c2w in Replica's z-up world), Habitat's 90° horizontal field of view: the frames read back exactly and
    their depth agrees between frames, as moved by the poses."""
    from worldmodel.actions import parse_actions
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld
    from worldmodel.recordings.checks import misreading, pose_agreement

    w, h = 160, 120
    world = ProceduralWorld(ProceduralConfig(width=w, height=h, fov_y_deg=2 * np.degrees(np.arctan(h / w))), seed=3)
    frames = [world.reset(3)]
    for a in parse_actions("(FN)(FN)(fLN)(FL)(FL)"):
        frames.append(world.step(a, Context(recent=frames[-4:])))
    folder = tmp_path / "room_0" / "Sequence_1"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    z_up = np.linalg.inv(up_rotation("+z"))
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / "rgb" / f"rgb_{i}.png")
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth" / f"depth_{i}.png")
    (folder / "traj_w_c.txt").write_text("".join(" ".join(f"{v:.15g}" for v in (z_up @ f.c2w).reshape(-1)) + "\n"
                                                 for f in frames))
    assert detect_format(folder) == "replica"
    seq = open_sequence(folder)
    assert seq.world_up == "+z" and len(seq) == len(frames) and any("90° horizontal field of view" in n
                                                                    for n in seq.notes)
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.K, f.K, atol=1e-6)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
    shares = pose_agreement(seq)["shares"]
    assert shares["as read"] >= 0.6 and misreading(shares) is None, shares
    (folder / "rgb" / "rgb_4.png").unlink()
    assert any("traj_w_c.txt has 6 poses and rgb/ images of 5 of them: the frames without an image are skipped" in n
               for n in open_sequence(folder).notes)
    (folder / "depth" / "depth_3.png").unlink()
    with pytest.raises(SequenceError, match=r"depth_3\.png is missing \(its colour image rgb_3\.png exists\)"):
        open_sequence(folder)
    (folder / "rgb" / "rgb_3.png").unlink()
    (folder / "rgb" / "rgb_0.png").write_bytes(b"")  # an interrupted copy: one line, not a traceback
    with pytest.raises(SequenceError, match=r"cannot read .*rgb_0\.png: not a valid image"):
        open_sequence(folder)


def test_replica_takes_its_camera_and_depth_scale_from_cam_params_and_poses_by_frame_number(walk_frames, tmp_path):
    """Guards what the Replica tests above cannot tell (square pixels, the default 6553.5 scale, the last frame
    missing): cam_params.json's fx and fy go to K[0, 0] and K[1, 1] and its "scale" divides the depth; a Habitat
    render missing a middle frame's image gives each remaining rgb_N the pose on line N of traj_w_c.txt."""
    frames = walk_frames[:4]
    h, w = frames[0].depth.shape
    to_z_up = np.linalg.inv(up_rotation("+z"))
    scene = tmp_path / "room1"
    (scene / "results").mkdir(parents=True)
    with open(scene / "traj.txt", "w") as fp:
        for i, f in enumerate(frames[:2]):
            Image.fromarray(f.rgb).save(scene / "results" / f"frame{i:06d}.png")
            units = np.where((f.depth > 0) & (f.depth < 13.0), np.rint(f.depth * 5000.0), 0)
            Image.fromarray(units.astype(np.uint16)).save(scene / "results" / f"depth{i:06d}.png")
            fp.write(" ".join(repr(float(v)) for v in (to_z_up @ f.c2w).ravel()) + "\n")
    K = np.array([[140.0, 0.0, 79.0], [0.0, 110.0, 60.5], [0.0, 0.0, 1.0]])
    (scene / "cam_params.json").write_text(json.dumps({"camera": {
        "w": w, "h": h, "fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "scale": 5000.0}}))
    seq = open_sequence(scene)
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.K, K, atol=1e-12)
        near = (f.depth > 0) & (f.depth < 13.0)
        np.testing.assert_allclose(g.depth[near], f.depth[near], atol=1.1e-4)

    render = tmp_path / "room_1" / "Sequence_1"
    (render / "rgb").mkdir(parents=True)
    (render / "depth").mkdir()
    for i, f in enumerate(frames):
        if i != 1:  # the render of frame 1 is missing
            Image.fromarray(f.rgb).save(render / "rgb" / f"rgb_{i}.png")
            Image.fromarray(depth_to_png_mm(f.depth)).save(render / "depth" / f"depth_{i}.png")
    (render / "traj_w_c.txt").write_text("".join(" ".join(repr(float(v)) for v in (to_z_up @ f.c2w).ravel()) + "\n"
                                                 for f in frames))
    (render / "worldstudio.json").write_text(json.dumps({"K": frames[0].K.tolist()}))
    seq = open_sequence(render)
    assert len(seq) == 3 and list(seq.timestamps) == [0.0, 2.0, 3.0]
    np.testing.assert_allclose(seq.c2ws, np.stack([frames[i].c2w for i in (0, 2, 3)]), atol=1e-9)


def assert_phone_capture(seq, frames, expected_depth, pose_atol: float, K_atol: float, rgb_mean_error: float) -> None:
    """A phone capture of ``frames`` read back (Stray Scanner, Record3D): frames 0.1 s apart in ARKit's y-up world
    at the depth's size, poses and K as the frames', colour within ``rgb_mean_error`` (lossy codecs), depth as
    ``expected_depth(frame.depth)`` stored it with the low-confidence left quarter dropped."""
    w = frames[0].depth.shape[1]
    assert len(seq) == len(frames) and seq.world_up == "+y" and np.allclose(seq.timestamps, 0.1 * np.arange(len(seq)))
    assert any("confidence below 1" in n for n in seq.notes)
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=pose_atol)
        np.testing.assert_allclose(g.K, f.K, atol=K_atol)
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < rgb_mean_error
        expected = expected_depth(f.depth)
        expected[:, : w // 4] = 0
        np.testing.assert_allclose(g.depth, expected, atol=1e-6)
    seq.close()


def test_a_scannetpp_iphone_capture_reads_as_its_toolkit_reads_it(tmp_path, monkeypatch):
    """ScanNet++ iphone/: pose_intrinsic_imu.json (aligned_pose: OpenCV c2w in the scan's z-up world; the colour
    camera's K), colour 2x the depth's, named frame_NNNNNN; read from the scene folder. Extracted (rgb/ and depth/
    in mm, a frame the json lists without images skipped, said) and raw: the video and depth.bin in both of its
    forms (lz4 blocks of mm per frame; one raw-deflate stream of float32 metres, read from decoder checkpoints,
    backwards too, and cut short)."""
    import zlib

    import imageio_ffmpeg
    import lz4.block

    from worldmodel.actions import parse_actions
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld
    from worldmodel.recordings import scannetpp

    world = ProceduralWorld(ProceduralConfig(width=256, height=192), seed=3)  # ARKit's depth size
    frames = [world.reset(3)]
    for a in parse_actions("(FN)(fLN)(FL)"):
        frames.append(world.step(a, Context(recent=frames[-4:])))
    h, w = frames[0].depth.shape
    scene = tmp_path / "0a5c013435"
    folder = scene / "iphone"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    (scene / "scans").mkdir()
    meta = {}
    for i, f in enumerate(frames + [frames[-1]]):  # the json lists a fifth frame that has no images
        K2 = f.K * [[2], [2], [1]]
        K2[:2, 2] += 0.5  # the colour camera's K at 2x (pixel centres stay centres)
        meta[f"frame_{i:06d}"] = {"timestamp": 0.1 * i, "intrinsic": K2.tolist(), "pose": np.eye(4).tolist(),
                                  "aligned_pose": (np.linalg.inv(up_rotation("+z")) @ f.c2w).tolist(), "imu": {}}
        if i < len(frames):
            Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(folder / "rgb" / f"frame_{i:06d}.jpg",
                                                                              quality=95)
            Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth" / f"frame_{i:06d}.png")
    (folder / "pose_intrinsic_imu.json").write_text(json.dumps(meta))

    def check(seq, expected_depth, rgb_mean_error):
        assert seq.format == "scannetpp" and seq.world_up == "+z" and len(seq) == 4
        assert np.allclose(seq.timestamps, 0.1 * np.arange(4))
        for f, g in zip(frames, seq):
            np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
            np.testing.assert_allclose(g.K, f.K, atol=1e-9)
            assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < rgb_mean_error
            np.testing.assert_allclose(g.depth, expected_depth(f.depth), atol=1e-6)
        seq.close()

    assert detect_format(scene) == "scannetpp"
    seq = open_sequence(scene)
    assert seq.notes[0] == "0a5c013435 holds one recording: iphone is read"
    assert any("1 of the 5 frames in pose_intrinsic_imu.json have no colour (rgb/ or a video): skipped" in n
               for n in seq.notes)
    check(seq, _expected_mm_depth, rgb_mean_error=8)

    shutil.rmtree(folder / "rgb")
    shutil.rmtree(folder / "depth")
    writer = imageio_ffmpeg.write_frames(str(folder / "rgb.mkv"), (2 * w, 2 * h), fps=10, quality=10,
                                         macro_block_size=1)
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(np.asarray(Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR))))
    writer.close()
    blocks = [lz4.block.compress(depth_to_png_mm(f.depth).tobytes(), store_size=False) for f in frames]
    (folder / "depth.bin").write_bytes(b"".join(len(b).to_bytes(4, "little") + b for b in blocks))
    seq = open_sequence(folder)
    assert seq.depth_bin.frames is not None  # the per-frame form
    assert any("1 of the 5 frames in pose_intrinsic_imu.json have no depth" in n for n in seq.notes)
    check(seq, _expected_mm_depth, rgb_mean_error=10)  # H.264
    (folder / "rgb").mkdir()  # COLMAP's subset extracted: the other frames' colour comes from the video
    Image.fromarray(frames[1].rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(folder / "rgb" / "frame_000001.jpg",
                                                                                quality=95)
    seq = open_sequence(folder)
    assert seq.rgb_files[1].name == "frame_000001.jpg" and seq.rgb_files[0] == seq.rgb_files[2] == folder / "rgb.mkv"
    check(seq, _expected_mm_depth, rgb_mean_error=10)
    shutil.rmtree(folder / "rgb")
    # a json that lists a subset of the video's frames (1 left out): each listed frame is its own video frame and
    # depth.bin frame, by its number, not by its place in the list
    (folder / "pose_intrinsic_imu.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "frame_000001"}))
    seq = open_sequence(folder)
    assert len(seq) == 3
    for g, f in zip(seq, [frames[0], frames[2], frames[3]]):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        assert np.abs(g.rgb.astype(float) - f.rgb).mean() < 10
    seq.close()
    (folder / "pose_intrinsic_imu.json").write_text(json.dumps(meta))
    cut = b"".join(len(b).to_bytes(4, "little") + b for b in blocks)
    (folder / "depth.bin").write_bytes(cut[:-100])  # the per-frame form cut inside its last frame
    seq = open_sequence(folder)
    assert len(seq) == 3 and any("depth.bin is cut short: its 3 whole frames are played" in n for n in seq.notes)
    seq.close()

    metres = np.stack([np.where(np.isfinite(f.depth) & (f.depth > 0), f.depth, 0) for f in frames]).astype(np.float32)
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    stream = deflate.compress(metres.tobytes()) + deflate.flush()
    (folder / "depth.bin").write_bytes(stream)
    monkeypatch.setattr(scannetpp._DepthBin, "INPUT_PIECE", 4096)  # several checkpoints in a small file
    monkeypatch.setattr(scannetpp._DepthBin, "CHECKPOINT_FRAMES", 1)
    monkeypatch.setattr(scannetpp._DepthBin, "OUT_LIMIT", 50_000)  # (less than a frame per inflate call)
    seq = open_sequence(folder)
    assert seq.depth_bin.frames is None and len(seq.depth_bin.checkpoints) > 2
    np.testing.assert_array_equal(seq.depth_bin.frame(3), metres[3])
    np.testing.assert_array_equal(seq.depth_bin.frame(0), metres[0])  # back, from the first checkpoint
    check(seq, lambda d: np.where(np.isfinite(d) & (d > 0), d, 0), rgb_mean_error=10)
    (folder / "depth.bin").write_bytes(stream[: int(len(stream) * 0.6)])
    seq = open_sequence(folder)
    assert len(seq) < 4 and any("depth.bin is cut short" in n for n in seq.notes)
    seq.close()
    (folder / "depth.bin").write_bytes(b"not a depth stream" * 100)
    with pytest.raises(SequenceError, match=r"depth\.bin: .*neither of ScanNet\+\+'s depth\.bin forms"):
        open_sequence(folder)


def test_scannetpp_dslr_photos_with_rendered_depth_read_as_splatam_reads_them(walk_frames, tmp_path):
    """ScanNet++ dslr/: nerfstudio/transforms_undistorted.json (nerfstudio's OpenGL cameras in the scan's z-up world,
    file paths relative to undistorted_images/; frames and test_frames; is_bad skipped, said), undistorted_depths/
    (mm). A scene folder holding iphone/ and dslr/ names both."""
    frames = walk_frames[:5]
    scene = tmp_path / "0a5c013435"
    dslr = scene / "dslr"
    for d in ("nerfstudio", "undistorted_images", "undistorted_depths"):
        (dslr / d).mkdir(parents=True)
    h, w = frames[0].depth.shape
    K = frames[0].K
    to_z_up = np.linalg.inv(up_rotation("+z"))
    entries = []
    for i, f in enumerate(frames):
        name = f"DSC{i + 1:05d}.JPG"
        Image.fromarray(f.rgb).save(dslr / "undistorted_images" / name, format="JPEG", quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(dslr / "undistorted_depths" / f"DSC{i + 1:05d}.png")
        entries.append({"file_path": name, "transform_matrix": (to_z_up @ f.c2w @ np.diag([1.0, -1, -1, 1])).tolist(),
                        "is_bad": i == 2})
    (dslr / "nerfstudio" / "transforms_undistorted.json").write_text(json.dumps({
        "camera_model": "PINHOLE", "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5, "w": w,
        "h": h, "frames": entries[:4], "test_frames": entries[4:]}))
    assert detect_format(scene) == "scannetpp"
    seq = open_sequence(scene)
    assert seq.world_up == "+z" and len(seq) == 4 and seq.notes[0] == "0a5c013435 holds one recording: dslr is read"
    assert any("1 of the 5 frames are marked is_bad (blurred): skipped" in n for n in seq.notes)
    for f, g in zip([frames[0], frames[1], frames[3], frames[4]], seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        assert np.abs(g.rgb.astype(float) - f.rgb).mean() < 6  # JPEG
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
    (scene / "iphone").mkdir()
    (scene / "iphone" / "pose_intrinsic_imu.json").write_text("{}")
    with pytest.raises(SequenceError, match=r"holds 2 sequences \(dslr, iphone\); pass one of them"):
        open_sequence(scene)
    (dslr / "undistorted_depths" / "DSC00004.png").unlink()
    with pytest.raises(SequenceError, match=r"DSC00004\.png is missing \(the depth of DSC00004\.JPG\)"):
        open_sequence(dslr)


def _write_stray_scanner(frames, folder: Path) -> list[str]:
    """Write ``frames`` as Stray Scanner exports them (colour in rgb.mp4 at 2x the depth's size; depth and
    confidence (left quarter low) PNGs; odometry.csv; camera_matrix.csv) -> odometry.csv's lines."""
    import imageio_ffmpeg
    from scipy.spatial.transform import Rotation

    (folder / "depth").mkdir(parents=True)
    (folder / "confidence").mkdir()
    h, w = frames[0].depth.shape
    writer = imageio_ffmpeg.write_frames(str(folder / "rgb.mp4"), (2 * w, 2 * h), fps=10, quality=10,
                                         macro_block_size=1)
    writer.send(None)
    lines = ["timestamp, frame, x, y, z, qx, qy, qz, qw"]
    for i, f in enumerate(frames):
        writer.send(np.ascontiguousarray(np.asarray(Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR))))
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth" / f"{i:06d}.png")
        confidence = np.full((h, w), 2, np.uint8)
        confidence[:, : w // 4] = 0  # the left quarter: low confidence
        Image.fromarray(confidence).save(folder / "confidence" / f"{i:06d}.png")
        q = Rotation.from_matrix(f.c2w[:3, :3]).as_quat()
        lines.append(", ".join([f"{0.1 * i:.6f}", f"{i:06d}", *(f"{v:.9f}" for v in (*f.c2w[:3, 3], *q))]))
    writer.close()
    (folder / "odometry.csv").write_text("\n".join(lines) + "\n")
    K2 = frames[0].K.copy()
    K2[:2] = [[2 * K2[0, 0], 0, 2 * K2[0, 2] + 0.5], [0, 2 * K2[1, 1], 2 * K2[1, 2] + 0.5]]
    (folder / "camera_matrix.csv").write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in K2) + "\n")
    return lines


def test_a_stray_scanner_export_plays_its_video(walk_frames, tmp_path):
    """Stray Scanner: colour in rgb.mp4 at the phone camera's size (2x the depth here), depth/NNNNNN.png in mm,
    confidence/ (0..2; below 1 dropped), odometry.csv with its header (OpenCV c2w, ARKit's y-up world) and
    camera_matrix.csv (the video's K): frames at the depth's size, K resized, poses as recorded."""
    frames = walk_frames[:4]
    folder = tmp_path / "8a3f2c1e"
    lines = _write_stray_scanner(frames, folder)
    assert detect_format(folder) == "stray"
    assert_phone_capture(open_sequence(folder), frames, _expected_mm_depth, pose_atol=1e-7, K_atol=1e-5,
                         rgb_mean_error=10)  # H.264
    (folder / "odometry.csv").write_text("\n".join(lines + [lines[-1]]) + "\n")  # one row more than depth/ has
    assert any("odometry.csv has 5 poses and depth/ 4 frames" in n for n in open_sequence(folder).notes)
    for sub in ("depth", "confidence"):  # five frames of depth, four of video
        (folder / sub / "000004.png").write_bytes((folder / sub / "000003.png").read_bytes())
    seq = open_sequence(folder)
    with pytest.raises(SequenceError, match=r"rgb\.mp4 ends at frame 4, but odometry\.csv goes on to frame 4; "
                                            r"play fewer frames \(\?max_frames=4\)"):
        seq[4]
    seq.close()


def test_info_decodes_a_video_recording_once(walk_frames, tmp_path, monkeypatch):
    """`info` reads the pose check's and the floor check's frames in one ascending pass: a phone's video is decoded
    once from its start, not once for each check (twice the time on a 1920x1440 capture)."""
    from scenes.info import recording_info
    from worldmodel.recordings.base import _VideoPanels

    folder = tmp_path / "capture"
    _write_stray_scanner(walk_frames, folder)
    decodes, start_decoding = [], _VideoPanels._open
    monkeypatch.setattr(_VideoPanels, "_open", lambda self: (decodes.append(1), start_decoding(self))[1])
    info = recording_info(str(folder))
    assert info["frames"] == len(walk_frames) and info["agreement"]["shares"]["as read"] > 0.5
    assert info["floor"] is not None and len(decodes) == 1

def _arkit_frame_files(frames, folder: Path, colour_name, depth_name, confidence_name, high: int = 2) -> None:
    """Write ``frames`` as an ARKit phone app does: colour at 2x the depth's size, depth in mm, confidence
    ``high`` (ARKit's 2; Polycam writes 255) with the left quarter low (0)."""
    h, w = frames[0].depth.shape
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(folder / colour_name(i), quality=95)
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / depth_name(i))
        confidence = np.full((h, w), high, np.uint8)
        confidence[:, : w // 4] = 0
        Image.fromarray(confidence).save(folder / confidence_name(i))


def test_a_3d_scanner_app_export_reads_as_its_readers_read_it(walk_frames, tmp_path):
    """3D Scanner App "All Data": frame_NNNNN.json (cameraPoseARFrame: row-major OpenGL c2w in ARKit's y-up world;
    the .jpg's intrinsics, row-major; time), frame_NNNNN.jpg at 2x the depth's size, depth_NNNNN.png (mm),
    conf_NNNNN.png. The app keeps depth for more frames than colour: those are skipped, said."""
    frames = walk_frames[:4]
    folder = tmp_path / "2024_05_01_10_00_00"
    folder.mkdir()
    _arkit_frame_files(frames + [frames[-1]], folder, lambda i: f"frame_{i:05d}.jpg", lambda i: f"depth_{i:05d}.png",
                       lambda i: f"conf_{i:05d}.png")
    (folder / "frame_00004.jpg").unlink()  # depth, but no colour
    for i, f in enumerate(frames + [frames[-1]]):
        K2 = f.K * [[2], [2], [1]]
        K2[:2, 2] += 0.5
        (folder / f"frame_{i:05d}.json").write_text(json.dumps({
            "cameraPoseARFrame": (f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])).reshape(-1).tolist(),
            "intrinsics": K2.reshape(-1).tolist(), "time": 0.1 * i, "frame_index": i, "motionQuality": 1}))
    (folder / "info.json").write_text("{}")
    assert detect_format(folder) == "3dscannerapp"
    seq = open_sequence(folder)
    assert any("1 of the 5 frames of frame_*.json have no colour image: skipped" in n for n in seq.notes), seq.notes
    assert_phone_capture(seq, frames, _expected_mm_depth, pose_atol=1e-9, K_atol=1e-9, rgb_mean_error=8)
    (folder / "conf_00002.png").unlink()
    assert any("conf_*.png lacks the maps of 1 frames: depth is not masked" in n for n in open_sequence(folder).notes)
    (folder / "frame_00001.json").write_text(json.dumps({"cameraPoseARFrame": [1, 0, 0], "intrinsics": [1] * 9}))
    with pytest.raises(SequenceError, match=r"frame_00001\.json: cameraPoseARFrame must hold 16 numbers and "
                                            r"intrinsics 9, got 3 and 9; export the scan from 3D Scanner App again"):
        open_sequence(folder)


def test_a_polycam_raw_export_reads_as_nerfstudio_processes_it(walk_frames, tmp_path):
    """Polycam's raw data: keyframes/corrected_images|images/<id>.jpg, corrected_cameras|cameras/<id>.json (fx fy cx
    cy width height in nerfstudio's pixel convention; t_00..t_23 a row-major 3x4 OpenGL c2w in ARKit's y-up
    world), depth/<id>.png (mm), confidence/; the corrected images and cameras are preferred, as nerfstudio does."""
    frames = walk_frames[:4]
    export = tmp_path / "polycam_export"
    keyframes = export / "keyframes"
    for d in ("images", "cameras", "corrected_images", "corrected_cameras", "depth", "confidence"):
        (keyframes / d).mkdir(parents=True)
    ids = [166000000 + 33 * i for i in range(len(frames))]
    _arkit_frame_files(frames, keyframes, lambda i: f"corrected_images/{ids[i]}.jpg", lambda i: f"depth/{ids[i]}.png",
                       lambda i: f"confidence/{ids[i]}.png", high=255)
    h, w = frames[0].depth.shape
    for i, f in enumerate(frames):
        M = f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
        camera = {f"t_{r}{c}": M[r, c] for r in range(3) for c in range(4)}
        camera.update(fx=2 * f.K[0, 0], fy=2 * f.K[1, 1], cx=2 * (f.K[0, 2] + 0.5), cy=2 * (f.K[1, 2] + 0.5),
                      width=2 * w, height=2 * h, blur_score=100.0)
        (keyframes / "corrected_cameras" / f"{ids[i]}.json").write_text(json.dumps(camera))
        camera["t_03"] += 5.0  # the uncorrected camera: elsewhere
        (keyframes / "cameras" / f"{ids[i]}.json").write_text(json.dumps(camera))
    assert detect_format(export) == "polycam" and detect_format(keyframes) == "polycam"
    seq = open_sequence(export)
    assert len(seq) == 4 and seq.world_up == "+y" and np.allclose(seq.timestamps, np.asarray(ids) * 1e-6)
    assert any("confidence below 1" in n for n in seq.notes)
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < 8
        expected = _expected_mm_depth(f.depth)
        expected[:, : w // 4] = 0
        np.testing.assert_allclose(g.depth, expected, atol=1e-6)
    for i in ids:  # Polycam's own scale: 0 low, 127 medium, 255 high; min_confidence 2 keeps high alone
        confidence = np.full((h, w), 255, np.uint8)
        confidence[:, : w // 2] = 127
        Image.fromarray(confidence).save(keyframes / "confidence" / f"{i}.png")
    (export / "worldstudio.json").write_text(json.dumps({"min_confidence": 2}))
    depth = open_sequence(export)[0].depth
    assert not depth[:, : w // 2].any() and (depth[:, w // 2:] > 0).mean() > 0.5
    (export / "worldstudio.json").write_text(json.dumps({"min_confidence": 1}))
    assert (open_sequence(export)[0].depth[:, : w // 2] > 0).mean() > 0.5
    (keyframes / "corrected_cameras" / f"{ids[3]}.json").unlink()
    assert any("1 frames have colour and depth but no camera in corrected_cameras/: skipped" in n
               for n in open_sequence(export).notes)
    shutil.rmtree(keyframes / "depth")
    with pytest.raises(SequenceError, match=r"keyframes/depth holds no depth \.png; this tool needs the depth of a "
                                            r"LiDAR capture"):
        open_sequence(export)


def test_a_neural_rgbd_scene_reads_as_its_loaders_read_it(walk_frames, tmp_path):
    """Neural RGB-D (Co-SLAM, GO-Surf): images/imgN.png, depth_filtered/ preferred to depth/ (mm), poses.txt of
    OpenGL c2w in four lines each (a NaN pose skips its frame, said), focal.txt with the principal point at the
    image centre; trainval_poses.txt when there is no poses.txt, said."""
    frames = walk_frames[:4]
    folder = tmp_path / "breakfast_room"
    for d in ("images", "depth", "depth_filtered"):
        (folder / d).mkdir(parents=True)
    blocks = []
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / "images" / f"img{i}.png")
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth_filtered" / f"depth{i}.png")
        Image.fromarray(np.zeros_like(depth_to_png_mm(f.depth))).save(folder / "depth" / f"depth{i}.png")
        M = np.full((4, 4), np.nan) if i == 2 else f.c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
        blocks.append("\n".join(" ".join(f"{v:.12g}" for v in row) for row in M))
    (folder / "poses.txt").write_text("\n".join(blocks) + "\n")
    (folder / "focal.txt").write_text(f"{frames[0].K[0, 0]:.12g}\n")
    assert detect_format(folder) == "neuralrgbd"
    seq = open_sequence(folder)
    h, w = frames[0].depth.shape
    assert len(seq) == 3 and list(seq.timestamps) == [0, 1, 3]
    assert any("1 frames have an inf/NaN pose in poses.txt" in n for n in seq.notes), seq.notes
    assert seq.world_up == "+y" and any("world up +y assumed" in n for n in seq.notes)
    for f, g in zip([frames[0], frames[1], frames[3]], seq):
        np.testing.assert_allclose(g.c2w, up_rotation(seq.world_up) @ f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)  # (the walk's principal point is at the centre, too)
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
    (folder / "poses.txt").rename(folder / "trainval_poses.txt")
    assert any("the estimated poses of trainval_poses.txt are used" in n for n in open_sequence(folder).notes)


def test_info_says_when_the_poses_fit_the_depth_better_read_another_way(walk_frames, tmp_path, capsys):
    """`info` moves a few frames' depth into other frames by the poses: correct poses agree; OpenGL cameras or
    world-to-camera matrices written into a generic folder are caught, with what to set; a camera that does not
    move is not judged."""
    from launch import main

    frames = walk_frames[:10]
    folder = tmp_path / "generic"
    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    K = frames[0].K
    (folder / "intrinsics.txt").write_text(" ".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])))
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / "rgb" / f"{i:04d}.png")
        np.save(folder / "depth" / f"{i:04d}.npy", f.depth)

    def info_with(poses, config=None) -> str:
        (folder / "poses.txt").write_text("".join(" ".join(repr(float(v)) for v in p.reshape(-1)) + "\n"
                                                  for p in poses))
        (folder / "worldstudio.json").write_text(json.dumps(config or {}))
        assert main(["info", str(folder)]) == 0
        return capsys.readouterr().out

    true = np.stack([f.c2w for f in frames])
    out = info_with(true)
    # the size view and run fuse it at: 1/50 of the walk's median depth (4.8 m) rounded down to 5 cm
    median = float(np.median(np.concatenate([f.depth[f.depth > 0] for f in frames])))
    said = re.search(r"voxel     the map's voxels are 5 cm, for a recording (\d+\.\d) m from its camera", out)
    assert 2.5 <= median < 5 and said and abs(float(said[1]) - median) < 0.3, out
    as_read = int(out.split("poses     ")[1].split("%")[0])
    assert as_read >= 70 and "note: the depth agrees far better" not in out, out
    out = info_with(true @ np.diag([1.0, -1.0, -1.0, 1.0]))
    assert "note: the depth agrees far better with the poses read as OpenGL cameras" in out
    assert out.rstrip().endswith('set "camera": "opengl" in worldstudio.json') or \
        'set "camera": "opengl" in worldstudio.json\n' in out
    assert main(["eval-recon", str(folder), "--voxel", "0.5"]) == 0  # eval-recon says it below its table too
    assert "note: the depth agrees far better with the poses read as OpenGL cameras" in capsys.readouterr().out
    assert "far better" not in info_with(true @ np.diag([1.0, -1.0, -1.0, 1.0]), {"camera": "opengl"})
    out = info_with(np.stack([invert_pose(p) for p in true]))
    assert "poses read as world-to-camera matrices" in out and "write camera-to-world poses" in out
    # ... also in a +z-up recording: the misreading is undone in the recording's own coordinates, before its turn
    z_up = np.linalg.inv(up_rotation("+z")) @ true  # the same cameras in a world whose up is +z
    assert "far better" not in info_with(z_up, {"world_up": "+z"})
    out = info_with(np.stack([invert_pose(p) for p in z_up]), {"world_up": "+z"})
    assert "poses read as world-to-camera matrices" in out, out
    assert "poses     not checked: the camera moves less than 10 cm" in info_with(np.stack([true[0]] * len(frames)))


def test_other_files_named_like_another_formats_do_not_change_the_reader(walk_frames, tmp_path):
    """A generic folder with a transforms.json made from it (COLMAP, nerfstudio: no depth) stays generic, and an
    info.txt that is not BundleFusion's (a download's notes) beside a 7-Scenes sequence is not read: both
    folders opened before the new readers and were refused after them."""
    from tests.test_recording_checks import generic

    folder = generic(tmp_path / "gen", walk_frames[:2])
    (folder / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "rgb/0000.png",
                                                                    "transform_matrix": np.eye(4).tolist()}]}))
    assert detect_format(folder) == "generic" and len(open_sequence(folder)) == 2
    seq7 = tmp_path / "chess" / "seq-01"
    _write_7scenes(seq7, walk_frames[:2])
    (seq7.parent / "info.txt").write_text("Downloaded from the 7-Scenes page; see its licence.\n")
    assert len(open_sequence(seq7)) == 2


def test_an_open3d_folder_reads_as_open3d_writes_it(walk_frames, tmp_path):
    """Open3D's reconstruction-system / Redwood layout, its files written by open3d itself: image/ and depth/ (mm)
    paired in name order, trajectory.log (c2w; open3d's reader keeps the inverse), camera_intrinsic.json (column-
    major). The frames come back with their poses, K and depth; a trajectory of some frames places each by its
    frame number; a program's log beside a generic folder leaves it generic."""
    import open3d as o3d

    from tests.test_recording_checks import generic

    frames = walk_frames[:5]
    h, w = frames[0].depth.shape
    K = frames[0].K
    folder = tmp_path / "o3d"
    (folder / "image").mkdir(parents=True)
    (folder / "depth").mkdir()
    trajectory = o3d.camera.PinholeCameraTrajectory()
    params = []
    for i, f in enumerate(frames):
        Image.fromarray(f.rgb).save(folder / "image" / f"{i:06d}.png")
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "depth" / f"{i:06d}.png")
        p = o3d.camera.PinholeCameraParameters()
        p.intrinsic = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        p.extrinsic = invert_pose(f.c2w)
        params.append(p)
    trajectory.parameters = params
    assert o3d.io.write_pinhole_camera_trajectory(str(folder / "trajectory.log"), trajectory)
    assert o3d.io.write_pinhole_camera_intrinsic(str(folder / "camera_intrinsic.json"), params[0].intrinsic)

    seq = open_sequence(folder)
    assert seq.format == "open3d" and len(seq) == 5 and seq.world_up == "+y"  # level cameras in a y-up world
    np.testing.assert_allclose(seq.c2ws, np.stack([f.c2w for f in frames]), atol=1e-6)
    np.testing.assert_allclose(seq[3].K, K, atol=1e-9)
    valid = (frames[3].depth > 0) & (frames[3].depth < 60)  # (a mm PNG holds up to 65.5 m)
    assert np.abs(seq[3].depth[valid] - frames[3].depth[valid]).max() < 6e-4
    np.testing.assert_array_equal(seq[3].rgb, frames[3].rgb)
    assert any("world up +y assumed" in n for n in seq.notes)

    # the reconstruction system's own output: a trajectory in the first camera's frame (y down), of some frames
    first = invert_pose(frames[0].c2w)
    keyframes = [1, 3]
    (folder / "trajectory.log").write_text("".join(
        f"{k} {k} {k + 1}\n" + "".join(" ".join(f"{v:.12f}" for v in row) + "\n" for row in first @ frames[k].c2w)
        for k in keyframes))
    some = open_sequence(folder)
    assert some.world_up == "-y" and [p.name for p in some.rgb_files] == ["000001.png", "000003.png"]
    np.testing.assert_allclose(some.c2ws, up_rotation("-y") @ first @ np.stack([frames[k].c2w for k in keyframes]),
                               atol=1e-9)
    assert "3 images have no camera in trajectory.log (skipped)" in some.notes

    (folder / "scene").mkdir()  # the reconstruction system's output beside its input; another tool's broken JSON
    (folder / "trajectory.log").rename(folder / "scene" / "trajectory.log")
    (folder / "camera_intrinsic.json").rename(folder / "camera_primesense.json")
    (folder / "notes.json").write_text("{broken")
    np.testing.assert_allclose(open_sequence(folder).c2ws, some.c2ws, atol=1e-12)
    (folder / "scene" / "trajectory.log").rename(folder / "trajectory.log")
    (folder / "camera_primesense.json").unlink()  # Open3D's default camera is for 640x480 frames
    with pytest.raises(SequenceError, match=r"no intrinsics were given and the open3d default is for 640x480"):
        open_sequence(folder)
    (folder / "trajectory.log").write_text("0 0 1\n1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(SequenceError, match=r"trajectory.log: expected blocks of 5 lines"):
        open_sequence(folder)

    plain = generic(tmp_path / "plain", frames[:2])
    (plain / "run.log").write_text("12:00:01 INFO fused 2 frames\n")
    assert detect_format(plain) == "generic"


def write_r3d(target: Path, frames, top_folder: str = "", conf_low_quarter: bool = True,
              exr_export: bool = False) -> Path:
    """A Record3D capture of ``frames`` as the app writes it: colour JPEGs at 2x the depth's size, LZFSE float32
    depth (metres, NaN where the LiDAR saw nothing) and uint8 confidence, metadata with a column-major K of the
    colour camera and [qx, qy, qz, qw, tx, ty, tz] OpenGL camera-to-world poses. A ``.r3d`` zip when ``target``
    ends so (members under ``top_folder``), else the unzipped folder; ``exr_export``: the app's "EXR + JPG" export
    instead (metadata.json, rgb/N.jpg, depth/N.exr in metres, no confidence)."""
    import OpenEXR

    import io
    import zipfile

    import lzfse
    from scipy.spatial.transform import Rotation

    from worldmodel.camera import flip_cv_gl

    h, w = frames[0].depth.shape
    K2 = frames[0].K.copy()
    K2[:2] = [[2 * K2[0, 0], 0, 2 * K2[0, 2] + 0.5], [0, 2 * K2[1, 1], 2 * K2[1, 2] + 0.5]]
    members = {}
    poses = []
    for i, f in enumerate(frames):
        jpg = io.BytesIO()
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(jpg, "JPEG", quality=95)
        members[f"{'rgb' if exr_export else 'rgbd'}/{i}.jpg"] = jpg.getvalue()
        depth = f.depth.astype(np.float32).copy()
        depth[depth <= 0] = np.nan
        gl = flip_cv_gl(f.c2w)
        poses.append([*Rotation.from_matrix(gl[:3, :3]).as_quat(), *gl[:3, 3]])
        if exr_export:
            (target / "depth").mkdir(parents=True, exist_ok=True)
            with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                              {"Z": depth}) as exr:
                exr.write(str(target / "depth" / f"{i}.exr"))
            continue
        members[f"rgbd/{i}.depth"] = lzfse.compress(depth.tobytes())
        confidence = np.full((h, w), 2, np.uint8)
        if conf_low_quarter:
            confidence[:, : w // 4] = 0
        members[f"rgbd/{i}.conf"] = lzfse.compress(confidence.tobytes())
    meta = {"w": 2 * w, "h": 2 * h, "dw": w, "dh": h, "fps": 10, "K": K2.T.reshape(-1).tolist(), "poses": poses,
            "initPose": [0, 0, 0, 1, 0, 0, 0], "frameTimestamps": [0.1 * i for i in range(len(frames))],
            "cameraType": 1}
    members["metadata.json" if exr_export else "metadata"] = json.dumps(meta).encode()
    if target.suffix == ".r3d":
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as z:
            for name, data in members.items():
                z.writestr(top_folder + name, data)
    else:
        for name, data in members.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    return target


def test_a_record3d_capture_opens_from_its_r3d_file(walk_frames, tmp_path, capsys):
    """Record3D's .r3d (a zip, members maybe under a top folder) and the folder it unzips to: frames at the depth's
    size with the colour camera's K resized, the poses as recorded (OpenGL cameras, ARKit's y-up world), depth in
    metres with NaN and low confidence dropped. A damaged capture is one line naming the member."""
    frames = walk_frames[:4]
    w = frames[0].depth.shape[1]
    r3d = write_r3d(tmp_path / "captures" / "2026-12-07--10-00-00.r3d", frames, top_folder="export/")
    unzipped = write_r3d(tmp_path / "unzipped", frames)
    for source in (r3d, unzipped):
        assert detect_format(source) == "record3d"
        assert_phone_capture(open_sequence(source), frames, np.copy, pose_atol=1e-9, K_atol=1e-6,
                             rgb_mean_error=6)  # JPEG, resized
    assert detect_format(tmp_path / "captures") == "record3d"  # a folder holding one capture reads it
    shutil.copy(r3d, tmp_path / "captures" / "second.r3d")
    with pytest.raises(SequenceError, match=r"holds 2 sequences \(2026-12-07--10-00-00.r3d, second.r3d\); pass one"):
        detect_format(tmp_path / "captures")
    every_other = open_sequence(r3d, stride=2)  # frames 0 and 2
    np.testing.assert_array_equal(every_other[1].depth[:, w // 4:], frames[2].depth[:, w // 4:])
    np.testing.assert_allclose(every_other.c2ws[1], frames[2].c2w, atol=1e-9)
    exr = write_r3d(tmp_path / "exr_export", frames, exr_export=True)  # the app's EXR + JPG export: no confidence
    assert detect_format(exr) == "record3d"
    for f, g in zip(frames, open_sequence(exr)):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-6)
        np.testing.assert_array_equal(g.depth, f.depth)

    from launch import main  # the headless run plays it

    out = tmp_path / "bundle"
    assert main(["run", "--world", f"replay:{r3d}?stride=2", "--steps", "1", "--no-video", "--out", str(out)]) == 0
    assert "confidence below 1" in capsys.readouterr().err and len(read_tum_trajectory(out / "trajectory.txt")[0]) == 2

    broken = tmp_path / "broken.r3d"
    broken.write_bytes(r3d.read_bytes()[:200])
    with pytest.raises(SequenceError, match=r"broken.r3d is not a readable .r3d file"):
        open_sequence(broken)
    import lzfse

    (unzipped / "rgbd" / "2.depth").write_bytes(lzfse.compress(np.zeros(10, np.float32).tobytes()))
    seq = open_sequence(unzipped)
    with pytest.raises(SequenceError, match=r"rgbd/2.depth holds 40 bytes, not a \d+x\d+ float32 image"):
        seq[2]
    meta = json.loads((unzipped / "metadata").read_text())
    per_frame = [[2 * f.K[0, 0], 2 * f.K[1, 1], 2 * f.K[0, 2] + 0.5, 2 * f.K[1, 2] + 0.5] for f in frames]
    (unzipped / "metadata").write_text(json.dumps({**{k: v for k, v in meta.items() if k != "K"},
                                                   "perFrameIntrinsicCoeffs": per_frame}))
    np.testing.assert_allclose(open_sequence(unzipped)[1].K, frames[1].K, atol=1e-6)  # newer versions' K per frame
    (unzipped / "metadata").write_text(json.dumps({**meta, "poses": [[0, 0, 0, 1, 0, 0, 0]] * 4}))
    assert any("every frame has the same pose" in n for n in open_sequence(unzipped).notes)  # the front camera
    with pytest.raises(ValueError, match=r"bad replay option 'strid=2'"):
        parse_replay_arg(f"{r3d}?strid=2")
    (unzipped / "metadata").write_text(json.dumps({**meta, "poses": [[0, 0, 0]]}))
    with pytest.raises(SequenceError, match=r"poses must be \[qx, qy, qz, qw, tx, ty, tz\] per frame"):
        open_sequence(unzipped)


def test_an_arkitscenes_video_reads_as_its_loaders_read_it(walk_frames, tmp_path):
    """ARKitScenes: lowres_wide/ and lowres_depth/ (mm) named VIDEO_TIME.png, a .pincam per frame (w h fx fy cx
    cy), lowres_wide.traj with world-to-camera axis-angle poses at other times (interpolated at the frames'),
    confidence/ (0..2). The frames come back at their poses; one past the trajectory's end is skipped, said."""
    from scipy.spatial.transform import Rotation

    frames = walk_frames[:4]
    h, w = frames[0].depth.shape
    folder = tmp_path / "41069021"
    for sub in ("lowres_wide", "lowres_depth", "lowres_wide_intrinsics", "confidence"):
        (folder / sub).mkdir(parents=True)
    times = 305.244 + 0.1 * np.arange(len(frames))
    lines = []
    for f, t in zip(frames, times):
        name = f"41069021_{t:.3f}"
        Image.fromarray(f.rgb).save(folder / "lowres_wide" / f"{name}.png")
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "lowres_depth" / f"{name}.png")
        confidence = np.full((h, w), 2, np.uint8)
        confidence[:, : w // 4] = 0
        Image.fromarray(confidence).save(folder / "confidence" / f"{name}.png")
        K = f.K
        (folder / "lowres_wide_intrinsics" / f"{name}.pincam").write_text(
            f"{w} {h} {K[0, 0]:.9f} {K[1, 1]:.9f} {K[0, 2]:.9f} {K[1, 2]:.9f}\n")
        w2c = invert_pose(up_rotation("+z").T @ f.c2w)  # the dataset's world is z-up
        lines.append(" ".join(f"{v:.9f}" for v in (t, *Rotation.from_matrix(w2c[:3, :3]).as_rotvec(),
                                                    *w2c[:3, 3])))
    (folder / "lowres_wide.traj").write_text("\n".join(lines[:-1]) + "\n")  # the last frame has no pose
    assert detect_format(folder) == "arkitscenes"
    seq = open_sequence(folder)
    assert len(seq) == 3 and seq.world_up == "+z" and "1 frames lie outside lowres_wide.traj (skipped)" in seq.notes
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-6)
        np.testing.assert_allclose(g.K, f.K, atol=1e-8)
        np.testing.assert_array_equal(g.rgb, f.rgb)
        expected = _expected_mm_depth(f.depth)
        expected[:, : w // 4] = 0
        np.testing.assert_allclose(g.depth, expected, atol=1e-6)
    # not every asset at every time (a raw download): frames without depth or camera are skipped, and a missing
    # confidence map leaves the depth unmasked, each said
    (folder / "lowres_wide_intrinsics" / f"41069021_{times[1]:.3f}.pincam").unlink()
    (folder / "lowres_depth" / f"41069021_{times[2]:.3f}.png").unlink()
    (folder / "confidence" / f"41069021_{times[0]:.3f}.png").unlink()
    seq = open_sequence(folder)
    assert [p.name for p in seq.rgb_files] == ["41069021_305.244.png"]
    assert "1 frames of lowres_wide/ have no depth in lowres_depth/ (skipped)" in seq.notes
    assert "1 frames of lowres_wide/ have no camera in lowres_wide_intrinsics/ (skipped)" in seq.notes
    assert "confidence/ lacks the maps of 1 frames: depth is not masked" in seq.notes

    # the raw layout: frames at 60 Hz between the trajectory's 10 Hz poses (0.1 s apart, give or take float
    # rounding), each interpolated; the 3dod layout: the video's frames in <video>_frames/ beside its mesh
    raw = tmp_path / "raw" / "41069021"
    shutil.copytree(folder, raw)
    times_60 = 305.244 + np.arange(1, 13) / 60  # between the trajectory's first and last poses
    for t in times_60:
        for sub, src in (("lowres_wide", "41069021_305.244.png"), ("lowres_depth", "41069021_305.244.png"),
                         ("lowres_wide_intrinsics", "41069021_305.244.pincam")):
            shutil.copy(raw / sub / src, raw / sub / f"41069021_{t:.3f}{Path(src).suffix}")
    times_60 = np.concatenate([[305.244], times_60])
    assert len(open_sequence(raw)) == len(times_60)
    scene = tmp_path / "3dod" / "41069021"
    shutil.copytree(folder, scene / "41069021_frames")
    (scene / "41069021_3dod_mesh.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    (scene / "worldstudio.json").write_text(json.dumps({"world_up": "+y"}))  # the named folder's settings apply
    seq = open_sequence(scene)
    assert seq.format == "arkitscenes" and seq.path == scene / "41069021_frames" and seq.world_up == "+y"
    assert seq.notes[0] == "41069021 holds one recording: 41069021_frames is read"


def test_a_record3d_capture_keeps_medium_confidence_and_each_frames_own_focal_lengths(walk_frames, tmp_path):
    """Guards Record3D's per-frame intrinsics and confidence against what square pixels and a 0/2-only confidence
    map hide: perFrameIntrinsicCoeffs are [fx, fy, cx, cy] (fx != fy here), resized with the colour to the depth's
    size, and depth of medium confidence (1) is kept at the default min_confidence 1; only low (0) is dropped."""
    import lzfse

    frames = walk_frames[:2]
    h, w = frames[0].depth.shape
    folder = write_r3d(tmp_path / "capture", frames)
    confidence = np.full((h, w), 1, np.uint8)
    confidence[:, : w // 4] = 0
    (folder / "rgbd" / "0.conf").write_bytes(lzfse.compress(confidence.tobytes()))
    meta = json.loads((folder / "metadata").read_text())
    meta["perFrameIntrinsicCoeffs"] = [[300.0 + 10 * i, 240.0, 2 * f.K[0, 2] + 0.5, 2 * f.K[1, 2] + 0.5]
                                       for i, f in enumerate(frames)]
    (folder / "metadata").write_text(json.dumps(meta))
    seq = open_sequence(folder)
    for i, f in enumerate(frames):
        np.testing.assert_allclose(seq[i].K, [[150.0 + 5 * i, 0, f.K[0, 2]], [0, 120.0, f.K[1, 2]], [0, 0, 1]],
                                   atol=1e-9)
    g, f = seq[0], frames[0]
    assert (g.depth[:, : w // 4] == 0).all()
    np.testing.assert_array_equal(g.depth[:, w // 4:], np.where(f.depth > 0, f.depth, 0)[:, w // 4:])


def test_an_arkitscenes_trajectory_of_tilted_cameras_is_read_as_world_to_camera(walk_frames, tmp_path):
    """Guards lowres_wide.traj's convention where level cameras hide it: with pitched and rolled cameras, each
    line's axis-angle and translation are the world-to-camera pose (inverted to c2w), as ARKitScenes' loaders read
    them; a .pincam's ``w h fx fy cx cy`` give fx != fy in their order."""
    from scipy.spatial.transform import Rotation

    frames = walk_frames[:3]
    h, w = frames[0].depth.shape
    folder = tmp_path / "4206"
    for sub in ("lowres_wide", "lowres_depth", "lowres_wide_intrinsics"):
        (folder / sub).mkdir(parents=True)
    c2ws = np.tile(np.eye(4), (3, 1, 1))
    c2ws[:, :3, :3] = Rotation.from_euler("xyz", [[20, 30, -10], [-15, 50, 25], [35, -20, 5]], degrees=True).as_matrix()
    c2ws[:, :3, 3] = [[0.5, 1.2, -0.3], [1.0, 1.4, 0.2], [-0.7, 0.9, 2.0]]
    lines = []
    for f, t, c2w in zip(frames, 12.0 + 0.1 * np.arange(3), c2ws):
        name = f"4206_{t:.3f}"
        Image.fromarray(f.rgb).save(folder / "lowres_wide" / f"{name}.png")
        Image.fromarray(depth_to_png_mm(f.depth)).save(folder / "lowres_depth" / f"{name}.png")
        (folder / "lowres_wide_intrinsics" / f"{name}.pincam").write_text(f"{w} {h} 150 120 {(w - 1) / 2} {h / 2}\n")
        w2c = invert_pose(up_rotation("+z").T @ c2w)  # in the dataset's z-up world
        lines.append(" ".join(f"{v:.12f}" for v in (t, *Rotation.from_matrix(w2c[:3, :3]).as_rotvec(), *w2c[:3, 3])))
    (folder / "lowres_wide.traj").write_text("\n".join(lines) + "\n")
    seq = open_sequence(folder)
    np.testing.assert_allclose(seq.c2ws, c2ws, atol=1e-8)
    np.testing.assert_allclose(seq[0].K, [[150.0, 0, (w - 1) / 2], [0, 120.0, h / 2], [0, 0, 1]])  # w h fx fy cx cy


def write_sens(path: Path, frames, lost: tuple[int, ...] = ()) -> Path:
    """ScanNet's .sens file of ``frames`` as its SensorData.py writes it: version 4, the colour camera at 2x the
    depth's size (JPEG), depth as zlib uint16 mm (shift 1000), -inf poses for the frames ``lost``."""
    import io
    import struct
    import zlib

    h, w = frames[0].depth.shape
    Kd = np.eye(4)
    Kd[:3, :3] = frames[0].K
    Kc = Kd.copy()
    Kc[:2] *= 2
    name = b"StructureSensor"
    out = [struct.pack("<IQ", 4, len(name)), name]
    out += [m.astype("<f4").tobytes() for m in (Kc, np.eye(4), Kd, np.eye(4))]
    out.append(struct.pack("<iiIIIIfQ", 2, 1, 2 * w, 2 * h, w, h, 1000.0, len(frames)))
    for k, f in enumerate(frames):
        jpg = io.BytesIO()
        Image.fromarray(f.rgb).resize((2 * w, 2 * h), Image.BILINEAR).save(jpg, "JPEG", quality=95)
        depth = zlib.compress(depth_to_png_mm(f.depth).astype("<u2").tobytes())
        pose = np.full((4, 4), -np.inf) if k in lost else f.c2w
        out += [pose.astype("<f4").tobytes(), struct.pack("<QQQQ", 1000 * k, 1000 * k, len(jpg.getvalue()),
                                                          len(depth)), jpg.getvalue(), depth]
    path.write_bytes(b"".join(out))
    return path


def test_a_scannet_sens_file_opens_as_its_export_would(walk_frames, tmp_path):
    """ScanNet's own .sens file (no SensReader export needed): the depth camera's K and size, colour resized to it,
    -inf poses skipped with a note, world z-up; read by offset, so a stride reads the right frames; a file cut
    short is one line."""
    from dataclasses import replace

    frames = walk_frames[:5]
    sens = write_sens(tmp_path / "scene0000_00.sens",
                      [replace(f, c2w=up_rotation("+z").T @ f.c2w) for f in frames], lost=(1,))
    assert detect_format(sens) == "scannet"
    seq = open_sequence(sens)
    assert len(seq) == 4 and seq.world_up == "+z" and "1 frames have an inf/NaN pose in scene0000_00.sens " \
        "(tracking lost): skipped" in seq.notes
    for k, g in zip((0, 2, 3, 4), seq):
        f = frames[k]
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-5)  # (float32 in the file)
        np.testing.assert_allclose(g.K, f.K, atol=1e-4)
        assert g.rgb.shape == f.rgb.shape and np.abs(g.rgb.astype(float) - f.rgb).mean() < 6
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
    seq.close()
    np.testing.assert_allclose(open_sequence(sens, stride=2)[1].depth, _expected_mm_depth(frames[3].depth), atol=1e-6)
    scene = tmp_path / "scene0000_00"  # as ScanNet's download script leaves it: the .sens beside the meshes
    scene.mkdir()
    shutil.copy(sens, scene / "scene0000_00.sens")
    for mesh in ("scene0000_00_vh_clean.ply", "scene0000_00_vh_clean_2.ply"):
        (scene / mesh).write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    (scene / "worldstudio.json").write_text(json.dumps({"depth_scale": 0.002}))  # the folder's settings apply
    seq = open_sequence(scene)
    assert seq.format == "scannet" and seq.path == scene / "scene0000_00.sens" and len(seq) == 4
    np.testing.assert_allclose(seq[1].depth, 2 * _expected_mm_depth(frames[2].depth), atol=1e-6)
    assert ReplayWorld(seq).describe()["path"] == str(scene)  # a session names the folder the user named
    with pytest.raises(SequenceError, match=r"color is missing"):  # a format named is that format's reader
        open_sequence(scene, format="scannet")
    linked = tmp_path / "linked"  # a recording linked in from elsewhere is not followed (the studio's root rule)
    linked.mkdir()
    (linked / "scene0000_00.sens").symlink_to(sens)
    with pytest.raises(SequenceError, match=r"linked holds a sequence in scene0000_00.sens; pass that"):
        open_sequence(linked)
    from launch import main  # a run's bundle beside the file would change how it reads (its worldstudio.json)

    assert main(["run", "--world", f"replay:{sens}", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "worldstudio.json").exists()
    cut = tmp_path / "cut.sens"
    cut.write_bytes(sens.read_bytes()[:-5000])
    with pytest.raises(SequenceError, match=r"cut.sens ends inside frame 4 of the 5 its header counts"):
        open_sequence(cut)
    cut.write_bytes(sens.read_bytes()[:100])
    with pytest.raises(SequenceError, match=r"cut.sens ends inside its header"):
        open_sequence(cut)


def test_a_tartanair_trajectory_reads_as_its_tools_read_it(walk_frames, tmp_path):
    """TartanAir: image_left/ + depth_left/*_depth.npy (planar metres, the sky at ~1e4 m) + pose_left.txt (NED
    camera-to-world, 'tx ty tz qx qy qz qw'), turned to OpenCV axes as tartanair_tools' ned2cam does; V2's
    lcam_front files with float32 depth packed in RGBA PNGs. Frames come back at their poses, the sky without depth."""
    from scipy.spatial.transform import Rotation

    ned_to_cv = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    frames = walk_frames[:3]
    for cam, depth_ext in (("left", ".npy"), ("lcam_front", ".png")):
        folder = tmp_path / cam / "P000"
        (folder / f"image_{cam}").mkdir(parents=True)
        (folder / f"depth_{cam}").mkdir()
        lines = []
        for k, f in enumerate(frames):
            Image.fromarray(f.rgb).save(folder / f"image_{cam}" / f"{k:06d}_{cam}.png")
            depth = f.depth.astype(np.float32).copy()
            depth[depth <= 0] = 10000.0  # the sky, as the simulator writes it
            target = folder / f"depth_{cam}" / f"{k:06d}_{cam}_depth{depth_ext}"
            if depth_ext == ".npy":
                np.save(target, depth)
            else:  # as tartanairpy writes it: cv2.imwrite of the float's bytes, taken as BGRA
                packed = np.ascontiguousarray(depth.astype("<f4")).view(np.uint8).reshape(*depth.shape, 4)
                Image.fromarray(np.ascontiguousarray(packed[..., [2, 1, 0, 3]]), "RGBA").save(target)
            ned = ned_to_cv.T @ (up_rotation("-y").T @ f.c2w) @ ned_to_cv
            lines.append(" ".join(f"{v:.9f}" for v in (*ned[:3, 3], *Rotation.from_matrix(ned[:3, :3]).as_quat())))
        (folder / f"pose_{cam}.txt").write_text("\n".join(lines) + "\n")
        assert detect_format(folder) == "tartanair"
        with pytest.raises(SequenceError, match=r"no intrinsics were given and the tartanair default is for 640x"):
            open_sequence(folder)  # (these frames are 160x120)
        (folder / "worldstudio.json").write_text(json.dumps({"K": frames[0].K.tolist()}))
        seq = open_sequence(folder)
        assert len(seq) == 3 and seq.world_up == "-y"
        for f, g in zip(frames, seq):
            np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-7)
            np.testing.assert_array_equal(g.rgb, f.rgb)
            np.testing.assert_array_equal(g.depth, np.where(f.depth < 1000, f.depth, 0).astype(np.float32))
    one_and_a_half = np.zeros((120, 160, 4), np.uint8)  # 1.5 m as OpenCV stores it: R 0xC0, G 0, B 0, A 0x3F
    one_and_a_half[...] = [0xC0, 0, 0, 0x3F]
    Image.fromarray(one_and_a_half, "RGBA").save(tmp_path / "lcam_front" / "P000" / "depth_lcam_front" /
                                                 "000001_lcam_front_depth.png")
    assert (open_sequence(tmp_path / "lcam_front" / "P000")[1].depth == 1.5).all()
    (tmp_path / "lcam_front" / "P000" / "depth_lcam_front" / "000002_lcam_front_depth.png").write_bytes(b"\x89PNG")
    with pytest.raises(SequenceError, match=r"000002_lcam_front_depth.png: not a valid PNG .*download the "
                                            r"trajectory's depth again"):
        open_sequence(tmp_path / "lcam_front" / "P000")[2]


def _write_sun3d(folder: Path, frames, world: np.ndarray) -> list[int]:
    """A SUN3D sequence of ``frames`` as SUN3D ships it: image/ and depth/ named frame-timestamp (µs), the depth's
    bits rotated left by 3 (what depthRead.m undoes), one depth more than images (a first one with no image near
    it), intrinsics.txt, and two extrinsics files: an older run's (identity poses) and the newest, ``world @ c2w``
    as SUN3Dsfm writes it (3 lines of 4 per camera). Returns the image times."""
    for d in ("image", "depth", "extrinsics"):
        (folder / d).mkdir(parents=True)
    np.savetxt(folder / "intrinsics.txt", frames[0].K, fmt="%.12g")
    image_t = [50000 + 33367 * i for i in range(len(frames))]
    Image.fromarray(np.zeros_like(depth_to_png_mm(frames[0].depth))).save(folder / "depth" /
                                                                          "0000001-000000000000.png")
    rows = []
    for i, (f, t) in enumerate(zip(frames, image_t)):
        Image.fromarray(f.rgb).save(folder / "image" / f"{i + 1:07d}-{t:012d}.jpg", quality=95)
        mm = depth_to_png_mm(f.depth)
        Image.fromarray((mm << np.uint16(3)) | (mm >> np.uint16(13))).save(
            folder / "depth" / f"{i + 2:07d}-{t + 4000:012d}.png")
        rows += [" ".join(f"{v:.17g}" for v in row) for row in (world @ f.c2w)[:3]]
    (folder / "extrinsics" / "20130101000000.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n" * len(frames))
    (folder / "extrinsics" / "20140118144543.txt").write_text("\n".join(rows) + "\n")
    return image_t


def test_a_sun3d_sequence_reads_as_its_toolbox_reads_it(walk_frames, tmp_path, capsys):
    """SUN3D (loadSUN3D.m, depthRead.m): each image takes the depth nearest in time, the depth PNG's 16 bits
    rotated right by 3 are millimetres, the newest extrinsics file holds one 3x4 OpenCV camera-to-world per image.
    A rectified world (SUN3Dsfm: y up) and a first-camera one (y down) both come back upright, said; `info` reads
    it; malformed files are one line saying what to do."""
    from launch import main
    from worldmodel.recordings.sun3d import nearest_depth, sun3d_depth_units

    stored = np.arange(65536, dtype=np.uint16)  # every value, as depthRead.m decodes it in MATLAB's integers
    matlab = np.array([(v >> 3) | ((v << 13) & 0xFFFF) for v in range(65536)], dtype=np.uint16)
    np.testing.assert_array_equal(sun3d_depth_units(stored), matlab)
    rng = np.random.default_rng(0)
    t_img, t_dep = rng.integers(0, 40, 50).astype(float), rng.integers(0, 40, 30).astype(float)
    np.testing.assert_array_equal(nearest_depth(t_img, t_dep),
                                  [int(np.argmin(np.abs(t_dep - t))) for t in t_img])  # MATLAB's min: first

    frames = walk_frames[:4]
    folder = tmp_path / "hotel_umd" / "maryland_hotel3"
    image_t = _write_sun3d(folder, frames, np.eye(4))
    assert detect_format(folder) == "sun3d"
    with pytest.raises(SequenceError, match=r"hotel_umd holds a sequence in maryland_hotel3; pass that"):
        detect_format(folder.parent)
    seq = open_sequence(folder)
    assert len(seq) == 4 and seq.world_up == "+y" and any("world up +y assumed" in n for n in seq.notes)
    assert any("the newest by name, 20140118144543.txt, is read" in n for n in seq.notes), seq.notes
    np.testing.assert_allclose(seq.timestamps, np.asarray(image_t) / 1e6)
    assert [p.name.split("-")[0] for p in seq.depth_files] == ["0000002", "0000003", "0000004", "0000005"]
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-12)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        np.testing.assert_allclose(g.depth, _expected_mm_depth(f.depth), atol=1e-6)
        assert np.abs(g.rgb.astype(float) - f.rgb).mean() < 4  # (JPEG)
    a, b = seq[1], seq[3]  # the depth moved between frames by the poses read lands on the surface seen there
    moved = reproject_depth(a.depth, a.K, a.c2w, b.depth, b.K, b.c2w, max_depth=20.0, relative=True)
    assert np.median(moved) < 0.01

    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    h, w = frames[0].depth.shape
    assert "(sun3d, world up +y -> +Y)" in out and f"frames    4, {w}x{h}" in out and "far better" not in out, out

    first = invert_pose(frames[0].c2w)  # an extrinsics file in its first camera's frame (y down)
    _write_sun3d(tmp_path / "first", frames, first)
    seq = open_sequence(tmp_path / "first")
    assert seq.world_up == "-y"
    np.testing.assert_allclose(seq.c2ws, up_rotation("-y") @ first @ np.stack([f.c2w for f in frames]), atol=1e-9)
    for name in ("0000004-000000120734.png", "0000005-000000154101.png"):  # two depth frames dropped
        (tmp_path / "first" / "depth" / name).unlink()
    seq = open_sequence(tmp_path / "first")
    assert [p.name[:7] for p in seq.depth_files] == ["0000002", "0000003", "0000003", "0000003"]
    assert "1 images have no depth within 50 ms: each takes the nearest (up to 0.0627 s away), as SUN3D's " \
           "toolbox pairs them" in seq.notes, seq.notes

    newest = folder / "extrinsics" / "20140118144543.txt"
    lines = newest.read_text().splitlines()
    for damage, says in [
        ("\n".join(lines[:6]), r"20140118144543.txt holds 2 cameras but image/ has 4 images; .*download"),
        ("\n".join(lines[:4] + ["nan nan nan nan"] + lines[5:]),
         r"20140118144543.txt: camera 2 \(lines 4-6\): the pose is not a finite 4x4 matrix"),
        ("\n".join(lines[:4] + ["1 0 0"] + lines[5:]), r"20140118144543.txt:5: expected 4 numbers 'r r r t', got 3"),
        ("\n".join(lines[:-1]), r"holds 11 lines of 4 numbers, not 3 per camera"),
    ]:
        newest.write_text(damage + "\n")
        with pytest.raises(SequenceError, match=says) as e:
            open_sequence(folder)
        assert "\n" not in str(e.value)
    newest.write_text("\n".join(lines) + "\n")
    (folder / "intrinsics.txt").unlink()
    with pytest.raises(SequenceError, match=r"intrinsics.txt is missing; download the sequence's intrinsics.txt"):
        open_sequence(folder)
    (folder / "worldstudio.json").write_text(json.dumps({"K": frames[0].K.tolist()}))
    assert len(open_sequence(folder)) == 4
    (folder / "extrinsics" / "20130101000000.txt").unlink()
    newest.unlink()
    with pytest.raises(SequenceError, match=r"extrinsics holds no .txt camera poses; download the sequence's"):
        open_sequence(folder)
    (tmp_path / "first" / "image" / "0000002-000000083367.jpg").rename(tmp_path / "first" / "image" / "frame2.jpg")
    with pytest.raises(SequenceError, match=r"frame2.jpg: expected SUN3D's name 'frame-timestamp.jpg'"):
        open_sequence(tmp_path / "first")


def test_info_describes_a_recording_without_fusing_it(tum_path, tmp_path, capsys):
    """`launch.py info` on a recording (not a session): its format, frames, camera and the reader's notes; on a
    folder that is neither, one line saying both."""
    from launch import main

    assert main(["info", f"{tum_path}?stride=3"]) == 0
    out = capsys.readouterr().out
    assert "(tum, world up +z -> +Y)" in out and "frames    30, 640x480, fx=525 fy=525 cx=319.5 cy=239.5" in out
    assert "m of path over the 30 frames" in out and "note: no calibration.txt" in out
    (tmp_path / "notes.txt").write_text("not a recording")
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path} is not a saved session (no session.json), and as a recording:") \
        and "\n" not in err
