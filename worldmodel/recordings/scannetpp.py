"""ScanNet++'s iPhone captures (``data/<scene>/iphone/``), as its toolkit (scannetpp/scannetpp) reads them, and its
undistorted DSLR photos with rendered depth (``data/<scene>/dslr/``, :func:`_open_scannetpp_dslr`).

``pose_intrinsic_imu.json`` maps each frame name (``frame_000123``: frame 123 of the video) to its ``aligned_pose``
(an OpenCV camera-to-world 4x4 in the laser scan's z-up world, the one its meshes are in), its ``intrinsic`` (the
3x3 K of the colour camera, 1920x1440) and its ``timestamp``. The colour is ``rgb/frame_NNNNNN.jpg`` once
``iphone/prepare_iphone_data.py`` extracted it (maybe only the frames COLMAP used), else the video ``rgb.mkv`` /
``rgb.mp4`` itself; the depth (ARKit's, 256x192) is ``depth/frame_NNNNNN.png`` in millimetres once extracted,
else ``depth.bin`` itself (:class:`_DepthBin`). The colour is resized to the depth's size, K with it.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldmodel.recordings.base import (SequenceError, _ImageSequence, _K_from_config, _VideoSequence, _check_K,
                                        _check_pose, _depth_scale, _json_numbers, _json_object, _last_number,
                                        _natural_key, _time_or, up_rotation)
from worldmodel.recordings.nerfstudio import _open_nerfstudio


SCANNETPP_POSES = "pose_intrinsic_imu.json"
SCANNETPP_VIDEOS = ("rgb.mkv", "rgb.mp4")  # (older releases hold the former)
DEPTH_BIN_SHAPE = (192, 256)  # (H, W) of the frames in depth.bin, as the toolkit's extract_depth decodes them


class _DepthBin:
    """ScanNet++'s ``depth.bin``, frame k read on demand, in metres. Two forms, as the toolkit's ``extract_depth``
    tells them apart: frames one after another, each ``[uint32 size][payload]`` (an lz4 block of uint16
    millimetres, or raw deflate of float32 metres), or the whole file one raw-deflate stream of float32 metres
    frames. The stream is walked once when opened (about a second per thousand frames), keeping the decoder's
    state every CHECKPOINT_FRAMES frames, so a frame is read from the nearest state before it; no inflate call
    makes more than OUT_LIMIT bytes, so memory stays bounded however well the depth compresses. A file cut short
    plays its whole frames (``truncated``)."""

    INPUT_PIECE = 1 << 16  # compressed bytes read at a time
    OUT_LIMIT = 1 << 22  # bytes one inflate call may make
    CHECKPOINT_FRAMES = 64  # frames of output between kept decoder states

    def __init__(self, path: Path, shape: tuple[int, int] = DEPTH_BIN_SHAPE):
        self.path, self.shape = path, shape
        self.size = path.stat().st_size
        self.truncated = False
        self.frames: list[tuple[int, int]] | None = self._framed()  # (offset, size) of each frame's payload
        # (file offset read to, decoder state, bytes made, input read but not yet inflated)
        self.checkpoints: list[tuple[int, object, int, bytes]] = []
        self.count = len(self.frames) if self.frames is not None else self._walk_stream()

    def _frame_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

    def _framed(self) -> list[tuple[int, int]] | None:
        """The payloads of the per-frame form, or None when the sizes do not chain to the file's end (a chain of
        two or more whole frames whose last header runs past the end is the per-frame form cut short)."""
        limit = 2 * self._frame_bytes() + 1024  # a payload is never much above the raw frame
        frames, offset = [], 0
        with self.path.open("rb") as f:
            while offset < self.size:
                f.seek(offset)
                head = f.read(4)
                n = int.from_bytes(head, "little") if len(head) == 4 else 0
                if len(head) < 4 or (0 < n <= limit and offset + 4 + n > self.size):
                    self.truncated = len(frames) >= 2
                    return frames if self.truncated else None
                if n == 0 or n > limit:
                    return None
                frames.append((offset + 4, n))
                offset += 4 + n
        return frames or None

    def _inflate(self, start: int, stop: int | None, state: tuple[int, object, int, bytes],
                 keep_checkpoints: bool = False) -> tuple[bytes, int, bool]:
        """Inflate the stream from checkpoint ``state`` -> (the output bytes [start, stop) (all when stop is None:
        none are kept), bytes made in all, whether the stream ended)."""
        offset, decoder, made, pending = state
        decoder, parts, every = decoder.copy(), [], self.CHECKPOINT_FRAMES * self._frame_bytes()
        next_checkpoint = made + every
        with self.path.open("rb") as f:
            f.seek(offset)
            while stop is None or made < stop:
                if keep_checkpoints and made >= next_checkpoint:
                    self.checkpoints.append((offset, decoder.copy(), made, pending))
                    next_checkpoint = made + every
                if not pending:
                    pending = f.read(self.INPUT_PIECE)
                    offset += len(pending)
                    if not pending:
                        break
                try:
                    out = decoder.decompress(pending, self.OUT_LIMIT)
                except zlib.error as e:
                    raise SequenceError(f"cannot read {self.path}: {e}; it is neither of ScanNet++'s depth.bin forms "
                                        "(download it again, or extract depth/ with its prepare_iphone_data.py)")
                pending = decoder.unconsumed_tail
                if stop is not None:
                    lo, hi = max(start - made, 0), min(stop - made, len(out))
                    if hi > lo:
                        parts.append(out[lo:hi])
                made += len(out)
                if decoder.eof:
                    break
        return b"".join(parts), made, decoder.eof

    def _walk_stream(self) -> int:
        """Walk the one-stream form once, keeping decoder states -> the number of whole frames in it."""
        self.checkpoints.append((0, zlib.decompressobj(-zlib.MAX_WBITS), 0, b""))
        _, made, ended = self._inflate(0, None, self.checkpoints[0], keep_checkpoints=True)
        self.truncated = not ended
        return made // self._frame_bytes()

    def __len__(self) -> int:
        return self.count

    def frame(self, k: int) -> np.ndarray:
        """Frame ``k``, (H, W) float32 metres, 0 = invalid."""
        if not 0 <= k < self.count:
            raise SequenceError(f"{self.path} holds {self.count} depth frames, not frame {k}")
        depth = self._payload_frame(k) if self.frames is not None else self._stream_frame(k)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return depth

    def _payload_frame(self, k: int) -> np.ndarray:
        import lz4.block

        offset, n = self.frames[k]
        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read(n)
        h, w = self.shape
        try:
            mm = np.frombuffer(lz4.block.decompress(data, uncompressed_size=h * w * 2), np.uint16)
            return (mm.astype(np.float32) * np.float32(0.001)).reshape(h, w)
        except lz4.block.LZ4BlockError:
            pass
        try:
            metres = np.frombuffer(zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, h * w * 4 + 4), np.float32)
        except (zlib.error, ValueError):
            metres = np.zeros(0, np.float32)
        if metres.size != h * w:
            raise SequenceError(f"cannot read frame {k} of {self.path} (neither lz4 nor deflate of a {w}x{h} frame); "
                                "download it again, or play fewer frames")
        return metres.reshape(h, w).copy()

    def _stream_frame(self, k: int) -> np.ndarray:
        start, size = k * self._frame_bytes(), self._frame_bytes()
        state = next(c for c in reversed(self.checkpoints) if c[2] <= start)
        data, _, _ = self._inflate(start, start + size, state)
        if len(data) != size:
            raise SequenceError(f"{self.path} ends inside frame {k}; download it again, or play fewer frames")
        return np.frombuffer(data, np.float32).reshape(self.shape).copy()


@dataclass(eq=False)
class _ScanNetPPSequence(_VideoSequence):
    """ScanNet++ iPhone frames: colour from ``rgb/`` or, where ``rgb_files[i]`` is the video, video frame
    ``video_index[i]``; depth from ``depth/`` or ``depth.bin`` (frame ``depth_index[i]`` of it)."""

    PER_FRAME = _VideoSequence.PER_FRAME + ("depth_index",)
    depth_bin: _DepthBin | None = None
    depth_index: list[int] = field(default_factory=list)

    def files(self, i: int) -> list[Path]:
        return [self.rgb_files[i], self.depth_bin.path if self.depth_bin else self.depth_files[i]]

    def _colour(self, i: int) -> np.ndarray:
        return super()._colour(i) if self.rgb_files[i] == self.video else _ImageSequence._colour(self, i)

    def _depth(self, i: int) -> np.ndarray:
        if self.depth_bin is None:
            return super()._depth(i)
        return self.depth_bin.frame(self.depth_index[i])


SCANNETPP_DSLR_CAMERAS = Path("nerfstudio") / "transforms_undistorted.json"
SCANNETPP_DSLR_DEPTH = ("undistorted_depths", "render_depth")  # SplaTAM's name; the toolkit's render.py's


def is_scannetpp(folder: Path) -> bool:
    """``folder`` is a ScanNet++ scene's ``iphone/`` or (undistorted) ``dslr/``."""
    return (folder / SCANNETPP_POSES).is_file() or (folder / SCANNETPP_DSLR_CAMERAS).is_file()


def _open_scannetpp(folder: Path, cfg: dict, up: str):
    """A ScanNet++ scene's ``iphone/`` (:func:`_open_scannetpp_iphone`) or ``dslr/`` (:func:`_open_scannetpp_dslr`)."""
    if (folder / SCANNETPP_POSES).is_file() or not (folder / SCANNETPP_DSLR_CAMERAS).is_file():
        return _open_scannetpp_iphone(folder, cfg, up)
    return _open_scannetpp_dslr(folder, cfg, up)


def _open_scannetpp_dslr(folder: Path, cfg: dict, up: str):
    """ScanNet++'s DSLR photos undistorted to pinhole, with depth rendered from its laser scan, as SplaTAM reads
    them: ``nerfstudio/transforms_undistorted.json`` (nerfstudio's OpenGL cameras; its ``frames`` and
    ``test_frames``, ``is_bad`` ones skipped), ``undistorted_images/NAME.JPG`` and ``undistorted_depths/NAME.png``
    (mm; or the toolkit's ``render_depth/``). The file's world is the scan's as nerfstudio's COLMAP converter
    turns it (SplaTAM turns it back), so ``up="auto"`` takes the axis the cameras' mean up is nearest, said."""
    depth_in = next((folder / d for d in SCANNETPP_DSLR_DEPTH if (folder / d).is_dir()), None)
    if depth_in is None:
        raise SequenceError(f"{folder} has no undistorted_depths/ (or render_depth/); render the DSLR depth with "
                            "ScanNet++'s toolkit (common/render.py) first")
    return _open_nerfstudio(folder, cfg, up, transforms=folder / SCANNETPP_DSLR_CAMERAS,
                            files_in=folder / "undistorted_images", depth_in=depth_in, fmt="scannetpp")


def _open_scannetpp_iphone(folder: Path, cfg: dict, up: str) -> _ScanNetPPSequence:
    """A ScanNet++ scene's ``iphone/`` (see the module docstring); ``up="auto"``: the scan's z."""
    up = "+z" if up == "auto" else up
    path = folder / SCANNETPP_POSES
    meta = _json_object(path, "download it again")
    if not meta:
        raise SequenceError(f"{path} holds no frames (an object of frame_NNNNNN entries); download it again")
    names = sorted(meta, key=lambda n: _natural_key(Path(n)))
    numbers = [_last_number(n) if len(n) <= 64 else None for n in names]
    if None in numbers:
        raise SequenceError(f"{path}: frame {names[numbers.index(None)][:64]!r} is not named frame_NNNNNN; download "
                            "it again")
    notes: list[str] = []
    rgb_dir, depth_dir = folder / "rgb", folder / "depth"
    video = next((folder / v for v in SCANNETPP_VIDEOS if (folder / v).is_file()), None)
    if not rgb_dir.is_dir() and video is None:
        raise SequenceError(f"{folder} has neither rgb/ nor {' or '.join(SCANNETPP_VIDEOS)}; a ScanNet++ iphone "
                            "folder needs its colour")
    depth_bin = None
    if not depth_dir.is_dir():
        if not (folder / "depth.bin").is_file():
            raise SequenceError(f"{folder} has neither depth/ nor depth.bin; a ScanNet++ iphone folder needs its depth")
        depth_bin = _DepthBin(folder / "depth.bin")
        if depth_bin.truncated:
            notes.append(f"depth.bin is cut short: its {len(depth_bin)} whole frames are played")

    kept, rgb_files, depth_files, missing = [], [], [], {"colour": 0, "depth": 0}
    for name, number in zip(names, numbers):
        # an extracted frame is read rather than decoded; the video has the frames rgb/ lacks (COLMAP's subset)
        rgb = next((rgb_dir / (name + e) for e in (".jpg", ".png") if (rgb_dir / (name + e)).is_file()), video)
        if rgb is None:
            missing["colour"] += 1
            continue
        if depth_bin is not None:
            if number >= len(depth_bin):
                missing["depth"] += 1
                continue
            depth = folder / "depth.bin"
        else:
            depth = depth_dir / f"{name}.png"
            if not depth.is_file():
                missing["depth"] += 1
                continue
        kept.append((name, number))
        rgb_files.append(rgb)
        depth_files.append(depth)
    for what, n in missing.items():
        if n:
            notes.append(f"{n} of the {len(names)} frames in {SCANNETPP_POSES} have no {what} "
                         f"({'rgb/ or a video' if what == 'colour' else 'depth/ or depth.bin'}): skipped")
    if not kept:
        raise SequenceError(f"{folder}: no frame of {SCANNETPP_POSES} has both colour and depth; extract them with "
                            "ScanNet++'s iphone/prepare_iphone_data.py")

    poses, Ks, times = [], [], []
    for name, number in kept:
        entry = meta[name]
        where, fix = f"{path}: {name}", f"download {SCANNETPP_POSES} again"
        entry = entry if isinstance(entry, dict) else {}
        poses.append(_check_pose(_json_numbers(entry, ["aligned_pose"], where, fix, count=16).reshape(4, 4), where))
        Ks.append(_check_K(_json_numbers(entry, ["intrinsic"], where, fix, count=9).reshape(3, 3), where))
        times.append(_time_or(entry.get("timestamp"), number))
    K = _K_from_config(cfg, folder)
    return _ScanNetPPSequence(
        path=folder, format="scannetpp", c2ws=up_rotation(up) @ np.stack(poses), timestamps=np.asarray(times),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=Ks if K is None else K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        video=video, video_index=[number for _, number in kept],
        frames_listed_in=SCANNETPP_POSES, depth_bin=depth_bin,
        depth_index=[number for _, number in kept] if depth_bin is not None else [])
