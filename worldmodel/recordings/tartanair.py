"""TartanAir (v1 and V2), the simulated SLAM dataset: one trajectory's folder (``P000``) with its images, planar
depth and NED poses. Sources: castacks/tartanair_tools (``ned2cam``; its issue #67: the depth is planar),
tartanairpy (V2's layout and RGBA-packed depth), DROID-SLAM's loader (the same pose conversion).

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.recordings.base import (SequenceError, _ImageSequence, _K_from_config, _depth_scale, _image_array,
                                        _images_in, _number_table, _read_depth, up_rotation)
from worldmodel.tum import tum_rows_to_c2ws

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
        if path.suffix.lower() == ".png":  # V2: a little-endian float32's four bytes per pixel, as OpenCV wrote
            raw = _image_array(path, "PNG", "download the trajectory's depth again")
            if raw.ndim != 3 or raw.shape[2] != 4 or raw.dtype != np.uint8:
                raise SequenceError(f"{path}: a TartanAir V2 depth PNG holds float32 metres as 8-bit RGBA, got "
                                    f"{raw.dtype} {raw.shape}; download the trajectory's depth again")
            # (OpenCV took them as BGRA: the PNG's red channel holds byte 2)
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
    fix = f"download the trajectory's {path.name} again"
    values = _number_table(path, 7, "tx ty tz qx qy qz qw", fix)
    try:
        return tum_rows_to_c2ws(np.column_stack([np.arange(len(values), dtype=np.float64), values]), path)[1]
    except ValueError as e:  # a NaN or zero quaternion
        raise SequenceError(f"{str(e).split('; ')[0]}; {fix}") from None
