"""Export round trips (PLY, GLB, TUM, transforms.json, MP4), failure safety, colour maps and TSDF geometry."""

from __future__ import annotations

import dataclasses

import errno
import json
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import open3d as o3d
import pytest
import trimesh

from worldmodel.camera import intrinsics_from_fov, invert_pose, look_at_c2w, pixel_rays_camera
from recon.visual import TURBO_LUT, colorize_depth, colorize_scalar
from scenes import export as ex
from scenes.export import (ExportError, read_ply, read_tum_trajectory, write_glb, write_mp4, write_ply,
                           write_transforms_json, write_tum_trajectory)
from worldmodel.frame import Frame

H, W = 48, 64
WALL_Z = -3.0  # a wall at world z = -3 (cameras near the origin look along -z)


def wall_frame(i: int, eye, target, h: int = H, w: int = W) -> Frame:
    """Exact z-depth of the plane world z = WALL_Z seen by an OpenCV camera at ``eye`` looking at ``target``."""
    K = intrinsics_from_fov(w, h, 60.0)
    c2w = look_at_c2w(np.asarray(eye, float), np.asarray(target, float))
    rays = pixel_rays_camera(K, w, h).astype(np.float64) @ c2w[:3, :3].T  # z_cam = 1 per ray
    depth = ((WALL_Z - c2w[2, 3]) / rays[..., 2]).astype(np.float32)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None]
    rgb[..., 1] = np.linspace(0, 255, h).astype(np.uint8)[:, None]
    rgb[..., 2] = (40 * i) % 256
    return Frame(index=i, rgb=rgb, depth=depth, K=K, c2w=c2w)


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    out = []
    for i, x in enumerate(np.linspace(-0.4, 0.4, 5)):
        out.append(wall_frame(i, eye=(x, 0.1 * i, 0.2 * i), target=(0.5 * x, 0.0, WALL_Z)))
    return out


@pytest.fixture(scope="module")
def cloud() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(5000, 3)) * np.array([3.0, 1.0, 5.0])
    cols = rng.integers(0, 256, size=(5000, 3), dtype=np.uint8)
    return pts, cols


# ----------------------------------------------------------------------------------------- colour maps


def test_colorize_depth_invalid_black_and_monotone_range():
    d = np.tile(np.linspace(1.0, 10.0, 32, dtype=np.float32), (4, 1))
    d[0, 0], d[1, 1], d[2, 2], d[3, 3] = 0.0, np.nan, np.inf, -1.0
    img = colorize_depth(d, near=1.0, far=10.0)
    assert img.shape == (4, 32, 3) and img.dtype == np.uint8
    for y, x in [(0, 0), (1, 1), (2, 2), (3, 3)]:
        assert (img[y, x] == 0).all()
    assert (img[0, -1] == TURBO_LUT[255]).all() and (img[1, 0] == TURBO_LUT[0]).all()
    auto = colorize_depth(d)  # robust percentiles
    assert auto.shape == (4, 32, 3) and (auto[0, 0] == 0).all()
    assert TURBO_LUT.shape == (256, 3) and TURBO_LUT.dtype == np.uint8


def test_colorize_depth_default_range_is_the_2nd_to_98th_percentile_and_near_is_blue():
    """Without near/far the colour range is the 2nd..98th percentile of the valid depth (values beyond it
    saturate, values inside it do not); a near given alone is kept (far from the percentile); near is blue and
    far red (turbo), not the other way round."""
    d = np.linspace(1.0, 100.0, 1000, dtype=np.float32).reshape(10, 100)
    lo, hi = np.percentile(d, [2.0, 98.0])
    idx = np.clip(np.rint((d - lo) * 255.0 / (hi - lo)), 0, 255).astype(int)
    img = colorize_depth(d)
    assert np.array_equal(img, TURBO_LUT[idx])
    inside = (d > lo + 1) & (d < hi - 1)
    assert (img[d >= hi] == TURBO_LUT[255]).all() and not (img[inside] == TURBO_LUT[255]).all(-1).any()
    kept = colorize_depth(d, near=50.0)
    assert (kept[d <= 50.0] == TURBO_LUT[0]).all() and (kept[d >= hi] == TURBO_LUT[255]).all()
    blue, red = TURBO_LUT[:64].astype(int).mean(0), TURBO_LUT[192:].astype(int).mean(0)  # nearest / farthest quarter
    assert blue[2] > blue[0] + 100 and red[0] > red[2] + 100
    assert colorize_depth(np.full((2, 2), 3.0, np.float32)).shape == (2, 2, 3)  # a flat image: no division by 0


def test_colorize_scalar():
    c = colorize_scalar(np.array([0.0, 5.0, 10.0, np.nan]), lo=0.0, hi=10.0)
    assert c.shape == (4, 3) and c.dtype == np.uint8
    assert (c[0] == TURBO_LUT[0]).all() and (c[2] == TURBO_LUT[255]).all() and (c[3] == 0).all()
    assert colorize_scalar(np.arange(100)).shape == (100, 3)


# ------------------------------------------------------------------------------------------------ PLY


def test_ply_roundtrip_open3d_trimesh_ours(tmp_path, cloud):
    pts, cols = cloud
    p = write_ply(tmp_path / "map.ply", pts, cols)
    assert p.exists() and not list(tmp_path.glob(".*tmp*"))
    pts32 = pts.astype(np.float32)

    pcd = o3d.io.read_point_cloud(str(p))
    assert len(pcd.points) == len(pts)
    np.testing.assert_allclose(np.asarray(pcd.points), pts32, atol=1e-6)
    np.testing.assert_array_equal(np.rint(np.asarray(pcd.colors) * 255).astype(np.uint8), cols)

    tm = trimesh.load(p)
    assert len(tm.vertices) == len(pts)
    np.testing.assert_allclose(tm.vertices, pts32, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(tm.colors)[:, :3], cols)

    rp, rc = read_ply(p)
    np.testing.assert_array_equal(rp, pts32)
    np.testing.assert_array_equal(rc, cols)


def test_ply_drops_nonfinite_and_reads_ascii_via_open3d(tmp_path, cloud):
    pts, cols = cloud
    bad = pts[:10].copy()
    bad[3, 1] = np.nan
    p = write_ply(tmp_path / "a.ply", bad, cols[:10])
    rp, rc = read_ply(p)
    assert len(rp) == 9 and (rc == np.delete(cols[:10], 3, axis=0)).all()

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[:20]))
    pcd.colors = o3d.utility.Vector3dVector(cols[:20] / 255.0)
    o3d.io.write_point_cloud(str(tmp_path / "ascii.ply"), pcd, write_ascii=True)
    rp, rc = read_ply(tmp_path / "ascii.ply")
    np.testing.assert_allclose(rp, pts[:20], atol=1e-4)
    np.testing.assert_array_equal(rc, cols[:20])


def test_ply_rejects_bad_shapes(tmp_path, cloud):
    pts, cols = cloud
    with pytest.raises(ExportError, match="colors"):
        write_ply(tmp_path / "x.ply", pts, cols[:-1])
    with pytest.raises(ExportError, match="points"):
        write_ply(tmp_path / "x.ply", pts[:, :2], cols)
    assert not (tmp_path / "x.ply").exists()


# ------------------------------------------------------------------------------------------------ GLB


def _pointclouds(scene) -> list:
    geoms = scene.geometry.values() if isinstance(scene, trimesh.Scene) else [scene]
    return [g for g in geoms if isinstance(g, trimesh.PointCloud)]


def test_glb_points_only(tmp_path, cloud):
    pts, cols = cloud
    p = write_glb(tmp_path / "map.glb", pts, cols)
    scene = trimesh.load(p)
    (pc,) = _pointclouds(scene)
    assert len(pc.vertices) == len(pts)
    np.testing.assert_allclose(pc.vertices, pts.astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(pc.colors)[:, :3], cols)


def test_glb_with_cameras_mesh_and_subsample(tmp_path, cloud, frames):
    pts, cols = cloud
    c2ws = np.stack([f.c2w for f in frames])
    box = trimesh.creation.box(extents=(1, 1, 1))
    p = write_glb(tmp_path / "scene.glb", pts, cols, c2ws=c2ws, K=frames[0].K, image_size=(W, H),
                  mesh=box, max_points=1000)
    scene = trimesh.load(p)
    assert isinstance(scene, trimesh.Scene)
    (pc,) = _pointclouds(scene)
    assert len(pc.vertices) == 1000
    # every exported point is one of the inputs with its own colour
    lookup = {tuple(v): tuple(c) for v, c in zip(pts.astype(np.float32).tolist(), cols.tolist())}
    for v, c in zip(pc.vertices[:50].astype(np.float32).tolist(), np.asarray(pc.colors)[:50, :3].tolist()):
        assert lookup[tuple(v)] == tuple(c)
    paths = [g for g in scene.geometry.values() if isinstance(g, trimesh.path.Path3D)]
    assert paths, "camera path / frustum geometry missing"
    path_pts = np.concatenate([g.vertices for g in paths])
    for c in c2ws[:, :3, 3]:  # every camera centre is drawn
        assert np.min(np.linalg.norm(path_pts - c, axis=1)) < 1e-5
    meshes = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)]
    assert meshes and len(meshes[0].faces) == 12

    # frustum geometry: the image-plane corners lie at depth frustum_scale in front of the camera
    segs = ex.camera_wireframe_segments(c2ws[:1], frames[0].K, (W, H), 0.3)
    corner, opposite = segs[0, 0, 1], segs[0, 2, 1]
    cam, cam_opposite = (invert_pose(c2ws[0])[:3, :3] @ p + invert_pose(c2ws[0])[:3, 3] for p in (corner, opposite))
    assert abs(cam[2] - 0.3) < 1e-9 and cam[0] < 0 and cam[1] < 0  # pixel (0, 0): left, up
    # the image's edges (-0.5 and W - 0.5 about integer pixel centres): a centred camera's frustum is symmetric
    assert np.allclose(frames[0].K[:2, 2], [(W - 1) / 2, (H - 1) / 2])
    assert np.allclose(cam[:2], -cam_opposite[:2], atol=1e-12)


def test_glb_many_cameras_every_kth(tmp_path):
    c2ws = np.stack([look_at_c2w(np.array([0.1 * i, 0, 0]), np.array([0.1 * i, 0, -1.0])) for i in range(1000)])
    p = write_glb(tmp_path / "cams.glb", np.zeros((0, 3)), np.zeros((0, 3), np.uint8), c2ws=c2ws, max_frustums=50)
    scene = trimesh.load(p)
    assert any(isinstance(g, trimesh.path.Path3D) for g in scene.geometry.values())


# ------------------------------------------------------------------------------------------------ TUM


def test_tum_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    from scipy.spatial.transform import Rotation

    c2ws = np.tile(np.eye(4), (20, 1, 1))
    c2ws[:, :3, :3] = Rotation.random(20, random_state=4).as_matrix()
    c2ws[:, :3, 3] = rng.normal(size=(20, 3)) * 10
    p = write_tum_trajectory(tmp_path / "traj.txt", c2ws)
    ts, back = read_tum_trajectory(p)
    np.testing.assert_allclose(ts, np.arange(20) / 10.0)
    np.testing.assert_allclose(back, c2ws, atol=1e-6)
    first = [ln for ln in p.read_text().splitlines() if not ln.startswith("#")][0].split()
    assert len(first) == 8
    q = Rotation.from_matrix(c2ws[0, :3, :3]).as_quat()  # scalar last
    assert np.allclose(np.abs([float(v) for v in first[4:]]), np.abs(q), atol=1e-8)

    ts2, _ = read_tum_trajectory(write_tum_trajectory(tmp_path / "t2.txt", c2ws, timestamps=np.arange(20) * 0.5))
    np.testing.assert_allclose(ts2, np.arange(20) * 0.5)
    with pytest.raises(ExportError, match="timestamps"):
        write_tum_trajectory(tmp_path / "t3.txt", c2ws, timestamps=np.arange(3))


def test_tum_trajectory_keeps_real_timestamps_and_the_camera_convention(tmp_path):
    """Guards the TUM line against ground truth: Unix timestamps as TUM's own files hold them (1e9 s, microsecond
    digits) come back to the microsecond; ``tx ty tz`` is the camera centre and ``qx qy qz qw`` the c2w rotation
    (scalar last), as scipy reads the written numbers."""
    from scipy.spatial.transform import Rotation

    ts = np.array([1305031102.175304, 1305031102.211214, 1305031102.243211])
    c2ws = np.tile(np.eye(4), (3, 1, 1))
    c2ws[:, :3, :3] = Rotation.from_euler("xyz", [[10, 20, 30], [-40, 5, 80], [0, 90, 0]], degrees=True).as_matrix()
    c2ws[:, :3, 3] = [[1.25, -0.5, 3.0], [0.0, 2.0, -1.0], [7.5, 0.1, 0.2]]
    p = write_tum_trajectory(tmp_path / "traj.txt", c2ws, timestamps=ts)
    back_ts, back = read_tum_trajectory(p)
    np.testing.assert_allclose(back_ts, ts, rtol=0, atol=2e-6)
    np.testing.assert_allclose(back, c2ws, atol=1e-8)
    rows = np.array([[float(v) for v in ln.split()] for ln in p.read_text().splitlines() if not ln.startswith("#")])
    np.testing.assert_allclose(rows[:, 1:4], c2ws[:, :3, 3], atol=1e-9)
    np.testing.assert_allclose(Rotation.from_quat(rows[:, 4:8]).as_matrix(), c2ws[:, :3, :3], atol=1e-8)


# ------------------------------------------------------------------------------------- transforms.json


def test_transforms_json(tmp_path, frames):
    out = tmp_path / "ns"
    tj = write_transforms_json(out, frames)
    meta = json.loads(tj.read_text())
    assert meta["camera_model"] == "OPENCV" and meta["w"] == W and meta["h"] == H
    assert meta["depth_unit_scale_factor"] == 0.001
    # nerfstudio's ray through pixel (i, j) leaves at (i + 0.5, j + 0.5) with these intrinsics: it must be ours
    # through pixel (i, j) (our K puts pixel centres at whole numbers)
    K = frames[0].K
    i, j = np.array([0.0, W - 1.0, 7.0]), np.array([0.0, H - 1.0, 3.0])
    ours = np.stack([(i - K[0, 2]) / K[0, 0], (j - K[1, 2]) / K[1, 1]])
    theirs = np.stack([(i + 0.5 - meta["cx"]) / meta["fl_x"], (j + 0.5 - meta["cy"]) / meta["fl_y"]])
    np.testing.assert_allclose(theirs, ours, atol=1e-12)
    assert len(meta["frames"]) == len(frames)
    for f, e in zip(frames, meta["frames"]):
        assert e["file_path"] == f"images/frame_{f.index:05d}.png"
        rgb = iio.imread(out / e["file_path"])
        np.testing.assert_array_equal(rgb, f.rgb)
        dpng = iio.imread(out / e["depth_file_path"])
        assert dpng.dtype == np.uint16
        depth = dpng.astype(np.float64) * meta["depth_unit_scale_factor"]
        assert np.abs(depth - f.depth).max() <= 1e-3
        gl = np.asarray(e["transform_matrix"])
        np.testing.assert_allclose(gl @ np.diag([1.0, -1.0, -1.0, 1.0]), f.c2w, atol=1e-12)
        # OpenGL camera looks along -z: the GL -z axis is our forward
        np.testing.assert_allclose(-gl[:3, 2], f.forward, atol=1e-12)


def test_a_transforms_export_that_fails_leaves_the_earlier_one_whole(tmp_path, frames):
    """A second export into the same folder that fails part-way (a full disk at its 5th file) leaves the first
    one as it was, byte for byte, and no staging folder; one interrupted during its swap (Ctrl-C) finishes the
    swap first; one that succeeds replaces the files it writes, and a user's own files in images/ and depth/ stay
    (the swap took whole folders and deleted them)."""
    import signal
    from unittest import mock

    import scenes.atomic as atomic

    out = tmp_path / "ns"
    write_transforms_json(out, frames)
    (out / "images" / "my_photo.jpg").write_bytes(b"mine")
    (out / "depth" / "sensor_000.png").write_bytes(b"mine too")
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    others = [dataclasses.replace(f, rgb=255 - f.rgb) for f in frames[::-1]]
    real, calls = ex._write_bytes_atomic, []

    def full_disk_at_the_fifth(path, chunks):
        calls.append(path)
        if len(calls) == 5:
            raise ex._os_error(path.parent, OSError(errno.ENOSPC, "No space left on device"))
        return real(path, chunks)

    with mock.patch.object(ex, "_write_bytes_atomic", full_disk_at_the_fifth):
        with pytest.raises(ExportError, match="disk full"):
            write_transforms_json(out, others)
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before and not [p for p in out.iterdir() if p.name.startswith(".")]
    fresh, real_replace = tmp_path / "fresh", os.replace  # a first export that fails in its swap: no empty folders

    def full_disk_in_the_swap(a, b):
        if ex.TRANSFORMS_STAGING not in str(b):  # a move into the folder, not a file's own write in staging
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(a, b)

    with mock.patch.object(atomic.os, "replace", full_disk_in_the_swap):
        with pytest.raises(ExportError, match="disk full"):
            write_transforms_json(fresh, frames[:1])
    assert [p.name for p in fresh.iterdir()] == []

    renames = []

    def interrupted_at_the_third_rename(a, b):
        if "-old" in str(b) or ex.TRANSFORMS_STAGING not in str(b):  # the swap's moves, not the files' own writes
            renames.append(a)
            if len(renames) == 3:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the swap
        return real_replace(a, b)

    with mock.patch.object(atomic.os, "replace", interrupted_at_the_third_rename):
        with pytest.raises(KeyboardInterrupt):
            write_transforms_json(out, others[:2])
    meta = json.loads((out / "transforms.json").read_text())
    assert len(meta["frames"]) == 2 and len(renames) > 3  # the swap went on to its end, then the interrupt
    np.testing.assert_array_equal(iio.imread(out / "images" / "frame_00000.png"), others[0].rgb)
    assert (out / "images" / "my_photo.jpg").read_bytes() == b"mine"
    assert (out / "depth" / "sensor_000.png").read_bytes() == b"mine too"
    assert (out / "images" / f"frame_{len(frames) - 1:05d}.png").is_file()  # (the first export's further frames)
    from scenes.spill import this_host

    stale = out / f"{ex.TRANSFORMS_STAGING}{this_host()}-999999-0badf00d"  # left by a killed export (no such process)
    (stale / "images").mkdir(parents=True)
    kept = [out / f"{ex.TRANSFORMS_STAGING}{this_host()}-9999999999999999999-0badf00d",  # no pid: not judged
            out / f"{ex.TRANSFORMS_STAGING}mine", out / f"{ex.TRANSFORMS_RETIRED}{this_host()}-999999-0badf00d"]
    for folder in kept:  # a user's folder named like one; the files a killed swap had set aside
        folder.mkdir()
    write_transforms_json(out, others[:1])
    assert not stale.exists() and all(folder.is_dir() for folder in kept)
    # a recording's folder: its own worldstudio.json is not the export's to replace ("world_up" is in the file)
    (out / "worldstudio.json").write_text('{"depth_scale": 0.0002}')
    write_transforms_json(out, others[:1])
    assert (out / "worldstudio.json").read_text() == '{"depth_scale": 0.0002}'
    assert json.loads((out / "transforms.json").read_text())["world_up"] == "+y"
    with pytest.raises(ExportError, match="image_subdir must not be depth/"):
        write_transforms_json(out, others[:1], image_subdir="depth")


def test_a_transforms_export_into_a_folder_linked_to_another_disk(tmp_path, frames):
    """images/ a link to another disk (renames across it fail with EXDEV, injected here): the export copies
    across instead, and the files land behind the link. When the swap fails and so does its undoing, the one line
    names the folder holding the old files, and they are all there."""
    from unittest import mock

    import scenes.atomic as atomic

    out, other_disk = tmp_path / "ns", tmp_path / "other_disk"
    write_transforms_json(out, frames)
    (out / "images").rename(other_disk)
    (out / "images").symlink_to(other_disk)
    real_replace = os.replace

    def other_device(path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(other_disk)

    def renames_within_one_disk(a, b):
        if other_device(a) != other_device(Path(b).parent):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(a, b)

    others = [dataclasses.replace(f, rgb=255 - f.rgb) for f in frames]
    with mock.patch.object(atomic.os, "replace", renames_within_one_disk):
        write_transforms_json(out, others)
    assert (out / "images").is_symlink() and not list(out.glob(".transforms-*"))
    for i, f in enumerate(others):
        np.testing.assert_array_equal(iio.imread(other_disk / f"frame_{i:05d}.png"), f.rgb)
    assert not [p for p in other_disk.iterdir() if p.name.startswith(".")]

    before = {p.name: p.read_bytes() for p in other_disk.iterdir()}
    moves_in = []

    def full_disk_then_no_way_back(a, b):
        if ex.TRANSFORMS_STAGING in str(a) and ex.TRANSFORMS_STAGING not in str(b):  # moving in: the third fails
            moves_in.append(a)
            if len(moves_in) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        if ex.TRANSFORMS_STAGING in str(b) and ex.TRANSFORMS_STAGING not in str(a):  # so does moving them back
            raise OSError(errno.EIO, "Input/output error")
        return renames_within_one_disk(a, b)

    with mock.patch.object(atomic.os, "replace", full_disk_then_no_way_back):
        with pytest.raises(ExportError, match="could not be undone: remove the new images/frame_00000.png, "
                           "depth/frame_00000.png from .*, then move the entries of .*transforms-old-") as caught:
            write_transforms_json(out, frames)
    retired = Path(str(caught.value).split("move the entries of ")[1].split(" back into")[0])
    assert retired.is_dir() and "\n" not in str(caught.value)
    kept = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    kept.update({p.name: p.read_bytes() for p in (retired / "images").iterdir()})  # every old image, one place or
    assert all(kept.get(name) == data for name, data in before.items())  # the other: nothing lost


# ------------------------------------------------------------------------------------------------ MP4


def test_mp4(tmp_path, frames):
    odd = [wall_frame(i, eye=(0.1 * i, 0, 0), target=(0, 0, WALL_Z), h=35, w=47) for i in range(6)]
    for fs, (w, h) in [(frames, (2 * W, H)), (odd, (94, 36))]:
        p = write_mp4(tmp_path / f"v{w}.mp4", iter(fs), fps=10, progress=True)
        assert p.exists() and p.stat().st_size > 0
        got = list(iio.imiter(p, plugin="pyav") if _has_pyav() else _ffmpeg_frames(p))
        assert len(got) == len(fs)
        assert got[0].shape == (h, w, 3)
    p = write_mp4(tmp_path / "r.mp4", frames, depth_range=(2.0, 5.0))
    assert p.exists()


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
        return True
    except ImportError:
        return False


def _ffmpeg_frames(p: Path):
    import imageio

    reader = imageio.get_reader(str(p), format="FFMPEG")
    try:
        yield from reader
    finally:
        reader.close()


# ----------------------------------------------------------------------------------------- failures


def test_missing_folder_and_file_as_folder(tmp_path, cloud, frames):
    pts, cols = cloud
    c2ws = np.stack([f.c2w for f in frames])
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for target in [tmp_path / "nope" / "deeper" / "a.out", blocker / "a.out"]:
        for call in [lambda t: write_ply(t, pts, cols), lambda t: write_glb(t, pts, cols),
                     lambda t: write_tum_trajectory(t, c2ws), lambda t: write_mp4(t, frames)]:
            with pytest.raises(ExportError) as ei:
                call(target)
            msg = str(ei.value)
            assert "\n" not in msg and str(target) in msg and ("create it" in msg or "another folder" in msg)
    with pytest.raises(ExportError, match="file"):
        write_transforms_json(blocker, frames)


def test_read_only_folder(tmp_path, cloud, monkeypatch):
    # Permission bits do not stop root (CI runs as root), so the refusal is simulated at os.open.
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(ro)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(ExportError, match="Permission denied; choose a folder you may write to"):
        write_ply(ro / "a.ply", *cloud)
    assert list(ro.iterdir()) == []


def test_failed_export_keeps_existing_file(tmp_path, cloud, frames):
    # Disk full in the middle of a write: original file untouched, no temp file left behind.
    target = tmp_path / "map.ply"
    target.write_bytes(b"precious")

    def chunks():
        yield b"partial data"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ExportError) as ei:
        ex._write_bytes_atomic(target, chunks())
    assert "disk full: free space in" in str(ei.value) and "\n" not in str(ei.value)
    assert target.read_bytes() == b"precious"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["map.ply"]

    # A video whose frames change size midway fails after encoding started: old video survives.
    video = tmp_path / "v.mp4"
    video.write_bytes(b"old video")
    bad = [frames[0], frames[1], wall_frame(9, eye=(0, 0, 0), target=(0, 0, WALL_Z), h=20, w=20)]
    with pytest.raises(ExportError, match="one size"):
        write_mp4(video, iter(bad))
    assert video.read_bytes() == b"old video"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["map.ply", "v.mp4"]

    # Invalid input: nothing written at all.
    with pytest.raises(ExportError):
        write_ply(target, cloud[0], cloud[1][:3])
    assert target.read_bytes() == b"precious"


def test_written_file_permissions_are_not_private(tmp_path, cloud):
    p = write_ply(tmp_path / "a.ply", *cloud)
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)


# ----------------------------------------------------------------------------------------------- TSDF


def test_tsdf_mesh_lies_on_the_wall(frames):
    from recon.tsdf import TSDFFusion, tsdf_mesh

    voxel = 0.04
    mesh = tsdf_mesh(frames, voxel_size=voxel, depth_max=10.0)
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 100
    err = np.abs(mesh.vertices[:, 2] - WALL_Z)
    assert err.max() < voxel, err.max()
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    # The mesh covers what the cameras see: vertices project inside the first view, and the
    # wall region in front of camera 0 is covered.
    f0 = frames[0]
    w2c = invert_pose(f0.c2w)
    cam = mesh.vertices @ w2c[:3, :3].T + w2c[:3, 3]
    assert (cam[:, 2] > 0).all()
    centre_hit = f0.c2w[:3, 3] + f0.forward * float(f0.depth[H // 2, W // 2])
    assert np.min(np.linalg.norm(mesh.vertices - centre_hit, axis=1)) < 2 * voxel
    # colour comes from the images (red grows to the right in every frame)
    fusion = TSDFFusion(voxel_size=voxel, depth_max=10.0)
    for f in frames:
        fusion.integrate(f)
    pts, cols = fusion.point_cloud()
    assert len(pts) > 100 and np.abs(pts[:, 2] - WALL_Z).max() < voxel
    assert cols.dtype == np.uint8 and cols[:, 0].std() > 20
    assert len(fusion.mesh().vertices) == len(mesh.vertices)


def test_tsdf_box_corner_and_empty():
    """A box-shaped room corner (two perpendicular walls): vertices lie on one of the two planes."""
    from recon.tsdf import TSDFFusion

    h, w = 60, 80
    K = intrinsics_from_fov(w, h, 70.0)
    frames = []
    for i, x in enumerate([-0.3, 0.0, 0.3]):
        c2w = look_at_c2w(np.array([x, 0.0, 0.0]), np.array([1.5, 0.0, -2.0]))
        rays = pixel_rays_camera(K, w, h).astype(np.float64) @ c2w[:3, :3].T
        o = c2w[:3, 3]
        with np.errstate(divide="ignore"):
            t_back = np.where(rays[..., 2] < 0, (-2.0 - o[2]) / rays[..., 2], np.inf)   # wall z = -2
            t_side = np.where(rays[..., 0] > 0, (1.5 - o[0]) / rays[..., 0], np.inf)    # wall x = 1.5
        depth = np.minimum(t_back, t_side).astype(np.float32)
        rgb = np.full((h, w, 3), 128, np.uint8)
        frames.append(Frame(index=i, rgb=rgb, depth=depth, K=K, c2w=c2w))
    fusion = TSDFFusion(voxel_size=0.05, depth_max=8.0)
    assert len(fusion.mesh().vertices) == 0  # nothing integrated yet
    for f in frames:
        fusion.integrate(f)
    v = fusion.mesh().vertices
    assert len(v) > 100
    d = np.minimum(np.abs(v[:, 2] + 2.0), np.abs(v[:, 0] - 1.5))
    assert d.max() < 0.05, d.max()
    assert (np.abs(v[:, 0] - 1.5) < 0.05).sum() > 20 and (np.abs(v[:, 2] + 2.0) < 0.05).sum() > 20


# ------------------------------------------------------------------ conventions the round trips above miss


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF file, read as the spec lays it out (header, then chunk length and type)."""
    import struct

    blob = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", blob, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(blob))
    clen, ctype = struct.unpack_from("<II", blob, 12)
    assert ctype == 0x4E4F534A
    return json.loads(blob[20:20 + clen])


def test_ply_colours_as_floats_are_read_and_written_on_the_0_255_scale(tmp_path):
    """Guards the colour scale at both ends of PLY: a PLY whose colour properties are floats in [0, 1] (as some
    tools write) reads back x 255, and float colours already on 0..255 are written as those values, not as 255."""
    pts = np.array([[0.0, 1.0, 2.0], [3.0, -4.0, 5.0], [-1.0, 0.5, 0.25]], np.float32)
    rgb01 = np.array([[1.0, 0.5, 0.0], [0.2, 0.4, 0.6], [0.0, 0.0, 1.0]], np.float32)
    arr = np.empty(3, dtype=[(name, "<f4") for name in ("x", "y", "z", "red", "green", "blue")])
    for k, name in enumerate("xyz"):
        arr[name] = pts[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        arr[name] = rgb01[:, k]
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              "property float z\nproperty float red\nproperty float green\nproperty float blue\nend_header\n")
    p = tmp_path / "float_colours.ply"
    p.write_bytes(header.encode("ascii") + arr.tobytes())
    got_pts, got_cols = read_ply(p)
    np.testing.assert_array_equal(got_pts, pts)
    np.testing.assert_array_equal(got_cols, np.rint(rgb01 * 255).astype(np.uint8))

    cols255 = np.array([[17.0, 200.0, 3.0], [255.0, 0.0, 128.0], [64.0, 65.0, 66.0]])  # floats, but 0..255
    _, back = read_ply(write_ply(tmp_path / "f255.ply", pts, cols255))
    np.testing.assert_array_equal(back, cols255.astype(np.uint8))
    pcd = o3d.io.read_point_cloud(str(tmp_path / "f255.ply"))
    np.testing.assert_allclose(np.asarray(pcd.colors) * 255.0, cols255, atol=1e-6)


def test_glb_points_primitive_is_valid_gltf(tmp_path, cloud):
    """Guards the glTF fields trimesh does not check on load: the points are a POINTS primitive (mode 0), their
    POSITION accessor's min/max are the cloud's bounds (the spec requires them; viewers fit the camera with them),
    and COLOR_0 is normalised unsigned bytes."""
    pts, cols = cloud
    p = write_glb(tmp_path / "map.glb", pts, cols)
    tree = _glb_json(p)
    (mesh,) = [m for m in tree["meshes"] if m["name"] == "points"]
    (prim,) = mesh["primitives"]
    assert prim["mode"] == 0
    pos = tree["accessors"][prim["attributes"]["POSITION"]]
    col = tree["accessors"][prim["attributes"]["COLOR_0"]]
    assert pos["componentType"] == 5126 and pos["type"] == "VEC3" and pos["count"] == len(pts)
    np.testing.assert_allclose(pos["min"], pts.astype(np.float32).min(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(pos["max"], pts.astype(np.float32).max(axis=0), rtol=0, atol=1e-6)
    assert col["componentType"] == 5121 and col["type"] == "VEC4" and col["normalized"] is True


def test_camera_frustums_outline_the_image_of_a_tilted_camera_with_non_square_pixels(tmp_path):
    """Guards the frustum drawing against transposed rotations (hidden by level cameras), a lost half-pixel shift
    and a misplaced up marker: seen from its own camera (pitched, rolled, fx != fy, off-centre principal point) the
    wireframe's corners are the image's outer corners (-0.5 .. W - 0.5) at depth ``scale``, and the up triangle's
    tip is above the image (v < 0). With no image size given, the size comes from K's principal point (2c + 1)."""
    from scipy.spatial.transform import Rotation

    w, h, scale = 90, 50, 0.4
    K = np.array([[70.0, 0.0, 47.0], [0.0, 55.0, 22.0], [0.0, 0.0, 1.0]])
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_euler("xyz", [25.0, -40.0, 15.0], degrees=True).as_matrix()
    c2w[:3, 3] = [1.0, -2.0, 0.5]
    w2c = invert_pose(c2w)

    def pixels(world):
        cam = world @ w2c[:3, :3].T + w2c[:3, 3]
        cam = cam[cam[:, 2] > 1e-9]  # (not the camera centre)
        return np.c_[cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2], cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]], cam[:, 2]

    segs = ex.camera_wireframe_segments(c2w[None], K, (w, h), scale)[0]  # (10, 2, 3)
    corners = segs[:4, 1]
    uv, z = pixels(corners)
    np.testing.assert_allclose(z, scale, atol=1e-12)
    np.testing.assert_allclose(uv, [[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], atol=1e-9)
    np.testing.assert_allclose(segs[:4, 0], np.tile(c2w[:3, 3], (4, 1)), atol=1e-12)  # rays from the centre
    tip_uv, _ = pixels(segs[8:10, 1])  # the two triangle sides: tip -> right base, tip first in the second
    np.testing.assert_allclose(segs[8, 1], segs[9, 0], atol=1e-12)
    assert tip_uv[0, 1] < -0.5 and abs(tip_uv[0, 0] - (0.5 * w - 0.5)) < 1e-9

    # write_glb without image_size: the frustum spans the image K's principal point implies
    p = write_glb(tmp_path / "cam.glb", np.zeros((0, 3)), None, c2ws=c2w[None], K=K, frustum_scale=scale)
    (frustum,) = [g for name, g in trimesh.load(p).geometry.items() if "frustum" in name]
    uv, z = pixels(np.asarray(frustum.vertices))
    far = np.abs(z - scale) < 1e-6
    np.testing.assert_allclose(uv[far, 0].max(), 2 * K[0, 2] + 1 - 0.5, atol=1e-4)
    np.testing.assert_allclose(uv[far, 1].max(), 2 * K[1, 2] + 1 - 0.5, atol=1e-4)


def _frame_with(i: int, K: np.ndarray, depth: np.ndarray, c2w: np.ndarray, index: int | None = None) -> Frame:
    h, w = depth.shape
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 30 * i
    rgb[..., 1] = np.arange(w, dtype=np.uint8)[None] * 2
    return Frame(index=i if index is None else index, rgb=rgb, depth=depth.astype(np.float32), K=K, c2w=c2w)


def test_transforms_json_keeps_non_square_pixels_depth_millimetres_and_opens_again_as_written(tmp_path):
    """Guards the transforms.json fields a square-pixel, level, in-range test cannot tell apart: fl_x is K[0, 0] and
    fl_y K[1, 1]; depth is rounded (not truncated) to mm and depth beyond 65.535 m is no reading (0), not a
    clamped 65.535 m; a frame whose K differs (same size) carries its own intrinsics; frame_index is the frame's
    own index; "world_up" is "+y", so the folder opens again (replay) with the poses and K it was written from."""
    from scipy.spatial.transform import Rotation

    from worldmodel.recordings import open_sequence

    h, w = 30, 40
    K0 = np.array([[50.0, 0.0, 19.5], [0.0, 38.0, 14.5], [0.0, 0.0, 1.0]])
    K1 = np.array([[52.0, 0.0, 20.0], [0.0, 40.0, 15.0], [0.0, 0.0, 1.0]])
    depth = np.full((h, w), 1.2346, np.float32)  # 1234.6 mm: rounds to 1235, truncates to 1234
    depth[0, :5] = 70.0  # beyond a 16-bit PNG's millimetres
    depth[1, :5] = 0.0
    frames = []
    for i, (K, idx) in enumerate([(K0, 10), (K1, 12), (K0, 13)]):
        c2w = np.eye(4)
        c2w[:3, :3] = Rotation.from_euler("yxz", [20.0 * i - 15, 10.0 + 5 * i, 8.0], degrees=True).as_matrix()
        c2w[:3, 3] = [0.3 * i, 1.5, -0.2 * i]
        frames.append(_frame_with(i, K, depth, c2w, index=idx))
    out = tmp_path / "ns"
    meta = json.loads(write_transforms_json(out, frames).read_text())
    assert (meta["fl_x"], meta["fl_y"], meta["w"], meta["h"]) == (50.0, 38.0, w, h)
    assert meta["world_up"] == "+y"
    assert [e["frame_index"] for e in meta["frames"]] == [10, 12, 13]
    assert "fl_x" not in meta["frames"][0] and "fl_x" not in meta["frames"][2]
    e1 = meta["frames"][1]
    assert (e1["fl_x"], e1["fl_y"], e1["cx"], e1["cy"]) == (52.0, 40.0, 20.5, 15.5)
    mm = iio.imread(out / meta["frames"][0]["depth_file_path"])
    assert mm[5, 5] == 1235 and (mm[0, :5] == 0).all() and (mm[1, :5] == 0).all()

    seq = open_sequence(out)
    assert seq.world_up == "+y" and len(seq) == 3
    for f, g in zip(frames, seq):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        np.testing.assert_allclose(g.K, f.K, atol=1e-9)
        np.testing.assert_allclose(g.depth[5:, :], 1.235, atol=1e-6)


def test_mp4_frames_are_rgb_then_depth_coloured_over_the_robust_range(tmp_path):
    """Guards the MP4 layout and colour range: each video frame is the RGB on the left and the colourised depth on
    the right, in the frames' order, and the depth colours span the first frame's 2nd..98th percentile, so a few
    far outliers do not wash the rest of the depth into one colour."""
    h, w = 32, 48
    rng = np.random.default_rng(5)
    depth = np.tile(np.linspace(1.0, 3.0, w, dtype=np.float32)[None], (h, 1))
    depth.flat[rng.choice(h * w, h * w // 100, replace=False)] = 60.0  # 1 % far outliers
    K = intrinsics_from_fov(w, h, 60.0)
    frames = []
    for i, colour in enumerate([(230, 20, 20), (20, 230, 20), (20, 20, 230)]):
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = colour
        frames.append(Frame(index=i, rgb=rgb, depth=depth, K=K, c2w=np.eye(4)))
    p = write_mp4(tmp_path / "v.mp4", frames, fps=5)
    got = list(iio.imiter(p, plugin="pyav") if _has_pyav() else _ffmpeg_frames(p))
    assert len(got) == 3 and got[0].shape == (h, 2 * w, 3)
    for g, f in zip(got, frames):
        left = g[4:-4, 4:w - 4].reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(left, f.rgb[0, 0], atol=12)
    lo, hi = np.percentile(depth, [2.0, 98.0])
    robust = colorize_depth(depth, lo, hi).astype(np.float64)
    full = colorize_depth(depth, float(depth.min()), float(depth.max())).astype(np.float64)
    right = got[0][:, w:].astype(np.float64)
    assert np.abs(right - robust).mean() < 0.5 * np.abs(right - full).mean()


def test_tsdf_honours_the_weight_threshold_and_keeps_the_images_colours():
    """Guards the TSDF's parameters and colour scale: a surface seen by one frame is meshed at the default
    threshold (0.5) and dropped when tsdf_mesh is asked for a higher one; the mesh's vertex colours are the image's
    (uint8 RGB), not its colour divided by 255."""
    from recon.tsdf import TSDFFusion, tsdf_mesh

    f = wall_frame(0, eye=(0.0, 0.0, 0.0), target=(0.3, 0.2, WALL_Z))
    f = dataclasses.replace(f, rgb=np.full_like(f.rgb, (200, 120, 40)))
    once = tsdf_mesh([f], voxel_size=0.05, depth_max=10.0)
    assert len(once.faces) > 100
    assert len(tsdf_mesh([f], voxel_size=0.05, depth_max=10.0, weight_threshold=1.5).faces) == 0
    np.testing.assert_allclose(np.median(once.visual.vertex_colors[:, :3], axis=0), [200, 120, 40], atol=2)
    fusion = TSDFFusion(voxel_size=0.05, depth_max=10.0)
    fusion.integrate(f)
    assert len(fusion.mesh().faces) == len(once.faces)


def test_check_mp4_accepts_boxes_that_tile_the_file_and_refuses_a_cut_or_unindexed_one(tmp_path):
    """scenes.atomic.check_mp4 on hand-made box layouts (ground truth by construction): boxes that end exactly at
    the end of the file pass (32-bit sizes, a 64-bit size, a last box of size 0 = 'to the end'); a last box cut
    short, or a file without moov (the index ffmpeg writes last), is refused."""
    from scenes.atomic import WriteError, check_mp4

    def box(kind: bytes, payload: int, large: bool = False) -> bytes:
        if large:
            return (1).to_bytes(4, "big") + kind + (16 + payload).to_bytes(8, "big") + bytes(payload)
        return (8 + payload).to_bytes(4, "big") + kind + bytes(payload)

    good = {"plain": box(b"ftyp", 12) + box(b"mdat", 100) + box(b"moov", 40),
            "large": box(b"ftyp", 12) + box(b"mdat", 100, large=True) + box(b"moov", 40),
            "to_end": box(b"ftyp", 12) + box(b"moov", 40) + (0).to_bytes(4, "big") + b"mdat" + bytes(64)}
    bad = {"cut": (box(b"ftyp", 12) + box(b"mdat", 100) + box(b"moov", 40))[:-1],
           "no_moov": box(b"ftyp", 12) + box(b"mdat", 100) + box(b"free", 8)}
    for name, data in {**good, **bad}.items():
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(data)
        if name in good:
            check_mp4(path)
        else:
            with pytest.raises(WriteError, match="incomplete"):
                check_mp4(path)
