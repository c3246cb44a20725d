"""Room scanners and reconstruction tools: 7-Scenes / 3DMatch / 12-Scenes (BundleFusion), ScanNet's SensReader
export, Replica as NICE-SLAM ships it, Open3D's reconstruction system / Redwood, Neural RGB-D's scenes and the generic
layout.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldmodel.camera import flip_cv_gl
from worldmodel.recordings.base import (CONFIG_FILE, SequenceError, _IMAGE_EXT, _ImageSequence, _K_from_config,
                                        _K_from_config_or_file, _check_K, _check_pose, _depth_files_by_stem,
                                        _depth_scale, _drop_lost_poses, _image_array, _images_in, _last_number,
                                        _natural_key, _numbers, _one_pose_per_frame, _read_intrinsics, _read_rgb,
                                        _up_from_cameras, _visible, config_folder, read_poses_file, up_rotation)
from worldmodel.recordings.tum import TUM_K


SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])  # when no intrinsics file


def _seven_scenes_frames(folder: Path) -> list[Path]:
    return sorted((p for ext in _IMAGE_EXT for p in folder.glob(f"frame-*.color{ext}")), key=_natural_key)


def _is_bundlefusion_info(path: Path) -> bool:
    """``path`` is BundleFusion's info.txt (another info.txt, a download's notes, is not read)."""
    try:
        return path.is_file() and "m_calibrationDepthIntrinsic" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _read_bundlefusion_info(path: Path) -> tuple[np.ndarray, float, tuple[int, int], tuple[int, int]]:
    """BundleFusion's ``info.txt`` (12-Scenes, ScanNet's .sens exports: ``m_key = values`` lines) -> (the depth
    camera's K, metres per depth unit (1 / m_depthShift), colour (W, H), depth (W, H))."""
    info = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            info[key.strip()] = value.split()
    try:
        K4 = np.asarray(info["m_calibrationDepthIntrinsic"], np.float64).reshape(4, 4)
        shift = float(info.get("m_depthShift", ["1000"])[0])
        colour = (int(info["m_colorWidth"][0]), int(info["m_colorHeight"][0]))
        depth = (int(info["m_depthWidth"][0]), int(info["m_depthHeight"][0]))
    except (KeyError, ValueError, IndexError):
        raise SequenceError(f"{path}: expected BundleFusion's m_calibrationDepthIntrinsic (16 numbers), "
                            "m_depthShift and m_colorWidth/Height, m_depthWidth/Height lines") from None
    if not (np.isfinite(shift) and shift > 0):
        raise SequenceError(f"{path}: m_depthShift must be a positive number of depth units per metre")
    return _check_K(K4[:3, :3], path), 1.0 / shift, colour, depth


def _read_pose_file(path: Path) -> np.ndarray:
    """(4, 4) c2w from a file of one pose (:func:`read_poses_file`: a 4x4 in four lines, 16 or 12 numbers); all-NaN
    when it holds inf/NaN (tracking lost: the caller skips the frame)."""
    poses = read_poses_file(path, lost_tracking=True)
    if len(poses) != 1:
        raise SequenceError(f"{path}: expected one camera-to-world matrix, got {len(poses)}; write one pose per file")
    return poses[0]


def _open_7scenes(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    colors = _seven_scenes_frames(folder)
    if not colors:
        raise SequenceError(f"{folder} holds no frame-000000.color.png (or .jpg); pass a 7-Scenes sequence folder")
    notes = []
    K = _K_from_config(cfg, folder)
    if K is None:
        for cand in (folder / "camera-intrinsics.txt", folder.parent / "camera-intrinsics.txt"):
            if cand.is_file():
                K = _read_intrinsics(cand)
                break
    colour_to_depth_size, depth_scale = False, 0.001
    info = next((p for p in (folder / "info.txt", folder.parent / "info.txt") if _is_bundlefusion_info(p)), None)
    if K is None and info is not None:  # 12-Scenes / BundleFusion: the depth camera's K, colour resized to it
        K, depth_scale, colour_size, depth_size = _read_bundlefusion_info(info)
        colour_to_depth_size = colour_size != depth_size
        if colour_to_depth_size:
            notes.append(f"colour {colour_size[0]}x{colour_size[1]} is resized to the depth's "
                         f"{depth_size[0]}x{depth_size[1]} (the depth camera's intrinsics from {info.name})")
    default_K_for = None
    if K is None:
        K, default_K_for = SEVEN_SCENES_K.copy(), (640, 480)
        notes.append("no camera-intrinsics.txt: using 7-Scenes' documented fx=fy=585, cx=320, cy=240 (its depth "
                     "camera's; its README says colour and depth are not registered, so colour sits a few pixels "
                     "off the depth)")
    depth_files, pose_files = [], []
    for c in colors:
        stem = c.name[: c.name.index(".color")]
        d, p = c.with_name(stem + ".depth.png"), c.with_name(stem + ".pose.txt")
        for f in (d, p):
            if not f.is_file():
                raise SequenceError(f"{f} is missing (its colour image {c.name} exists); copy it again or "
                                    f"delete {c.name}")
        depth_files.append(d)
        pose_files.append(p)
    poses, (colors, depth_files), _ = _drop_lost_poses(np.stack([_read_pose_file(p) for p in pose_files]),
                                                       [colors, depth_files], folder, notes)
    return _ImageSequence(
        path=folder, format="7scenes", c2ws=up_rotation(up) @ poses,
        timestamps=np.array([_last_number(c.name) or i for i, c in enumerate(colors)], dtype=np.float64),
        world_up=up, notes=notes, rgb_files=colors, depth_files=depth_files, Ks=K, default_K_for=default_K_for,
        depth_scale=_depth_scale(cfg, folder, depth_scale), depth_invalid=65535,
        colour_to_depth_size=colour_to_depth_size, resize_said=colour_to_depth_size)


def _open_generic(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    rgb_files = _images_in(folder, "rgb", "a generic folder needs rgb/, depth/, poses.txt and intrinsics")
    if not (folder / "poses.txt").is_file():
        raise SequenceError(f"{folder} holds rgb/ and depth/ but no poses.txt, and no other layout this tool reads; "
                            "for a generic folder write poses.txt (one camera-to-world pose per image) and "
                            "intrinsics.txt beside them")
    depth_files = _depth_files_by_stem(rgb_files, folder / "depth", folder)
    notes: list[str] = []
    poses, (rgb_files, depth_files), kept = _one_pose_per_frame(folder / "poses.txt", [rgb_files, depth_files],
                                                                "rgb/", notes)
    camera = str(cfg.get("camera", "opencv")).lower()
    if camera not in ("opencv", "opengl"):
        raise SequenceError(f"{folder / CONFIG_FILE}: camera must be 'opencv' or 'opengl', got {camera!r}")
    if camera == "opengl":
        poses = flip_cv_gl(poses)  # OpenGL -> OpenCV
    K = _K_from_config_or_file(cfg, folder, folder / "intrinsics.txt",
                               f"write 'fx fy cx cy' (or a 3x3 matrix) there, or put fx/fy/cx/cy in {CONFIG_FILE}")
    A = up_rotation(up)
    return _ImageSequence(
        path=folder, format="generic", c2ws=A @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        options={"camera": camera})


OPEN3D_COLOUR_DIRS = ("image", "rgb", "color")  # the first that exists, as Open3D's reconstruction system looks


def _open3d_trajectory(folder: Path) -> Path | None:
    """The camera trajectory of an Open3D / Redwood folder: ``trajectory.log`` (Open3D's sample data) or
    ``scene/trajectory.log`` (the reconstruction system's output), else the one ``*.log``, else the one
    ``*-traj.txt`` (Redwood's indoor scenes)."""
    for name in ("trajectory.log", "scene/trajectory.log"):  # (the reconstruction system writes the latter)
        if (folder / name).is_file():
            return folder / name
    for pattern in ("*.log", "*-traj.txt"):
        found = [p for p in _visible(folder.glob(pattern)) if p.is_file() and _starts_like_a_log_trajectory(p)]
        if len(found) == 1:
            return found[0]
    return None


def _starts_like_a_log_trajectory(path: Path) -> bool:
    """The file's first line is three whole numbers (a program's log file is not a trajectory)."""
    try:
        with path.open("rb") as f:
            first = f.read(200).split(b"\n", 1)[0].split()
        return len(first) == 3 and all(v.isdigit() for v in first)
    except OSError:
        return False


def read_log_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Redwood's / Open3D's ``.log`` trajectory: per camera a line of three integers (the third is its depth
    image's number, from 1) and four lines of a row-major c2w 4x4 (Open3D's reader keeps its inverse as the
    extrinsic) -> (c2ws (N, 4, 4) float64, frame numbers (N,) int)."""
    rows = _numbers(path)
    if not rows or len(rows) % 5:
        raise SequenceError(f"{path}: expected blocks of 5 lines (three numbers, then a 4x4 camera-to-world matrix "
                            f"in four lines), got {len(rows)} lines; pass an Open3D / Redwood .log trajectory")
    c2ws, numbers = [], []
    for k in range(0, len(rows), 5):
        (n, head), matrix = rows[k], rows[k + 1:k + 5]
        if len(head) != 3 or any(len(r) != 4 for _, r in matrix) or not float(head[2]).is_integer():
            raise SequenceError(f"{path}:{n}: expected three whole numbers then four lines of 4 numbers (a 4x4 "
                                "camera-to-world matrix); pass an Open3D / Redwood .log trajectory")
        c2ws.append(_check_pose(np.asarray([r for _, r in matrix], dtype=np.float64), f"{path}:{n + 1}"))
        numbers.append(int(head[2]))
    return np.stack(c2ws), np.asarray(numbers)


def _open3d_intrinsics(folder: Path, cfg: dict) -> tuple[np.ndarray | None, str | None]:
    """(K, note): worldstudio.json's, else an Open3D ``PinholeCameraIntrinsic`` JSON (``camera_intrinsic.json``, or
    the one ``*.json`` holding ``intrinsic_matrix``: 9 numbers, column-major), else None with a note that the
    PrimeSense camera (Open3D's default) is assumed."""
    K = _K_from_config(cfg, folder)
    if K is not None:
        return K, None
    cameras = {}  # file -> its JSON, for the files that hold an Open3D camera
    named = folder / "camera_intrinsic.json"
    for path in [named] if named.is_file() else sorted(p for p in _visible(folder.glob("*.json"))
                                                         if p.name not in (CONFIG_FILE, "transforms.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeError, json.JSONDecodeError) as e:
            if path != named:
                continue  # another tool's file, not a camera
            raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); fix or delete it") from None
        if isinstance(meta, dict) and "intrinsic_matrix" in meta:
            cameras[path] = meta
    if len(cameras) > 1:
        raise SequenceError(f"{folder} holds {len(cameras)} camera JSONs ({', '.join(p.name for p in cameras)}); "
                            "name the one of these images camera_intrinsic.json")
    for path, meta in cameras.items():
        try:
            K = np.asarray(meta["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # stored column-major
        except (TypeError, ValueError):
            raise SequenceError(f"{path}: intrinsic_matrix must be 9 numbers (column-major, as Open3D writes "
                                "it)") from None
        return _check_K(K, path), None
    return None, ("no camera_intrinsic.json: using Open3D's default camera (PrimeSense: fx=fy=525, cx=319.5, "
                  f"cy=239.5); write one with open3d.io.write_pinhole_camera_intrinsic or put K in {CONFIG_FILE}")


def _open_open3d(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Open3D's reconstruction-system and Redwood layout: ``image/`` (or ``rgb/``, ``color/``) and ``depth/``
    (16-bit mm) paired in file-name order, a ``.log`` trajectory (:func:`read_log_trajectory`; one camera per
    image in order, or fewer, each placed by its frame number) and the camera's intrinsic JSON."""
    colour_dir = next((d for d in OPEN3D_COLOUR_DIRS if (folder / d).is_dir()), None)
    trajectory = _open3d_trajectory(folder)
    if colour_dir is None or trajectory is None:
        raise SequenceError(f"{folder}: an Open3D folder needs image/ (or rgb/, color/), depth/ and a trajectory.log")
    rgb_files = _images_in(folder, colour_dir, "an Open3D folder needs image/ (or color/), depth/ and a .log")
    depth_files = _images_in(folder, "depth", "an Open3D folder needs its depth images in depth/")
    if len(depth_files) != len(rgb_files):
        raise SequenceError(f"{folder}: {colour_dir}/ has {len(rgb_files)} images but depth/ has {len(depth_files)};"
                            " Open3D pairs them in file-name order, so each needs one of the other")
    poses, numbers = read_log_trajectory(trajectory)
    if len(poses) == len(rgb_files):
        kept = np.arange(len(poses))
    elif len(poses) < len(rgb_files) and numbers.min() >= 1 and numbers.max() <= len(rgb_files) \
            and len(set(numbers.tolist())) == len(numbers):
        kept = numbers - 1  # a trajectory of some frames: each names its depth image (from 1)
    else:
        raise SequenceError(f"{trajectory} has {len(poses)} cameras for {len(rgb_files)} images, and its frame "
                            "numbers do not pick images; write one camera per image, in file-name order")
    notes = [] if len(kept) == len(rgb_files) else [
        f"{len(rgb_files) - len(kept)} images have no camera in {trajectory.name} (skipped)"]
    order = np.argsort(kept, kind="stable")
    poses, kept = poses[order], kept[order]
    K, k_note = _open3d_intrinsics(folder, cfg)
    notes += [k_note] if k_note else []
    if up == "auto":
        up = _up_from_cameras(poses, notes)
    return _ImageSequence(
        path=folder, format="open3d", c2ws=up_rotation(up) @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=[rgb_files[i] for i in kept], depth_files=[depth_files[i] for i in kept],
        Ks=TUM_K.copy() if K is None else K, default_K_for=(640, 480) if K is None else None,
        depth_scale=_depth_scale(cfg, folder, 0.001))


def _open_scannet(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """ScanNet's ``.sens`` file (:func:`_open_sens`), or its SensReader export: ``color/N.jpg``, ``depth/N.png``
    (mm), ``pose/N.txt`` (c2w; -inf where tracking was lost), ``intrinsic/intrinsic_depth.txt`` (here or in the
    parent folder; scannet_frames_25k: ``intrinsics_depth.txt`` here). The colour camera (1296x968) is resized to
    the depth's (640x480) and the depth camera's K is used (the colour camera's, resized with it, when only that is
    given)."""
    if folder.is_file():
        return _open_sens(folder, cfg, up)
    rgb_files = _images_in(folder, "color", "a ScanNet export needs color/, depth/, pose/ and intrinsic/")
    depth_files = _depth_files_by_stem(rgb_files, folder / "depth", folder)
    pose_files = [folder / "pose" / f"{p.stem}.txt" for p in rgb_files]
    for p, c in zip(pose_files, rgb_files):
        if not p.is_file():
            raise SequenceError(f"{p} is missing (its colour image {c.name} exists); copy it again or delete "
                                f"{c.name}")
    notes: list[str] = []
    poses, (rgb_files, depth_files), kept = _drop_lost_poses(
        np.stack([_read_pose_file(p) for p in pose_files]), [rgb_files, depth_files], folder / "pose", notes)
    K, colour_K = _K_from_config(cfg, folder), True
    if K is None:  # SensReader's intrinsic/ (here or beside), or scannet_frames_25k's intrinsics_*.txt at the root
        candidates = [(f, cam == "color") for cam in ("depth", "color") for f in (
            folder / "intrinsic" / f"intrinsic_{cam}.txt", folder.parent / "intrinsic" / f"intrinsic_{cam}.txt",
            folder / f"intrinsics_{cam}.txt")]
        found = next(((f, of_colour) for f, of_colour in candidates if f.is_file()), None)
        if found is not None:
            K, colour_K = _read_intrinsics(found[0]), found[1]
    if K is None:
        raise SequenceError(f"{folder / 'intrinsic' / 'intrinsic_depth.txt'} is missing; export the intrinsics "
                            f"with ScanNet's reader (--export_intrinsics), or put \"K\" in {folder / CONFIG_FILE}")
    return _ImageSequence(
        path=folder, format="scannet", c2ws=up_rotation(up) @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=colour_K)


SENS_VERSION = 4  # ScanNet's SensorData.py reads only this version


@dataclass(eq=False)
class _SensSequence(_ImageSequence):
    """The frames of ScanNet's ``.sens`` file, each read from its place in the file when asked for."""

    PER_FRAME = _ImageSequence.PER_FRAME + ("offsets",)
    offsets: list[tuple[int, int, int, int]] = field(default_factory=list)  # colour at, its bytes, depth at, bytes
    colour_codec: int = 2  # 0 raw RGB, 1 PNG, 2 JPEG
    depth_codec: int = 1  # 0 raw uint16, 1 zlib uint16
    colour_shape: tuple[int, int] = (0, 0)  # (H, W)
    depth_shape: tuple[int, int] = (0, 0)
    _file: "io.BufferedReader | None" = field(default=None, repr=False)

    def files(self, i: int) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _bytes(self, at: int, size: int, what: Path) -> bytes:
        if self._file is None:
            self._file = open(self.path, "rb")
        self._file.seek(at)
        data = self._file.read(size)
        if len(data) != size:
            raise SequenceError(f"{self.path} ends inside {what.name}; the file is cut short: download it again")
        return data

    def _colour(self, i: int) -> np.ndarray:
        data = self._bytes(*self.offsets[i][:2], self.rgb_files[i])
        if self.colour_codec != 0:
            try:
                return _read_rgb(self.rgb_files[i], data)
            except SequenceError:
                raise SequenceError(f"{self.path}: the colour image of its frame {int(self.timestamps[i])} is not a "
                                    "valid image; download the file again, or play from another frame") from None
        h, w = self.colour_shape
        if len(data) != h * w * 3:
            raise SequenceError(f"{self.rgb_files[i]} holds {len(data)} bytes, not {w}x{h} RGB; download it again")
        return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()

    def _depth(self, i: int) -> np.ndarray:
        data = self._bytes(*self.offsets[i][2:], self.depth_files[i])
        if self.depth_codec == 1:
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise SequenceError(f"{self.path}: the depth of its frame {int(self.timestamps[i])} is not zlib data "
                                    f"({e}); download the file again") from None
        h, w = self.depth_shape
        if len(data) != h * w * 2:
            raise SequenceError(f"{self.path}: the depth of its frame {int(self.timestamps[i])} holds {len(data)} "
                                f"bytes, not {w}x{h} 16-bit depth; download the file again")
        return np.frombuffer(data, "<u2").reshape(h, w).astype(np.float32) * np.float32(self.depth_scale)


def _open_sens(path: Path, cfg: dict, up: str) -> _SensSequence:
    """ScanNet's own ``.sens`` file, as its SensorData.py reads it (little-endian): a header (version 4, sensor
    name, colour and depth intrinsics and extrinsics as 4x4 float32, codecs, sizes, depth shift, frame count),
    then per frame a camera-to-world 4x4 float32 (-inf where tracking was lost), two timestamps, the colour
    (JPEG) and depth (zlib uint16) byte counts and bytes. The colour is resized to the depth camera's size and
    the depth camera's K used, as for the SensReader export; world z-up."""
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            def take(n: int) -> bytes:
                data = f.read(n)
                if len(data) < n:
                    raise SequenceError(f"{path} ends inside its header; download the file again")
                return data

            version, name_len = struct.unpack("<IQ", take(12))
            if version != SENS_VERSION:
                raise SequenceError(f"{path} is not a ScanNet .sens file of version {SENS_VERSION} (version "
                                    f"{version}); export it with ScanNet's SensReader instead")
            if name_len > 1024:
                raise SequenceError(f"{path}: its header names a sensor of {name_len} bytes, which no .sens file "
                                    "does; download the file again")
            take(name_len)
            matrices = np.frombuffer(take(4 * 64), "<f4").reshape(4, 4, 4).astype(np.float64)
            colour_codec, depth_codec, cw, ch, dw, dh, shift, frames = struct.unpack("<iiIIIIfQ", take(36))
            if colour_codec not in (0, 1, 2) or depth_codec not in (0, 1):
                raise SequenceError(f"{path}: colour codec {colour_codec} / depth codec {depth_codec} are not read "
                                    "(JPEG, PNG or raw colour; zlib or raw depth); export it with ScanNet's SensReader")
            if not (0 < shift and 0 < cw * ch and 0 < dw * dh and frames < 10 ** 7):
                raise SequenceError(f"{path}: header sizes {cw}x{ch} / {dw}x{dh}, depth shift {shift} or {frames} "
                                    "frames are not a recording's; download the file again")
            c2ws, offsets = np.zeros((frames, 4, 4)), []
            at = f.tell()
            for k in range(frames):
                f.seek(at)
                head = f.read(96)
                if len(head) < 96:
                    raise SequenceError(f"{path} ends at frame {k} of the {frames} its header counts; the file is cut "
                                        "short: download it again")
                c2ws[k] = np.frombuffer(head[:64], "<f4").reshape(4, 4)
                colour_bytes, depth_bytes = struct.unpack("<QQ", head[80:96])
                offsets.append((at + 96, colour_bytes, at + 96 + colour_bytes, depth_bytes))
                at += 96 + colour_bytes + depth_bytes
                if at > size:
                    raise SequenceError(f"{path} ends inside frame {k} of the {frames} its header counts; the file "
                                        "is cut short: download it again")
    except OSError as e:
        raise SequenceError(f"cannot read {path}: {e.strerror or e}") from None
    if not frames:
        raise SequenceError(f"{path} holds no frames; download the file again")
    colour_ext = {0: "rgb", 1: "png", 2: "jpg"}[colour_codec]
    rgb_files = [path / f"frame-{k:06d}.color.{colour_ext}" for k in range(frames)]  # (named for messages)
    depth_files = [path / f"frame-{k:06d}.depth" for k in range(frames)]
    notes: list[str] = []
    c2ws[~np.isfinite(c2ws).all(axis=(1, 2))] = np.nan
    for k in np.flatnonzero(np.isfinite(c2ws).all(axis=(1, 2))):
        try:
            _check_pose(c2ws[k], f"{path}: frame {k}")
        except SequenceError:
            raise SequenceError(f"{path}: frame {k}'s pose is not a rigid camera-to-world matrix; download the file "
                                "again") from None
    poses, (rgb_files, depth_files), kept = _drop_lost_poses(c2ws, [rgb_files, depth_files], path, notes)
    K = _K_from_config(cfg, config_folder(path))
    if K is None:
        K = _check_K(matrices[2, :3, :3].copy(), f"{path}: depth intrinsics")
    return _SensSequence(
        path=path, format="scannet", c2ws=up_rotation(up) @ poses, timestamps=kept.astype(np.float64), world_up=up,
        notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, config_folder(path), 1.0 / shift), colour_to_depth_size=True, colour_K=False,
        offsets=[offsets[k] for k in kept], colour_codec=colour_codec, depth_codec=depth_codec, colour_shape=(ch, cw),
        depth_shape=(dh, dw))


REPLICA_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}


def _replica_frames(folder: Path) -> list[Path]:
    results = folder / "results"
    return sorted(_visible(p for ext in _IMAGE_EXT for p in results.glob(f"frame*{ext}")), key=_natural_key) \
        if results.is_dir() else []


REPLICA_HABITAT_POSES = "traj_w_c.txt"  # Semantic-NeRF's and vMAP's renders of Replica


def _open_replica(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Replica as NICE-SLAM and SplaTAM ship it: ``results/frame000000.jpg``, ``results/depth000000.png``
    (metres = value / 6553.5), ``traj.txt`` (one row-major OpenCV c2w 4x4 per line, frame i on line i) and
    ``cam_params.json`` here or in the parent folder (``{"camera": {"w", "h", "fx", "fy", "cx", "cy",
    "scale"}}``; without it Replica's 600, 600, 599.5, 339.5 at 1200x680, said). The world is z-up.
    Semantic-NeRF's and vMAP's renders (``traj_w_c.txt``): :func:`_open_replica_habitat`."""
    if (folder / REPLICA_HABITAT_POSES).is_file():
        return _open_replica_habitat(folder, cfg, up)
    rgb_files = _replica_frames(folder)
    depth_files = []
    for c in rgb_files:
        d = c.with_name(f"depth{c.stem[len('frame'):]}.png")
        if not d.is_file():
            raise SequenceError(f"{d} is missing (its colour image {c.name} exists); copy it again or delete {c.name}")
        depth_files.append(d)
    notes: list[str] = []
    poses, (rgb_files, depth_files), kept = _one_pose_per_frame(folder / "traj.txt", [rgb_files, depth_files],
                                                                "results/", notes)
    params = next((d / "cam_params.json" for d in (folder, folder.parent) if (d / "cam_params.json").is_file()), None)
    camera, default_K_for = dict(REPLICA_CAMERA), None
    if params is not None:
        try:
            given = json.loads(params.read_text(encoding="utf-8-sig"))["camera"]
            camera.update({k: float(given[k]) for k in ("fx", "fy", "cx", "cy")})
            camera["scale"] = float(given.get("scale", REPLICA_CAMERA["scale"]))
        except (OSError, UnicodeError, ValueError, KeyError, TypeError) as e:
            raise SequenceError(f"{params}: expected {{\"camera\": {{\"fx\", \"fy\", \"cx\", \"cy\", \"scale\"}}}} "
                                f"({type(e).__name__}: {str(e)[:60]}); fix or delete it") from None
        if not (np.isfinite(camera["scale"]) and camera["scale"] > 0):
            raise SequenceError(f"{params}: scale must be a positive number of depth units per metre")
    elif _K_from_config(cfg, folder) is None:
        default_K_for = (REPLICA_CAMERA["w"], REPLICA_CAMERA["h"])
        notes.append("no cam_params.json: using Replica's fx=fy=600, cx=599.5, cy=339.5 (1200x680)")
    K = _K_from_config(cfg, folder)
    if K is None:
        K = np.array([[camera["fx"], 0.0, camera["cx"]], [0.0, camera["fy"], camera["cy"]], [0.0, 0.0, 1.0]])
    return _ImageSequence(
        path=folder, format="replica", c2ws=up_rotation(up) @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=_check_K(K, params or folder),
        default_K_for=default_K_for, depth_scale=_depth_scale(cfg, folder, 1.0 / camera["scale"]))


def _open_replica_habitat(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Replica as Semantic-NeRF and vMAP render it with Habitat (their ``habitat_renderer.py``): ``rgb/rgb_N.png``,
    ``depth/depth_N.png`` (mm), ``traj_w_c.txt`` (line N: frame N's OpenCV camera-to-world 4x4, row-major, in
    Replica's z-up world). Habitat's camera has a 90° horizontal field of view: fx = fy = W / 2 at the image's
    centre (said; K in worldstudio.json for another)."""
    fix = f"a Replica render folder needs rgb/rgb_N.png, depth/depth_N.png and {REPLICA_HABITAT_POSES}"
    rgb_files = [p for p in _images_in(folder, "rgb", fix) if _last_number(p.stem) is not None]
    poses = read_poses_file(folder / REPLICA_HABITAT_POSES)
    numbers = [_last_number(p.stem) for p in rgb_files]
    depth_files = []
    for n, rgb in zip(numbers, rgb_files):
        if n >= len(poses):
            raise SequenceError(f"{rgb.name} is frame {n}, but {REPLICA_HABITAT_POSES} has {len(poses)} poses; copy "
                                "the folder again")
        depth = folder / "depth" / f"depth_{n}.png"
        if not depth.is_file():
            raise SequenceError(f"{depth} is missing (its colour image {rgb.name} exists); copy it again or delete "
                                f"{rgb.name}")
        depth_files.append(depth)
    notes: list[str] = []
    if len(numbers) < len(poses):
        notes.append(f"{REPLICA_HABITAT_POSES} has {len(poses)} poses and rgb/ images of {len(numbers)} of them: the "
                     "frames without an image are skipped")
    K = _K_from_config(cfg, folder)
    if K is None:
        h, w = _image_array(rgb_files[0], "image", "copy it again").shape[:2]
        K = np.array([[w / 2.0, 0.0, (w - 1) / 2.0], [0.0, w / 2.0, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
        notes.append(f"K from Habitat's 90° horizontal field of view, as Semantic-NeRF and vMAP render Replica "
                     f"(fx=fy={w / 2:g}); put K in {CONFIG_FILE} for another camera")
    return _ImageSequence(
        path=folder, format="replica", c2ws=up_rotation(up) @ poses[numbers], timestamps=np.asarray(numbers, float),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001))


NEURAL_RGBD_POSES = ("poses.txt", "trainval_poses.txt")  # ground truth, else the estimated poses it trains with
NEURAL_RGBD_DEPTH = ("depth_filtered", "depth")  # its loaders read the filtered depth where there is one


def _is_neural_rgbd(folder: Path) -> bool:
    return (folder / "focal.txt").is_file() and (folder / "images").is_dir() and any(
        (folder / p).is_file() for p in NEURAL_RGBD_POSES)


def _open_neural_rgbd(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Neural RGB-D's scenes (Azinović et al.; also read by Co-SLAM and GO-Surf): ``images/`` and
    ``depth_filtered/`` (else ``depth/``, mm) paired in file-name order, ``poses.txt`` (else
    ``trainval_poses.txt``; a 4x4 camera-to-world in four lines per image, NaN where there is none) of OpenGL
    cameras, ``focal.txt`` (one focal length of the depth camera; the principal point at (W - 1) / 2,
    (H - 1) / 2, where its own ray generator ``get_rays`` puts pixel i's ray at (i + 0.5 - W / 2) / focal).
    Colour of another size is resized to the depth's."""
    fix = "a Neural RGB-D scene folder needs images/, depth/ (or depth_filtered/), poses.txt and focal.txt"
    depth_dir = next((d for d in NEURAL_RGBD_DEPTH if (folder / d).is_dir()), "depth")
    rgb_files = _images_in(folder, "images", fix)
    depth_files = _images_in(folder, depth_dir, fix)
    if len(depth_files) != len(rgb_files):
        raise SequenceError(f"{folder}: images/ has {len(rgb_files)} images but {depth_dir}/ {len(depth_files)}; "
                            "each image needs its depth, in file-name order")
    notes: list[str] = []
    poses_file = next(folder / p for p in NEURAL_RGBD_POSES if (folder / p).is_file())
    if poses_file.name != "poses.txt":
        notes.append(f"no poses.txt (the ground truth): the estimated poses of {poses_file.name} are used")
    poses, (rgb_files, depth_files), kept = _one_pose_per_frame(poses_file, [rgb_files, depth_files], "images/",
                                                                notes)
    poses = flip_cv_gl(poses)  # OpenGL -> OpenCV camera
    K = _K_from_config(cfg, folder)
    if K is None:
        focal = [v for _, row in _numbers(folder / "focal.txt") for v in row]
        if len(focal) != 1:
            raise SequenceError(f"{folder / 'focal.txt'}: expected one number (the focal length in pixels), got "
                                f"{len(focal)}")
        h, w = _image_array(depth_files[0], "depth image", "copy it again").shape[:2]
        K = _check_K(np.array([[focal[0], 0.0, (w - 1) / 2.0], [0.0, focal[0], (h - 1) / 2.0], [0.0, 0.0, 1.0]]),
                     folder / "focal.txt")
    if up == "auto":
        up = _up_from_cameras(poses, notes)
    return _ImageSequence(
        path=folder, format="neuralrgbd", c2ws=up_rotation(up) @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True)
