"""Where the frames of a scene live: the newest in RAM, the rest on disk (one safetensors file each).

Every frame gets a store id (``fid``) when it is added; branches refer to frames by id. RAM holds at most
``ram_frames`` full frames (LRU); a frame evicted from RAM is written to ``root/frames/<fid>.safetensors``
first, so a 10k-step session keeps bounded RAM. ``root`` is a private spill folder (scenes.spill) unless
given.
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
from worldmodel.checks import camera_problem
from worldmodel.frame import Frame


class FrameFileError(ValueError):
    """A frame file is missing or corrupt; the message names it."""


def frame_file_name(fid: int) -> str:
    return f"{fid:07d}.safetensors"


def write_frame(path: Path, frame: Frame) -> None:
    """Write one frame (arrays in safetensors; index, action and what depth 0 means as string metadata)."""
    arrays = {"rgb": np.ascontiguousarray(frame.rgb), "depth": np.ascontiguousarray(frame.depth, dtype=np.float32),
              "K": np.asarray(frame.K, dtype=np.float64), "c2w": np.asarray(frame.c2w, dtype=np.float64)}
    if frame.confidence is not None:
        arrays["confidence"] = np.ascontiguousarray(frame.confidence, dtype=np.float32)
    if frame.world_points is not None:
        arrays["world_points"] = np.ascontiguousarray(frame.world_points, dtype=np.float32)
        arrays["world_colors"] = np.ascontiguousarray(frame.world_colors, dtype=np.uint8)
    meta = {"index": str(frame.index), "action": action_to_text(frame.action),
            "zero_depth_is_sky": "1" if frame.zero_depth_is_sky else "0"}
    with replacing(path) as tmp:  # a failed write (disk full) leaves no partial file; raises WriteError
        save_file(arrays, str(tmp), metadata=meta)


def read_frame(path: Path, shown: str | Path | None = None, zero_depth_is_sky_when_unsaid: bool = False) -> Frame:
    """Read a frame written by :func:`write_frame`; FrameFileError names the file (as ``shown``) when it is bad.
    ``zero_depth_is_sky_when_unsaid``: the frame's ``zero_depth_is_sky`` when the file does not say (written
    before files said it: the caller knows from the world that made it)."""
    name, path = shown or path, Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        said = meta.get("zero_depth_is_sky")
        if said not in (None, "0", "1"):
            raise ValueError(f"zero_depth_is_sky metadata is {said[:20]!r}, not 0 or 1")
        return Frame(index=int(meta.get("index", "0")), rgb=arrays["rgb"], depth=arrays["depth"], K=arrays["K"],
                     c2w=arrays["c2w"], action=action_from_text(meta.get("action", "")),
                     confidence=arrays.get("confidence"), world_points=arrays.get("world_points"),
                     world_colors=arrays.get("world_colors"),
                     zero_depth_is_sky=said == "1" if said is not None else zero_depth_is_sky_when_unsaid)
    except FileNotFoundError:
        raise FrameFileError(f"frame file {name} is missing; the session folder is incomplete") from None
    except (SafetensorError, KeyError, ValueError, OSError) as e:
        raise FrameFileError(f"frame file {name} is corrupt ({str(e).splitlines()[0][:120]}); "
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


FRAME_DTYPES = {"rgb": "uint8", "depth": "float32", "K": "float64", "c2w": "float64"}


def _numpy_dtype_name(st: str) -> str:
    """safetensors' dtype names ('U8', 'F32', 'BF16') -> numpy's ('uint8', 'float32', 'bfloat16')."""
    kinds = {"U": "uint", "I": "int", "F": "float", "BF": "bfloat"}
    head = st.rstrip("0123456789")
    return kinds[head] + st[len(head):] if head in kinds else st.lower()


def read_frame_header(path: Path, shown: str | Path | None = None) -> tuple[np.ndarray, str]:
    """(the (4, 4) c2w, the action text) of a frame file, after checking its arrays' names, shapes and dtypes
    (from the header; images are not read), a finite rigid pose and finite positive intrinsics.

    Raises FrameFileError naming the file (as ``shown``) when it is corrupt, incomplete or inconsistent."""
    from safetensors import safe_open

    name = shown or path

    def bad(why: str) -> FrameFileError:
        return FrameFileError(f"frame file {name} {why}; the session cannot be opened as is")

    try:
        with safe_open(str(path), framework="numpy") as f:
            action = (f.metadata() or {}).get("action", "")
            names = set(f.keys())
            if not set(FRAME_DTYPES) <= names:
                raise bad(f"lacks arrays {sorted(set(FRAME_DTYPES) - names)}")
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
            dtypes = {k: _numpy_dtype_name(str(f.get_slice(k).get_dtype())) for k in FRAME_DTYPES}
            K = np.asarray(f.get_tensor("K"), dtype=np.float64) if shapes["K"] == (3, 3) else None
            c2w = np.asarray(f.get_tensor("c2w"), dtype=np.float64) if shapes["c2w"] == (4, 4) else None
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, FrameFileError):
            raise
        raise bad(f"is corrupt ({str(e).splitlines()[0][:120]})") from None
    for key, want in FRAME_DTYPES.items():
        if dtypes[key] != want:
            raise bad(f"holds {key} as {dtypes[key]}, not {want}")
    rgb, depth = shapes["rgb"], shapes["depth"]
    if len(rgb) != 3 or rgb[2] != 3 or depth != rgb[:2] or not (1 <= rgb[0] <= 8192 and 1 <= rgb[1] <= 8192):
        raise bad(f"has images of shapes rgb {rgb} and depth {depth} (expected (H, W, 3) and (H, W))")
    if "confidence" in shapes and shapes["confidence"] != depth:
        raise bad(f"has a confidence of shape {shapes['confidence']}, not {depth}")
    if c2w is None or K is None:
        raise bad(f"has K of shape {shapes['K']} and c2w of shape {shapes['c2w']} (expected (3, 3) and (4, 4))")
    why = camera_problem(c2w, K)
    if why is not None:
        raise bad(f"has {why}")
    return c2w, action


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
        self._action_texts: dict[int, str] = {}  # the actions of frames opened from a session (read with the poses)
        self._next_id = 0
        self.source: Path | None = None  # the session folder the frames were opened from
        self.zero_depth_is_sky_when_unsaid = False  # for frame files older than that metadata (open_existing)

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

    def action(self, fid: int):
        """The action that made frame ``fid`` (None for a first frame), from RAM, the headers read when the store
        was opened, or the file's header (its images are not read). FrameFileError when the file cannot be read."""
        frame = self._ram.get(fid)
        if frame is not None:
            return frame.action
        if not 0 <= fid < self._next_id:
            raise KeyError(f"no frame with id {fid}")
        text = self._action_texts.get(fid)
        try:
            if text is None:
                text = read_frame_header(self.path_of(fid), self._shown(fid))[1]
            return action_from_text(text)
        except ValueError as e:
            raise FrameFileError(f"frame file {self._shown(fid)} has a malformed action ({str(e)[:80]}); the session "
                                 "cannot be opened as is") from None

    def get(self, fid: int) -> Frame:
        frame = self._ram.get(fid)
        if frame is not None:
            self._ram.move_to_end(fid)
            return frame
        if not 0 <= fid < self._next_id:
            raise KeyError(f"no frame with id {fid}")
        frame = read_frame(self.path_of(fid), self._shown(fid), self.zero_depth_is_sky_when_unsaid)
        self._make_room()
        self._ram[fid] = frame
        return frame

    def _shown(self, fid: int) -> Path:
        """How errors name frame ``fid``: the session's own file when it came from one, not the private copy."""
        return (self.source if self.source is not None else self.root) / "frames" / frame_file_name(fid)

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
                      spill_near: str | Path | None = None, zero_depth_is_sky_when_unsaid: bool = False
                      ) -> "FrameStore":
        """A store over the frames ``fids`` in ``folder/frames`` (checked here, read lazily).
        ``zero_depth_is_sky_when_unsaid``: see :func:`read_frame` (the world that made the session's frames).

        The store works on its own hard links (or copies) of the files, so stepping on, or saving over the
        folder later, never changes what was opened."""
        missing = [frame_file_name(i) for i in fids if not (folder / "frames" / frame_file_name(i)).is_file()]
        if missing:
            raise FrameFileError(f"session folder {folder} lacks frames/{missing[0]} (and {len(missing) - 1} more); "
                                 "copy the whole session folder")
        # headers only (no images): cheap, and a corrupt file is named now rather than mid-walk
        headers = {i: read_frame_header(folder / "frames" / frame_file_name(i)) for i in fids}
        store = cls(None, ram_frames, spill_near=spill_near)
        store._poses, store.source = {i: pose for i, (pose, _) in headers.items()}, Path(folder)
        store._action_texts = {i: action for i, (_, action) in headers.items()}
        store.zero_depth_is_sky_when_unsaid = bool(zero_depth_is_sky_when_unsaid)
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
