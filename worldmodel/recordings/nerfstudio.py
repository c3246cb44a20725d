"""nerfstudio datasets (``transforms.json``) whose frames carry depth.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldmodel.camera import flip_cv_gl
from worldmodel.recordings.base import (SequenceError, _IMAGE_EXT, _ImageSequence, _check_K, _check_pose, _depth_scale,
                                        _metres_per_unit, _natural_key, _open_image, _up_from_cameras, up_rotation)


_NOT_PINHOLE = ("OPENCV_FISHEYE", "FISHEYE", "EQUIRECTANGULAR", "OMNIDIRECTIONALSTEREO_L", "OMNIDIRECTIONALSTEREO_R",
                "VR180_L", "VR180_R")


def _nerfstudio_K(entry: dict, meta: dict, image: Path, where: str) -> np.ndarray:
    """OpenCV K of one frame of a transforms.json: its own ``fl_x fl_y cx cy w h`` or the file's, or instant-ngp's
    ``camera_angle_x``. nerfstudio puts pixel centres at +0.5 (the image spans 0..w), ours at whole numbers."""
    def value(key: str):
        v = entry.get(key, meta.get(key))
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
            raise SequenceError(f"{where}: {key} must be a number, got {v!r}")
        return v

    w, h = value("w"), value("h")
    if w is None or h is None:
        with _open_image(image) as im:
            w, h = im.size
    fx, fy = value("fl_x"), value("fl_y")
    if fx is None and value("camera_angle_x") is not None:
        fx = 0.5 * w / np.tan(0.5 * value("camera_angle_x"))
        if value("camera_angle_y") is not None:
            fy = 0.5 * h / np.tan(0.5 * value("camera_angle_y"))
    if fx is None:
        raise SequenceError(f"{where}: no focal length; give fl_x and fl_y (pixels) or camera_angle_x (radians)")
    fy = fx if fy is None else fy
    cx, cy = value("cx"), value("cy")
    cx, cy = (0.5 * w if cx is None else cx) - 0.5, (0.5 * h if cy is None else cy) - 0.5
    return _check_K(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64), where)


def _open_nerfstudio(folder: Path, cfg: dict, up: str, transforms: Path | None = None, files_in: Path | None = None,
                     depth_in: Path | None = None, fmt: str = "nerfstudio") -> _ImageSequence:
    """A nerfstudio / instant-ngp ``transforms.json`` whose frames carry depth (``depth_file_path``: nerfstudio's
    Polycam export and this tool's own do; ``depth_path``: NeRFCapture's, as SplaTAM writes it): OpenGL
    camera-to-world matrices, intrinsics per file or per frame, 16-bit depth in millimetres, or .npy, both times
    ``depth_unit_scale_factor`` as nerfstudio reads them (or instant-ngp's ``integer_depth_scale``, metres per
    unit). Frames
    are played in file-name order, as nerfstudio sorts them; a depth image smaller than its colour image keeps
    its size and the colour is resized to it.

    The up axis: ``up="auto"`` (the default) takes the file's ``world_up`` (this tool's export writes ``+y``), else
    nerfstudio's z-up when the file says it was oriented (``orientation_override``, as the Polycam export writes),
    else y or z, whichever is nearer the cameras' mean up direction, with a note: nerfstudio re-orients every
    dataset when it loads it, so the files keep the world they came from (Record3D's and ARKit's are y-up,
    COLMAP's arbitrary).

    Another layout built on one (ScanNet++'s DSLR) names its file (``transforms``), the folder its file paths are
    relative to (``files_in``; default: the file's), a folder holding ``STEM.png`` depth (mm) for frames that name
    none (``depth_in``) and its format. ``test_frames`` (a split's held-out views) are frames too; frames marked
    ``is_bad`` (blurred) are skipped, said."""
    path = transforms or folder / "transforms.json"
    files_in = files_in or path.parent
    if not path.is_file():
        raise SequenceError(f"{path} is missing; a nerfstudio folder needs it")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError, json.JSONDecodeError) as e:
        raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); copy it again") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise SequenceError(f"{path} has no \"frames\" list of objects; it is not a nerfstudio dataset")
    held_out = meta.get("test_frames")
    frames = frames + [f for f in held_out if isinstance(f, dict)] if isinstance(held_out, list) else frames
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model in _NOT_PINHOLE:
        raise SequenceError(f"{path}: camera_model {model} is not a pinhole camera; undistort the images first "
                            "(nerfstudio's ns-process-data does)")
    notes: list[str] = []
    distortion = [k for k in ("k1", "k2", "k3", "k4", "p1", "p2") if meta.get(k)]
    if distortion:
        notes.append(f"lens distortion ({', '.join(distortion)}) in transforms.json is ignored: frames are used as "
                     "pinhole images")

    def file_of(entry: dict, key: str, frame: str) -> Path:
        rel = entry.get(key)
        if not isinstance(rel, str) or not rel:
            raise SequenceError(f"{path}: frame {frame} has no \"{key}\"")
        f = files_in / rel
        if not f.suffix and not f.is_file():  # instant-ngp's synthetic scenes name images without extension
            f = next((f.with_suffix(e) for e in _IMAGE_EXT if f.with_suffix(e).is_file()), f)
        if not f.is_file():
            raise SequenceError(f"{f} is missing (frame {frame} of transforms.json); copy it again or remove the "
                                "frame")
        return f

    order = sorted(range(len(frames)), key=lambda n: _natural_key(Path(str(frames[n].get("file_path", "")))))
    bad = {n for n in order if frames[n].get("is_bad") is True}
    if bad:
        notes.append(f"{len(bad)} of the {len(frames)} frames are marked is_bad (blurred): skipped")
        order = [n for n in order if n not in bad]
    if not order:
        raise SequenceError(f"{path}: no frame to play (every one is marked is_bad, or the frames list is empty)")
    rgb_files, depth_files, Ks, poses = [], [], [], []
    for n in order:
        entry = frames[n]
        frame = str(entry.get("file_path", f"number {n}"))  # named as the user sees it (the list's order is not)
        depth_key = next((k for k in ("depth_file_path", "depth_path") if k in entry), None)
        rgb_files.append(file_of(entry, "file_path", frame))
        if depth_key is None and depth_in is not None:
            depth_files.append(depth_in / f"{rgb_files[-1].stem}.png")
            if not depth_files[-1].is_file():
                raise SequenceError(f"{depth_files[-1]} is missing (the depth of {frame}); copy it again or render "
                                    "the depth again")
        elif depth_key is None:
            raise SequenceError(f"{path}: frame {frame} has no depth_file_path; this tool needs a depth image per "
                                "frame (nerfstudio's Polycam export has them; its Record3D and COLMAP ones do not)")
        else:
            depth_files.append(file_of(entry, depth_key, frame))
        try:
            M = np.asarray(entry.get("transform_matrix"), dtype=np.float64)
        except (TypeError, ValueError):
            M = np.zeros(0)
        if M.shape == (3, 4):
            M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
        if M.shape != (4, 4):
            raise SequenceError(f"{path}: frame {frame}'s transform_matrix is not a 4x4 matrix")
        poses.append(flip_cv_gl(_check_pose(M, f"{path}: frame {frame}")))  # OpenGL -> OpenCV camera
        Ks.append(_nerfstudio_K(entry, meta, rgb_files[-1], f"{path}: frame {frame}"))
    poses = np.stack(poses)
    unit_key = next((k for k in ("depth_unit_scale_factor", "integer_depth_scale") if k in meta), None)
    unit = None if unit_key is None else _metres_per_unit(meta[unit_key], f"{path}: {unit_key}")
    if unit is None and any(f.suffix.lower() == ".npy" for f in depth_files):
        notes.append("float .npy depth is read as metres (transforms.json gives no depth_unit_scale_factor or "
                     "integer_depth_scale)")
    if up == "auto" and meta.get("world_up") is not None:  # this tool's own export says which
        up = str(meta["world_up"])
        try:
            up_rotation(up)
        except ValueError:
            raise SequenceError(f"{path}: world_up must be one of +x, -x, +y, -y, +z, -z, got {up!r}") from None
    elif up == "auto":  # nerfstudio oriented it (its Polycam export): z-up; else the cameras tell
        up = "+z" if "orientation_override" in meta and fmt == "nerfstudio" else _up_from_cameras(poses, notes)
    return _ImageSequence(
        path=folder, format=fmt, c2ws=up_rotation(up) @ poses,
        timestamps=np.arange(len(poses), dtype=np.float64), world_up=up, notes=notes, rgb_files=rgb_files,
        depth_files=depth_files, Ks=Ks, depth_scale=_depth_scale(cfg, folder, 0.001 if unit is None else unit),
        float_depth_scale=1.0 if unit is None else unit, colour_to_depth_size=True, colour_K=True)
