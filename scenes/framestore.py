"""Where the frames of a scene live: the newest in RAM, the rest on disk (one safetensors file each).

Every frame gets a store id (``fid``) when it is added; branches refer to frames by id. RAM holds at most
``ram_frames`` full frames (LRU); a frame evicted from RAM is written to ``root/frames/<fid>.safetensors``
first, so a 10k-step session keeps bounded RAM. ``root`` is a private temporary folder unless given.
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file

from scenes.atomic import replacing
from scenes.spill import make_spill_dir, release
from worldmodel.actions import action_from_text, action_to_text
from worldmodel.frame import Frame


class FrameFileError(ValueError):
    """A frame file is missing or corrupt; the message names it."""


def frame_file_name(fid: int) -> str:
    return f"{fid:07d}.safetensors"


def write_frame(path: Path, frame: Frame) -> None:
    """Write one frame (arrays in safetensors, index/action as string metadata)."""
    arrays = {"rgb": np.ascontiguousarray(frame.rgb), "depth": np.ascontiguousarray(frame.depth, dtype=np.float32),
              "K": np.asarray(frame.K, dtype=np.float64), "c2w": np.asarray(frame.c2w, dtype=np.float64)}
    if frame.confidence is not None:
        arrays["confidence"] = np.ascontiguousarray(frame.confidence, dtype=np.float32)
    if frame.world_points is not None:
        arrays["world_points"] = np.ascontiguousarray(frame.world_points, dtype=np.float32)
        arrays["world_colors"] = np.ascontiguousarray(frame.world_colors, dtype=np.uint8)
    meta = {"index": str(frame.index), "action": action_to_text(frame.action)}
    with replacing(path) as tmp:  # a failed write (disk full) leaves no partial file; raises WriteError
        save_file(arrays, str(tmp), metadata=meta)


def read_frame(path: Path) -> Frame:
    """Read a frame written by :func:`write_frame`; FrameFileError names the file when it is bad."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        return Frame(index=int(meta.get("index", "0")), rgb=arrays["rgb"], depth=arrays["depth"], K=arrays["K"],
                     c2w=arrays["c2w"], action=action_from_text(meta.get("action", "")),
                     confidence=arrays.get("confidence"), world_points=arrays.get("world_points"),
                     world_colors=arrays.get("world_colors"))
    except FileNotFoundError:
        raise FrameFileError(f"frame file {path} is missing; the session folder is incomplete") from None
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise FrameFileError(f"frame file {path} is corrupt ({str(e).splitlines()[0][:120]}); "
                             "the session cannot be opened as is") from None


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes: a hard link when both are on one file system, else a copy.

    Frame files are never modified in place (writes go through a temporary file and a rename), so
    sharing them by hard link is safe."""
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def read_frame_pose(path: Path) -> np.ndarray:
    """The (4, 4) c2w of a frame file, checking that it holds a frame's arrays (images are not read).

    Raises FrameFileError naming the file when it is corrupt or incomplete."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = set(f.keys())
            if not {"rgb", "depth", "K", "c2w"} <= names:
                raise FrameFileError(f"frame file {path} lacks arrays "
                                     f"{sorted({'rgb', 'depth', 'K', 'c2w'} - names)}")
            c2w = np.asarray(f.get_tensor("c2w"), dtype=np.float64)
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, FrameFileError):
            raise
        raise FrameFileError(f"frame file {path} is corrupt ({str(e).splitlines()[0][:120]}); "
                             "the session cannot be opened as is") from None
    if c2w.shape != (4, 4):
        raise FrameFileError(f"frame file {path} has a c2w of shape {c2w.shape}, not (4, 4)")
    return c2w


class FrameStore:
    """Frames by id: RAM LRU of ``ram_frames`` full frames over a folder of safetensors files."""

    def __init__(self, root: str | Path | None = None, ram_frames: int = 256, spill_near: str | Path | None = None):
        """root: folder of the frame files; None = a private spill folder (scenes.spill) in ``spill_near``
        (next to the session or output) or else in the system temporary folder, removed at close/exit."""
        self._own_root = root is None
        self.root = make_spill_dir(spill_near) if root is None else Path(root)
        (self.root / "frames").mkdir(parents=True, exist_ok=True)
        self.ram_frames = max(1, int(ram_frames))
        self._ram: OrderedDict[int, Frame] = OrderedDict()
        self._on_disk: set[int] = set()
        self._poses: dict[int, np.ndarray] = {}  # every frame's c2w stays in RAM (128 bytes each)
        self._next_id = 0

    def __len__(self) -> int:
        return self._next_id

    def path_of(self, fid: int) -> Path:
        return self.root / "frames" / frame_file_name(fid)

    def add(self, frame: Frame) -> int:
        """Store ``frame`` -> its id. When room cannot be made (disk full: WriteError) nothing changes."""
        self._make_room()
        fid = self._next_id
        self._next_id += 1
        self._ram[fid] = frame
        self._poses[fid] = np.array(frame.c2w, dtype=np.float64)
        return fid

    def pose(self, fid: int) -> np.ndarray:
        """(4, 4) c2w of frame ``fid``, without reading the frame (poses never leave RAM)."""
        return self._poses[fid]

    def get(self, fid: int) -> Frame:
        frame = self._ram.get(fid)
        if frame is not None:
            self._ram.move_to_end(fid)
            return frame
        if not 0 <= fid < self._next_id:
            raise KeyError(f"no frame with id {fid}")
        frame = read_frame(self.path_of(fid))
        self._make_room()
        self._ram[fid] = frame
        return frame

    def _make_room(self) -> None:
        """Evict the oldest frames until one more fits. A frame leaves RAM only after its file is written,
        so a failed write (WriteError) loses nothing."""
        while self._ram and len(self._ram) >= self.ram_frames:
            fid, frame = next(iter(self._ram.items()))
            if fid not in self._on_disk:
                write_frame(self.path_of(fid), frame)
                self._on_disk.add(fid)
            del self._ram[fid]

    def flush(self) -> None:
        """Write every frame held only in RAM to disk (they stay in RAM): a later save just links files."""
        for fid, frame in list(self._ram.items()):
            if fid not in self._on_disk:
                write_frame(self.path_of(fid), frame)
                self._on_disk.add(fid)

    @property
    def ram_bytes(self) -> int:
        return sum(f.rgb.nbytes + f.depth.nbytes for f in self._ram.values())

    def save_to(self, folder: Path, fids: list[int], progress=None) -> None:
        """Write frames ``fids`` to ``folder/frames/`` (copying those already on disk)."""
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        for fid in fids:
            dst = folder / "frames" / frame_file_name(fid)
            src = self.path_of(fid)
            if fid in self._on_disk and src.exists():
                link_or_copy(src, dst)
            else:
                write_frame(dst, self._ram[fid] if fid in self._ram else self.get(fid))
            if progress is not None:
                progress(1)

    @classmethod
    def open_existing(cls, folder: Path, fids: list[int], ram_frames: int = 256,
                      spill_near: str | Path | None = None) -> "FrameStore":
        """A store over the frames ``fids`` in ``folder/frames`` (checked here, read lazily).

        The store works on its own hard links (or copies) of the files, so stepping on, or saving over the
        folder later, never changes what was opened."""
        missing = [frame_file_name(i) for i in fids if not (folder / "frames" / frame_file_name(i)).is_file()]
        if missing:
            raise FrameFileError(f"session folder {folder} lacks frames/{missing[0]} (and {len(missing) - 1} more); "
                                 "copy the whole session folder")
        # poses only (no images): cheap, and a corrupt file is named now rather than mid-walk
        poses = {i: read_frame_pose(folder / "frames" / frame_file_name(i)) for i in fids}
        store = cls(None, ram_frames, spill_near=spill_near)
        store._poses = poses
        for i in fids:
            link_or_copy(folder / "frames" / frame_file_name(i), store.path_of(i))
        store._on_disk = set(fids)
        store._next_id = max(fids) + 1 if fids else 0
        return store

    def close(self) -> None:
        self._ram.clear()
        if self._own_root:
            release(self.root)

    def __del__(self) -> None:  # best effort: temporary frames do not outlive the process
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
