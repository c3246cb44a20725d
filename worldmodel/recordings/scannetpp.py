"""ScanNet++'s iPhone captures (``data/<scene>/iphone/``), as its toolkit (scannetpp/scannetpp) reads them.

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
                                        _check_pose, _depth_scale, _json_object, _last_number, _natural_key,
                                        up_rotation)


SCANNETPP_POSES = "pose_intrinsic_imu.json"
SCANNETPP_VIDEOS = ("rgb.mkv", "rgb.mp4")  # (older releases hold the former)
DEPTH_BIN_SHAPE = (192, 256)  # (H, W) of the frames in depth.bin, as the toolkit's extract_depth decodes them


class _DepthBin:
    """ScanNet++'s ``depth.bin``, frame k read on demand, in metres. Two forms, as the toolkit's ``extract_depth``
    tells them apart: frames one after another, each ``[uint32 size][payload]`` (an lz4 block of uint16
    millimetres, or raw deflate of float32 metres), or the whole file one raw-deflate stream of float32 metres
    frames. The stream is walked once when opened; decoder states kept every few MB let a frame be read from the
    nearest one before it."""

    CHUNK = 1 << 20  # bytes of the stream read at a time
    CHECKPOINT_EVERY = 4  # chunks between kept decoder states

    def __init__(self, path: Path, shape: tuple[int, int] = DEPTH_BIN_SHAPE):
        self.path, self.shape = path, shape
        self.size = path.stat().st_size
        self.frames: list[tuple[int, int]] | None = self._framed()  # (offset, size) of each frame's payload
        self.checkpoints: list[tuple[int, object, int]] = []  # (input offset, decoder state, output bytes before)
        self.truncated = False
        self.count = len(self.frames) if self.frames is not None else self._walk_stream()

    def _framed(self) -> list[tuple[int, int]] | None:
        """The payloads of the per-frame form, or None when the sizes do not chain exactly to the file's end."""
        limit = 2 * self.shape[0] * self.shape[1] * 4 + 1024  # a payload is never much above the raw frame
        frames, offset = [], 0
        with self.path.open("rb") as f:
            while offset < self.size:
                f.seek(offset)
                head = f.read(4)
                n = int.from_bytes(head, "little") if len(head) == 4 else 0
                if n == 0 or n > limit or offset + 4 + n > self.size:
                    return None
                frames.append((offset + 4, n))
                offset += 4 + n
        return frames or None

    def _walk_stream(self) -> int:
        """Walk the one-stream form, keeping decoder states -> the number of whole frames in it."""
        decoder, read, made = zlib.decompressobj(-zlib.MAX_WBITS), 0, 0
        with self.path.open("rb") as f:
            for n in range(self.size // self.CHUNK + 1):
                if n % self.CHECKPOINT_EVERY == 0:
                    self.checkpoints.append((read, decoder.copy(), made))
                chunk = f.read(self.CHUNK)
                if not chunk:
                    break
                try:
                    made += len(decoder.decompress(chunk))
                except zlib.error as e:
                    raise SequenceError(f"cannot read {self.path}: {e}; it is neither of ScanNet++'s depth.bin forms "
                                        "(download it again, or extract depth/ with its prepare_iphone_data.py)")
                read += len(chunk)
                if decoder.eof:
                    break
        self.truncated = not decoder.eof
        return made // self._frame_bytes()

    def _frame_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

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
            metres = np.frombuffer(zlib.decompress(data, wbits=-zlib.MAX_WBITS), np.float32)
        except zlib.error:
            metres = np.zeros(0, np.float32)
        if metres.size != h * w:
            raise SequenceError(f"cannot read frame {k} of {self.path} (neither lz4 nor deflate of a {w}x{h} frame); "
                                "download it again, or play fewer frames")
        return metres.reshape(h, w).copy()

    def _stream_frame(self, k: int) -> np.ndarray:
        start, size = k * self._frame_bytes(), self._frame_bytes()
        read, state, made = next(c for c in reversed(self.checkpoints) if c[2] <= start)
        decoder, parts = state.copy(), []
        with self.path.open("rb") as f:
            f.seek(read)
            while made < start + size:
                chunk = f.read(self.CHUNK)
                if not chunk:
                    break
                out = decoder.decompress(chunk)
                lo, hi = max(start - made, 0), min(start + size - made, len(out))
                if hi > lo:
                    parts.append(out[lo:hi])
                made += len(out)
        data = b"".join(parts)
        if len(data) != size:
            raise SequenceError(f"{self.path} ends inside frame {k}; download it again, or play fewer frames")
        return np.frombuffer(data, np.float32).reshape(self.shape).copy()


@dataclass(eq=False)
class _ScanNetPPSequence(_VideoSequence):
    """ScanNet++ iPhone frames: colour from ``rgb/`` or the video, depth from ``depth/`` or ``depth.bin``
    (frame ``depth_index[i]`` of it)."""

    PER_FRAME = _VideoSequence.PER_FRAME + ("depth_index",)
    depth_bin: _DepthBin | None = None
    depth_index: list[int] = field(default_factory=list)

    def files(self, i: int) -> list[Path]:
        return [self.video or self.rgb_files[i], self.depth_bin.path if self.depth_bin else self.depth_files[i]]

    def _colour(self, i: int) -> np.ndarray:
        return super()._colour(i) if self.video else _ImageSequence._colour(self, i)

    def _depth(self, i: int) -> np.ndarray:
        if self.depth_bin is None:
            return super()._depth(i)
        return self.depth_bin.frame(self.depth_index[i])


def _entry_matrix(entry, key: str, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        M = np.asarray(entry.get(key) if isinstance(entry, dict) else None, dtype=np.float64)
    except (TypeError, ValueError):
        M = np.zeros(0)
    if M.size != shape[0] * shape[1]:
        raise SequenceError(f"{where} has no {key} ({shape[0]}x{shape[1]} numbers); download "
                            f"{SCANNETPP_POSES} again")
    return M.reshape(shape)


def _open_scannetpp(folder: Path, cfg: dict, up: str) -> _ScanNetPPSequence:
    path = folder / SCANNETPP_POSES
    meta = _json_object(path, "download it again")
    if not meta:
        raise SequenceError(f"{path} holds no frames (an object of frame_NNNNNN entries); download it again")
    names = sorted(meta, key=lambda n: _natural_key(Path(n)))
    numbers = [_last_number(n) for n in names]
    if None in numbers:
        raise SequenceError(f"{path}: frame {names[numbers.index(None)]!r} is not named frame_NNNNNN; download it "
                            "again")
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
            notes.append(f"depth.bin ends mid-stream: its {len(depth_bin)} whole frames are played")

    kept, rgb_files, depth_files, missing = [], [], [], {"colour": 0, "depth": 0}
    use_video = not rgb_dir.is_dir()  # (extracted frames, when there are, are read rather than decoded)
    for name, number in zip(names, numbers):
        rgb = video if use_video else next((rgb_dir / (name + e) for e in (".jpg", ".png")
                                            if (rgb_dir / (name + e)).is_file()), None)
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
                         f"({'rgb/' if what == 'colour' else 'depth/ or depth.bin'}): skipped")
    if not kept:
        raise SequenceError(f"{folder}: no frame of {SCANNETPP_POSES} has both colour and depth; extract them with "
                            "ScanNet++'s iphone/prepare_iphone_data.py")

    poses, Ks, times = [], [], []
    for name, number in kept:
        entry = meta[name]
        poses.append(_check_pose(_entry_matrix(entry, "aligned_pose", (4, 4), f"{path}: {name}"), f"{path}: {name}"))
        Ks.append(_check_K(_entry_matrix(entry, "intrinsic", (3, 3), f"{path}: {name}"), f"{path}: {name}"))
        t = entry.get("timestamp")
        times.append(float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else float(number))
    K = _K_from_config(cfg, folder)
    return _ScanNetPPSequence(
        path=folder, format="scannetpp", c2ws=up_rotation(up) @ np.stack(poses), timestamps=np.asarray(times),
        world_up=up, notes=notes, rgb_files=rgb_files, depth_files=depth_files, Ks=Ks if K is None else K,
        depth_scale=_depth_scale(cfg, folder, 0.001), colour_to_depth_size=True, colour_K=True,
        video=video if use_video else None, video_index=[number for _, number in kept],
        frames_listed_in=SCANNETPP_POSES, depth_bin=depth_bin,
        depth_index=[number for _, number in kept] if depth_bin is not None else [])
