"""SUN3D sequences (Xiao et al., ICCV 2013), as its toolbox reads them. Sources: jianxiongxiao/SUN3Dtoolbox
(``SUN3Dloader/loadSUN3D.m``, ``SUN3Dreader.m``), PrincetonVision/SUN3Dsfm (``depthRead.m``,
``outputCameraExtrinsics.m``, ``rectifyScene.m``) and PrincetonVision/SUN3DCppReader (``sun3d_reader.cpp``).

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.recordings.base import (CONFIG_FILE, SequenceError, _ImageSequence, _K_from_config_or_file,
                                        _check_pose, _depth_png_units, _depth_scale, _images_in, _number_table,
                                        _up_from_cameras, _visible, up_rotation)


SUN3D_NAME = re.compile(r"^(\d+)-(\d+)$")  # an image's or depth's stem: frame number - timestamp (µs)
SUN3D_FAR_PAIR_S = 0.05  # an image whose nearest depth is farther apart in time is said in a note


def is_sun3d(folder: Path) -> bool:
    """A SUN3D sequence folder: ``image/`` and ``depth/`` with ``extrinsics/`` or ``intrinsics.txt`` beside them."""
    return (folder / "image").is_dir() and (folder / "depth").is_dir() and (
        (folder / "extrinsics").is_dir() or (folder / "intrinsics.txt").is_file())


def sun3d_depth_units(stored: np.ndarray) -> np.ndarray:
    """A SUN3D depth PNG's uint16 values (H, W) -> millimetres (H, W) uint16: the 16 bits rotated right by 3
    (``depthRead.m``: ``bitor(bitshift(d, -3), bitshift(d, 16 - 3))``); 0 stays 0 (no depth)."""
    stored = np.asarray(stored, dtype=np.uint16)
    return (stored >> np.uint16(3)) | (stored << np.uint16(13))


@dataclass(eq=False)
class _SUN3DSequence(_ImageSequence):
    """SUN3D frames: depth PNGs whose bits are rotated (:func:`sun3d_depth_units`), then millimetres."""

    def _depth(self, i: int) -> np.ndarray:
        return sun3d_depth_units(_depth_png_units(self.depth_files[i])).astype(np.float32) * np.float32(
            self.depth_scale)


def _frames_named(folder: Path, sub: str, ext: str) -> tuple[list[Path], np.ndarray]:
    """The ``ext`` files of ``folder/sub`` in name order and their timestamps (N,) in µs, from SUN3D's names
    ``0000001-000000000000.jpg`` (frame number - timestamp, as loadSUN3D.m's ``sscanf('%d-%d')``)."""
    fix = "a SUN3D sequence folder needs intrinsics.txt, image/*.jpg, depth/*.png and extrinsics/*.txt"
    try:
        files = [p for p in _images_in(folder, sub, fix) if p.suffix.lower() == ext]
    except SequenceError as e:
        raise SequenceError(f"{str(e).split('; ')[0]}; {fix}") from None
    if not files:
        raise SequenceError(f"{folder / sub} holds no {ext} files; {fix}")
    times = []
    for p in files:
        m = SUN3D_NAME.match(p.stem)
        if m is None:
            raise SequenceError(f"{p}: expected SUN3D's name 'frame-timestamp{ext}' (e.g. 0000001-000000000000{ext}); "
                                f"rename it or remove it from {sub}/")
        times.append(int(m.group(2)))
    return files, np.asarray(times, dtype=np.float64)


def nearest_depth(image_times: np.ndarray, depth_times: np.ndarray) -> np.ndarray:
    """For each image time (N,) the index into ``depth_times`` (M,) of the nearest one, the first in order on a
    tie; no limit, and a depth may serve several images (loadSUN3D.m: ``min(abs(depthTimestamp - t))``)."""
    order = np.argsort(depth_times, kind="stable")
    t = depth_times[order]
    after = np.minimum(np.searchsorted(t, image_times, side="left"), len(t) - 1)  # first of its equal times
    before = np.searchsorted(t, t[np.maximum(after - 1, 0)], side="left")
    d_after, d_before = np.abs(t[after] - image_times), np.abs(image_times - t[before])
    pick_before = (d_before < d_after) | ((d_before == d_after) & (order[before] < order[after]))
    return order[np.where(pick_before, before, after)]


def _newest_extrinsics(folder: Path) -> tuple[Path, str | None]:
    """The last ``extrinsics/*.txt`` by name (SUN3Dsfm names each run's file by its time, ``YYYYMMDDhhmmss.txt``;
    the toolbox reads the last) and a note when there are several."""
    ext_dir = folder / "extrinsics"
    files = sorted((p for p in _visible(ext_dir.glob("*.txt")) if p.is_file()), key=lambda p: p.name) \
        if ext_dir.is_dir() else []
    if not files:
        raise SequenceError(f"{ext_dir} holds no .txt camera poses; download the sequence's extrinsics/ (not every "
                            "SUN3D sequence has them), or play another sequence")
    note = None if len(files) == 1 else (f"extrinsics/ holds {len(files)} pose files: the newest by name, "
                                         f"{files[-1].name}, is read (as SUN3D's toolbox does)")
    return files[-1], note


def read_sun3d_extrinsics(path: Path) -> np.ndarray:
    """A SUN3D extrinsics file (``outputCameraExtrinsics.m``: per camera three lines of ``r r r t``, a row-major
    3x4 camera-to-world of an OpenCV camera) -> c2ws (N, 4, 4) float64, each checked to be rigid."""
    fix = "download the sequence's extrinsics again"
    rows = _number_table(path, 4, "r r r t", fix)
    if len(rows) % 3:
        raise SequenceError(f"{path} holds {len(rows)} lines of 4 numbers, not 3 per camera (a 3x4 camera-to-world "
                            f"each); {fix}")
    c2ws = np.tile(np.eye(4), (len(rows) // 3, 1, 1))
    c2ws[:, :3, :] = rows.reshape(-1, 3, 4)
    try:
        for k in range(len(c2ws)):
            _check_pose(c2ws[k], f"{path}: camera {k + 1} (lines {3 * k + 1}-{3 * k + 3})")
    except SequenceError as e:
        raise SequenceError(f"{str(e).split('; ')[0]}; {fix}") from None
    return c2ws


def _open_sun3d(folder: Path, cfg: dict, up: str) -> _SUN3DSequence:
    """A SUN3D sequence (``hotel_umd/maryland_hotel3/``): ``intrinsics.txt`` (3x3, row-major), ``image/*.jpg`` and
    ``depth/*.png`` named ``frame-timestamp`` (µs), ``extrinsics/*.txt`` (the newest by name: one 3x4 OpenCV
    camera-to-world per image, in name order). Each image takes the depth nearest in time (no limit, as the
    toolbox pairs them; a pair over SUN3D_FAR_PAIR_S apart is said); depth is 16 bits rotated right by 3, then mm.
    K is used as written, pixel (0, 0) at the first pixel's centre as SUN3DCppReader unprojects (the MATLAB
    toolbox's ``depth2XYZcamera`` counts pixels from 1: one pixel apart).
    Up: SUN3Dsfm's ``rectifyScene`` turns the world y-up (floor at y = 0), but nothing in the files says a
    sequence went through it, so up is y or z, whichever the cameras' mean up is nearer (said)."""
    images, image_t = _frames_named(folder, "image", ".jpg")
    depths, depth_t = _frames_named(folder, "depth", ".png")
    K = _K_from_config_or_file(cfg, folder, folder / "intrinsics.txt", "download the sequence's intrinsics.txt (its "
                               f"3x3 camera matrix) or put K in {CONFIG_FILE}")
    ext_path, note = _newest_extrinsics(folder)
    notes = [note] if note else []
    c2ws = read_sun3d_extrinsics(ext_path)
    if len(c2ws) < len(images):
        raise SequenceError(f"{ext_path} holds {len(c2ws)} cameras but image/ has {len(images)} images; the newest "
                            "extrinsics hold one per image in name order: download the sequence's extrinsics again "
                            "(or remove the images it does not cover)")
    if len(c2ws) > len(images):
        notes.append(f"{ext_path.name} holds {len(c2ws)} cameras for {len(images)} images: the first "
                     f"{len(images)} are used, one per image in name order (is image/ complete?)")
        c2ws = c2ws[:len(images)]
    pair = nearest_depth(image_t, depth_t)
    gap = np.abs(depth_t[pair] - image_t) / 1e6
    if (gap > SUN3D_FAR_PAIR_S).any():
        notes.append(f"{int((gap > SUN3D_FAR_PAIR_S).sum())} images have no depth within {SUN3D_FAR_PAIR_S * 1e3:g} "
                     f"ms: each takes the nearest (up to {gap.max():.3g} s away), as SUN3D's toolbox pairs them")
    if up == "auto":
        up = _up_from_cameras(c2ws, notes)
    return _SUN3DSequence(
        path=folder, format="sun3d", c2ws=up_rotation(up) @ c2ws, timestamps=image_t / 1e6, world_up=up,
        notes=notes, rgb_files=images, depth_files=[depths[j] for j in pair], Ks=K,
        depth_scale=_depth_scale(cfg, folder, 0.001))
