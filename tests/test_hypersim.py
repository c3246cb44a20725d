"""The Hypersim reader on synthetic scenes written as ml-hypersim lays them out, from the procedural walk's frames:
Euclidean distances (float16 HDF5, NaN where nothing was hit), OpenGL-like orientations and positions in asset
units in a z-up world, a tilt-shift camera from metadata_camera_parameters.csv."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from worldmodel.camera import pixel_rays_camera
from worldmodel.recordings import SequenceError, detect_format, open_sequence, up_rotation

h5py = pytest.importorskip("h5py")

MPAU = 0.0254  # metres per asset unit (inches, as many Hypersim scenes)
GL = np.diag([1.0, -1.0, -1.0])


def _rotation(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _h5(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=data)


def _m_cam_from_uv(K: np.ndarray, turn: np.ndarray, width: int, height: int) -> np.ndarray:
    """Hypersim's M_cam_from_uv of the pinhole (K, turned by ``turn`` from the stored camera): ray_gl = M (u, v, 1)."""
    uv_from_pixel = np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, -2.0 / height, 1.0 - 1.0 / height],
                              [0.0, 0.0, 1.0]])
    M = GL @ turn.T @ np.linalg.inv(K) @ np.linalg.inv(uv_from_pixel)
    return M / -M[2, 2]


def _write_parameters(path, scene: str, M: np.ndarray) -> None:
    names = [f"M_cam_from_uv_{i}{j}" for i in range(3) for j in range(3)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scene_name", "settings_output_img_height", "settings_output_img_width", *names])
        w.writerow(["ai_999_999", 768, 1024, *np.diag([0.577, 0.433, -1.0]).ravel()])
        w.writerow([scene, 768, 1024, *M.ravel()])


def write_hypersim(folder, frames, turn: np.ndarray, hdr_frames=(2,)) -> None:
    """Frames (our convention) as a Hypersim scene's cam_00: stored orientations turned by ``turn`` from the
    frames' pinhole cameras, positions / MPAU, distances along each pixel's ray, tonemap.jpg or HDR color.hdf5."""
    detail, images = folder / "_detail", folder / "images"
    (detail / "cam_00").mkdir(parents=True)
    (detail / "metadata_scene.csv").write_text("parameter_name,parameter_value\nmeters_per_asset_unit,%r\n" % MPAU)
    src = np.stack([up_rotation("+z").T @ f.c2w for f in frames])  # our +Y-up world -> Hypersim's z-up one
    _h5(detail / "cam_00" / "camera_keyframe_positions.hdf5", src[:, :3, 3] / MPAU)
    _h5(detail / "cam_00" / "camera_keyframe_orientations.hdf5", src[:, :3, :3] @ turn @ GL)
    for i, f in enumerate(frames):
        h, w = f.depth.shape
        distance = f.depth * np.linalg.norm(pixel_rays_camera(f.K, w, h), axis=2)
        distance[f.depth <= 0] = np.nan  # nothing hit (the walk's sky)
        _h5(images / "scene_cam_00_geometry_hdf5" / f"frame.{i:04d}.depth_meters.hdf5", distance.astype(np.float16))
        if i in hdr_frames:
            hdr = (f.rgb.astype(np.float32) / 255.0) ** 2.2 * 3.7
            _h5(images / "scene_cam_00_final_hdf5" / f"frame.{i:04d}.color.hdf5", hdr.astype(np.float16))
        else:
            (images / "scene_cam_00_final_preview").mkdir(parents=True, exist_ok=True)
            Image.fromarray(f.rgb).save(images / "scene_cam_00_final_preview" / f"frame.{i:04d}.tonemap.jpg",
                                        quality=95)


def _tonemapped(rgb_hdr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """scene_generate_images_tonemap.py's operator, written out here."""
    brightness = 0.3 * rgb_hdr[..., 0] + 0.59 * rgb_hdr[..., 1] + 0.11 * rgb_hdr[..., 2]
    scale = np.power(0.8, 2.2) / np.percentile(brightness[valid], 90)
    return (np.clip(np.power(np.maximum(scale * rgb_hdr, 0), 1 / 2.2), 0, 1) * 255).astype(np.uint8)


def test_a_hypersim_scene_reads_as_its_notebooks_cast_rays(walk_frames, tmp_path, capsys):
    """Distances become z-depth along each pixel's ray; OpenGL-like orientations and asset-unit positions become
    OpenCV c2w in metres, z-up -> +Y; a tilt-shift camera (M_cam_from_uv in metadata_camera_parameters.csv beside
    the scene) is the exact pinhole, turned; the HDR-only frame is tone-mapped as Hypersim does."""
    frames = walk_frames[:3]
    folder = tmp_path / "ai_001_001"
    turn = _rotation(0, 8.0) @ _rotation(1, -3.0)
    write_hypersim(folder, frames, turn)
    h, w = frames[0].depth.shape
    _write_parameters(tmp_path / "metadata_camera_parameters.csv", "ai_001_001",
                      _m_cam_from_uv(frames[0].K, turn, w, h))
    assert detect_format(folder) == "hypersim"
    seq = open_sequence(folder)
    assert len(seq) == 3 and seq.world_up == "+z" and list(seq.timestamps) == [0, 1, 2]
    assert any("tilt-shift: its pinhole camera is turned 8.5°" in n for n in seq.notes), seq.notes
    assert any("1 frames have no tonemap.jpg" in n for n in seq.notes), seq.notes
    for k, (f, g) in enumerate(zip(frames, seq)):
        np.testing.assert_allclose(g.K, f.K, atol=1e-6)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-6)
        assert g.depth.dtype == np.float32 and np.isfinite(g.depth).all()
        np.testing.assert_array_equal(g.depth > 0, f.depth > 0)  # NaN distance: depth 0 (invalid), not refused
        np.testing.assert_allclose(g.depth, f.depth, rtol=1e-3, atol=1e-6)  # (float16 files, as Hypersim's)
        if k == 2:
            hdr = ((f.rgb.astype(np.float32) / 255.0) ** 2.2 * 3.7).astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(g.rgb, _tonemapped(hdr, f.depth > 0))
        else:
            assert np.abs(g.rgb.astype(int) - f.rgb).mean() < 3  # (a JPG)

    from launch import main

    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "(hypersim, world up +z -> +Y)" in out and f"frames    3, {w}x{h}" in out, out


def test_hypersim_cameras_trajectories_and_malformed_scenes(walk_frames, tmp_path):
    """Without the csv: the standard 60° camera, said; several trajectories: cam_00, said, another by
    hypersim_camera; a camera no pinhole K holds, a missing metadata_scene.csv or depth file, and positions and
    orientations of different counts are one line each."""
    frames = walk_frames[:3]
    folder = tmp_path / "ai_002_003"
    write_hypersim(folder, frames, np.eye(3), hdr_frames=())
    h, w = frames[0].depth.shape
    seq = open_sequence(folder)
    assert any("no metadata_camera_parameters.csv" in n and "60° wide" in n for n in seq.notes), seq.notes
    f = w / 2 / np.tan(np.pi / 6)
    np.testing.assert_allclose(seq[0].K, [[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], atol=1e-9)

    (folder / "images" / "scene_cam_01_final_preview").mkdir()
    assert any("2 camera trajectories (cam_00, cam_01): cam_00 is read" in n for n in open_sequence(folder).notes)
    (folder / "worldstudio.json").write_text('{"hypersim_camera": 4}')
    with pytest.raises(SequenceError, match=r"hypersim_camera 4 has no images in this scene; choose one of cam_00, "
                                            r"cam_01"):
        open_sequence(folder)
    (folder / "worldstudio.json").unlink()

    # a strong vertical lens shift (as ai_026_006's): its principal point lies below the image
    shifted = np.array([[0.577, 0.0, 0.0], [0.0, 0.433, 0.35], [0.0, 0.39, -1.37]])
    _write_parameters(folder / "metadata_camera_parameters.csv", folder.name, shifted)
    with pytest.raises(SequenceError, match=r"ai_002_003's tilt-shift camera .* principal point at .* outside the "
                                            r"middle of its 160x120 images"):
        open_sequence(folder)
    skewed = np.array([[0.79, 0.0, 0.2], [0.0, 0.45, 0.1], [0.18, 0.3, -1.3]])
    _write_parameters(folder / "metadata_camera_parameters.csv", folder.name, skewed)
    with pytest.raises(SequenceError, match=r"skews its pixel axes by .* px, which a pinhole K cannot hold"):
        open_sequence(folder)
    (folder / "metadata_camera_parameters.csv").unlink()

    depth = folder / "images" / "scene_cam_00_geometry_hdf5" / "frame.0001.depth_meters.hdf5"
    depth.rename(depth.with_suffix(".bak"))
    with pytest.raises(SequenceError, match=r"frame.0001.depth_meters.hdf5 is missing \(frame 1's colour is there\)"):
        open_sequence(folder)
    depth.with_suffix(".bak").rename(depth)
    depth.write_bytes(b"not hdf5")
    with pytest.raises(SequenceError, match=r"cannot read .*frame.0001.depth_meters.hdf5: not a valid HDF5 file"):
        open_sequence(folder)[1]
    (folder / "_detail" / "metadata_scene.csv").unlink()
    with pytest.raises(SequenceError, match=r"metadata_scene.csv is missing; download the scene again \(it holds "
                                            r"meters_per_asset_unit\)"):
        open_sequence(folder)
    (folder / "_detail" / "metadata_scene.csv").write_text("parameter_name,parameter_value\nmeters_per_asset_unit,1\n")
    _h5(folder / "_detail" / "cam_00" / "camera_keyframe_orientations.hdf5", np.tile(GL, (2, 1, 1)))
    with pytest.raises(SequenceError, match=r"camera_keyframe_positions.hdf5 has 3 cameras but "
                                            r"camera_keyframe_orientations.hdf5 has 2; download the scene again"):
        open_sequence(folder)


def test_h5py_is_imported_only_when_a_hypersim_scene_is_opened():
    code = "import sys, worldmodel.recordings, worldmodel.replay, launch; assert 'h5py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
