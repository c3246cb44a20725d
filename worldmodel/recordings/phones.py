"""Phone and tablet captures (ARKit: depth at 256x192 beside a larger colour image, confidence 0..2): Record3D,
Stray Scanner, ARKitScenes, 3D Scanner App, Polycam.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldmodel.camera import flip_cv_gl
from worldmodel.tum import tum_rows_to_c2ws
from worldmodel.recordings.base import (SequenceError, _ImageSequence, _K_from_config, _K_from_config_or_file,
                                        _VideoSequence, _check_K, _check_pose, _confidence_maps, _confidence_note,
                                        _depth_scale, _images_in, _json_numbers, _json_object, _min_confidence,
                                        _natural_key, _number_table, _numbers, _read_depth, _read_rgb, _time_or,
                                        _visible, config_folder, up_rotation)
from worldmodel.recordings.tum import TUM_MAX_GT_GAP, interpolate_poses


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

    PER_FRAME = _ImageSequence.PER_FRAME + ("members",)
    archive: _Record3DArchive | None = None
    depth_shape: tuple[int, int] = (0, 0)  # (dh, dw)
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
        raise SequenceError(f"{where}: metadata {key} must be an image side in pixels, got {value!r}; export the "
                            "capture again")
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
    configured = _K_from_config(cfg, config_folder(path))  # (of the colour images, as Record3D's own)
    Ks = Ks if configured is None else configured
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
        fps = meta.get("fps")
        fps = float(fps) if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0 else 1.0
        stamps = np.arange(n, dtype=np.float64) / fps
    min_confidence = _min_confidence(cfg, path)
    if min_confidence and archive.confidence and archive.has(archive.confidence.format(members[0])):
        notes.append(_confidence_note(min_confidence))
    return _Record3DSequence(
        path=path, format="record3d", c2ws=up_rotation(up) @ c2ws[members], timestamps=stamps[members],
        world_up=up, notes=notes, rgb_files=[archive.where(archive.colour.format(i)) for i in members],
        depth_files=[archive.where(archive.depth.format(i)) for i in members],
        Ks=[Ks[i] for i in members] if isinstance(Ks, list) else Ks, colour_to_depth_size=True, colour_K=True,
        archive=archive, depth_shape=(dh, dw), min_confidence=min_confidence, members=members,
        options={"colour_size": [w, h]})


ARKITSCENES_ASSETS = (("lowres_wide", "lowres_depth"), ("wide", "highres_depth"))  # colour, its depth
ARKITSCENES_TRAJECTORY = "lowres_wide.traj"


def _read_arkitscenes_trajectory(path: Path) -> np.ndarray:
    """ARKitScenes' ``lowres_wide.traj``: per line ``timestamp ax ay az tx ty tz``, the world-to-camera rotation
    (axis-angle, radians) and translation, as its loaders read it (``TrajStringToMatrix``) -> the cameras as TUM
    rows (M, 8) ``t tx ty tz qx qy qz qw`` of their camera-to-world poses."""
    from scipy.spatial.transform import Rotation

    arr = _number_table(path, 7, "timestamp ax ay az tx ty tz", "download the video's trajectory again")
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


def _pincam_path(folder: Path, image: Path) -> Path | None:
    """The ``.pincam`` of ``image`` in ``folder``, named as it or 1 ms either side (as ARKitScenes' loaders look)."""
    t = _arkitscenes_time(image)
    video = image.stem.rsplit("_", 1)[0]
    return next((p for p in (folder / f"{name}.pincam" for name in (image.stem, f"{video}_{t - 0.001:.3f}",
                                                                     f"{video}_{t + 0.001:.3f}")) if p.is_file()), None)


def _read_pincam(path: Path) -> np.ndarray:
    """An ARKitScenes camera file: ``w h fx fy cx cy`` -> K (3, 3)."""
    values = [v for _, row in _numbers(path) for v in row]
    if len(values) != 6:
        raise SequenceError(f"{path}: expected 6 numbers 'w h fx fy cx cy', got {len(values)}; download the video's "
                            "intrinsics again")
    _, _, fx, fy, cx, cy = values
    return _check_K(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), path)


def _open_arkitscenes(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """An ARKitScenes video folder: ``lowres_wide/`` (or ``wide/``) colour and ``lowres_depth/`` (or
    ``highres_depth/``, mm) of the same names ``VIDEO_TIME.png``, a ``.pincam`` per frame in
    ``lowres_wide_intrinsics/``, ``lowres_wide.traj`` (world-to-camera, axis-angle, ~10 Hz; the pose is
    interpolated at each frame's time as TUM's, across gaps up to 1.5 times its own spacing), optional
    ``confidence/`` (0..2). Not every asset exists at every time (Apple's README): a frame without its depth or
    camera is skipped, said. OpenCV cameras in a z-up world (Apple's answers in apple/ARKitScenes#81 and #78, and
    its own unprojection)."""
    colour_dir, depth_dir = next(((c, d) for c, d in ARKITSCENES_ASSETS
                                  if (folder / c).is_dir() and (folder / d).is_dir()), (None, None))
    if colour_dir is None:
        raise SequenceError(f"{folder}: an ARKitScenes video needs lowres_wide/ and lowres_depth/ (or wide/ and "
                            f"highres_depth/) and {ARKITSCENES_TRAJECTORY}")
    cameras = folder / f"{colour_dir}_intrinsics"
    K = _K_from_config(cfg, folder)
    frames, notes = [], []  # (time, colour, depth, camera file)
    no_depth = no_camera = 0
    for image in _images_in(folder, colour_dir, f"an ARKitScenes video needs {colour_dir}/"):
        depth = folder / depth_dir / image.name
        camera = _pincam_path(cameras, image) if K is None else None
        no_depth += not depth.is_file()
        no_camera += depth.is_file() and K is None and camera is None
        if depth.is_file() and (K is not None or camera is not None):
            frames.append((_arkitscenes_time(image), image, depth, camera))
    for count, what in ((no_depth, f"no depth in {depth_dir}/"), (no_camera, f"no camera in {cameras.name}/")):
        if count:
            notes.append(f"{count} frames of {colour_dir}/ have {what} (skipped)")
    if not frames:
        raise SequenceError(f"{folder}: no frame of {colour_dir}/ has both its depth in {depth_dir}/ and its camera in "
                            f"{cameras.name}/; download the video's assets again")
    frames.sort(key=lambda f: f[0])
    times = np.array([f[0] for f in frames])
    trajectory = _read_arkitscenes_trajectory(folder / ARKITSCENES_TRAJECTORY)
    spacing = float(np.median(np.diff(np.sort(trajectory[:, 0])))) if len(trajectory) > 1 else 0.0
    poses, ok = interpolate_poses(trajectory, times, max_gap=max(TUM_MAX_GT_GAP, 1.5 * spacing))
    outside = ~ok & ((times < trajectory[:, 0].min()) | (times > trajectory[:, 0].max()))
    for count, where in ((int(outside.sum()), "lie outside"), (int((~ok & ~outside).sum()), "lie in a gap of")):
        if count:
            notes.append(f"{count} frames {where} {ARKITSCENES_TRAJECTORY} (skipped)")
    if not ok.any():
        raise SequenceError(f"{folder / ARKITSCENES_TRAJECTORY} has no pose near any frame's time; is it from "
                            "another video?")
    frames = [f for f, k in zip(frames, ok) if k]
    has_maps = colour_dir == "lowres_wide" and (folder / "confidence").is_dir()  # (lowres_depth's maps)
    confidence, min_confidence = _confidence_maps(
        [folder / "confidence" / f"{f[2].stem}.png" for f in frames] if has_maps else [], len(frames), cfg, folder,
        notes)
    return _ImageSequence(
        path=folder, format="arkitscenes", c2ws=up_rotation(up) @ poses[ok], timestamps=times[ok], world_up=up,
        notes=notes, rgb_files=[f[1] for f in frames], depth_files=[f[2] for f in frames],
        Ks=K if K is not None else [_read_pincam(f[3]) for f in frames], depth_scale=_depth_scale(cfg, folder, 0.001),
        colour_to_depth_size=True, colour_K=True, confidence_files=confidence, min_confidence=min_confidence)


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


def _open_stray(folder: Path, cfg: dict, up: str) -> _VideoSequence:
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
    confidence, min_confidence = _confidence_maps(
        sorted((p for p in _visible(conf_dir.iterdir()) if p.suffix.lower() == ".png"), key=_natural_key)[:n]
        if conf_dir.is_dir() else [], n, cfg, folder, notes)
    K = _K_from_config_or_file(cfg, folder, folder / "camera_matrix.csv",
                               "a Stray Scanner folder needs it for the camera's intrinsics")
    if not (folder / "rgb.mp4").is_file():
        raise SequenceError(f"{folder / 'rgb.mp4'} is missing; a Stray Scanner folder needs it for the colour")
    return _VideoSequence(
        path=folder, format="stray", c2ws=up_rotation(up) @ poses[:n], timestamps=timestamps[:n], world_up=up,
        notes=notes, rgb_files=[folder / "rgb.mp4"] * n, depth_files=depth_files[:n], Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        video=folder / "rgb.mp4", video_index=list(range(n)), frames_listed_in="odometry.csv",
        confidence_files=confidence,
        min_confidence=min_confidence)


def _arkit_frames(folder: Path, numbered: dict[int, Path], colour: dict[int, Path], depth: dict[int, Path],
                  listed_in: str, notes: list[str]) -> list[int]:
    """The frame numbers of ``numbered`` (the per-frame camera files) that have both a colour and a depth image,
    in order; the rest skipped, said (phone apps keep depth for more frames than colour)."""
    numbers = sorted(numbered)
    for what, have in (("colour image", colour), ("depth image", depth)):
        missing = sum(n not in have for n in numbers)
        if missing:
            notes.append(f"{missing} of the {len(numbers)} frames of {listed_in} have no {what}: skipped")
    uncamera = sum(n not in numbered for n in colour if n in depth)
    if uncamera:
        notes.append(f"{uncamera} frames have colour and depth but no camera in {listed_in}: skipped")
    kept = [n for n in numbers if n in colour and n in depth]
    if not kept:
        raise SequenceError(f"{folder}: no frame of {listed_in} has both a colour and a depth image; export the scan "
                            "again with its depth (a LiDAR phone's capture)")
    return kept


def _numbered(folder: Path, prefix: str, suffixes: tuple[str, ...]) -> dict[int, Path]:
    """``prefix<number><suffix>`` files of ``folder`` by number."""
    found = {}
    if folder.is_dir():
        for p in _visible(folder.iterdir()):
            if p.name.startswith(prefix) and p.suffix.lower() in suffixes and p.stem[len(prefix):].isdigit():
                found[int(p.stem[len(prefix):])] = p
    return found


def _is_3d_scanner_app(folder: Path) -> bool:
    """A 3D Scanner App "All Data" export: frame_NNNNN.json beside depth_NNNNN.png."""
    return folder.is_dir() and any(True for _ in folder.glob("frame_*.json")) and any(
        True for _ in folder.glob("depth_*.png"))


def _open_3d_scanner_app(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """3D Scanner App's (Laan Labs) "All Data" export, as psegs' and rtabmap's readers take it: per frame
    ``frame_NNNNN.json`` (``cameraPoseARFrame``: 16 numbers, a row-major camera-to-world of ARKit's OpenGL camera in
    its y-up world; ``intrinsics``: the .jpg's 3x3, row-major; ``time``), ``frame_NNNNN.jpg`` (the app keeps
    colour for fewer frames than depth: the others are skipped, said), ``depth_NNNNN.png`` (mm, 256x192) and
    ``conf_NNNNN.png`` (0..2, below ``min_confidence`` dropped). Colour resized to the depth's size, K with it."""
    fix = "export the scan from 3D Scanner App again (Share > All Data)"
    notes: list[str] = []
    cameras = _numbered(folder, "frame_", (".json",))
    colour, depth = _numbered(folder, "frame_", (".jpg", ".jpeg", ".png")), _numbered(folder, "depth_", (".png",))
    kept = _arkit_frames(folder, cameras, colour, depth, "frame_*.json", notes)
    poses, Ks, times = [], [], []
    for n in kept:
        data = _json_object(cameras[n], fix)
        pose = _json_numbers(data, ["cameraPoseARFrame"], cameras[n], fix)
        K = _json_numbers(data, ["intrinsics"], cameras[n], fix)
        if pose.size != 16 or K.size != 9:
            raise SequenceError(f"{cameras[n]}: cameraPoseARFrame must hold 16 numbers and intrinsics 9, got "
                                f"{pose.size} and {K.size}; {fix}")
        poses.append(flip_cv_gl(_check_pose(pose.reshape(4, 4), str(cameras[n]))))  # OpenGL -> OpenCV camera
        Ks.append(_check_K(K.reshape(3, 3), cameras[n]))
        times.append(_time_or(data.get("time"), n))
    confidence, min_confidence = _confidence_maps([folder / f"conf_{depth[n].stem[len('depth_'):]}.png" for n in kept],
                                                  len(kept), cfg, folder, notes, kept_in="conf_*.png")
    K = _K_from_config(cfg, folder)
    return _ImageSequence(
        path=folder, format="3dscannerapp", c2ws=up_rotation(up) @ np.stack(poses), timestamps=np.asarray(times),
        world_up=up, notes=notes, rgb_files=[colour[n] for n in kept], depth_files=[depth[n] for n in kept],
        Ks=Ks if K is None else K, depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True,
        colour_K=True, confidence_files=confidence, min_confidence=min_confidence)


POLYCAM_CAMERA_KEYS = [f"t_{r}{c}" for r in range(3) for c in range(4)]
POLYCAM_CONFIDENCE_STEP = 127  # its maps hold 0, 127, 255 where ARKit's hold 0, 1, 2


def polycam_keyframes(folder: Path) -> Path | None:
    """The ``keyframes/`` folder of a Polycam raw-data export (the export's folder or keyframes/ itself), or None."""
    for keyframes in (folder / "keyframes", folder):
        if any((keyframes / d).is_dir() for d in ("cameras", "corrected_cameras")) and any(
                (keyframes / d).is_dir() for d in ("images", "corrected_images")):
            return keyframes
    return None


def _open_polycam(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """Polycam's raw-data export (developer mode), as nerfstudio's ``ns-process-data polycam`` reads it:
    ``keyframes/corrected_images/<id>.jpg`` and ``corrected_cameras/<id>.json`` (else ``images/``, ``cameras/``),
    ``depth/<id>.png`` (mm), ``confidence/<id>.png`` (0 low, 127 medium, 255 high, as Polycam's polyform README
    says; ``min_confidence`` 0..2 picks the level). A camera file holds ``fx fy cx cy width height`` of its image
    (nerfstudio's pixel convention, centres at +0.5) and ``t_00`` .. ``t_23``, a row-major 3x4 camera-to-world of
    ARKit's OpenGL camera in its y-up world. The ids are times in microseconds. Colour resized to the depth's
    size, K with it."""
    fix = "export the capture from Polycam again (raw data)"
    keyframes = polycam_keyframes(folder)
    if keyframes is None:
        raise SequenceError(f"{folder} holds no keyframes/ with images/ and cameras/; {fix}")
    corrected = (keyframes / "corrected_images").is_dir() and (keyframes / "corrected_cameras").is_dir()
    images, cameras = (("corrected_images", "corrected_cameras") if corrected else ("images", "cameras"))
    notes: list[str] = []
    camera_files = _numbered(keyframes / cameras, "", (".json",))
    colour = _numbered(keyframes / images, "", (".jpg", ".jpeg", ".png"))
    depth = _numbered(keyframes / "depth", "", (".png",))
    if not depth:
        raise SequenceError(f"{keyframes / 'depth'} holds no depth .png; this tool needs the depth of a LiDAR "
                            f"capture; {fix}")
    kept = _arkit_frames(folder, camera_files, colour, depth, f"{cameras}/", notes)
    poses, Ks = [], []
    for n in kept:
        data = _json_object(camera_files[n], fix)
        pose = _json_numbers(data, POLYCAM_CAMERA_KEYS, camera_files[n], fix, count=12).reshape(3, 4)
        fx, fy, cx, cy = _json_numbers(data, ["fx", "fy", "cx", "cy"], camera_files[n], fix, count=4)
        poses.append(flip_cv_gl(_check_pose(np.vstack([pose, [0.0, 0.0, 0.0, 1.0]]), str(camera_files[n]))))
        Ks.append(_check_K(np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]]), camera_files[n]))
    confidence, min_confidence = _confidence_maps(
        [keyframes / "confidence" / depth[n].name for n in kept] if (keyframes / "confidence").is_dir() else [],
        len(kept), cfg, folder, notes)
    K = _K_from_config(cfg, folder)
    return _ImageSequence(
        path=folder, format="polycam", c2ws=up_rotation(up) @ np.stack(poses),
        timestamps=np.asarray(kept, dtype=np.float64) * 1e-6, world_up=up, notes=notes,
        rgb_files=[colour[n] for n in kept], depth_files=[depth[n] for n in kept], Ks=Ks if K is None else K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        confidence_files=confidence, min_confidence=min_confidence, confidence_step=POLYCAM_CONFIDENCE_STEP)
