"""TartanAir (v1 and V2), the simulated SLAM dataset: one trajectory's folder (``P000``) with its images, planar
depth and NED poses. Sources: castacks/tartanair_tools (``ned2cam``; its issue #67: the depth is planar),
tartanairpy (V2's layout and RGBA-packed depth), DROID-SLAM's loader (the same pose conversion).

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from worldmodel.recordings.base import (SequenceError, _ImageSequence, _K_from_config, _depth_scale, _images_in,
                                        _open_image, _read_depth, up_rotation)
from worldmodel.tum import number_rows, tum_rows_to_c2ws

# the camera a trajectory is read from (v1: the left camera; V2: the left camera looking forward), and its K
TARTANAIR_CAMERAS = {"left": ((640, 480), np.array([[320.0, 0.0, 320.0], [0.0, 320.0, 240.0], [0.0, 0.0, 1.0]])),
                     "lcam_front": ((640, 640), np.array([[320.0, 0.0, 320.0], [0.0, 320.0, 320.0], [0.0, 0.0, 1.0]]))}
TARTANAIR_SKY_M = 1000.0  # the sky holds depths of ~1e4 m: no surface there
# NED (x forward, y right, z down) to OpenCV axes (x right, y down, z forward), for the camera and the world alike
_NED_TO_CV = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def tartanair_camera(folder: Path) -> str | None:
    """The camera of a TartanAir trajectory folder whose poses, images and depth are all there, or None."""
    return next((cam for cam in TARTANAIR_CAMERAS if (folder / f"pose_{cam}.txt").is_file()
                 and (folder / f"image_{cam}").is_dir() and (folder / f"depth_{cam}").is_dir()), None)


@dataclass(eq=False)
class _TartanAirSequence(_ImageSequence):
    """TartanAir frames: v1's depth as float32 ``.npy``, V2's as float32 packed in an RGBA PNG; the sky dropped."""

    def _depth(self, i: int) -> np.ndarray:
        path = self.depth_files[i]
        if path.suffix.lower() == ".png":  # V2: the four bytes of a little-endian float32 per pixel, as OpenCV
            try:                            # wrote them (BGRA: the PNG's red channel holds byte 2)
                with _open_image(path) as im:
                    raw = np.asarray(im)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                if isinstance(e, SequenceError):
                    raise
                raise SequenceError(f"cannot read {path}: not a valid PNG ({str(e)[:60]}); download the "
                                    "trajectory's depth again") from None
            if raw.ndim != 3 or raw.shape[2] != 4 or raw.dtype != np.uint8:
                raise SequenceError(f"{path}: a TartanAir V2 depth PNG holds float32 metres as 8-bit RGBA, got "
                                    f"{raw.dtype} {raw.shape}; download the trajectory's depth again")
            depth = np.ascontiguousarray(raw[..., [2, 1, 0, 3]]).view("<f4")[..., 0].astype(np.float32)
        else:
            try:
                depth = _read_depth(path, self.depth_scale)
            except SequenceError as e:
                raise SequenceError(f"{str(e).split('; ')[0]}; download the trajectory's depth again") from None
        depth[~np.isfinite(depth) | (depth < 0) | (depth >= TARTANAIR_SKY_M)] = 0.0
        return depth


def _open_tartanair(folder: Path, cfg: dict, up: str) -> _TartanAirSequence:
    """A TartanAir trajectory (``P000/``): ``image_left/000000_left.png``, ``depth_left/000000_left_depth.npy``
    (planar z-depth, metres; the sky ~1e4 m is dropped) and ``pose_left.txt`` (``tx ty tz qx qy qz qw``
    camera-to-world, NED body and world), or V2's ``*_lcam_front`` files (depth as float32 in RGBA PNGs). Poses
    are turned from NED to OpenCV axes (tartanair_tools' ``ned2cam``); the world is then y-down. K: 320, 320,
    320, 240 at 640x480 (V2: 320 at 640x640)."""
    cam = tartanair_camera(folder)
    if cam is None:
        raise SequenceError(f"{folder}: a TartanAir trajectory needs pose_left.txt, image_left/ and depth_left/ (V2: "
                            "*_lcam_front); pass a P000-style trajectory folder")
    size, default_K = TARTANAIR_CAMERAS[cam]
    images = _images_in(folder, f"image_{cam}", f"a TartanAir trajectory needs image_{cam}/")
    depth_files = []
    depth_ext = ".npy" if cam == "left" else ".png"  # (v1 / V2)
    for image in images:
        depth = folder / f"depth_{cam}" / f"{image.stem}_depth{depth_ext}"
        if not depth.is_file():
            raise SequenceError(f"{depth} is missing (its image {image.name} exists); download the trajectory's "
                                "depth again")
        depth_files.append(depth)
    pose_path = folder / f"pose_{cam}.txt"
    ned = _read_ned_poses(pose_path)
    if len(ned) != len(images):
        raise SequenceError(f"{pose_path} has {len(ned)} poses but image_{cam}/ has {len(images)} images; "
                            "download the trajectory again")
    c2ws = _NED_TO_CV @ ned @ _NED_TO_CV.T
    K = _K_from_config(cfg, folder)
    return _TartanAirSequence(
        path=folder, format="tartanair", c2ws=up_rotation(up) @ c2ws, timestamps=np.arange(len(c2ws), dtype=float),
        world_up=up, rgb_files=images, depth_files=depth_files, Ks=default_K.copy() if K is None else K,
        default_K_for=size if K is None else None, depth_scale=_depth_scale(cfg, folder, 1.0))


def _read_ned_poses(path: Path) -> np.ndarray:
    """TartanAir's pose file: ``tx ty tz qx qy qz qw`` per line (TUM's line without its time; scalar-last) ->
    camera-to-world (N, 4, 4) in NED axes."""
    try:
        rows = number_rows(path.read_text(encoding="utf-8-sig", errors="replace"), path)
        bad = next(((n, r) for n, r in rows if len(r) != 7), None)
        if bad:
            raise ValueError(f"{path}:{bad[0]}: expected 7 numbers 'tx ty tz qx qy qz qw', got {len(bad[1])}")
        if not rows:
            raise ValueError(f"{path} holds no poses")
        values = np.asarray([r for _, r in rows], dtype=np.float64)
        return tum_rows_to_c2ws(np.column_stack([np.arange(len(values), dtype=np.float64), values]), path)[1]
    except OSError as e:
        raise SequenceError(f"cannot read {path}: {e.strerror or e}; download the trajectory again") from None
    except ValueError as e:
        raise SequenceError(f"{str(e).split('; ')[0]}; download the trajectory's {path.name} again") from None
