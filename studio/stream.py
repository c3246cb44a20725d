"""Incremental streaming of the fused map to the browser: per-step delta nodes, consolidated into chunks.

Each map row (voxel) belongs to a fixed cubic chunk of ``chunk_m`` metres, derived from its voxel key (so
membership never changes). A step sends one *delta* node holding only the voxels that step added. To keep
the number of nodes bounded, once more than ``max_deltas`` deltas are pending, the oldest one is retired:
its chunks (those that gained voxels, or lost some to free-space carving, at that step) that have not been
re-sent since are re-sent whole (one node per chunk), then the delta node is removed. Bytes per step
therefore depend on what the new frame saw, never on the size of the map. Scrubbing to an earlier frame,
changing the colour mode or replacing the map (fork, branch switch, session load) re-sends every chunk once.

Chunk positions are sent relative to the chunk's corner (node position = corner), so viser's float16
points keep millimetre precision even kilometres from the origin; delta nodes are sent as float32.

The streamer produces :class:`ChunkPayload` lists; a sink (the viser scene, or a byte counter in the bench)
applies them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recon.pointmap import VoxelPointMap, voxel_coords_of_keys, voxel_keys
from recon.visual import colorize_scalar

COLOUR_MODES = ("rgb", "depth", "height", "age", "observations")


@dataclass
class ChunkPayload:
    """One chunk node to (re)send: local points (N, 3) float32 relative to ``origin`` (3,), colours (N, 3) uint8.
    N == 0 means: remove the node."""

    name: str
    origin: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    precision: str = "float16"

    @property
    def nbytes_on_wire(self) -> int:
        """Approximate bytes viser sends: float16 (or float32) positions + uint8 colours."""
        return len(self.points) * (3 * (2 if self.precision == "float16" else 4) + 3)


class ChunkSink(Protocol):
    def apply(self, payloads: list[ChunkPayload]) -> None: ...


@dataclass
class ColourContext:
    mode: str = "rgb"
    camera_position: np.ndarray | None = None   # for "depth": distance from this point
    frame_count: int = 1                         # for "age": colour range 0..frame_count-1


def point_colours(pmap: VoxelPointMap, rows: np.ndarray, points: np.ndarray, rgb: np.ndarray,
                  ctx: ColourContext) -> np.ndarray:
    """(N, 3) uint8 display colours of ``rows`` under the colour mode (turbo map for scalars)."""
    if ctx.mode == "rgb" or len(rows) == 0:
        return rgb
    if ctx.mode == "depth":
        cam = np.zeros(3) if ctx.camera_position is None else ctx.camera_position
        return colorize_scalar(np.linalg.norm(points - cam, axis=1), lo=0.0, hi=40.0)
    if ctx.mode == "height":
        return colorize_scalar(points[:, 1], lo=-10.0, hi=25.0)
    if ctx.mode == "age":
        return colorize_scalar(pmap.first_seen[rows].astype(np.float32), lo=0.0, hi=max(1.0, ctx.frame_count - 1.0))
    if ctx.mode == "observations":
        return colorize_scalar(np.log2(pmap.weight[rows]), lo=0.0, hi=7.0)
    raise ValueError(f"unknown colour mode {ctx.mode!r}; choose one of {', '.join(COLOUR_MODES)}")


class MapStreamer:
    """Tracks which map rows live in which chunk, which chunks the browser has and the pending deltas."""

    def __init__(self, chunk_m: float = 8.0, prefix: str = "/map", max_deltas: int = 8):
        self.chunk_m = float(chunk_m)
        self.prefix = prefix
        self.max_deltas = int(max_deltas)
        self._map: VoxelPointMap | None = None
        self._known_rows = 0
        self._chunk_rows: dict[tuple[int, int, int], list[np.ndarray]] = {}
        self._sent: set[tuple[int, int, int]] = set()
        self._sent_at: dict[tuple[int, int, int], int] = {}  # update counter when a chunk was last sent whole
        # pending deltas: (update counter, node name or None, dirty chunks, rows the node shows)
        self._deltas: deque[tuple[int, str | None, set, np.ndarray]] = deque()
        self._version = 0                                     # map version the browser is up to date with
        self._tick = 0
        self._shown_upto: int | None = None
        self.last_bytes = 0
        self.last_nodes = 0

    def _chunk_of_rows(self, pmap: VoxelPointMap, rows: np.ndarray) -> np.ndarray:
        vox_per_chunk = max(1, int(round(self.chunk_m / pmap.voxel_size)))
        return np.floor_divide(voxel_coords_of_keys(pmap.keys[rows]), vox_per_chunk)

    def _index_new_rows(self, pmap: VoxelPointMap) -> tuple[np.ndarray, set[tuple[int, int, int]]]:
        """Assign rows added since the last call to chunks; returns (new rows, chunks that gained rows)."""
        n = len(pmap)
        rows = np.arange(self._known_rows, n, dtype=np.int64)
        self._known_rows = n
        if len(rows) == 0:
            return rows, set()
        chunks = self._chunk_of_rows(pmap, rows)
        codes = voxel_keys(chunks)  # one int64 per chunk: a 1-D unique is far faster than unique(axis=0)
        uniq, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        touched = set()
        for i, c in enumerate(map(tuple, chunks[first].tolist())):
            self._chunk_rows.setdefault(c, []).append(rows[order[bounds[i]:bounds[i + 1]]])
            touched.add(c)
        return rows, touched

    def _rows(self, chunk: tuple[int, int, int]) -> np.ndarray:
        parts = self._chunk_rows[chunk]
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0]

    def _points(self, pmap: VoxelPointMap, rows: np.ndarray, name: str, origin: np.ndarray,
                upto_frame: int | None, ctx: ColourContext, precision: str) -> ChunkPayload:
        keep = pmap.visible_mask(rows)
        if upto_frame is not None:
            keep &= pmap.first_seen[rows] <= upto_frame
        rows = rows[keep]
        pts, rgb = pmap.rows_points(rows)
        cols = point_colours(pmap, rows, pts, rgb, ctx)
        return ChunkPayload(name, origin, (pts - origin).astype(np.float32), cols, precision)

    def _chunk_payload(self, pmap, chunk, upto_frame, ctx) -> ChunkPayload:
        origin = np.asarray(chunk, dtype=np.float64) * self.chunk_m
        p = self._points(pmap, self._rows(chunk), self._name(chunk), origin, upto_frame, ctx, "float16")
        self._sent_at[chunk] = self._tick
        if len(p.points):
            self._sent.add(chunk)
        else:
            self._sent.discard(chunk)
        return p

    @staticmethod
    def _removal(name: str) -> ChunkPayload:
        return ChunkPayload(name, np.zeros(3), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))

    def update(self, pmap: VoxelPointMap, upto_frame: int | None = None, ctx: ColourContext | None = None,
               full: bool = False) -> list[ChunkPayload]:
        """Payloads that bring the browser up to date with ``pmap`` (shown up to ``upto_frame``)."""
        ctx = ctx or ColourContext()
        self._tick += 1
        payloads: list[ChunkPayload] = []
        if pmap is not self._map:  # a new map object (fork, branch switch, load): drop every old node
            payloads += [self._removal(self._name(c)) for c in self._sent]
            payloads += [self._removal(name) for _, name, _, _ in self._deltas if name is not None]
            self._map, self._known_rows, self._chunk_rows = pmap, 0, {}
            self._sent, self._sent_at, self._deltas = set(), {}, deque()
            full = True
        hidden_rows = self._newly_hidden_rows(pmap)
        new_rows, touched = self._index_new_rows(pmap)
        if upto_frame != self._shown_upto:
            full, self._shown_upto = True, upto_frame
        if full:
            payloads += [self._removal(name) for _, name, _, _ in self._deltas if name is not None]
            self._deltas.clear()
            for c in sorted(self._chunk_rows):
                was_sent = c in self._sent
                p = self._chunk_payload(pmap, c, upto_frame, ctx)
                if len(p.points) or was_sent:
                    payloads.append(p)
        else:
            hidden = self._chunks_of(pmap, hidden_rows)
            name = None
            if len(new_rows):
                name = f"{self.prefix}/d_{self._tick}"
                origin = np.floor(pmap.rows_points(new_rows[:1])[0][0] / self.chunk_m) * self.chunk_m
                payloads.append(self._points(pmap, new_rows, name, origin.astype(np.float64), upto_frame, ctx,
                                             "float32"))
            if name is not None or hidden:
                self._deltas.append((self._tick, name, touched | hidden, new_rows))
            # Retire the oldest deltas beyond the budget, and at once any delta that shows a voxel now hidden.
            stale = [d for d in self._deltas
                     if len(hidden_rows) and d[1] is not None and np.isin(d[3], hidden_rows).any()]
            kept = deque(d for d in self._deltas if not any(d is x for x in stale))
            while len(kept) > self.max_deltas:
                stale.append(kept.popleft())
            self._deltas = kept
            for entry in sorted(stale, key=lambda d: d[0]):
                payloads += self._retire(pmap, entry, upto_frame, ctx)
        self.last_bytes = sum(p.nbytes_on_wire for p in payloads)
        self.last_nodes = len(payloads)
        return payloads

    def _newly_hidden_rows(self, pmap: VoxelPointMap) -> np.ndarray:
        """Rows the browser may show that changed since the last update and are now hidden (carved away)."""
        changed = pmap.changed_since(self._version)
        self._version = pmap.version
        changed = changed[changed < self._known_rows]
        return changed[~pmap.visible_mask(changed)]

    def _chunks_of(self, pmap: VoxelPointMap, rows: np.ndarray) -> set[tuple[int, int, int]]:
        if len(rows) == 0:
            return set()
        return set(map(tuple, np.unique(self._chunk_of_rows(pmap, rows), axis=0).tolist()))

    def _retire(self, pmap: VoxelPointMap, entry, upto_frame, ctx) -> list[ChunkPayload]:
        """Re-send the delta's dirty chunks not re-sent since it, then remove its node."""
        tick, name, chunks, _ = entry
        out = [self._chunk_payload(pmap, c, upto_frame, ctx) for c in sorted(chunks)
               if self._sent_at.get(c, -1) < tick]
        if name is not None:
            out.append(self._removal(name))
        return out

    def _name(self, chunk) -> str:
        return f"{self.prefix}/c_{chunk[0]}_{chunk[1]}_{chunk[2]}"

    @property
    def node_count(self) -> int:
        return len(self._sent) + len(self._deltas)


class CountingSink:
    """A sink that keeps what a browser would hold, without a browser (bench, tests)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.nodes: dict[str, np.ndarray] = {}  # node name -> (N, 3) float64 world points

    def apply(self, payloads: list[ChunkPayload]) -> None:
        for p in payloads:
            self.bytes += p.nbytes_on_wire
            if len(p.points):
                self.nodes[p.name] = p.points.astype(np.float64) + p.origin
            else:
                self.nodes.pop(p.name, None)

    @property
    def points(self) -> int:
        """Points held, counting a voxel twice while it is both in a delta and in its re-sent chunk."""
        return sum(len(v) for v in self.nodes.values())

    def voxel_keys(self, voxel_size: float) -> set[int]:
        """The distinct voxels shown."""
        if not self.nodes:
            return set()
        pts = np.concatenate(list(self.nodes.values()))
        return set(voxel_keys(np.floor(pts / voxel_size).astype(np.int64)).tolist())
