"""Hypersim (apple/ml-hypersim), Apple's photorealistic synthetic indoor scenes: one scene folder ``ai_VVV_NNN/``
as its download unzips, one camera trajectory of it (``cam_00`` unless ``"hypersim_camera"`` in worldstudio.json
names another). Sources: the dataset's README (layout, conventions), its ``generate_hdf5_from_vrimg.py`` (depth =
``meters_per_asset_unit`` x the distance from the camera position) and ``scene_generate_images_tonemap.py`` (the
tone map), and ``contrib/mikeroberts3000`` (``metadata_camera_parameters.csv``: each scene's ``M_cam_from_uv``,
its notebook 01: the pixel grid in uv).

- ``_detail/metadata_scene.csv``: ``parameter_name,parameter_value`` rows, ``meters_per_asset_unit`` among them.
- ``_detail/cam_XX/camera_keyframe_positions.hdf5`` (N, 3) in asset units and ``camera_keyframe_orientations.hdf5``
  (N, 3, 3) camera-to-world rotations of a camera with x right, y up, z backward (OpenGL's); frame.IIII is keyframe
  IIII. The world is z-up.
- ``images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5``: (H, W) float16 Euclidean distance in metres
  to the optical centre (not z-depth), NaN where there is no surface.
- ``images/scene_cam_XX_final_preview/frame.IIII.tonemap.jpg`` (preferred), else
  ``images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5`` (linear HDR), tone-mapped as Hypersim does.

The camera: pixel (x, y) (centres at integers) has uv = ((2x + 1) / W - 1, 1 - (2y + 1) / H) and the camera-space
ray ``M_cam_from_uv @ (u, v, 1)``; without the csv the standard camera, 60° wide, is assumed (said). Some scenes'
tilt-shift lenses make M a pinhole camera turned against the stored orientation: K and that turn are exact (an RQ
decomposition); a camera whose pixel axes are skewed, or whose principal point lies outside the image's middle, is
refused. Depth = distance / |K^-1 (x, y, 1)|.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.camera import pixel_rays_camera
from worldmodel.recordings.base import (CONFIG_FILE, SequenceError, _ImageSequence, _K_from_config, _check_K_for_image,
                                        _check_pose, _visible, up_rotation)

HYPERSIM_CAMERA_PARAMETERS = "metadata_camera_parameters.csv"  # ml-hypersim's contrib/mikeroberts3000/
HYPERSIM_FOV_X = math.pi / 3  # the standard camera's horizontal field of view
HYPERSIM_MAX_SKEW_PX = 0.5  # a tilt-shift camera skewing its pixel axes more is refused (K holds no skew)
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])  # camera axes: y up, z backward <-> y down, z forward
_FRAME = re.compile(r"frame\.(\d+)\.(depth_meters\.hdf5|tonemap\.jpg|color\.hdf5)$")


def is_hypersim(folder: Path) -> bool:
    """``folder`` is a Hypersim scene (``_detail/`` and ``images/``)."""
    return (folder / "_detail").is_dir() and (folder / "images").is_dir()


def _read_hdf5(path: Path, fix: str) -> np.ndarray:
    """The array of numbers Hypersim keeps under ``dataset`` in the HDF5 file ``path``, as stored; SequenceError
    ending with ``fix`` (also for a group or text where the numbers should be)."""
    import h5py

    if not path.is_file():
        raise SequenceError(f"{path} is missing; {fix}")
    try:
        with h5py.File(path, "r") as f:
            array = np.asarray(f["dataset"][()])
    except KeyError:
        raise SequenceError(f"{path} holds no 'dataset' array, as Hypersim writes it; {fix}") from None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise SequenceError(f"cannot read {path}: not a valid HDF5 file of numbers ({str(e)[:80]}); {fix}") from None
    if array.dtype.kind not in "fiu":
        raise SequenceError(f"{path} holds {array.dtype} where Hypersim writes numbers; {fix}")
    return array


def _hdf5_shape(path: Path, fix: str) -> tuple[int, ...]:
    """The shape of ``path``'s ``dataset`` without reading it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return tuple(f["dataset"].shape)
    except (KeyError, OSError, ValueError, TypeError, AttributeError) as e:  # (AttributeError: a group)
        raise SequenceError(f"cannot read {path}: not a Hypersim HDF5 image ({str(e)[:80]}); {fix}") from None


def tonemap_hypersim(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W, 3) linear HDR colour -> uint8 RGB as Hypersim's scene_generate_images_tonemap.py makes its JPGs: scaled so
    the 90th percentile of the ``valid`` (H, W) pixels' brightness (0.3 R + 0.59 G + 0.11 B) becomes 0.8 after gamma
    1/2.2, clipped to 0..1, then x 255 truncated (matplotlib's imsave)."""
    rgb = np.nan_to_num(rgb.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
    scale = 1.0
    if valid.any():
        p90 = np.percentile(brightness[valid], 90)
        scale = 0.0 if p90 < 0.0001 else 0.8 ** 2.2 / p90
    out = np.power(np.maximum(scale * rgb, 0.0), 1.0 / 2.2)
    return (np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def hypersim_pinhole(M_cam_from_uv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), R (3, 3)) of the pinhole camera whose rays are Hypersim's ``M_cam_from_uv`` (3, 3) ones for a
    ``width`` x ``height`` image: pixel ~ K R ray, ray in the stored camera's OpenCV axes (R: a rotation taking them
    to the pinhole camera's; identity for an untilted camera). K may hold skew (K[0, 1]); scale-free."""
    import scipy.linalg

    uv_from_pixel = np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, -2.0 / height, 1.0 - 1.0 / height],
                              [0.0, 0.0, 1.0]])
    K, R = scipy.linalg.rq(np.linalg.inv(_GL_TO_CV @ M_cam_from_uv @ uv_from_pixel))
    signs = np.diag(np.sign(np.diag(K)))
    K, R = K @ signs, signs @ R
    if np.linalg.det(R) < 0:
        K, R = -K, -R
    return K / K[2, 2], R


def _scene_parameter(detail: Path, name: str) -> float:
    """``name``'s value in ``_detail/metadata_scene.csv`` (a finite positive number)."""
    path = detail / "metadata_scene.csv"
    fix = "download the scene again (it holds meters_per_asset_unit)"
    if not path.is_file():
        raise SequenceError(f"{path} is missing; {fix}")
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig", errors="replace").splitlines()))
    except (OSError, csv.Error) as e:
        raise SequenceError(f"cannot read {path}: {str(e)[:80]}; {fix}") from None
    value = next((r.get("parameter_value") for r in rows if (r.get("parameter_name") or "").strip() == name), None)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise SequenceError(f"{path} lacks a positive {name} (a parameter_name,parameter_value row); {fix}")
    return number


def _camera_parameters(folder: Path, notes: list[str]) -> np.ndarray | None:
    """The scene's ``M_cam_from_uv`` (3, 3) from ``metadata_camera_parameters.csv`` in the scene folder or its
    parent, or None (the standard camera; said)."""
    path = next((p / HYPERSIM_CAMERA_PARAMETERS for p in (folder, folder.parent)
                 if (p / HYPERSIM_CAMERA_PARAMETERS).is_file()), None)
    if path is None:
        notes.append(f"no {HYPERSIM_CAMERA_PARAMETERS} in the scene's folder or its parent: the standard camera "
                     "(60° wide, centred) is assumed; some scenes' tilt-shift lenses differ (get the file from "
                     "ml-hypersim's contrib/mikeroberts3000)")
        return None
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            row = next((r for r in csv.DictReader(f) if r.get("scene_name") == folder.name), None)
    except (OSError, csv.Error) as e:
        raise SequenceError(f"cannot read {path}: {str(e)[:80]}; get it again from ml-hypersim") from None
    if row is None:
        notes.append(f"{folder.name} is not in {path.name}: the standard camera (60° wide, centred) is assumed")
        return None
    try:
        M = np.array([[float(row[f"M_cam_from_uv_{i}{j}"]) for j in range(3)] for i in range(3)])
    except (KeyError, TypeError, ValueError):
        M = np.full((3, 3), np.nan)
    if not np.isfinite(M).all() or abs(np.linalg.det(M)) < 1e-12:
        raise SequenceError(f"{path}: {folder.name}'s M_cam_from_uv_00..22 are not an invertible matrix; get the "
                            "file again from ml-hypersim")
    return M


def _trajectory(detail: Path, cam: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions (N, 3) in asset units, orientations (N, 3, 3)) of ``_detail/cam``."""
    fix = "download the scene again"
    positions = _read_hdf5(detail / cam / "camera_keyframe_positions.hdf5", fix).astype(np.float64)
    rotations = _read_hdf5(detail / cam / "camera_keyframe_orientations.hdf5", fix).astype(np.float64)
    if positions.ndim != 2 or positions.shape[1:] != (3,) or not len(positions):
        raise SequenceError(f"{detail / cam / 'camera_keyframe_positions.hdf5'} holds {positions.shape}, not (N, 3) "
                            f"camera positions; {fix}")
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise SequenceError(f"{detail / cam / 'camera_keyframe_orientations.hdf5'} holds {rotations.shape}, not "
                            f"(N, 3, 3) rotations; {fix}")
    if len(positions) != len(rotations):
        raise SequenceError(f"{detail / cam}: camera_keyframe_positions.hdf5 has {len(positions)} cameras but "
                            f"camera_keyframe_orientations.hdf5 has {len(rotations)}; {fix}")
    return positions, rotations


def _cameras_with_images(folder: Path) -> list[str]:
    """The trajectories (``cam_XX``) that ``images/`` holds depth or colour of, in name order."""
    found = {m.group(1) for p in _visible((folder / "images").iterdir())
             if (m := re.fullmatch(r"scene_(cam_\d+)_(geometry_hdf5|final_preview|final_hdf5)", p.name)) and p.is_dir()}
    return sorted(found)


def _chosen_camera(folder: Path, cfg: dict, cams: list[str], notes: list[str]) -> str:
    """The trajectory to read: ``hypersim_camera`` from the config (``"cam_01"`` or 1), else cam_00 (or the first
    with images); several in the scene are said."""
    if not cams:
        raise SequenceError(f"{folder / 'images'} holds no scene_cam_XX_geometry_hdf5/ or _final_preview/; download "
                            "the scene's images")
    asked = cfg.get("hypersim_camera")
    if asked is not None:
        cam = f"cam_{asked:02d}" if isinstance(asked, int) and not isinstance(asked, bool) else str(asked)
        if cam not in cams:
            raise SequenceError(f"{folder / CONFIG_FILE}: hypersim_camera {asked!r} has no images in this scene; "
                                f"choose one of {', '.join(cams)}")
        return cam
    cam = "cam_00" if "cam_00" in cams else cams[0]
    if len(cams) > 1:
        notes.append(f"{folder.name} has {len(cams)} camera trajectories ({', '.join(cams)}): {cam} is read; set "
                     f"\"hypersim_camera\": \"{cams[1] if cam == cams[0] else cams[0]}\" in {CONFIG_FILE} for another")
    return cam


@dataclass(eq=False)
class _HypersimSequence(_ImageSequence):
    """Hypersim frames: colour from a tone-mapped JPG or an HDR ``color.hdf5`` (tone-mapped here), depth from
    ``depth_meters.hdf5`` distances turned into z-depth along each pixel's ray (``ray_length``: (H, W) |K^-1 pixel|)."""

    ray_length: np.ndarray | None = None

    def _distance(self, i: int) -> np.ndarray:
        """(H, W) float32 metres from the optical centre, NaN where no surface, as the file holds it."""
        path = self.depth_files[i]
        d = _read_hdf5(path, "download the scene's geometry_hdf5 images again")
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
            raise SequenceError(f"{path}: a depth_meters image is (H, W) floats, got {d.dtype} {d.shape}; download "
                                "the scene again")
        if d.shape != self.ray_length.shape:
            h, w = self.ray_length.shape
            raise SequenceError(f"{path} is {d.shape[1]}x{d.shape[0]} but the scene's first frame {w}x{h}; every "
                                "frame must have one size")
        return d.astype(np.float32)

    def _colour(self, i: int) -> np.ndarray:
        path = self.rgb_files[i]
        if path.suffix.lower() != ".hdf5":
            return super()._colour(i)
        rgb = _read_hdf5(path, "download the scene's final_hdf5 images again")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or not np.issubdtype(rgb.dtype, np.floating):
            raise SequenceError(f"{path}: a color image is (H, W, 3) floats, got {rgb.dtype} {rgb.shape}; download "
                                "the scene again")
        valid = np.isfinite(self._distance(i))  # Hypersim's render_entity_id != -1: where a surface was hit
        return tonemap_hypersim(rgb, valid if valid.shape == rgb.shape[:2] else np.ones(rgb.shape[:2], bool))

    def _depth(self, i: int) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            depth = self._distance(i) / self.ray_length
            depth[~np.isfinite(depth) | (depth <= 0)] = 0.0
        return depth.astype(np.float32)


def _open_hypersim(folder: Path, cfg: dict, up: str) -> _HypersimSequence:
    """A Hypersim scene folder ``ai_VVV_NNN/`` (see the module docstring): one trajectory's frames that have depth,
    OpenCV c2w in metres in the scene's z-up world (``up``: +z unless the user names another), z-depth in metres."""
    if not is_hypersim(folder):
        raise SequenceError(f"{folder}: a Hypersim scene needs _detail/ and images/; pass an ai_VVV_NNN folder as its "
                            "download unzips")
    notes: list[str] = []
    detail, images = folder / "_detail", folder / "images"
    mpau = _scene_parameter(detail, "meters_per_asset_unit")
    cam = _chosen_camera(folder, cfg, _cameras_with_images(folder), notes)
    positions, rotations = _trajectory(detail, cam)
    geometry, preview, final = (images / f"scene_{cam}_{k}" for k in ("geometry_hdf5", "final_preview", "final_hdf5"))
    files: dict[int, dict[str, Path]] = {}
    for d in (geometry, preview, final):
        for p in (_visible(d.iterdir()) if d.is_dir() else []):
            m = _FRAME.fullmatch(p.name)
            if m:
                files.setdefault(int(m.group(1)), {})[m.group(2)] = p
    if not files:
        raise SequenceError(f"{geometry} holds no frame.IIII.depth_meters.hdf5; download the scene's images")
    depth_files, rgb_files, numbers, tone_mapped = [], [], sorted(files), 0
    for n in numbers:
        have = files[n]
        if "depth_meters.hdf5" not in have:
            raise SequenceError(f"{geometry / f'frame.{n:04d}.depth_meters.hdf5'} is missing (frame {n}'s colour is "
                                "there); download the scene's geometry_hdf5 images again")
        colour = have.get("tonemap.jpg") or have.get("color.hdf5")
        if colour is None:
            raise SequenceError(f"{preview / f'frame.{n:04d}.tonemap.jpg'} (or {final.name}/frame.{n:04d}.color.hdf5) "
                                f"is missing for frame {n}; download the scene's final images")
        if n >= len(positions):
            raise SequenceError(f"{have['depth_meters.hdf5']}: frame {n}, but _detail/{cam} holds {len(positions)} "
                                "cameras; download the scene again")
        tone_mapped += colour.suffix == ".hdf5"
        depth_files.append(have["depth_meters.hdf5"])
        rgb_files.append(colour)
    if len(numbers) < len(positions):
        notes.append(f"{cam}'s trajectory has {len(positions)} cameras, {len(numbers)} with images: those are played")
    if tone_mapped:
        notes.append(f"{tone_mapped} frames have no tonemap.jpg: their HDR color.hdf5 is tone-mapped as Hypersim's "
                     "scene_generate_images_tonemap.py does")

    shape = _hdf5_shape(depth_files[0], "download the scene's geometry_hdf5 images again")
    if len(shape) != 2 or min(shape) < 1:
        raise SequenceError(f"{depth_files[0]}: a depth_meters image is (H, W), got {shape}; download the scene again")
    height, width = shape
    K, turn = _K_from_config(cfg, folder), np.eye(3)
    if K is None:
        M = _camera_parameters(folder, notes)
        if M is None:
            M = np.diag([math.tan(HYPERSIM_FOV_X / 2), math.tan(HYPERSIM_FOV_X / 2) * height / width, -1.0])
        K, turn = hypersim_pinhole(M, width, height)
        if abs(K[0, 1]) > HYPERSIM_MAX_SKEW_PX:
            raise SequenceError(f"{folder.name}'s tilt-shift camera ({HYPERSIM_CAMERA_PARAMETERS}) skews its pixel "
                                f"axes by {abs(K[0, 1]):.1f} px, which a pinhole K cannot hold; play another scene")
        K[0, 1] = 0.0
        try:
            _check_K_for_image(K, width, height, folder.name)
        except SequenceError:
            raise SequenceError(f"{folder.name}'s tilt-shift camera ({HYPERSIM_CAMERA_PARAMETERS}) puts its principal "
                                f"point at ({K[0, 2]:.0f}, {K[1, 2]:.0f}), outside the middle of its {width}x{height} "
                                "images, which this tool's cameras need; play another scene") from None
        angle = math.degrees(math.acos(np.clip((np.trace(turn) - 1.0) / 2.0, -1.0, 1.0)))
        if angle > 0.01:
            notes.append(f"{folder.name}'s camera is tilt-shift: its pinhole camera is turned {angle:.1f}° from the "
                         "stored orientations")
    c2ws = np.tile(np.eye(4), (len(numbers), 1, 1))
    c2ws[:, :3, :3] = rotations[numbers] @ _GL_TO_CV @ turn.T
    c2ws[:, :3, 3] = positions[numbers] * mpau
    for n, c2w in zip(numbers, c2ws):
        _check_pose(c2w, f"{detail / cam} (camera {n})")
    ray_length = np.linalg.norm(pixel_rays_camera(K, width, height), axis=2)
    return _HypersimSequence(
        path=folder, format="hypersim", c2ws=up_rotation(up) @ c2ws, timestamps=np.asarray(numbers, dtype=float),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K, ray_length=ray_length)
