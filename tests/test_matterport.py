"""The Matterport3D reader on synthetic houses written as the dataset lays them out, from the procedural walk's
frames: a conf with one intrinsics_matrix per camera block (rows counted from the image's bottom, as GAPS counts
them), OpenGL camera-to-world poses in a z-up world, 16-bit depth in 0.25 mm."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from worldmodel.camera import CV_GL_FLIP, pixels_to_camera, reproject_depth, unproject_depth
from worldmodel.recordings import SequenceError, detect_format, open_sequence, up_rotation
from worldmodel.recordings.matterport import matterport_K

W, H = 144, 96  # the walk's 160x120 frames cropped, each camera block at its own offset (its own cx, cy)
BLOCKS = [("9f2c", 0, (0, 0), [0, 1, 2]), ("9f2c", 1, (16, 24), [3, 4, 5]), ("1a07", 0, (8, 10), [6, 7])]


def _units(depth: np.ndarray) -> np.ndarray:
    """Metres -> Matterport's depth PNG units (0.25 mm), 0 where invalid or beyond 16-bit (16.38 m)."""
    units = np.where(depth > 0, np.rint(depth.astype(np.float64) * 4000.0), 0.0)
    units[units > 65535] = 0
    return units.astype(np.uint16)


def _landing_error(g, K: np.ndarray, f, offset) -> float:
    """Median distance (m) between the points frame ``g``'s depth unprojects to with ``K`` and those the walk's
    frame ``f`` sees at the same pixels (``offset``: where the crop starts in ``f``)."""
    points, idx = unproject_depth(g.depth, K, g.c2w)
    v, u = np.divmod(idx, g.depth.shape[1])
    seen = pixels_to_camera(u + offset[0], v + offset[1], g.depth[v, u].astype(np.float64), f.K)
    return float(np.median(np.linalg.norm(points - (seen @ f.c2w[:3, :3].T + f.c2w[:3, 3]), axis=1)))


def write_house(folder, frames, blocks=BLOCKS) -> list[np.ndarray]:
    """Frames (our convention) as a Matterport3D house: per block (pano, camera, crop offset, frame indices) an
    intrinsics_matrix with cy from the bottom, then one scan line per frame (its yaw: its place in the block), a
    row-major OpenGL c2w in the z-up world. Returns the cropped images' Ks in the conf's order."""
    for sub in ("undistorted_camera_parameters", "undistorted_color_images", "undistorted_depth_images"):
        (folder / sub).mkdir(parents=True)
    lines = ["dataset matterport", f"n_images {sum(len(b[3]) for b in blocks)}",
             "depth_directory undistorted_depth_images", "color_directory undistorted_color_images", ""]
    Ks = []
    for pano, cam, (dx, dy), indices in blocks:
        K = frames[0].K.copy()
        K[0, 2] -= dx
        K[1, 2] -= dy
        lines.append(f"intrinsics_matrix {K[0, 0]:.17g} 0 {K[0, 2]:.17g}  0 {K[1, 1]:.17g} {H - 1 - K[1, 2]:.17g}  "
                     "0 0 1")
        for yaw, i in enumerate(indices):
            f = frames[i]
            colour, depth = f"{pano}_i{cam}_{yaw}.jpg", f"{pano}_d{cam}_{yaw}.png"
            Image.fromarray(f.rgb[dy:dy + H, dx:dx + W]).save(folder / "undistorted_color_images" / colour, quality=95)
            Image.fromarray(_units(f.depth[dy:dy + H, dx:dx + W])).save(folder / "undistorted_depth_images" / depth)
            c2w = up_rotation("+z").T @ f.c2w @ CV_GL_FLIP  # our +Y-up world -> z-up; OpenCV -> OpenGL camera
            lines.append(f"scan {depth} {colour} " + " ".join(f"{v:.17g}" for v in c2w.ravel()))
            Ks.append(K)
        lines.append("")
    (folder / "undistorted_camera_parameters" / f"{folder.name}.conf").write_text("\n".join(lines))
    return Ks


def test_a_matterport_house_reads_as_gaps_reads_it(walk_frames, tmp_path, capsys):
    """Depth / 4000 in metres, OpenGL poses in the z-up world -> OpenCV c2w +Y-up, each camera block's K with its
    rows from the top, views in the conf's order (said); `info` reads it; a folder of houses names them."""
    from launch import main

    # a conf's cy for the house of niessner/Matterport issue #66 and Matterport's own (top-left) intrinsics file of
    # that camera, "1280 1024 1076.45 1077.19 631.116 513.798 ...": one is the other, rows counted from the bottom
    conf = np.array([[1076.45, 0, 631.116], [0, 1077.19, 509.202], [0, 0, 1]])
    np.testing.assert_allclose(matterport_K(conf, 1024), [[1076.45, 0, 631.116], [0, 1077.19, 513.798], [0, 0, 1]])

    frames = walk_frames[:8]
    house = tmp_path / "scans" / "17DRP5sb8fy"
    Ks = write_house(house, frames)
    assert detect_format(house) == "matterport"
    seq = open_sequence(house)
    assert len(seq) == 8 and seq.world_up == "+z" and list(seq.timestamps) == list(range(8))
    assert any("8 views in 17DRP5sb8fy.conf's order (panorama by panorama, camera 0-2, yaw 0-5): not a walk in time"
               in n for n in seq.notes), seq.notes
    assert [p.name for p in seq.rgb_files][5:] == ["9f2c_i1_2.jpg", "1a07_i0_0.jpg", "1a07_i0_1.jpg"]  # (not sorted)
    order = [i for b in BLOCKS for i in b[3]]
    for k, g in enumerate(seq):
        f, (dx, dy) = frames[order[k]], next(b[2] for b in BLOCKS if order[k] in b[3])
        np.testing.assert_allclose(g.K, Ks[k], atol=1e-9)
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        assert g.depth.dtype == np.float32 and g.depth.shape == (H, W)
        expected = _units(f.depth[dy:dy + H, dx:dx + W]).astype(np.float32) / np.float32(4000)
        np.testing.assert_allclose(g.depth, expected, atol=1e-6)
        assert np.abs(g.rgb.astype(float) - f.rgb[dy:dy + H, dx:dx + W]).mean() < 4  # (JPEG)
    a, b = seq[2], seq[3]  # camera blocks 0 and 1: the depth moved by the poses lands on the surface seen there
    moved = reproject_depth(a.depth, a.K, a.c2w, b.depth, b.K, b.c2w, max_depth=16.0, relative=True)
    assert np.median(moved) < 0.01
    unflipped = b.K.copy()
    unflipped[1, 2] = H - 1 - unflipped[1, 2]  # the conf's cy taken as counted from the top: 24 rows off
    assert _landing_error(b, unflipped, frames[3], (16, 24)) > 0.3 > 1e-3 > _landing_error(b, b.K, frames[3], (16, 24))

    assert main(["info", str(house)]) == 0
    out = capsys.readouterr().out
    assert "(matterport, world up +z -> +Y)" in out and f"frames    8, {W}x{H}" in out, out

    with pytest.raises(SequenceError, match=r"scans holds a sequence in 17DRP5sb8fy; pass that"):
        detect_format(house.parent)
    write_house(tmp_path / "scans" / "2azQ1b91cZZ", frames, BLOCKS[:1])
    with pytest.raises(SequenceError, match=r"scans holds 2 sequences \(17DRP5sb8fy, 2azQ1b91cZZ\); pass one"):
        open_sequence(house.parent)


def test_matterport_zip_layouts_and_malformed_confs(walk_frames, tmp_path):
    """The download's zips extracted in the house folder itself (<house>/<house>/...) are read, said; one not
    extracted, a missing conf or image, a scan line of the wrong length or before any intrinsics_matrix, intrinsics
    never given and a NaN pose are one line each, saying what to do."""
    frames = walk_frames[:8]
    outer = tmp_path / "v1" / "scans" / "Vvot9Ly1tCj"
    write_house(outer / "Vvot9Ly1tCj", frames)
    (outer / "undistorted_color_images.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    assert detect_format(outer) == "matterport"
    seq = open_sequence(outer)
    assert len(seq) == 8 and "the zips are extracted into Vvot9Ly1tCj/Vvot9Ly1tCj/: read from there" in seq.notes

    packed = tmp_path / "packed" / "Vvot9Ly1tCj"
    packed.mkdir(parents=True)
    (packed / "undistorted_camera_parameters.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(SequenceError, match=r"undistorted_camera_parameters.zip is not extracted; unzip it .* in "
                                            r".*packed \(their entries are Vvot9Ly1tCj/undistorted_camera_param"):
        open_sequence(packed)

    house = tmp_path / "house"
    write_house(house, frames)
    conf = house / "undistorted_camera_parameters" / "house.conf"
    lines = conf.read_text().splitlines()
    first_k, first_scan = lines.index(next(s for s in lines if s.startswith("intrinsics"))), 6
    nan_pose = lines[first_scan].split()
    nan_pose[5] = "nan"
    for damage, says in [
        (lines[:first_scan] + [lines[first_scan].rsplit(" ", 1)[0]] + lines[first_scan + 1:],
         r"house.conf:7: a scan line is 'scan <depth>.png <colour>.jpg' and 16 numbers \(a row-major "
         r"camera-to-world\), got 17 fields after scan; download undistorted_camera_parameters.zip again"),
        (lines[:first_k] + lines[first_k + 1:first_scan + 3] + [lines[first_k]] + lines[first_scan + 3:],
         r"house.conf:6: a scan line before any intrinsics_matrix \(each camera's intrinsics come before its scans\)"),
        ([s for s in lines if not s.startswith("intrinsics")], r"house.conf:6: a scan line before any intrinsics"),
        (lines[:first_scan] + [" ".join(nan_pose)] + lines[first_scan + 1:],
         r"house.conf:7: the pose is not a finite 4x4 matrix; download undistorted_camera_parameters.zip again"),
        (lines[:first_k] + [lines[first_k].rsplit(" ", 1)[0]] + lines[first_k + 1:],
         r"house.conf:6: intrinsics_matrix needs 9 numbers 'fx 0 cx 0 fy cy 0 0 1', got 8"),
        ([s for s in lines if not s.startswith("scan")], r"house.conf holds no scan lines"),
    ]:
        conf.write_text("\n".join(damage) + "\n")
        with pytest.raises(SequenceError, match=says) as e:
            open_sequence(house)
        assert "\n" not in str(e.value)
    conf.write_text("\n".join(lines[:first_scan + 2]) + "\n")  # a conf cut short: n_images says more
    seq = open_sequence(house)
    assert len(seq) == 2 and "house.conf says n_images 8 but holds 2 scan lines: those are played" in seq.notes
    conf.write_text("\n".join(lines) + "\n")
    missing = (house / "undistorted_depth_images" / "9f2c_d1_1.png").read_bytes()
    (house / "undistorted_depth_images" / "9f2c_d1_1.png").unlink()
    with pytest.raises(SequenceError, match=r"undistorted_depth_images/9f2c_d1_1.png is missing \(house.conf line 13 "
                                            r"names it\); extract undistorted_depth_images.zip in .* \(it unpacks into "
                                            r"house/undistorted_depth_images/\)"):
        open_sequence(house)
    # the depth zip unpacked in the house folder, as the line above warns against: its views are found there too
    (house / "undistorted_depth_images").rename(house / "depth_moved")
    (house / "house").mkdir()
    (house / "depth_moved").rename(house / "house" / "undistorted_depth_images")
    (house / "house" / "undistorted_depth_images" / "9f2c_d1_1.png").write_bytes(missing)
    assert len(open_sequence(house)) == 8
    (house / "house" / "undistorted_depth_images").rename(house / "undistorted_depth_images")
    conf.unlink()
    with pytest.raises(SequenceError, match=r"undistorted_camera_parameters holds no .conf file; extract "
                                            r"undistorted_camera_parameters.zip again"):
        open_sequence(house)
