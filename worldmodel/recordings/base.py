"""What every reader shares: the one-line error, the project's conventions at the edge (up axis, pose
checks), reading images, depth (PNG, .npy, EXR), confidence, intrinsics and ``worldstudio.json``, the lazy
:class:`Sequence` and its per-image-file kind, folder helpers (images in name order, depth by file stem, poses
files, lost tracking), the up axis a world's cameras suggest, and a video decoded on demand.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import difflib
import io
import json
import re
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

from worldmodel.camera import resize_intrinsics
from worldmodel.checks import pose_problem
from worldmodel.frame import Frame
from worldmodel.tum import number_rows, tum_rows_to_c2ws


CONFIG_FILE = "worldstudio.json"
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


class SequenceError(ValueError):
    """A sequence folder cannot be read; the one-line message names the file and says what to do."""


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


def _time_or(value, fallback: float) -> float:
    """A JSON time ``value`` as a finite float, else ``fallback`` (a frame number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float(fallback)
    try:
        value = float(value)
    except OverflowError:
        return float(fallback)
    return value if np.isfinite(value) else float(fallback)


def _check_pose(c2w: np.ndarray, where: str) -> np.ndarray:
    """``c2w`` when it is a rigid camera-to-world pose (:func:`worldmodel.checks.pose_problem`, the rule a scene
    holds its frames to), else SequenceError naming ``where``."""
    why = pose_problem(c2w)
    if why is not None:
        raise SequenceError(f"{where}: the pose is {why}; write rigid camera-to-world matrices (or fix or remove it)")
    return c2w


def _number_table(path: Path, width: int, fields: str, fix: str) -> np.ndarray:
    """(M, width) float64 of a text file of ``fields`` (``width`` numbers) per line, at least one line; a
    SequenceError naming the line or file and saying ``fix`` otherwise (a dataset's pose file: "download ...")."""
    try:
        rows = _numbers(path)
    except SequenceError as e:
        raise SequenceError(f"{str(e).split('; ')[0]}; {fix}") from None
    bad = next(((n, r) for n, r in rows if len(r) != width), None)
    if bad:
        raise SequenceError(f"{path}:{bad[0]}: expected {width} numbers '{fields}', got {len(bad[1])}; {fix}")
    if not rows:
        raise SequenceError(f"{path} holds no poses; {fix}")
    return np.asarray([r for _, r in rows], dtype=np.float64)


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

    with warnings.catch_warnings():  # PIL's bomb warning would be a second line beside this one's refusal
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path if data is None else io.BytesIO(data))
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise SequenceError(f"{path} claims {im.width}x{im.height} pixels, more than this tool reads; "
                            "it is corrupt or not a camera frame")
    return im


@contextmanager
def _decoding(path: Path, what: str, fix: str, data: bytes | None = None) -> Iterator:
    """The PIL image of ``path`` (:func:`_open_image`) for the block; a file that is missing, or that PIL cannot
    decode there, is one SequenceError naming it as ``what`` and saying ``fix``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_image(path, data) as im:
            yield im
    except FileNotFoundError:
        raise SequenceError(f"{path} is missing; the sequence folder is incomplete") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, SequenceError):
            raise
        why = "not a format this reader knows" if isinstance(e, UnidentifiedImageError) else str(e)[:80]
        raise SequenceError(f"cannot read {path}: not a valid {what} ({why}); {fix}") from None


def _read_rgb(path: Path, data: bytes | None = None) -> np.ndarray:
    """(H, W, 3) uint8 of the image file ``path`` (or of ``data``, its bytes)."""
    with _decoding(path, "image", "copy the file again or remove the frame", data) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # a 16-bit grey (IR, mono) camera: scale, not clip
            grey = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
            grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _image_array(path: Path, what: str, fix: str) -> np.ndarray:
    """The image file ``path`` as decoded, (H, W) or (H, W, C), no conversion; a SequenceError naming it as
    ``what`` and saying ``fix`` when it is missing or not an image."""
    with _decoding(path, what, fix) as im:
        return np.asarray(im)


def _read_confidence(path: Path) -> np.ndarray:
    """(H, W) ARKit depth confidence (0 low, 1 medium, 2 high) from an 8-bit PNG."""
    return _image_array(path, "confidence image", f"copy it again, or set min_confidence 0 in {CONFIG_FILE} to use "
                                                  "the depth unmasked")


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
        raise SequenceError(f"{path}: EXR depth must be an (H, W) image, got {values.shape}; write the depth as one "
                            "channel")
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
        numeric = np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)
        if d.ndim != 2 or 0 in d.shape or not numeric:
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
    raw = _depth_png_units(path)
    d = raw.astype(np.float32) * np.float32(scale)
    if invalid is not None:
        d[raw == invalid] = 0.0
    return d


def _depth_png_units(path: Path) -> np.ndarray:
    """(H, W) uint16 of a single-channel 16-bit depth PNG as stored (depth units, no scale); SequenceError naming
    it otherwise."""
    raw = _image_array(path, "depth PNG", "copy the file again or remove the frame")
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer) or raw.dtype.itemsize < 2:
        lost = " (an 8-bit PNG has lost the depth precision; export it as 16-bit)" if raw.dtype == np.uint8 else ""
        raise SequenceError(f"{path}: depth PNG must be single-channel 16-bit, got {raw.dtype} {raw.shape}{lost}")
    return raw.astype(np.uint16) if raw.dtype != np.uint16 else raw


def config_folder(path: Path) -> Path:
    """Where a recording's ``worldstudio.json`` lives: its folder, or the folder holding a recording file (.r3d,
    .sens)."""
    return path.parent if path.is_file() else path


def _json_object(path: Path, fix: str) -> dict:
    """The JSON object in ``path``; SequenceError ending with ``fix`` when it is not valid JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError, json.JSONDecodeError) as e:
        raise SequenceError(f"{path} is not valid JSON ({str(e)[:80]}); {fix}") from None
    if not isinstance(data, dict):
        raise SequenceError(f"{path} is not a JSON object; {fix}")
    return data


def _json_numbers(data: dict, keys: list[str], path: Path | str, fix: str, count: int | None = None) -> np.ndarray:
    """The numbers ``data`` holds under ``keys`` (one key of a list, or one number per key), float64; ``count``:
    how many there must be."""
    try:
        values = np.asarray([v for k in keys for v in np.ravel(data[k])], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        values = np.zeros(0)
    named = keys[0] if len(keys) == 1 else ", ".join(keys[:2]) + ", ..."
    if not len(values) or not np.isfinite(values).all():
        raise SequenceError(f"{path} lacks {named} (finite numbers); {fix}")
    if count is not None and values.size != count:
        raise SequenceError(f"{path}: {named} must hold {count} numbers in all, got {values.size}; {fix}")
    return values


CONFIG_KEYS = ("world_up", "depth_scale", "K", "fx", "fy", "cx", "cy", "camera", "video_panels", "min_confidence",
               "icl_nuim", "hypersim_camera", "level")  # what a recording's worldstudio.json may set (recordings doc)


def _load_config(folder: Path) -> dict:
    """``worldstudio.json`` of a recording (:func:`config_folder`), or {}; SequenceError naming a key that is not
    one of :data:`CONFIG_KEYS` (a misspelt setting did nothing, without a word)."""
    path = config_folder(folder) / CONFIG_FILE
    if not path.is_file():
        return {}
    cfg = _json_object(path, "fix or delete it (it holds an object such as {\"depth_scale\": 0.001})")
    for key in cfg:
        if key not in CONFIG_KEYS:
            asked = str(key).lower()
            lower = {k.lower(): k for k in CONFIG_KEYS}
            near = [lower[k] for k in difflib.get_close_matches(asked, lower, n=1, cutoff=0.5)] or [
                k for k in CONFIG_KEYS if len(asked) > 1 and asked in k.lower()]  # "up" -> world_up, "k" -> K
            meant = f" (did you mean {near[0]!r}?)" if near else ""
            raise SequenceError(f"{path}: {str(key)[:40]!r} is not a setting{meant}; the settings are "
                                f"{', '.join(CONFIG_KEYS)}")
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


def _K_from_config_or_file(cfg: dict, folder: Path, path: Path, fix: str) -> np.ndarray:
    """K (3, 3) from ``worldstudio.json`` (:func:`_K_from_config`), else from the intrinsics file ``path``
    (:func:`_read_intrinsics`); SequenceError "``path`` is missing; ``fix``" when neither is there."""
    K = _K_from_config(cfg, folder)
    if K is not None:
        return K
    if not path.is_file():
        raise SequenceError(f"{path} is missing; {fix}")
    return _read_intrinsics(path)


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
        raise SequenceError(f"{config_folder(folder) / CONFIG_FILE}: min_confidence must be 0, 1 or 2, got {value!r}")
    return int(value)


def _confidence_maps(maps: list[Path], frames: int, cfg: dict, folder: Path, notes: list[str],
                     kept_in: str = "confidence/") -> tuple[list[Path], int]:
    """(the confidence map of each frame, or [] to leave depth unmasked; min_confidence) from ``maps`` (one per
    frame, in order; a missing one: not a file; [] when the capture has none; ``kept_in`` names where they are),
    said in ``notes``."""
    min_confidence = _min_confidence(cfg, folder)
    missing = frames - sum(p.is_file() for p in maps) if maps else 0
    if missing:
        notes.append(f"{kept_in} lacks the maps of {missing} frames: depth is not masked")
        maps = []
    if maps and min_confidence:
        notes.append(_confidence_note(min_confidence))
    return maps, min_confidence


def _confidence_note(min_confidence: int) -> str:
    return f"depth of confidence below {min_confidence} (of 0..2) is dropped"


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


@dataclass(eq=False)
class Sequence:
    """A recorded sequence opened lazily: ``len(seq)``, ``seq[i]`` -> Frame, ``for f in seq``.

    path: the folder (or file: .r3d, .sens) read.  named_path: the scene folder the user named, when it led here.
    format: one of FORMATS.  c2ws: (N, 4, 4) float64 poses, already +Y-up (cheap to use
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
    named_path: Path | None = None
    source_to_world: np.ndarray | None = None  # (3, 3), when the reader did more than turn the up axis (ICL-NUIM)
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
        """JSON-able: enough to open the same sequence again with :func:`open_sequence` (its options; a levelled
        world's ``level_turn`` (3, 3) is reapplied with :meth:`turn_world`)."""
        return {"path": str(self.named_path or self.path), "format": self.format, "frames": len(self),
                "world_up": self.world_up, **self.options}

    def world_from_source(self) -> np.ndarray:
        """(3, 3): a point in the dataset's own coordinates (its reference mesh's) -> this sequence's world."""
        return up_rotation(self.world_up)[:3, :3] if self.source_to_world is None else self.source_to_world

    def turn_world(self, turn: np.ndarray) -> None:
        """Turn the world by the rotation ``turn`` (3, 3): every pose, and ``world_from_source`` with them."""
        self.source_to_world = turn @ self.world_from_source()
        self.c2ws = np.einsum("ij,njk->nik", np.block([[turn, np.zeros((3, 1))], [np.zeros((1, 3)), 1.0]]), self.c2ws)
        self._cache.clear()  # (frames read before carry the old poses)

    PER_FRAME: ClassVar[tuple[str, ...]] = ()  # the fields holding one item per frame (each kind adds its own)

    def subset(self, keep) -> None:
        """Restrict the sequence in place to the frames ``keep`` (indices into it, in the order given)."""
        idx = [int(i) for i in keep]
        self.c2ws = self.c2ws[idx]
        self.timestamps = self.timestamps[idx]
        for name in self.PER_FRAME:
            items = getattr(self, name)
            if isinstance(items, list) and items:  # (empty: the format has none; an array Ks is every frame's)
                setattr(self, name, [items[i] for i in idx])
        self._cache.clear()


@dataclass(eq=False)
class _ImageSequence(Sequence):
    """RGB-D frames from per-frame image files (or, in its subclasses, a video, an archive, one file)."""

    PER_FRAME = ("rgb_files", "depth_files", "Ks", "confidence_files")

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
    confidence_step: int = 1  # a map's value per confidence level (ARKit's 0, 1, 2; Polycam's 0, 127, 255)
    _size: tuple[int, int] | None = None  # (H, W) of the first frame read

    def files(self, i: int) -> list[Path]:
        return [self.rgb_files[i], self.depth_files[i]]

    def _colour(self, i: int) -> np.ndarray:
        return _read_rgb(self.rgb_files[i])

    def _depth(self, i: int) -> np.ndarray:
        depth = _read_depth(self.depth_files[i], self.depth_scale, self.depth_invalid, self.float_depth_scale)
        if self.confidence_files and self.min_confidence > 0:
            confidence = _read_confidence(self.confidence_files[i])
            if confidence.shape != depth.shape:
                raise SequenceError(f"{self.confidence_files[i]} is {confidence.shape[1]}x{confidence.shape[0]} but "
                                    f"its depth {depth.shape[1]}x{depth.shape[0]}; set min_confidence 0 in "
                                    f"{CONFIG_FILE} to use the depth unmasked")
            depth[confidence < self.min_confidence * self.confidence_step] = 0.0
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
class _VideoSequence(_ImageSequence):
    """Frames whose colour is a video's (Stray Scanner's ``rgb.mp4``, ScanNet++'s ``rgb.mkv``): frame i shows
    video frame ``video_index[i]``, decoded on demand; depth per frame as in :class:`_ImageSequence`."""

    PER_FRAME = _ImageSequence.PER_FRAME + ("video_index",)
    video: Path | None = None
    video_index: list[int] = field(default_factory=list)
    frames_listed_in: str = "the recording"  # the file that lists the frames, named when the video ends early
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
            raise SequenceError(f"{self.video} ends at frame {self._video.ended_at}, but {self.frames_listed_in} goes "
                                f"on to frame {k}; play fewer frames (?max_frames={self._video.ended_at}) or copy the "
                                "video again")
        return img
