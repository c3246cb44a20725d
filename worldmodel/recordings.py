"""Read recorded RGB-D sequences and world-model outputs as lazy sequences of :class:`Frame`.

Every reader converts to the project's conventions at the edge: metres, right-handed **+Y-up** world,
OpenCV cameras (x right, y down, z forward), ``c2w`` float64 (4, 4), float32 z-depth with 0 = invalid,
uint8 (H, W, 3) RGB. Formats (see the README section "Real data: replay and eval-recon"):

- ``tum``: TUM RGB-D (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``). Colour and depth are associated by
  nearest timestamp (at most 0.02 s apart, one-to-one), or by associate.py's ``associations.txt`` when there is
  no rgb.txt (ORB-SLAM's and ICL-NUIM's folders; a lone ``*.gt.freiburg`` stands in for groundtruth.txt). The
  ground-truth pose is interpolated at the colour timestamp (linear translation, slerp rotation) between samples
  at most 0.1 s apart, or taken from a sample within 0.02 s (ground truth written once per image). Depth = value
  / 5000; K from ``calibration.txt`` (``fx fy cx cy``, ETH3D's SLAM benchmark) or TUM's default (525, 525,
  319.5, 239.5). TUM's motion-capture world is z-up; another's (a ``calibration.txt``, a ground truth naming no
  freiburg bag) has the one of y and z nearer the cameras' mean up (said in a note). ICL-NUIM's release
  (``*.gt.freiburg``, or frame numbers for times throughout) has its own K and a left-handed y-up world: its
  poses are reflected to a right-handed y-down one.
- ``7scenes``: 7-Scenes / 3DMatch (``frame-XXXXXX.color.png|jpg``, ``.depth.png``, ``.pose.txt``,
  ``camera-intrinsics.txt`` here or in the parent folder), depth = value / 1000, 65535 = invalid. 12-Scenes and
  other BundleFusion exports name their frames so and hold the cameras in ``info.txt`` (here or in the parent
  folder): the depth camera's K and depth shift, and a colour image of another size is resized to the depth's.
  The world is the recording's first (roughly level) camera frame, y down (``world_up="-y"``).
- ``scannet``: ScanNet's SensReader export (``color/N.jpg``, ``depth/N.png`` in mm, ``pose/N.txt`` c2w with -inf
  where tracking was lost, ``intrinsic/intrinsic_depth.txt``): colour resized to the depth camera's size, world
  z-up.
- ``replica``: Replica as NICE-SLAM and SplaTAM ship it (``results/frame*.jpg``, ``results/depth*.png`` / 6553.5,
  ``traj.txt`` OpenCV c2w per line, ``cam_params.json`` here or in the parent folder), world z-up.
- ``stray``: Stray Scanner's export (``rgb.mp4``, ``depth/*.png`` mm, ``confidence/``, ``odometry.csv`` OpenCV c2w,
  ``camera_matrix.csv``): colour from the video resized to the depth's size, ARKit's y-up world.
- ``record3d``: Record3D's ``.r3d`` file (a zip) or the folder it unzips to (``metadata`` JSON, ``rgbd/N.jpg``,
  ``rgbd/N.depth`` LZFSE float32 metres, ``rgbd/N.conf``): OpenGL c2w poses, colour resized to the depth's size
  with its K, confidence below 1 dropped, ARKit's y-up world.
- ``arkitscenes``: an ARKitScenes video (``lowres_wide/``, ``lowres_depth/`` mm, ``lowres_wide_intrinsics/*.pincam``,
  ``lowres_wide.traj`` world-to-camera axis-angle poses interpolated at the frames' times), world z-up.
- ``nerfstudio``: a ``transforms.json`` whose frames carry ``depth_file_path`` (nerfstudio's Polycam export, this
  tool's own): OpenGL poses, nerfstudio's intrinsics (pixel centres at +0.5), depth times
  ``depth_unit_scale_factor`` (mm by default); up z when the file says it was oriented, else y or z, whichever
  the cameras' mean up is nearer, said in a note (this tool's export writes ``world_up: +y`` beside it).
- ``open3d``: Open3D's reconstruction-system and Redwood layout (``image/`` or ``color/``, ``depth/`` mm, a ``.log``
  trajectory of c2w matrices, ``camera_intrinsic.json`` column-major); up y or z from the cameras, said.
- ``generic``: ``rgb/*.png|jpg``, ``depth/*.npy|png`` (same file stems), ``poses.txt`` (one pose per image in
  natural file-name order; an inf/NaN pose, ScanNet's mark of lost tracking, skips its frame), ``intrinsics.txt``
  (a 3x3 or 4x4 matrix, or ``fx fy cx cy``) or ``worldstudio.json`` (``world_up="+y"``: poses already in our
  convention unless told otherwise).
- ``ply``: a folder of per-frame PLY point clouds in world coordinates (DeepVerse ``run.py --add_ply`` writes
  ``<video>_frame<i>.ply``; Aether similar), optionally with the video and a ``poses.txt``. Frames carry
  ``world_points``/``world_colors``; depth is all zeros. DeepVerse's world is its first camera's OpenCV
  frame (y down), so the default is ``world_up="-y"``.

In ScanNet, Stray Scanner, nerfstudio and generic folders the depth may be smaller than its colour image (one
viewpoint, two resolutions, as phones and ScanNet record): the colour is resized to the depth's size, and a
colour camera's K with it.

An optional ``worldstudio.json`` in any sequence folder overrides settings: ``world_up`` ("+x".."-z"),
``depth_scale`` (metres per depth unit), ``K`` (3x3) or ``fx fy cx cy``, ``camera`` ("opencv" | "opengl",
generic poses only), ``video_panels`` (ply folders: how many side-by-side panels the video has),
``min_confidence`` (Stray Scanner, Record3D folders: 0..2).
Keyword arguments of :func:`open_sequence` override both.

Frames are read lazily (PIL; 16-bit depth PNGs via mode ``I;16``); index files are parsed and every referenced
file is checked to exist when the sequence is opened, and frame 0 is decoded then, so a partial folder fails
at once with a :class:`SequenceError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from worldmodel.camera import (camera_to_pixels, flip_cv_gl, intrinsics_from_fov, invert_pose, resize_intrinsics,
                               world_to_camera)
from worldmodel.frame import Frame
from worldmodel.tum import number_rows, read_tum_rows, tum_rows_to_c2ws, valid_tum_rows

FORMATS = ("tum", "7scenes", "scannet", "replica", "stray", "record3d", "arkitscenes", "nerfstudio", "open3d", "generic",
           "ply")
CONFIG_FILE = "worldstudio.json"
TUM_K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
# ICL-NUIM's TUM-format release: its renderer's camera with a positive fy (the dataset page's -480 is for the
# POV-Ray-format files; ETH3D/badslam#59, cuVSLAM#135)
ICL_NUIM_K = np.array([[481.20, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]])
TUM_DEPTH_SCALE = 1.0 / 5000.0
TUM_MAX_DT = 0.02          # s, colour/depth association (TUM's associate.py default)
TUM_MAX_GT_GAP = 0.1       # s, a colour frame is dropped when its bracketing ground-truth samples are farther apart
SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])  # when no intrinsics file
DEFAULT_UP = {"tum": "auto", "7scenes": "-y", "scannet": "+z", "replica": "+z", "stray": "+y", "record3d": "+y",
              "arkitscenes": "+z", "nerfstudio": "auto", "open3d": "auto", "generic": "+y", "ply": "-y"}
_IMAGE_EXT = (".png", ".jpg", ".jpeg")
# the formats for help texts (FORMAT_NAMES) and each one's layout (_FORMATS_HELP)
FORMAT_NAMES = ("TUM RGB-D (ICL-NUIM, ETH3D), 7-Scenes/3DMatch, ScanNet, Replica, Stray Scanner, Record3D (.r3d), "
                "ARKitScenes, nerfstudio (with depth), Open3D/Redwood, generic or per-frame PLY")
_FORMATS_HELP = ("expected rgb.txt + depth.txt + groundtruth.txt (TUM), frame-*.color.png (7-Scenes/3DMatch), "
                 "color/ + depth/ + pose/ (ScanNet), results/ + traj.txt (Replica), rgb.mp4 + odometry.csv (Stray "
                 "Scanner), a .r3d file, or metadata.json + rgb/ + depth/ (Record3D), lowres_wide/ + lowres_depth/ + "
                 "lowres_wide.traj (ARKitScenes), transforms.json with depth "
                 "(nerfstudio), image/ + depth/ + trajectory.log (Open3D/Redwood), rgb/ + depth/ + poses.txt (generic) "
                 "or *.ply files (per-frame point clouds)")


class SequenceError(ValueError):
    """A sequence folder cannot be read; the one-line message names the file and says what to do."""


# --------------------------------------------------------------------------------------------- conventions


def up_rotation(world_up: str) -> np.ndarray:
    """(4, 4) rotation taking a source world whose up axis is ``world_up`` ("+x".."-z") to our +Y-up world.

    Rows of the 3x3 block are our X, Y, Z axes written in source coordinates: Y = the source up axis,
    X = the first source axis perpendicular to it, Z = X x Y (right-handed). "+z" -> (x, z, -y);
    "-y" -> (x, -y, -z) (a 180 degree turn about x: the OpenCV-like y-down world); "+y" -> identity.
    """
    s = str(world_up).strip().lower()
    if len(s) == 1:
        s = "+" + s
    if len(s) != 2 or s[0] not in "+-" or s[1] not in "xyz":
        raise SequenceError(f"world_up must be one of +x -x +y -y +z -z, got {world_up!r}")
    up = np.zeros(3)
    up["xyz".index(s[1])] = 1.0 if s[0] == "+" else -1.0
    x = np.array([1.0, 0.0, 0.0]) if s[1] != "x" else np.array([0.0, 0.0, -up[0]])
    z = np.cross(x, up)
    A = np.eye(4)
    A[:3, :3] = np.stack([x, up, z])
    return A


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _visible(paths) -> list[Path]:
    """``paths`` without hidden files (a leading dot: macOS's ``._name`` copies beside each file, editors' swap
    files), which are never frames."""
    return [p for p in paths if not p.name.startswith(".")]


def _last_number(name: str) -> int | None:
    m = re.findall(r"\d+", name)
    return int(m[-1]) if m else None


def _check_pose(c2w: np.ndarray, where: str) -> np.ndarray:
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise SequenceError(f"{where}: pose is not a finite 4x4 matrix; fix or remove it")
    R = c2w[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise SequenceError(f"{where}: pose rotation is not orthonormal (det {np.linalg.det(R):.3f}); "
                            "write rigid camera-to-world matrices")
    if np.abs(c2w[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise SequenceError(f"{where}: last pose row must be 0 0 0 1")
    return c2w


def _numbers(path: Path) -> list[tuple[int, list[float]]]:
    """Non-comment lines of a text file as (line number, floats); commas count as spaces."""
    if not path.is_file():
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete")
    try:
        return number_rows(path.read_text(encoding="utf-8-sig", errors="replace"), path)
    except OSError as e:
        raise SequenceError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise SequenceError(str(e)) from None


MAX_PIXELS = 8192 * 8192  # a larger image is refused before it is decoded (decompression bombs)


def _open_image(path: Path, data: bytes | None = None):
    """PIL image of ``path`` (or of ``data``, its bytes, e.g. read from an archive), refused (SequenceError naming
    it) when it claims more than MAX_PIXELS."""
    from PIL import Image

    im = Image.open(path if data is None else io.BytesIO(data))
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise SequenceError(f"{path} claims {im.width}x{im.height} pixels, more than this tool reads; "
                            "it is corrupt or not a camera frame")
    return im


def _read_rgb(path: Path, data: bytes | None = None) -> np.ndarray:
    """(H, W, 3) uint8 of the image file ``path`` (or of ``data``, its bytes)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_image(path, data) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # a 16-bit grey (IR, mono) camera: scale, not clip
                grey = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
                grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, SequenceError):
            raise
        why = "not a format this reader knows" if isinstance(e, UnidentifiedImageError) else str(e)[:80]
        raise SequenceError(f"cannot read {path}: not a valid image ({why}); copy the file again or remove the "
                            "frame") from None


def _read_confidence(path: Path) -> np.ndarray:
    """(H, W) ARKit depth confidence (0 low, 1 medium, 2 high) from an 8-bit PNG."""
    from PIL import UnidentifiedImageError

    try:
        with _open_image(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, SequenceError):
            raise
        raise SequenceError(f"cannot read {path}: not a valid confidence image; copy it again, or set "
                            f"min_confidence 0 in {CONFIG_FILE} to use the depth unmasked") from None


def _read_exr(path: Path) -> np.ndarray:
    """The depth channel of an OpenEXR image as (H, W) float32: its only channel, else Z, depth, Y or R (Blender
    writes depth as Z, or into R, G and B alike)."""
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            if len(channels) == 1:
                values = next(iter(channels.values())).pixels
            else:
                name = next((n for n in ("Z", "depth", "Depth", "Y", "R", "V") if n in channels), None)
                if name is None:
                    raise SequenceError(f"{path}: an EXR with channels {', '.join(sorted(channels))[:60]} and no "
                                        "Z, depth, Y or R; write the depth as one channel")
                values = channels[name].pixels
    except FileNotFoundError:
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
    except (OSError, RuntimeError, ValueError, TypeError) as e:
        raise SequenceError(f"cannot read {path}: not a valid EXR image ({str(e)[:80]}); copy the file again or "
                            "remove the frame") from None
    values = np.asarray(values)
    if values.ndim == 3:  # an RGB(A) channel group
        values = values[..., 0]
    if values.ndim != 2:
        raise SequenceError(f"{path}: EXR depth must be an (H, W) image, got {values.shape}")
    return values.astype(np.float32)


def _read_depth(path: Path, scale: float, invalid: int | None = None, float_scale: float = 1.0) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG or an integer .npy (value * ``scale``), or a float .npy or an
    OpenEXR image (value * ``float_scale``: metres unless the format says otherwise); 0 = invalid."""
    if path.suffix.lower() == ".exr":
        d = _read_exr(path) * np.float32(float_scale)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    if path.suffix.lower() == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
        except (OSError, ValueError) as e:
            why = "it holds Python objects, which are never loaded" if "object" in str(e).lower() else str(e)[:80]
            raise SequenceError(f"cannot read {path}: {why}; write a float (H, W) .npy in metres") from None
        if d.ndim != 2 or not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
            raise SequenceError(f"{path}: depth .npy must be an (H, W) array of float metres or integer depth units "
                                f"(e.g. millimetres), got {d.dtype} {d.shape}")
        if np.issubdtype(d.dtype, np.integer):  # depth units, as a 16-bit PNG holds them (Stray Scanner's mm)
            raw = d
            d = raw.astype(np.float32) * np.float32(scale)
            if invalid is not None:
                d[raw == invalid] = 0.0
        else:
            d = d.astype(np.float32) * np.float32(float_scale)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_image(path) as im:
            raw = np.asarray(im)
    except FileNotFoundError:
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, SequenceError):
            raise
        raise SequenceError(f"cannot read {path}: not a valid depth PNG ({str(e)[:80]}); "
                            "copy the file again or remove the frame") from None
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer) or raw.dtype.itemsize < 2:
        raise SequenceError(f"{path}: depth PNG must be single-channel 16-bit, got {raw.dtype} {raw.shape}"
                            f"{' (an 8-bit PNG has lost the depth precision; export it as 16-bit)' if raw.dtype == np.uint8 else ''}")
    raw = raw.astype(np.uint16) if raw.dtype != np.uint16 else raw
    d = raw.astype(np.float32) * np.float32(scale)
    if invalid is not None:
        d[raw == invalid] = 0.0
    return d


def _load_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError, json.JSONDecodeError) as e:
        raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); fix or delete it") from None
    if not isinstance(cfg, dict):
        raise SequenceError(f"{path} must hold a JSON object such as {{\"depth_scale\": 0.001}}")
    return cfg


def _K_from_config(cfg: dict, where: Path) -> np.ndarray | None:
    try:
        if "K" in cfg:
            K = np.asarray(cfg["K"], dtype=np.float64).reshape(3, 3)
        elif all(k in cfg for k in ("fx", "fy", "cx", "cy")):
            K = np.array([[cfg["fx"], 0.0, cfg["cx"]], [0.0, cfg["fy"], cfg["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
        else:
            return None
    except (TypeError, ValueError):
        raise SequenceError(f"{where / CONFIG_FILE}: K must be 3x3 numbers (or give fx, fy, cx, cy)") from None
    return _check_K(K, where / CONFIG_FILE)


def _check_K(K: np.ndarray, where) -> np.ndarray:
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SequenceError(f"{where}: intrinsics need positive finite focal lengths")
    return K


def _check_K_for_image(K: np.ndarray, width: int, height: int, where) -> None:
    """Focal lengths and principal point that a real camera of this image size can have: the principal point
    within the middle 70 % of the image (intrinsics of the camera at another resolution put it elsewhere, e.g.
    ScanNet's 1296x968 colour K on its 640x480 images: cx 648)."""
    side = max(width, height)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (0.05 * side <= fx <= 100 * side and 0.05 * side <= fy <= 100 * side
            and 0.15 * width <= cx + 0.5 <= 0.85 * width and 0.15 * height <= cy + 0.5 <= 0.85 * height):
        raise SequenceError(f"{where}: intrinsics fx={fx:g} fy={fy:g} cx={cx:g} cy={cy:g} do not fit a "
                            f"{width}x{height} image; check the intrinsics are in pixels of this image size")


def _min_confidence(cfg: dict, folder: Path) -> int:
    """``min_confidence`` from the config (ARKit's depth confidence 0..2, default 1: the low one is dropped)."""
    value = cfg.get("min_confidence", 1)
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise SequenceError(f"{folder / CONFIG_FILE}: min_confidence must be 0, 1 or 2, got {value!r}")
    return int(value)


def _metres_per_unit(value, source: str) -> float:
    """A depth scale (metres per depth unit) that ``source`` ("file: key") gives: a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= 10 and np.isfinite(value)):
        raise SequenceError(f"{source} must be a positive number of metres per depth unit (e.g. 0.001 for "
                            f"millimetres), got {value!r}")
    return float(value)


def _depth_scale(cfg: dict, where: Path, default: float) -> float:
    """``depth_scale`` from the config (metres per depth unit): a finite positive number."""
    return _metres_per_unit(cfg.get("depth_scale", default), f"{where / CONFIG_FILE}: depth_scale")


def _read_intrinsics(path: Path) -> np.ndarray:
    """A 3x3 matrix (9 numbers), a 4x4 one with it in the top left (ScanNet), or ``fx fy cx cy`` (4 numbers)."""
    vals = [v for _, row in _numbers(path) for v in row]
    if len(vals) == 16 and np.allclose(np.reshape(vals, (4, 4))[[0, 1, 2, 3, 3, 3], [3, 3, 3, 0, 1, 2]], 0):
        vals = list(np.reshape(vals, (4, 4))[:3, :3].ravel())  # ScanNet's 4x4 intrinsic_color.txt
    if len(vals) == 9:
        K = np.asarray(vals, dtype=np.float64).reshape(3, 3)
    elif len(vals) == 4:
        fx, fy, cx, cy = vals
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    else:
        raise SequenceError(f"{path}: expected a 3x3 matrix (9 numbers) or 'fx fy cx cy', got {len(vals)} numbers")
    return _check_K(K, path)


# --------------------------------------------------------------------------------------------- sequences


@dataclass(eq=False)
class Sequence:
    """A recorded sequence opened lazily: ``len(seq)``, ``seq[i]`` -> Frame, ``for f in seq``.

    path: the folder.  format: one of FORMATS.  c2ws: (N, 4, 4) float64 poses, already +Y-up (cheap to use
    without reading images).  timestamps: (N,) seconds (TUM) or frame numbers.  world_up: the source axis
    that was mapped to +Y.  has_depth: False for point-cloud sequences.  notes: what the reader assumed
    or dropped.  Frames keep their position in the sequence as ``Frame.index``; a few are cached.
    """

    path: Path
    format: str
    c2ws: np.ndarray
    timestamps: np.ndarray
    world_up: str
    has_depth: bool = True
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    _cache: "OrderedDict[int, Frame]" = field(default_factory=OrderedDict, repr=False)
    cache_size: int = 4

    def __len__(self) -> int:
        return int(len(self.c2ws))

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {i} is outside the sequence (0..{n - 1})")
        f = self._cache.get(i)
        if f is None:
            f = self._read(i)
            self._cache[i] = f
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return f

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def _read(self, i: int) -> Frame:  # pragma: no cover - every format overrides it
        raise NotImplementedError

    def files(self, i: int) -> list[Path]:
        """The files frame ``i`` is read from (for messages)."""
        return []

    def close(self) -> None:
        """Release what reading holds open (a video decoder); reading again opens it again."""

    def describe(self) -> dict:
        """JSON-able: enough to open the same sequence again with :func:`open_sequence`."""
        return {"path": str(self.path), "format": self.format, "frames": len(self), "world_up": self.world_up,
                **self.options}


@dataclass(eq=False)
class _ImageSequence(Sequence):
    """RGB-D frames from per-frame image files (TUM, 7-Scenes, generic)."""

    rgb_files: list[Path] = field(default_factory=list)
    depth_files: list[Path] = field(default_factory=list)
    Ks: list[np.ndarray] | np.ndarray = field(default_factory=list)
    depth_scale: float = 0.001  # metres per unit of a 16-bit PNG or an integer .npy
    float_depth_scale: float = 1.0  # metres per unit of a float .npy
    depth_invalid: int | None = None
    default_K_for: tuple[int, int] | None = None  # (W, H) the format's default Ks are for (none were given)
    colour_to_depth_size: bool = False  # a colour image of another size (same shape) is resized to the depth's
    colour_K: bool = False  # Ks describe the colour images as stored (resized with them); else the depth camera
    resize_said: bool = False  # a note says the colour is resized (the opener's, or the first frame's)
    confidence_files: list[Path] = field(default_factory=list)  # ARKit's depth confidence (0..2) per frame, if any
    min_confidence: int = 1  # depth of a lower confidence is dropped
    _size: tuple[int, int] | None = None  # (H, W) of the first frame read

    def files(self, i: int) -> list[Path]:
        return [self.rgb_files[i], self.depth_files[i]]

    def _colour(self, i: int) -> np.ndarray:
        return _read_rgb(self.rgb_files[i])

    def _depth(self, i: int) -> np.ndarray:
        depth = _read_depth(self.depth_files[i], self.depth_scale, self.depth_invalid, self.float_depth_scale)
        if self.confidence_files and self.min_confidence > 0:
            confidence = _read_confidence(self.confidence_files[i])
            if confidence.shape == depth.shape:
                depth[confidence < self.min_confidence] = 0.0
        return depth

    def _read(self, i: int) -> Frame:
        rgb, depth = self._colour(i), self._depth(i)
        K = np.asarray(self.Ks[i] if isinstance(self.Ks, list) else self.Ks, dtype=np.float64)
        if depth.shape != rgb.shape[:2]:
            rgb, K = self._colour_at_depth_size(i, rgb, depth.shape, K)
        if self._size is None:
            self._size = rgb.shape[:2]
        elif rgb.shape[:2] != self._size:
            raise SequenceError(f"{self.rgb_files[i]} is {rgb.shape[1]}x{rgb.shape[0]} but the sequence's frames "
                                f"are {self._size[1]}x{self._size[0]}; every frame must have one size")
        if self.default_K_for is not None and (rgb.shape[1], rgb.shape[0]) != self.default_K_for:
            w, h = self.default_K_for
            raise SequenceError(f"{self.rgb_files[i]} is {rgb.shape[1]}x{rgb.shape[0]}, but no intrinsics were given "
                                f"and the {self.format} default is for {w}x{h} frames; put the camera's \"K\": "
                                f"[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in {self.path / CONFIG_FILE}")
        _check_K_for_image(K, rgb.shape[1], rgb.shape[0], self.rgb_files[i])
        return Frame(index=i, rgb=rgb, depth=depth, K=K.copy(), c2w=self.c2ws[i].copy())

    def _colour_at_depth_size(self, i: int, rgb: np.ndarray, depth_shape: tuple[int, int],
                              K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``i``'s colour resized to its depth's (H, W) (phone captures, 12-Scenes, ScanNet: one viewpoint,
        two resolutions) and the K that goes with it; refused where the format does not allow it or the two
        images have another shape (then they are not one camera)."""
        (dh, dw), (ch, cw) = depth_shape, rgb.shape[:2]
        if not self.colour_to_depth_size or abs(dw * ch - dh * cw) > 0.01 * dw * ch:
            why = "" if self.colour_to_depth_size else "; this format needs both at one size"
            raise SequenceError(f"{self.depth_files[i]}: depth is {dw}x{dh} but its colour image "
                                f"{self.rgb_files[i].name} is {cw}x{ch}{why}; register depth to colour first")
        from PIL import Image

        if self.colour_K:
            _check_K_for_image(K, cw, ch, self.rgb_files[i])
            K = resize_intrinsics(K, cw, ch, dw, dh)
        if not self.resize_said:
            self.resize_said = True
            self.notes.append(f"colour images ({cw}x{ch}) are resized to their depth's size ({dw}x{dh})"
                              + (", the colour camera's intrinsics with them" if self.colour_K else ""))
        return np.asarray(Image.fromarray(rgb).resize((dw, dh), Image.BILINEAR)), K


# --------------------------------------------------------------------------------------------- TUM


def _time_file_rows(path: Path, pairs: int, expected: str) -> list[list[tuple[float, str]]]:
    """Non-comment lines of a TUM-style list, each ``pairs`` times ``timestamp filename`` -> per line
    [(time, file name)]; SequenceError naming the line that is not (``expected`` says the layout)."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        try:
            if len(parts) < 2 * pairs:
                raise ValueError
            rows.append([(float(parts[2 * k]), parts[2 * k + 1]) for k in range(pairs)])
        except ValueError:
            raise SequenceError(f"{path}:{n}: expected '{expected}', got {s[:60]!r}") from None
    if not rows:
        raise SequenceError(f"{path} lists no images; is the download complete?")
    return rows


def _read_tum_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    if not path.is_file():
        raise SequenceError(f"{path} is missing; a TUM folder needs rgb.txt, depth.txt and groundtruth.txt")
    rows = _time_file_rows(path, 1, "timestamp filename")
    return np.array([t for (t, _), in rows], np.float64), [path.parent / f for (_, f), in rows]


def associate(t_a: np.ndarray, t_b: np.ndarray, max_dt: float = TUM_MAX_DT) -> list[tuple[int, int]]:
    """One-to-one nearest-timestamp matching as TUM's associate.py: candidate pairs closer than ``max_dt``,
    taken greedily by increasing time difference. Returns (i, j) pairs sorted by i."""
    order = np.argsort(t_b)
    tb = t_b[order]
    cand = []
    for i, t in enumerate(t_a):
        lo, hi = np.searchsorted(tb, [t - max_dt, t + max_dt])
        for k in range(lo, hi):
            d = abs(tb[k] - t)
            if d <= max_dt:
                cand.append((d, i, int(order[k])))
    cand.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def interpolate_poses(gt: np.ndarray, t: np.ndarray, max_gap: float = TUM_MAX_GT_GAP,
                      max_dt: float = TUM_MAX_DT) -> tuple[np.ndarray, np.ndarray]:
    """TUM ground truth (M, 8) ``t tx ty tz qx qy qz qw`` -> poses (N, 4, 4) at times ``t`` (N,)
    (linear translation, slerp rotation) and a (N,) bool mask of the times it knows: inside the ground truth
    with bracketing samples at most ``max_gap`` seconds apart (no interpolation across a motion-capture
    dropout), or within ``max_dt`` of a sample (ground truth written once per image, at any rate, as TUM's
    associate.py matches it)."""
    from scipy.spatial.transform import Rotation, Slerp

    order = np.argsort(gt[:, 0], kind="stable")
    gt = gt[order]
    keep = np.concatenate([[True], np.diff(gt[:, 0]) > 0])
    gt = gt[keep]
    ts = gt[:, 0]
    inside = (t >= ts[0]) & (t <= ts[-1])
    k = np.clip(np.searchsorted(ts, t), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(t), np.int64)
    nearest = np.minimum(np.abs(ts[k] - t), np.abs(ts[k - 1] - t)) if len(ts) > 1 else np.abs(ts[0] - t)
    ok = nearest <= max_dt
    if len(ts) > 1:
        ok |= inside & (ts[k] - ts[k - 1] <= max_gap)
    poses = np.tile(np.eye(4), (len(t), 1, 1))
    if ok.any():
        tq = np.clip(t[ok], ts[0], ts[-1])  # a time just outside the ends takes the end's pose
        if len(ts) == 1:
            poses[ok, :3, :3] = Rotation.from_quat(gt[0, 4:8]).as_matrix()
            poses[ok, :3, 3] = gt[0, 1:4]
        else:
            poses[ok, :3, :3] = Slerp(ts, Rotation.from_quat(gt[:, 4:8]))(tq).as_matrix()
            poses[ok, :3, 3] = np.stack([np.interp(tq, ts, gt[:, c]) for c in (1, 2, 3)], axis=1)
    return poses, ok


def _read_associations(path: Path) -> tuple[np.ndarray, list[Path], np.ndarray, list[Path]]:
    """associate.py's output ``t1 file1 t2 file2`` per line (ORB-SLAM's and ICL-NUIM's TUM-format folders)
    -> (colour times, colour files, depth times, depth files), one pair per line. The depth column is the one
    whose path names depth (ICL-NUIM writes depth first); with neither, the first is colour, as associate.py
    writes ``rgb.txt depth.txt``."""
    rgb, depth = [], []
    for a, b in _time_file_rows(path, 2, "time colour-file time depth-file"):
        if "depth" in a[1].lower() and "depth" not in b[1].lower():
            a, b = b, a
        rgb.append(a)
        depth.append(b)
    return (np.array([t for t, _ in rgb], np.float64), [path.parent / f for _, f in rgb],
            np.array([t for t, _ in depth], np.float64), [path.parent / f for _, f in depth])


def _tum_groundtruth(folder: Path) -> Path:
    """groundtruth.txt, else the one ``*.gt.freiburg`` (ICL-NUIM's TUM-format trajectory)."""
    gt_path = folder / "groundtruth.txt"
    if not gt_path.is_file():
        freiburg = _visible(folder.glob("*.gt.freiburg"))
        if len(freiburg) == 1:
            return freiburg[0]
        raise SequenceError(f"{gt_path} is missing; a TUM folder needs it for the camera poses "
                            "(download the sequence's groundtruth.txt)")
    return gt_path


def _tum_intrinsics(folder: Path, cfg: dict, icl_nuim: bool) -> tuple[np.ndarray | None, str | None]:
    """(K, note): worldstudio.json's, else ``calibration.txt`` (``fx fy cx cy``, as ETH3D's SLAM benchmark ships
    beside its TUM-format lists), else None with a note that the default (TUM's, or ICL-NUIM's) is used."""
    K = _K_from_config(cfg, folder)
    if K is None and (folder / "calibration.txt").is_file():
        K = _read_intrinsics(folder / "calibration.txt")
    if K is not None:
        return K, None
    if icl_nuim:
        return None, "no calibration.txt: using ICL-NUIM's camera fx=481.2, fy=480, cx=319.5, cy=239.5"
    return None, ("no calibration.txt: using TUM's default fx=fy=525, cx=319.5, cy=239.5 (its advice for every "
                  f"sequence); put 'fx fy cx cy' in calibration.txt or K in {CONFIG_FILE} for another camera")


def _is_icl_nuim(gt_path: Path, gt_times: np.ndarray, image_times: np.ndarray) -> bool:
    """ICL-NUIM's TUM-format release: its ``*.gt.freiburg``, or (renamed groundtruth.txt, as SLAM repositories'
    download scripts do) frame numbers for times throughout (TUM's are Unix times, ETH3D's fractional seconds)."""
    if gt_path.name.endswith(".gt.freiburg"):
        return True
    times = np.concatenate([gt_times, image_times])
    return bool(len(gt_times) and np.isfinite(times).all() and (times == np.round(times)).all()
                and times.min() >= 0 and times.max() < 1e5)


def _tum_recorded_by_tum(gt_path: Path) -> bool:
    """A sequence of TUM's own benchmark (its ground truth names the freiburg bag it came from)."""
    try:
        with gt_path.open("rb") as f:
            head = f.read(400)
    except OSError:
        return False
    return b"rgbd_dataset_freiburg" in head or gt_path.parent.name.startswith("rgbd_dataset_freiburg")


def _icl_nuim_to_right_handed(c2ws: np.ndarray) -> np.ndarray:
    """ICL-NUIM's ``*.gt.freiburg`` poses (N, 4, 4) -> OpenCV c2w in a right-handed world: its renderer's world is
    left-handed and y-up, its images top-down, so every pose is reflected in the xz plane (S T S, S = diag(1, -1,
    1, 1); di-fusion's and cuVSLAM's loaders do the same: unreflected poses fuse into a scrambled map). The
    world is then y-down (up is -y)."""
    S = np.diag([1.0, -1.0, 1.0, 1.0])
    return S @ c2ws @ S


def _open_tum(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    notes = []
    lists = ("rgb.txt", "depth.txt")
    if not (folder / "rgb.txt").is_file() and (folder / "associations.txt").is_file():
        rgb_t, rgb_f, dep_t, dep_f = _read_associations(folder / "associations.txt")
        pairs = [(i, i) for i in range(len(rgb_t))]  # associated already
        lists = ("associations.txt", "associations.txt")
    else:
        rgb_t, rgb_f = _read_tum_list(folder / "rgb.txt")
        dep_t, dep_f = _read_tum_list(folder / "depth.txt")
        pairs = associate(rgb_t, dep_t)
    gt_path = _tum_groundtruth(folder)
    try:
        gt = read_tum_rows(gt_path, check=False)  # (M, 8) t tx ty tz qx qy qz qw
    except ValueError as e:
        raise SequenceError(str(e)) from None
    icl_nuim = _is_icl_nuim(gt_path, gt[:, 0], rgb_t)
    valid = valid_tum_rows(gt)
    if len(gt) and not valid.any():
        raise SequenceError(f"{gt_path}: every pose holds NaN/inf or a zero quaternion; pass a trajectory with poses")
    if not valid.all():
        notes.append(f"{int((~valid).sum())} lines of {gt_path.name} hold NaN/inf or a zero quaternion (tracking "
                     "lost?): no pose is taken from them")
        gt = gt[valid]
    if not len(gt):
        raise SequenceError(f"{gt_path} holds no poses; download the complete file")
    if len(pairs) < len(rgb_t):
        notes.append(f"{len(rgb_t) - len(pairs)} colour images have no depth within {TUM_MAX_DT} s (skipped)")
    if not pairs:
        raise SequenceError(f"{folder}: no colour image has a depth image within {TUM_MAX_DT} s; "
                            "rgb.txt and depth.txt do not belong together")
    ri = np.array([p[0] for p in pairs])
    di = np.array([p[1] for p in pairs])
    in_time = np.argsort(rgb_t[ri], kind="stable")  # played in time order, however rgb.txt is sorted
    ri, di = ri[in_time], di[in_time]
    poses, ok = interpolate_poses(gt, rgb_t[ri])
    if not ok.all():
        notes.append(f"{int((~ok).sum())} frames lie outside the ground truth or in a gap (skipped)")
    if not ok.any():
        t0, t1, g0, g1 = rgb_t[ri].min(), rgb_t[ri].max(), gt[:, 0].min(), gt[:, 0].max()
        if t1 < g0 or t0 > g1:
            raise SequenceError(f"{gt_path} ({g0:.2f}..{g1:.2f}) does not cover the image timestamps "
                                f"({t0:.2f}..{t1:.2f}); is it from another sequence?")
        raise SequenceError(f"{gt_path} has no pose within {TUM_MAX_DT} s of any image and its poses are more "
                            f"than {TUM_MAX_GT_GAP} s apart around each; write a pose at each image's timestamp")
    ri, di, poses = ri[ok], di[ok], poses[ok]
    rgb_files = [rgb_f[i] for i in ri]
    depth_files = [dep_f[j] for j in di]
    for listed, files in zip(lists, (rgb_files, depth_files)):
        missing = next((p for p in files if not p.is_file()), None)
        if missing is not None:
            raise SequenceError(f"{missing} is missing (listed in {listed}); copy it again or remove its line "
                                f"from {listed}")
    K, k_note = _tum_intrinsics(folder, cfg, icl_nuim)
    notes += [k_note] if k_note else []
    if icl_nuim:
        poses = _icl_nuim_to_right_handed(poses)
        notes.append(f"ICL-NUIM ({gt_path.name}, frame numbers as times): its left-handed y-up poses are reflected "
                     "to a right-handed world")
    if up == "auto":
        up = _tum_up(poses, icl_nuim, tum_own=K is None or _tum_recorded_by_tum(gt_path), notes=notes)
    return _ImageSequence(
        path=folder, format="tum", c2ws=up_rotation(up) @ poses, timestamps=rgb_t[ri], world_up=up, notes=notes,
        rgb_files=rgb_files, depth_files=depth_files,
        Ks=(ICL_NUIM_K if icl_nuim else TUM_K).copy() if K is None else K,
        default_K_for=(640, 480) if K is None else None, depth_scale=_depth_scale(cfg, folder, TUM_DEPTH_SCALE))


def _tum_up(c2ws: np.ndarray, icl_nuim: bool, tum_own: bool, notes: list[str]) -> str:
    """The up axis of a TUM-format world: ICL-NUIM's (reflected) is y-down, TUM's own motion-capture world is
    z-up (``tum_own``: TUM's default camera, or a ground truth that names its freiburg bag); another's (a
    ``calibration.txt``: ETH3D, a SLAM system's output) has no documented axis, so the one of y and z nearer the
    cameras' mean up is taken, said in a note."""
    if icl_nuim:
        return "-y"
    return "+z" if tum_own else _up_from_cameras(c2ws, notes)


# --------------------------------------------------------------------------------------------- 7-Scenes


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
    """(4, 4) c2w from a file of one pose (16 numbers, or 12 of a 3x4); all-NaN when it holds inf/NaN (tracking
    lost: the caller skips the frame)."""
    vals = [v for _, r in _numbers(path) for v in r]
    if len(vals) not in (12, 16):
        raise SequenceError(f"{path}: expected a 4x4 camera-to-world matrix (16 numbers), got {len(vals)}")
    M = np.eye(4)
    M[: len(vals) // 4] = np.asarray(vals, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(M).all():
        return np.full((4, 4), np.nan)
    return _check_pose(M, str(path))


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
        notes.append("no camera-intrinsics.txt: using 7-Scenes' documented fx=fy=585, cx=320, cy=240")
    kept, depth_files, poses = [], [], []
    for c in colors:
        stem = c.name[: c.name.index(".color")]
        d, p = c.with_name(stem + ".depth.png"), c.with_name(stem + ".pose.txt")
        for f in (d, p):
            if not f.is_file():
                raise SequenceError(f"{f} is missing (its colour image {c.name} exists); copy it again or "
                                    f"delete {c.name}")
        M = _read_pose_file(p)
        if not np.isfinite(M).all():
            notes.append(f"{p.name} has an invalid (inf/NaN) pose: frame skipped")
            continue
        poses.append(M)
        kept.append(c)
        depth_files.append(d)
    colors = kept
    if not poses:
        raise SequenceError(f"{folder}: no frame has a valid pose")
    A = up_rotation(up)
    return _ImageSequence(
        path=folder, format="7scenes", c2ws=A @ np.stack(poses),
        timestamps=np.array([_last_number(c.name) or i for i, c in enumerate(colors)], dtype=np.float64),
        world_up=up, notes=notes, rgb_files=colors, depth_files=depth_files, Ks=K, default_K_for=default_K_for,
        depth_scale=_depth_scale(cfg, folder, depth_scale), depth_invalid=65535,
        colour_to_depth_size=colour_to_depth_size, resize_said=colour_to_depth_size)


# --------------------------------------------------------------------------------------------- generic


def read_poses_file(path: Path, lost_tracking: bool = False) -> np.ndarray:
    """(N, 4, 4) c2w from ``poses.txt``: per line 16 numbers (row-major 4x4), 12 (3x4) or a TUM line
    ``timestamp tx ty tz qx qy qz qw``; a 4x4 may also span four lines of 4 numbers. ``lost_tracking``: a pose
    of inf/NaN numbers (ScanNet and BundleFusion write -inf where tracking was lost) is returned all-NaN for the
    caller to skip, instead of refused."""
    rows = _numbers(path)
    if rows and all(len(r) == 4 for _, r in rows) and len(rows) % 4 == 0:
        rows = [(rows[i][0], [v for _, r in rows[i:i + 4] for v in r]) for i in range(0, len(rows), 4)]
    out = []
    for n, r in rows:
        M = np.eye(4)
        if len(r) in (12, 16) and lost_tracking and not np.isfinite(r).all():
            out.append(np.full((4, 4), np.nan))
            continue
        if len(r) == 16:
            M = np.asarray(r, dtype=np.float64).reshape(4, 4)
        elif len(r) == 12:
            M[:3] = np.asarray(r, dtype=np.float64).reshape(3, 4)
        elif len(r) == 8:
            try:
                M = tum_rows_to_c2ws(np.asarray([r]), f"{path}:{n}")[1][0]
            except ValueError:
                raise SequenceError(f"{path}:{n}: invalid quaternion") from None
        else:
            raise SequenceError(f"{path}:{n}: expected 16 numbers (a row-major c2w 4x4), 12 (3x4) or a TUM line "
                                f"'t tx ty tz qx qy qz qw', got {len(r)}")
        out.append(_check_pose(M, f"{path}:{n}"))
    if not out:
        raise SequenceError(f"{path} holds no poses")
    return np.stack(out)


def _images_in(folder: Path, sub: str, needs: str) -> list[Path]:
    """The .png/.jpg images of ``folder/sub`` in natural file-name order (2 before 10)."""
    images = folder / sub
    if not images.is_dir():
        raise SequenceError(f"{images} is missing; {needs}")
    found = sorted((p for p in _visible(images.iterdir()) if p.suffix.lower() in _IMAGE_EXT), key=_natural_key)
    if not found:
        raise SequenceError(f"{images} holds no .png/.jpg images")
    return found


def _depth_files_by_stem(rgb_files: list[Path], depth_dir: Path, folder: Path) -> list[Path]:
    """The depth file (.npy or .png) of the same name as each image, from ``depth_dir``."""
    if not depth_dir.is_dir():
        raise SequenceError(f"{depth_dir} is missing; put one depth .npy or .exr (metres) or 16-bit .png per image "
                            "there")
    depth_all, other_depth = {}, {}
    for p in _visible(depth_dir.iterdir()):
        (depth_all if p.suffix.lower() in (".npy", ".png", ".exr") else other_depth)[p.stem] = p
    depth_files = []
    for p in rgb_files:
        d = depth_all.get(p.stem)
        if d is None and p.stem in other_depth:
            raise SequenceError(f"{other_depth[p.stem]}: {other_depth[p.stem].suffix} depth is not read; convert it "
                                "to .npy or .exr (float metres) or a 16-bit .png (millimetres, or set depth_scale)")
        if d is None:
            raise SequenceError(f"{depth_dir / (p.stem + '.npy')} (or .png, .exr) is missing for "
                                f"{p.relative_to(folder)}; depth files must have the same names as the images")
        depth_files.append(d)
    return depth_files


def _drop_lost_poses(poses: np.ndarray, files: list[list[Path]], where: Path,
                     notes: list[str]) -> tuple[np.ndarray, list[list[Path]], np.ndarray]:
    """Skip the frames whose pose is inf/NaN (ScanNet and BundleFusion write -inf where tracking was lost), with a
    note -> (poses kept, each list of ``files`` kept, the kept frames' indices); refused when none is left."""
    lost = ~np.isfinite(poses).all(axis=(1, 2))
    if lost.all():
        raise SequenceError(f"{where}: every pose is inf/NaN (tracking lost); no frame can be placed")
    if lost.any():
        name = where.name + ("/" if where.is_dir() else "")
        notes.append(f"{int(lost.sum())} frames have an inf/NaN pose in {name} (tracking lost): skipped")
    keep = np.flatnonzero(~lost)
    return poses[keep], [[fs[i] for i in keep] for fs in files], keep


def _one_pose_per_frame(poses_file: Path, files: list[list[Path]], images_in: str,
                        notes: list[str]) -> tuple[np.ndarray, list[list[Path]], np.ndarray]:
    """The poses of ``poses_file`` (:func:`read_poses_file`), one per image of ``files[0]`` in order; the frames
    whose pose is lost are dropped (:func:`_drop_lost_poses`)."""
    poses = read_poses_file(poses_file, lost_tracking=True)
    if len(poses) != len(files[0]):
        raise SequenceError(f"{poses_file} has {len(poses)} poses but {images_in} has {len(files[0])} images; "
                            "write one pose per image, in natural file-name order (2 before 10)")
    return _drop_lost_poses(poses, files, poses_file, notes)


def _open_generic(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    rgb_files = _images_in(folder, "rgb", "a generic folder needs rgb/, depth/, poses.txt and intrinsics")
    depth_files = _depth_files_by_stem(rgb_files, folder / "depth", folder)
    notes: list[str] = []
    poses, (rgb_files, depth_files), kept = _one_pose_per_frame(folder / "poses.txt", [rgb_files, depth_files],
                                                                "rgb/", notes)
    camera = str(cfg.get("camera", "opencv")).lower()
    if camera not in ("opencv", "opengl"):
        raise SequenceError(f"{folder / CONFIG_FILE}: camera must be 'opencv' or 'opengl', got {camera!r}")
    if camera == "opengl":
        poses = flip_cv_gl(poses)  # OpenGL -> OpenCV
    K = _K_from_config(cfg, folder)
    if K is None:
        intr = folder / "intrinsics.txt"
        if not intr.is_file():
            raise SequenceError(f"{intr} is missing; write 'fx fy cx cy' (or a 3x3 matrix) there, or put "
                                f"fx/fy/cx/cy in {CONFIG_FILE}")
        K = _read_intrinsics(intr)
    A = up_rotation(up)
    return _ImageSequence(
        path=folder, format="generic", c2ws=A @ poses, timestamps=kept.astype(np.float64),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        options={"camera": camera})


# --------------------------------------------------------------------------------------------- Record3D


class _Record3DArchive:
    """The files of a Record3D capture: its ``.r3d`` file (a zip, the members maybe under one top folder) or the
    folder it was unzipped into (``metadata``, ``rgbd/0.jpg``, ``.depth``, ``.conf``), or the app's "EXR + JPG"
    export (``metadata.json``, ``rgb/0.jpg``, ``depth/0.exr``, as nerfstudio's ``ns-process-data record3d`` takes
    it). Members are named as there; ``colour``, ``depth``, ``confidence`` (None: none) name frame N's."""

    def __init__(self, path: Path):
        self.path, self.prefix, self._zip = path, "", None
        self.names: set[str] | None = None  # the archive's members (None: a folder)
        exr_export = path.is_dir() and not (path / "metadata").is_file() and (path / "metadata.json").is_file()
        self.metadata = "metadata.json" if exr_export else "metadata"
        self.colour = "rgb/{}.jpg" if exr_export else "rgbd/{}.jpg"
        self.depth = "depth/{}.exr" if exr_export else "rgbd/{}.depth"
        self.confidence = None if exr_export else "rgbd/{}.conf"
        if path.is_file():
            try:
                with zipfile.ZipFile(path) as z:
                    names = z.namelist()
            except (zipfile.BadZipFile, OSError) as e:
                raise SequenceError(f"{path} is not a readable .r3d file (a zip archive: {str(e)[:60]}); export the "
                                    "capture from Record3D again") from None
            found = [n for n in names if n == "metadata" or n.endswith("/metadata")]
            if not found:
                raise SequenceError(f"{path} holds no Record3D metadata; is it a .r3d export of the Record3D app?")
            self.prefix = min(found, key=len)[: -len("metadata")]
            self.names = set(names)

    def where(self, name: str) -> Path:
        """Where member ``name`` is, for messages (inside the .r3d file, or in the folder)."""
        return self.path / (self.prefix + name)

    def has(self, name: str) -> bool:
        return (self.prefix + name) in self.names if self.names is not None else (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.has(name):
            raise SequenceError(f"{self.where(name)} is missing; export the capture from Record3D again")
        try:
            if self.names is None:
                return (self.path / name).read_bytes()
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            return self._zip.read(self.prefix + name)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise SequenceError(f"cannot read {self.where(name)} ({str(e)[:60]}); export the capture from Record3D "
                                "again") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _lzfse_array(data: bytes, dtype, shape: tuple[int, int], where: Path) -> np.ndarray:
    """Record3D's LZFSE-compressed raw (H, W) array (depth float32 metres, confidence uint8)."""
    import lzfse

    try:
        raw = lzfse.decompress(data)
    except (lzfse.error, ValueError) as e:
        raise SequenceError(f"cannot read {where}: not LZFSE data ({str(e)[:60] or type(e).__name__}); export the "
                            "capture again") from None
    expected = shape[0] * shape[1] * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise SequenceError(f"{where} holds {len(raw)} bytes, not a {shape[1]}x{shape[0]} {np.dtype(dtype).name} "
                            "image as the metadata says; export the capture again")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@dataclass(eq=False)
class _Record3DSequence(_ImageSequence):
    """Record3D's frames (``rgbd/N.jpg``, ``rgbd/N.depth``, ``rgbd/N.conf``, or the EXR export's), read from its
    archive."""

    archive: _Record3DArchive | None = None
    depth_shape: tuple[int, int] = (0, 0)  # (dh, dw)
    min_confidence: int = 1
    members: list[int] = field(default_factory=list)  # the capture's frame number of each frame

    def files(self, i: int) -> list[Path]:
        return [self.archive.path]

    def close(self) -> None:
        self.archive.close()

    def _colour(self, i: int) -> np.ndarray:
        return _read_rgb(self.rgb_files[i], self.archive.read(self.archive.colour.format(self.members[i])))

    def _depth(self, i: int) -> np.ndarray:
        if self.depth_files[i].suffix == ".exr":  # the EXR export (a folder)
            return _read_depth(self.depth_files[i], 1.0)
        depth = _lzfse_array(self.archive.read(self.archive.depth.format(self.members[i])), np.float32,
                             self.depth_shape, self.depth_files[i]).copy()
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        conf = self.archive.confidence.format(self.members[i])
        if self.min_confidence > 0 and self.archive.has(conf):
            depth[_lzfse_array(self.archive.read(conf), np.uint8, self.depth_shape, self.archive.where(conf))
                  < self.min_confidence] = 0.0
        return depth


def _is_record3d_metadata(path: Path) -> bool:
    """``path`` is Record3D's metadata (a JSON object with its poses and K), not another tool's metadata.json."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else None
    except (OSError, UnicodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and "poses" in meta and "K" in meta


def _record3d_number(meta: dict, key: str, where: Path) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16384:
        raise SequenceError(f"{where}: metadata {key} must be an image side in pixels, got {value!r}")
    return value


def _open_record3d(path: Path, cfg: dict, up: str) -> _Record3DSequence:
    """A Record3D capture (a ``.r3d`` file or its unzipped folder): ``metadata`` (JSON: ``w h`` of the colour,
    ``dw dh`` of the depth, ``K`` column-major for the colour image, ``perFrameIntrinsicCoeffs`` ``[fx, fy, cx, cy]``
    per frame in newer versions, ``poses`` ``[qx, qy, qz, qw, tx, ty, tz]`` camera-to-world with OpenGL cameras,
    ``frameTimestamps``), ``rgbd/N.jpg``, ``rgbd/N.depth`` (LZFSE float32 metres), ``rgbd/N.conf`` (LZFSE uint8
    0..2). The colour is resized to the depth's size and K with it; depth below confidence 1 is dropped; ARKit's
    world is y-up."""
    archive = _Record3DArchive(path)
    where = archive.where(archive.metadata)
    try:
        meta = json.loads(archive.read(archive.metadata).decode("utf-8-sig"))
    except (UnicodeError, json.JSONDecodeError) as e:
        raise SequenceError(f"{where} is not valid JSON ({str(e)[:60]}); export the capture again") from None
    if not isinstance(meta, dict):
        raise SequenceError(f"{where} must hold a JSON object; export the capture again")
    w, h, dw, dh = (_record3d_number(meta, key, where) for key in ("w", "h", "dw", "dh"))
    try:
        poses = np.asarray(meta.get("poses"), dtype=np.float64)
        if poses.ndim != 2 or poses.shape[1] != 7 or not len(poses):
            raise ValueError
        coeffs = meta.get("perFrameIntrinsicCoeffs")
        coeffs = np.asarray(coeffs, dtype=np.float64).reshape(-1, 4) if coeffs else None
        per_frame = coeffs is not None and len(coeffs) == len(poses)
        K = None if per_frame else np.asarray(meta.get("K"), dtype=np.float64).reshape(3, 3).T  # column-major
    except (TypeError, ValueError):
        raise SequenceError(f"{where}: poses must be [qx, qy, qz, qw, tx, ty, tz] per frame and K 9 numbers (or "
                            "perFrameIntrinsicCoeffs [fx, fy, cx, cy] per frame); export the capture again") from None
    n = len(poses)
    try:  # in TUM's order 't tx ty tz qx qy qz qw' (scalar-last quaternions, as Record3D writes them)
        _, c2ws = tum_rows_to_c2ws(np.column_stack([np.zeros(n), poses[:, 4:7], poses[:, 0:4]]), where)
    except ValueError as e:
        raise SequenceError(f"{where}: a pose holds NaN/inf or a zero quaternion ({e}); export the capture "
                            "again") from None
    c2ws = flip_cv_gl(c2ws)  # OpenGL -> OpenCV cameras
    notes = []
    if n > 1 and np.allclose(c2ws, c2ws[0]):
        notes.append("every frame has the same pose (a front-camera capture has no tracking): they show one viewpoint")
    if per_frame:
        Ks = [_check_K(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), where) for fx, fy, cx, cy in coeffs]
    else:
        Ks = _check_K(K, where)
    members = [i for i in range(n) if archive.has(archive.colour.format(i)) and archive.has(archive.depth.format(i))]
    if not members:
        raise SequenceError(f"{archive.where(archive.colour.format(0))} and its depth are missing, as every frame's; "
                            "export the capture again")
    notes += [] if len(members) == n else [f"{n - len(members)} of the {n} poses have no colour and depth (skipped)"]
    stamps = meta.get("frameTimestamps")
    try:
        stamps = np.asarray(stamps, dtype=np.float64) if stamps is not None else None
    except (TypeError, ValueError):
        stamps = None
    if stamps is None or stamps.shape != (n,) or not np.isfinite(stamps).all():
        stamps = np.arange(n, dtype=np.float64) / float(meta.get("fps") or 1)
    min_confidence = _min_confidence(cfg, path)
    if min_confidence and archive.confidence and archive.has(archive.confidence.format(members[0])):
        notes.append(f"depth of confidence below {min_confidence} (of 0..2) is dropped")
    return _Record3DSequence(
        path=path, format="record3d", c2ws=up_rotation(up) @ c2ws[members], timestamps=stamps[members],
        world_up=up, notes=notes, rgb_files=[archive.where(archive.colour.format(i)) for i in members],
        depth_files=[archive.where(archive.depth.format(i)) for i in members],
        Ks=[Ks[i] for i in members] if isinstance(Ks, list) else Ks, colour_to_depth_size=True, colour_K=True,
        archive=archive, depth_shape=(dh, dw), min_confidence=min_confidence, members=members,
        options={"colour_size": [w, h]})


# --------------------------------------------------------------------------------------------- ARKitScenes

ARKITSCENES_ASSETS = (("lowres_wide", "lowres_depth"), ("wide", "highres_depth"))  # colour, its depth
ARKITSCENES_TRAJECTORY = "lowres_wide.traj"


def _read_arkitscenes_trajectory(path: Path) -> np.ndarray:
    """ARKitScenes' ``lowres_wide.traj``: per line ``timestamp ax ay az tx ty tz``, the world-to-camera rotation
    (axis-angle, radians) and translation, as its loaders read it (``TrajStringToMatrix``) -> the cameras as TUM
    rows (M, 8) ``t tx ty tz qx qy qz qw`` of their camera-to-world poses."""
    from scipy.spatial.transform import Rotation

    rows = _numbers(path)
    bad = next(((n, r) for n, r in rows if len(r) != 7), None)
    if bad:
        raise SequenceError(f"{path}:{bad[0]}: expected 7 numbers 'timestamp ax ay az tx ty tz', got {len(bad[1])}")
    if not rows:
        raise SequenceError(f"{path} holds no poses")
    arr = np.asarray([r for _, r in rows], dtype=np.float64)
    if not np.isfinite(arr).all():
        raise SequenceError(f"{path} holds NaN/inf; fix or drop those lines")
    to_world = Rotation.from_rotvec(arr[:, 1:4]).inv()
    return np.column_stack([arr[:, 0], -to_world.apply(arr[:, 4:7]), to_world.as_quat()])


def _arkitscenes_time(path: Path) -> float:
    """The time an ARKitScenes frame is named with: ``41069021_305.244.png`` -> 305.244."""
    try:
        return float(path.stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise SequenceError(f"{path}: expected ARKitScenes' name VIDEO_TIMESTAMP.png (e.g. 41069021_305.244.png); "
                            "remove other files from that folder") from None


def _read_pincam(folder: Path, image: Path) -> np.ndarray:
    """The ``.pincam`` (``w h fx fy cx cy``) of ``image`` from ``folder``, named as it or 1 ms either side (as
    ARKitScenes' loaders look for it)."""
    t = _arkitscenes_time(image)
    video = image.stem.rsplit("_", 1)[0]
    for name in (image.stem, f"{video}_{t - 0.001:.3f}", f"{video}_{t + 0.001:.3f}"):
        path = folder / f"{name}.pincam"
        if path.is_file():
            values = [v for _, row in _numbers(path) for v in row]
            if len(values) != 6:
                raise SequenceError(f"{path}: expected 6 numbers 'w h fx fy cx cy', got {len(values)}")
            _, _, fx, fy, cx, cy = values
            return _check_K(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), path)
    raise SequenceError(f"{folder / (image.stem + '.pincam')} is missing (the camera of {image.name}); download the "
                        f"video's {folder.name} again")


def _open_arkitscenes(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """An ARKitScenes video folder: ``lowres_wide/`` (or ``wide/``) colour and ``lowres_depth/`` (or
    ``highres_depth/``, mm) of the same names ``VIDEO_TIME.png``, a ``.pincam`` per frame in
    ``lowres_wide_intrinsics/``, ``lowres_wide.traj`` (world-to-camera, axis-angle; the pose is interpolated at
    each frame's time as TUM's), optional ``confidence/`` (0..2). OpenCV cameras in a z-up world (Apple's answers
    in apple/ARKitScenes#81 and #78, and its own unprojection)."""
    colour_dir, depth_dir = next(((c, d) for c, d in ARKITSCENES_ASSETS
                                  if (folder / c).is_dir() and (folder / d).is_dir()), (None, None))
    if colour_dir is None:
        raise SequenceError(f"{folder}: an ARKitScenes video needs lowres_wide/ and lowres_depth/ (or wide/ and "
                            f"highres_depth/) and {ARKITSCENES_TRAJECTORY}")
    rgb_files = _images_in(folder, colour_dir, f"an ARKitScenes video needs {colour_dir}/")
    depth_files = _depth_files_by_stem(rgb_files, folder / depth_dir, folder)
    times = np.array([_arkitscenes_time(p) for p in rgb_files])
    order = np.argsort(times, kind="stable")
    rgb_files, depth_files, times = [rgb_files[i] for i in order], [depth_files[i] for i in order], times[order]
    trajectory = _read_arkitscenes_trajectory(folder / ARKITSCENES_TRAJECTORY)
    poses, ok = interpolate_poses(trajectory, times)
    notes = [] if ok.all() else [f"{int((~ok).sum())} frames lie outside {ARKITSCENES_TRAJECTORY} or in a gap of it "
                                 "(skipped)"]
    if not ok.any():
        raise SequenceError(f"{folder / ARKITSCENES_TRAJECTORY} has no pose near any frame's time; is it from "
                            "another video?")
    keep = np.flatnonzero(ok)
    rgb_files, depth_files = [rgb_files[i] for i in keep], [depth_files[i] for i in keep]
    K = _K_from_config(cfg, folder)
    Ks = K if K is not None else [_read_pincam(folder / f"{colour_dir}_intrinsics", p) for p in rgb_files]
    confidence = [folder / "confidence" / f"{p.stem}.png" for p in depth_files]
    if colour_dir != "lowres_wide" or not all(p.is_file() for p in confidence):
        confidence = []  # (the confidence maps are lowres_depth's)
    min_confidence = _min_confidence(cfg, folder)
    if confidence and min_confidence:
        notes.append(f"depth of confidence below {min_confidence} (of 0..2) is dropped")
    return _ImageSequence(
        path=folder, format="arkitscenes", c2ws=up_rotation(up) @ poses[keep], timestamps=times[keep], world_up=up,
        notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=Ks, depth_scale=_depth_scale(cfg, folder, 0.001),
        colour_to_depth_size=True, colour_K=True, confidence_files=confidence, min_confidence=min_confidence)


# --------------------------------------------------------------------------------------------- Open3D / Redwood

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
                                "camera-to-world matrix)")
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
    candidates = [folder / "camera_intrinsic.json"] if (folder / "camera_intrinsic.json").is_file() else [
        p for p in _visible(folder.glob("*.json")) if p.name not in (CONFIG_FILE, "transforms.json")]
    for path in candidates:
        try:
            meta = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeError, json.JSONDecodeError) as e:
            if path.name != "camera_intrinsic.json":
                continue  # another tool's file, not a camera
            raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); fix or delete it") from None
        if not isinstance(meta, dict) or "intrinsic_matrix" not in meta:
            continue
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


# --------------------------------------------------------------------------------------------- ScanNet


def _open_scannet(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """ScanNet's SensReader export: ``color/N.jpg``, ``depth/N.png`` (mm), ``pose/N.txt`` (c2w; -inf where
    tracking was lost), ``intrinsic/intrinsic_depth.txt`` (here or in the parent folder; scannet_frames_25k:
    ``intrinsics_depth.txt`` here). The colour camera (1296x968) is resized to the depth's (640x480) and the depth
    camera's K is used (the colour camera's, resized with it, when only that is given)."""
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


# --------------------------------------------------------------------------------------------- Replica

REPLICA_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}


def _replica_frames(folder: Path) -> list[Path]:
    results = folder / "results"
    return sorted(_visible(p for ext in _IMAGE_EXT for p in results.glob(f"frame*{ext}")), key=_natural_key) \
        if results.is_dir() else []


def _open_replica(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Replica as NICE-SLAM and SplaTAM ship it: ``results/frame000000.jpg``, ``results/depth000000.png``
    (metres = value / 6553.5), ``traj.txt`` (one row-major OpenCV c2w 4x4 per line, frame i on line i) and
    ``cam_params.json`` here or in the parent folder (``{"camera": {"w", "h", "fx", "fy", "cx", "cy",
    "scale"}}``; without it Replica's 600, 600, 599.5, 339.5 at 1200x680, said). The world is z-up."""
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


# --------------------------------------------------------------------------------------------- Stray Scanner


@dataclass(eq=False)
class _StraySequence(_ImageSequence):
    """Stray Scanner's frames: colour from the video (frame k of ``rgb.mp4`` is odometry row k), depth per
    frame, its confidence (0..2) masking the depth below ``min_confidence``."""

    video: Path | None = None
    video_index: list[int] = field(default_factory=list)
    _video: "_VideoPanels | None" = field(default=None, repr=False)

    VIDEO_CACHE_FRAMES = 4  # decoded frames kept: a phone's 1920x1440 frame is 8 MB

    def files(self, i: int) -> list[Path]:
        return [self.video, self.depth_files[i]] if self.video else [self.depth_files[i]]

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def _colour(self, i: int) -> np.ndarray:
        if self._video is None:
            self._video = _VideoPanels(self.video, 1, fix="copy it again")
        k = self.video_index[i]
        img = self._video.frame(k, self.VIDEO_CACHE_FRAMES)
        if img is None:
            raise SequenceError(f"{self.video} ends at frame {self._video.ended_at}, but odometry.csv goes on to frame "
                                f"{k}; play fewer frames (?max_frames={self._video.ended_at}) or copy the video again")
        return img


def _read_stray_odometry(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``odometry.csv`` -> (timestamps (N,), OpenCV c2w (N, 4, 4)): a header, then ``timestamp, frame, x, y, z,
    qx, qy, qz, qw`` per frame (older versions: ``x, y, z, qx, qy, qz, qw``, no header)."""
    if not path.is_file():
        raise SequenceError(f"{path} is missing; a Stray Scanner export needs it for the camera poses")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        cells = [c.strip() for c in line.split(",") if c.strip()]
        if not cells:
            continue
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if n == 1:
                continue  # the header
            raise SequenceError(f"{path}:{n}: expected numbers 'timestamp, frame, x, y, z, qx, qy, qz, qw'") from None
        if len(values) not in (7, 9):
            raise SequenceError(f"{path}:{n}: expected 9 numbers 'timestamp, frame, x, y, z, qx, qy, qz, qw' (or 7 "
                                f"without timestamp and frame), got {len(values)}")
        rows.append(values if len(values) == 9 else [float(len(rows)), float(len(rows)), *values])
    if not rows:
        raise SequenceError(f"{path} holds no poses")
    try:  # less the frame column, a row is TUM's 't tx ty tz qx qy qz qw' (scalar-last, as the app writes it)
        return tum_rows_to_c2ws(np.asarray(rows, dtype=np.float64)[:, [0, 2, 3, 4, 5, 6, 7, 8]], path)
    except ValueError as e:
        raise SequenceError(str(e)) from None


def _open_stray(folder: Path, cfg: dict, up: str) -> _StraySequence:
    """Stray Scanner's export: ``rgb.mp4`` (the phone camera, e.g. 1920x1440), ``depth/000000.png`` (mm, 256x192;
    older versions uint16 ``.npy``), ``confidence/000000.png`` (0..2), ``camera_matrix.csv`` (the video's 3x3 K),
    ``odometry.csv`` (OpenCV camera-to-world in ARKit's y-up world). Row k, depth k and video frame k belong
    together. The colour is resized to the depth's size and K with it; depth below confidence 1 (the app's
    low) is dropped (``min_confidence`` in worldstudio.json: 0..2)."""
    timestamps, poses = _read_stray_odometry(folder / "odometry.csv")
    depth_dir = folder / "depth"
    depth_files = sorted((p for p in _visible(depth_dir.iterdir()) if p.suffix.lower() in (".png", ".npy")),
                         key=_natural_key) if depth_dir.is_dir() else []
    if not depth_files:
        raise SequenceError(f"{depth_dir} holds no depth .png/.npy; a Stray Scanner folder needs depth/, rgb.mp4, "
                            "odometry.csv and camera_matrix.csv")
    notes: list[str] = []
    n = min(len(depth_files), len(poses))
    if len(depth_files) != len(poses):
        notes.append(f"odometry.csv has {len(poses)} poses and depth/ {len(depth_files)} frames: the first {n} "
                     "are played")
    conf_dir = folder / "confidence"
    confidence = sorted((p for p in _visible(conf_dir.iterdir()) if p.suffix.lower() == ".png"),
                        key=_natural_key)[:n] if conf_dir.is_dir() else []
    if confidence and len(confidence) < n:
        notes.append(f"confidence/ has {len(confidence)} maps for {n} frames: depth is not masked")
        confidence = []
    min_confidence = _min_confidence(cfg, folder)
    if confidence and min_confidence:
        notes.append(f"depth of confidence below {min_confidence} (of 0..2) is dropped")
    K = _K_from_config(cfg, folder)
    if K is None:
        matrix = folder / "camera_matrix.csv"
        if not matrix.is_file():
            raise SequenceError(f"{matrix} is missing; a Stray Scanner folder needs it for the camera's intrinsics")
        K = _read_intrinsics(matrix)
    if not (folder / "rgb.mp4").is_file():
        raise SequenceError(f"{folder / 'rgb.mp4'} is missing; a Stray Scanner folder needs it for the colour")
    return _StraySequence(
        path=folder, format="stray", c2ws=up_rotation(up) @ poses[:n], timestamps=timestamps[:n], world_up=up,
        notes=notes, rgb_files=[folder / "rgb.mp4"] * n, depth_files=depth_files[:n], Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        video=folder / "rgb.mp4", video_index=list(range(n)), confidence_files=confidence,
        min_confidence=min_confidence)


# --------------------------------------------------------------------------------------------- nerfstudio

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


def _open_nerfstudio(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """A nerfstudio / instant-ngp ``transforms.json`` whose frames carry depth (``depth_file_path``: nerfstudio's
    Polycam export and this tool's own do): OpenGL camera-to-world matrices, intrinsics per file or per frame,
    16-bit depth in millimetres, or .npy, both times ``depth_unit_scale_factor`` as nerfstudio reads them. Frames
    are played in file-name order, as nerfstudio sorts them; a depth image smaller than its colour image keeps
    its size and the colour is resized to it.

    The up axis: ``up="auto"`` (the default) takes nerfstudio's z-up when the file says it was oriented
    (``orientation_override``, as the Polycam export writes), else y or z, whichever is nearer the cameras'
    mean up direction, with a note: nerfstudio re-orients every dataset when it loads it, so the files keep the world
    they came from (Record3D's and ARKit's are y-up, COLMAP's arbitrary)."""
    path = folder / "transforms.json"
    if not path.is_file():
        raise SequenceError(f"{path} is missing; a nerfstudio folder needs it")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError, json.JSONDecodeError) as e:
        raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); copy it again") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise SequenceError(f"{path} has no \"frames\" list of objects; it is not a nerfstudio dataset")
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
        f = folder / rel
        if not f.suffix and not f.is_file():  # instant-ngp's synthetic scenes name images without extension
            f = next((f.with_suffix(e) for e in _IMAGE_EXT if f.with_suffix(e).is_file()), f)
        if not f.is_file():
            raise SequenceError(f"{f} is missing (frame {frame} of transforms.json); copy it again or remove the "
                                "frame")
        return f

    order = sorted(range(len(frames)), key=lambda n: _natural_key(Path(str(frames[n].get("file_path", "")))))
    rgb_files, depth_files, Ks, poses = [], [], [], []
    for n in order:
        entry = frames[n]
        frame = str(entry.get("file_path", f"number {n}"))  # named as the user sees it (the list's order is not)
        depth_key = next((k for k in ("depth_file_path", "depth_path") if k in entry), None)
        if depth_key is None:
            raise SequenceError(f"{path}: frame {frame} has no depth_file_path; this tool needs a depth image per "
                                "frame (nerfstudio's Polycam export has them; its Record3D and COLMAP ones do not)")
        rgb_files.append(file_of(entry, "file_path", frame))
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
    unit = meta.get("depth_unit_scale_factor")
    if unit is not None:
        unit = _metres_per_unit(unit, f"{path}: depth_unit_scale_factor")
    if unit is None and any(f.suffix.lower() == ".npy" for f in depth_files):
        notes.append("float .npy depth is read as metres (transforms.json gives no depth_unit_scale_factor)")
    if up == "auto":
        up = "+z" if "orientation_override" in meta else _up_from_cameras(poses, notes)
    return _ImageSequence(
        path=folder, format="nerfstudio", c2ws=up_rotation(up) @ poses,
        timestamps=np.arange(len(poses), dtype=np.float64), world_up=up, notes=notes, rgb_files=rgb_files,
        depth_files=depth_files, Ks=Ks, depth_scale=_depth_scale(cfg, folder, 0.001 if unit is None else unit),
        float_depth_scale=1.0 if unit is None else unit, colour_to_depth_size=True, colour_K=True)


def _up_from_cameras(c2ws: np.ndarray, notes: list[str]) -> str:
    """The up axis of a world no file names (:func:`_y_or_z_up` of the OpenCV cameras ``c2ws`` (N, 4, 4)), said
    in a note."""
    up = _y_or_z_up(-c2ws[:, :3, 1].mean(axis=0))
    notes.append(f"world up {up} assumed: of y and z, the axis nearer the cameras' mean up direction (pass "
                 f"?up=... or world_up in {CONFIG_FILE} if the floor stands up)")
    return up


def _y_or_z_up(mean_up: np.ndarray) -> str:
    """"+y", "-y", "+z" or "-z": of the two up axes in use (ARKit's and OpenGL's y, nerfstudio's and Blender's z),
    the one nearer the cameras' mean up direction ``mean_up`` (3,). Not x: no capture tool writes x-up, and a
    camera pitched down more than 45° (a desk scan) leans its up vector nearer a horizontal axis than gravity."""
    k = 1 if abs(mean_up[1]) >= abs(mean_up[2]) else 2
    return ("+" if mean_up[k] >= 0 else "-") + "xyz"[k]


# --------------------------------------------------------------------------------------------- per-frame PLY


class _VideoPanels:
    """The left panel of a video's frames (DeepVerse writes RGB | depth side by side; ``panels`` None: two when
    the video is over 2.2 times as wide as high), decoded on demand: forward from where the decoder is, from the
    start for an earlier frame (a seek back); the last few frames are kept."""

    def __init__(self, path: Path, panels: int | None, fix: str):
        self.path, self.panels, self.fix = path, panels, fix  # fix: what to do when it cannot be decoded
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.ended_at: int | None = None  # the video's frame count, once a read went past its end
        self._reader: Iterator[bytes] | None = None
        self._next = 0  # index of the frame the reader gives next
        self._size = (0, 0, 0)  # width, height, panel width

    def frame(self, k: int, keep: int) -> np.ndarray | None:
        """Frame ``k``'s left panel, (H, W, 3) uint8, with the ``keep`` last read kept; None past the end.
        SequenceError (ending with ``fix``) when the video cannot be decoded, at its start or part-way."""
        try:
            return self._frame(k, keep)
        except (OSError, RuntimeError, StopIteration, ValueError) as e:
            raise SequenceError(f"cannot read {self.path}: {str(e).splitlines()[0][:80] if str(e) else 'bad video'}; "
                                f"{self.fix}") from None

    def _frame(self, k: int, keep: int) -> np.ndarray | None:
        if k in self.cache:
            self.cache.move_to_end(k)
            return self.cache[k]
        if self._reader is None or k < self._next:
            self._open()
        w, h, pw = self._size
        img = None
        while self._next <= k:
            raw = next(self._reader, None)
            if raw is None:
                self.ended_at = self._next
                return None
            if self._next == k:
                img = np.ascontiguousarray(np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)[:, :pw])
            self._next += 1
        self.cache[k] = img
        while len(self.cache) > keep:
            self.cache.popitem(last=False)
        return img

    def close(self) -> None:
        """Stop the decoder (its ffmpeg process); a later read starts it again."""
        if self._reader is not None:
            self._reader.close()  # imageio_ffmpeg's generator ends its ffmpeg process when closed
            self._reader = None

    def _open(self) -> None:
        """(Re)start the decoder at frame 0."""
        import imageio_ffmpeg

        self.close()
        reader = imageio_ffmpeg.read_frames(str(self.path))
        w, h = next(reader)["size"]  # a video that cannot be read fails here, and is tried again next time
        panels = self.panels or (2 if w >= 2.2 * h else 1)
        self._reader, self._size, self._next = reader, (w, h, w // panels), 0


@dataclass(eq=False)
class _PlySequence(Sequence):
    """Per-frame world point clouds (DeepVerse / Aether outputs) with an optional video for the images."""

    ply_files: list[Path] = field(default_factory=list)
    video: Path | None = None
    video_index: list[int] = field(default_factory=list)
    video_panels: int | None = None
    K_override: np.ndarray | None = None
    _video: _VideoPanels | None = field(default=None, repr=False)  # the decoder, made at the first image

    def files(self, i: int) -> list[Path]:
        return [self.ply_files[i]] + ([self.video] if self.video else [])

    VIDEO_CACHE_FRAMES = 16  # decoded frames kept (a long video is never decoded into RAM whole)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def _video_frame(self, k: int) -> np.ndarray | None:
        """Left panel of video frame ``k`` (:class:`_VideoPanels`); None past the video's end (a note says so).
        SequenceError when the video cannot be decoded (at its start or part-way)."""
        if self.video is None:
            return None
        if self._video is None:
            self._video = _VideoPanels(self.video, self.video_panels, fix="remove the video to use placeholder images")
        ended = self._video.ended_at
        img = self._video.frame(k, self.VIDEO_CACHE_FRAMES)
        if ended is None and self._video.ended_at is not None:  # the video is shorter than the PLY frames say
            self.notes.append(f"{self.video.name} ends at frame {self._video.ended_at}: later PLY frames get "
                              "placeholder images")
        return img

    def _read(self, i: int) -> Frame:
        pts, cols = read_ply_points(self.ply_files[i])
        A = up_rotation(self.world_up)
        pts = (pts.astype(np.float64) @ A[:3, :3].T).astype(np.float32)
        finite = np.isfinite(pts).all(axis=1)
        pts, cols = pts[finite], cols[finite]
        img = self._video_frame(self.video_index[i])
        c2w = self.c2ws[i].copy()
        if img is None:
            img = _placeholder_image(pts, cols, c2w)
        h, w = img.shape[:2]
        K = self.K_override if self.K_override is not None else intrinsics_from_fov(w, h, 60.0)
        return Frame(index=i, rgb=img, depth=np.zeros((h, w), np.float32), K=np.array(K, dtype=np.float64),
                     c2w=c2w, world_points=pts, world_colors=cols)


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A PLY point cloud (any variant open3d reads) -> (points (N, 3) float32, colours (N, 3) uint8, white if none)."""
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path), format="ply")
    pts = np.asarray(pcd.points, dtype=np.float32)
    if len(pts) == 0:
        raise SequenceError(f"cannot read {path}: no points in it (corrupt or not a point-cloud PLY); "
                            "copy it again or remove it")
    if pcd.has_colors():
        cols = np.clip(np.rint(np.asarray(pcd.colors) * 255.0), 0, 255).astype(np.uint8)
    else:
        cols = np.full((len(pts), 3), 255, np.uint8)
    return pts, cols


def _placeholder_image(pts: np.ndarray, cols: np.ndarray, c2w: np.ndarray, size=(128, 96)) -> np.ndarray:
    """A small (H, W, 3) uint8 preview: the points splatted from the frame's camera (60 degree view),
    or their mean colour when none is in view."""
    w, h = size
    K = intrinsics_from_fov(w, h, 60.0)
    mean = cols.mean(axis=0).astype(np.uint8) if len(cols) else np.array([128, 128, 128], np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = mean
    if len(pts):
        cam = world_to_camera(pts.astype(np.float64), invert_pose(c2w))
        front = cam[:, 2] > 1e-3
        uf, vf, z = camera_to_pixels(cam[front], K)
        c = cols[front]
        u, v = np.rint(uf).astype(np.int64), np.rint(vf).astype(np.int64)
        ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        order = np.argsort(-z[ok])  # far first, near last: nearest colour wins
        img[v[ok][order], u[ok][order]] = c[ok][order]
    return img


def _open_ply(folder: Path, cfg: dict, up: str) -> _PlySequence:
    plys = sorted(_visible(folder.glob("*.ply")), key=_natural_key)
    if not plys:
        raise SequenceError(f"{folder} holds no .ply files")
    videos = sorted(p for p in _visible(folder.iterdir())
                    if p.suffix.lower() in (".mp4", ".mov", ".avi", ".webm", ".mkv"))
    video = None
    if videos:  # prefer the video whose name the PLYs extend (DeepVerse: generated_video.mp4 + generated_video_frame8.ply)
        video = next((v for v in videos if plys[0].stem.startswith(v.stem)), videos[0])
    nums = [_last_number(p.stem[len(video.stem):] if video and p.stem.startswith(video.stem) else p.stem) for p in plys]
    video_index = nums if all(n is not None for n in nums) and len(set(nums)) == len(nums) else list(range(len(plys)))
    A = up_rotation(up)
    notes = []
    poses_path = folder / "poses.txt"
    if poses_path.is_file():
        poses = read_poses_file(poses_path)
        if len(poses) != len(plys):
            raise SequenceError(f"{poses_path} has {len(poses)} poses but the folder has {len(plys)} PLY files; "
                                "write one pose per PLY (file-name order) or delete poses.txt")
    else:
        poses = np.tile(np.eye(4), (len(plys), 1, 1))
        notes.append("no poses.txt: every frame gets the first camera's pose (identity in the source world)")
    panels = cfg.get("video_panels")
    return _PlySequence(
        path=folder, format="ply", c2ws=A @ poses, timestamps=np.asarray(video_index, dtype=np.float64),
        world_up=up, has_depth=False, notes=notes, ply_files=plys, video=video, video_index=list(video_index),
        video_panels=int(panels) if panels else None, K_override=_K_from_config(cfg, folder))


# --------------------------------------------------------------------------------------------- entry points


def _detect(folder: Path) -> str | None:
    if folder.is_file():
        return "record3d" if folder.suffix.lower() == ".r3d" else None
    if any((folder / n).is_file() for n in ("rgb.txt", "depth.txt", "groundtruth.txt", "associations.txt")):
        return "tum"
    if _seven_scenes_frames(folder):
        return "7scenes"
    if (folder / "color").is_dir() and (folder / "pose").is_dir():
        return "scannet"
    if (folder / "traj.txt").is_file() and _replica_frames(folder):
        return "replica"
    if (folder / "odometry.csv").is_file() and (folder / "rgb.mp4").is_file():
        return "stray"
    if (folder / ARKITSCENES_TRAJECTORY).is_file() and any((folder / c).is_dir() for c, _ in ARKITSCENES_ASSETS):
        return "arkitscenes"
    if ((folder / "metadata").is_file() and (folder / "rgbd").is_dir()) or (
            (folder / "rgb").is_dir() and _is_record3d_metadata(folder / "metadata.json")):
        return "record3d"  # a .r3d file unzipped, or the app's EXR + JPG export
    if (not (folder / "poses.txt").is_file() and (folder / "depth").is_dir() and _open3d_trajectory(folder)
            and any((folder / d).is_dir() for d in OPEN3D_COLOUR_DIRS)):
        return "open3d"
    if (folder / "rgb").is_dir() and ((folder / "poses.txt").is_file() or (folder / "depth").is_dir()):
        return "generic"  # (before nerfstudio: a generic folder may also hold a transforms.json made from it)
    if (folder / "transforms.json").is_file():
        return "nerfstudio"
    if _visible(folder.glob("*.ply")):
        return "ply"
    return None


def detect_format(path) -> str:
    """Which reader a folder (or a Record3D .r3d file) needs, one of FORMATS (SequenceError when none fits)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise SequenceError(f"{folder}: no such folder or file; pass a recorded sequence folder ({_FORMATS_HELP})")
    fmt = _detect(folder)
    if fmt is not None:
        return fmt
    if not folder.is_dir():
        if folder.name.lower().endswith((".zip", ".tgz", ".tar", ".tar.gz", ".tar.bz2", ".7z")):
            raise SequenceError(f"{folder} is an archive; extract it and pass the sequence folder inside")
        raise SequenceError(f"{folder} is a file; pass the folder that contains it (or a Record3D .r3d file)")
    subs = sorted(p.name for p in folder.iterdir() if (p.is_dir() or p.suffix.lower() == ".r3d") and _detect(p))
    if subs:
        raise SequenceError(f"{folder} holds several sequences ({', '.join(subs[:6])}{'...' if len(subs) > 6 else ''}); "
                            "pass one of them")
    raise SequenceError(f"{folder} is not a recognised sequence folder: {_FORMATS_HELP}")


_OPENERS = {"tum": _open_tum, "7scenes": _open_7scenes, "scannet": _open_scannet, "replica": _open_replica,
            "stray": _open_stray, "record3d": _open_record3d, "arkitscenes": _open_arkitscenes,
            "nerfstudio": _open_nerfstudio, "open3d": _open_open3d, "generic": _open_generic, "ply": _open_ply}


def open_sequence(path, max_frames: int | None = None, stride: int = 1, world_up: str | None = None,
                  format: str | None = None, check_first: bool = True) -> Sequence:
    """Open a sequence folder lazily (format detected unless given).

    max_frames: keep only the first N frames (after ``stride``).  stride: keep every k-th frame.
    world_up: the source world's up axis ("+x".."-z"); default per format (or ``worldstudio.json``).
    check_first: decode frame 0 now, so a corrupt folder fails at open. Raises SequenceError.
    """
    folder = Path(path).expanduser().resolve()
    fmt = format or detect_format(folder)
    if fmt not in _OPENERS:
        raise SequenceError(f"unknown sequence format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if int(stride) < 1:
        raise SequenceError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 1:
        raise SequenceError(f"max_frames must be >= 1, got {max_frames}")
    cfg = _load_config(folder)
    up = str(world_up or cfg.get("world_up") or DEFAULT_UP[fmt])
    if not (up == "auto" and DEFAULT_UP[fmt] == "auto"):  # "auto": that reader picks the axis
        up_rotation(up)  # validate early
    seq = _OPENERS[fmt](folder, cfg, up)
    if stride > 1 or max_frames is not None:
        keep = np.arange(0, len(seq), int(stride))
        if max_frames is not None:
            keep = keep[: int(max_frames)]
        _subset(seq, keep)
    seq.options.update({"stride": int(stride), "max_frames": None if max_frames is None else int(max_frames)})
    if check_first and len(seq):
        seq[0]
    return seq


def _subset(seq: Sequence, keep: np.ndarray) -> None:
    """Restrict ``seq`` in place to the frames ``keep`` (indices into it)."""
    idx = [int(i) for i in keep]
    seq.c2ws = seq.c2ws[idx]
    seq.timestamps = seq.timestamps[idx]
    for name in ("rgb_files", "depth_files", "ply_files", "video_index", "confidence_files", "members"):
        if getattr(seq, name, None):  # (a per-frame list; an empty one means the format has none)
            setattr(seq, name, [getattr(seq, name)[i] for i in idx])
    if isinstance(getattr(seq, "Ks", None), list) and seq.Ks:  # type: ignore[attr-defined]
        seq.Ks = [seq.Ks[i] for i in idx]  # type: ignore[attr-defined]
    seq._cache.clear()


def nearest_pose_index(c2ws: np.ndarray, c2w: np.ndarray, metres_per_radian: float = 0.5) -> int:
    """Index of the pose in ``c2ws`` (N, 4, 4) closest to ``c2w``: camera distance (m) plus
    ``metres_per_radian`` x the angle between the rotations."""
    d = np.linalg.norm(c2ws[:, :3, 3] - c2w[:3, 3], axis=1)
    tr = np.einsum("nij,ij->n", c2ws[:, :3, :3], c2w[:3, :3])  # trace(R_i^T R)
    ang = np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))
    return int(np.argmin(d + metres_per_radian * ang))


__all__ = ["FORMATS", "Sequence", "SequenceError", "associate", "detect_format",
           "interpolate_poses", "nearest_pose_index", "open_sequence", "read_poses_file", "up_rotation"]
