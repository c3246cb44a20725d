"""A spatial index over the rows of a fused map, kept up to date incrementally, with stratified levels of detail.

:class:`MapGrid` buckets the rows of a :class:`recon.pointmap.VoxelPointMap` into cubic cells (a few metres)
and keeps them in one sorted array (CSR), cell by cell. Every row also gets a *level*, fixed when the row
is first seen (rows are appended, so it never changes):

- level 0: the first row (lowest row number) of its block of ``8 x 8 x 8`` voxels: one voxel per block;
- level 1 / 2: the first row of its ``4^3`` / ``2^3`` block that has no lower level;
- level 3: all other rows.

Inside a cell rows are ordered by level, then by a per-row hash, so the prefix of a cell up to level L is
a spatially stratified subsample (one voxel per 8^3, 4^3 or 2^3 block): a far cell can render from a
coarse prefix (:mod:`memory.cache`), and level 0 is the consistent sample on which co-visibility is
measured: each keyframe records the level-0 *representatives* (``rep``) of the 8^3 blocks it observed
(0.8 m blocks at 0.1 m voxels), and the target's visible set is made of level-0 rows, so the two meet
block by block whatever the distance from which a keyframe saw the block.

New rows are indexed lazily: they wait in a pending list (queried by brute force) and are merged into the
sorted arrays in batches (one sort of the new rows and an O(N) insert, no re-sort), so the per-step cost
stays small as the map grows. Mean positions of rows that are fused again are refreshed from the map's
change log. A different (or reset) map object triggers a rebuild, which reproduces the same levels.

Conventions: metres, +Y-up world, OpenCV cameras, c2w float64.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from recon.pointmap import VoxelPointMap, voxel_coords_of_keys, voxel_keys
from recon.voxelhash import Int64HashTable
from worldmodel.camera import pixels_to_camera
from worldmodel.hashing import FMIX32, mix32

_HASH_BITS = 10                     # hash bits kept in the sort key
_LEVEL_BITS = 2
_LOW_BITS = _HASH_BITS + _LEVEL_BITS
_CELL_BITS = 17                     # bits per cell axis (3 * 17 + 12 = 63: the key stays a positive int64)
_CELL_OFFSET = 1 << (_CELL_BITS - 1)
_CELL_MASK = (1 << _CELL_BITS) - 1
_MIN_CELL_VOXELS = 16               # 2^20 voxel coordinates / 16 fit in 17 bits
BLOCK_VOXELS = (8, 4, 2)            # block edge (voxels) of levels 0, 1, 2 (level 3: every other row)
ROW_DTYPE = np.int32                # map rows held per map row (a map has < 2**31 rows; half the bytes of int64)


def row_hash(rows: np.ndarray) -> np.ndarray:
    """(N,) map rows -> (N,) int64 hash in [0, 1024): a fixed pseudo-random label of each row.

    MurmurHash3's 32-bit finaliser: rows of one frame are consecutive and in voxel-key order, so a plain
    multiplicative hash would order them periodically in space.
    """
    h = mix32(np.asarray(rows).astype(np.uint32), FMIX32)
    return (h >> np.uint32(32 - _HASH_BITS)).astype(np.int64)


@dataclass
class Frustum:
    """A pinhole view for culling: w2c (4, 4) float64, K (3, 3), image size, depth range [near, far]."""

    w2c: np.ndarray
    K: np.ndarray
    width: int
    height: int
    near: float
    far: float

    def planes(self) -> np.ndarray:
        """(6, 4) world-space planes (unit normal n, offset d): a point x is inside when n.x + d >= 0."""
        K, w, h = self.K, self.width, self.height
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        # camera-space inward normals of the side planes through the centre (pixel-edge bounds)
        xl, xr = (-0.5 - cx) / fx, (w - 0.5 - cx) / fx
        yt, yb = (-0.5 - cy) / fy, (h - 0.5 - cy) / fy
        n_cam = np.array([[1.0, 0.0, -xl], [-1.0, 0.0, xr], [0.0, 1.0, -yt], [0.0, -1.0, yb]])
        n_cam /= np.linalg.norm(n_cam, axis=1, keepdims=True)
        R, t = self.w2c[:3, :3], self.w2c[:3, 3]
        # plane in camera space: n.(R x + t) >= 0  ->  world normal R^T n, offset n.t
        side = np.concatenate([n_cam @ R, (n_cam @ t)[:, None]], axis=1)
        z = R[2]  # camera z axis in world coordinates (row of w2c)
        near = np.concatenate([z, [t[2] - self.near]])
        far = np.concatenate([-z, [self.far - t[2]]])
        return np.vstack([side, near[None], far[None]])

    def corners(self) -> np.ndarray:
        """(5, 3) world points bounding the frustum: the centre and the four far-plane corners."""
        K, w, h = self.K, self.width, self.height
        R, t = self.w2c[:3, :3], self.w2c[:3, 3]
        centre = -R.T @ t
        us = np.array([-0.5, w - 0.5, w - 0.5, -0.5])
        vs = np.array([-0.5, -0.5, h - 0.5, h - 0.5])
        cam = pixels_to_camera(us, vs, self.far, K)
        return np.vstack([centre[None], cam @ R + centre])


@dataclass
class CellQuery:
    """Cells of a :class:`MapGrid` that intersect a frustum.

    start, count: (C,) int64 slices of the sorted arrays (``MapGrid.rows``, ``MapGrid.xyz``);
    n_level: (C, 3) int64 number of entries of levels <= 0, <= 1, <= 2 (prefix lengths);
    depth: (C,) float64 camera z of each cell centre; near: (C,) float64 camera z of the nearest corner of
    the cell's content box (<= 0 when it reaches the camera plane).
    The pending rows (not merged yet, never culled) are ``MapGrid.pending_rows`` / ``MapGrid.pending_xyz``.
    """

    start: np.ndarray
    count: np.ndarray
    n_level: np.ndarray
    depth: np.ndarray
    near: np.ndarray


class MapGrid:
    """Incremental cell index over the rows of one VoxelPointMap (see the module docstring).

    cell_m: cell edge in metres (rounded to a whole number of voxels, at least 16 voxels).
    merge_every: pending rows are merged into the sorted arrays once there are this many.

    Per map row: ``level`` (int8) and ``rep`` (int32, the level-0 row of its 8^3 block).
    ``xyz`` (3, N) float32 holds the current mean position of every sorted row.
    """

    def __init__(self, cell_m: float = 4.0, merge_every: int = 32768):
        self.cell_m = float(cell_m)
        self.merge_every = int(merge_every)
        self._map_ref: weakref.ref | None = None
        self._clear(0.1)

    def _clear(self, voxel_size: float) -> None:
        self.voxel_size = float(voxel_size)
        self.cell_voxels = max(_MIN_CELL_VOXELS, int(round(self.cell_m / self.voxel_size)))
        self.cell_voxels = -(-self.cell_voxels // BLOCK_VOXELS[0]) * BLOCK_VOXELS[0]  # whole blocks per cell
        self.cell_size = self.cell_voxels * self.voxel_size
        self.map_version = 0                           # map version the positions are current with
        self.known = 0                                 # map rows [0, known) have a level and a rep
        self._level = np.zeros(1 << 12, np.int8)       # capacity grows by doubling
        self._rep = np.zeros(1 << 12, ROW_DTYPE)
        self._blocks = [Int64HashTable(1 << 12) for _ in BLOCK_VOXELS]  # block key -> first row
        self.indexed = 0                               # map rows [0, indexed) are in the sorted arrays
        self.keys = np.zeros(0, np.int64)              # sorted (cell << 12 | level << 10 | hash)
        self.rows = np.zeros(0, ROW_DTYPE)             # map row of each key
        self.xyz = np.zeros((3, 0), np.float32)        # planar mean positions of those rows
        self.position = np.zeros(0, ROW_DTYPE)         # map row -> index in the sorted arrays
        self.pending_rows = np.zeros(0, ROW_DTYPE)     # rows [indexed, known) in map order
        self.pending_keys = np.zeros(0, np.int64)
        self.pending_xyz = np.zeros((3, 0), np.float32)
        self._cells()

    @property
    def level(self) -> np.ndarray:
        """(known,) int8 level of every map row indexed so far."""
        return self._level[: self.known]

    @property
    def rep(self) -> np.ndarray:
        """(known,) int32 level-0 representative row (first row of the 8^3 block) of every map row."""
        return self._rep[: self.known]

    # ------------------------------------------------------------------ maintenance
    def _levels(self, coords: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level (N,) int8 and level-0 representative (N,) int64 of new ``rows`` (ascending, voxel coords)."""
        level = np.full(len(rows), len(BLOCK_VOXELS), np.int8)
        rep = None
        for lvl, (factor, table) in enumerate(zip(BLOCK_VOXELS, self._blocks)):
            bkeys = voxel_keys(np.floor_divide(coords, factor))
            first = table.find(bkeys)
            new = np.flatnonzero(first < 0)
            if len(new):
                # lowest row of each new block (rows ascend); every new row points at its block's
                ukeys, at, block_of = np.unique(bkeys[new], return_index=True, return_inverse=True)
                table.insert(ukeys, rows[new[at]])
                level[new[at]] = np.minimum(level[new[at]], lvl)
                first[new] = rows[new[at]][block_of]
            if lvl == 0:
                rep = first
        return level, rep

    def _row_keys(self, rows: np.ndarray, level: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Sort keys (N,) int64: cell << 12 | level << 10 | hash."""
        cell = np.clip(np.floor_divide(coords, self.cell_voxels) + _CELL_OFFSET, 0, _CELL_MASK)
        packed = (cell[:, 0] << (2 * _CELL_BITS)) | (cell[:, 1] << _CELL_BITS) | cell[:, 2]
        return (packed << _LOW_BITS) | (level.astype(np.int64) << _HASH_BITS) | row_hash(rows)

    @staticmethod
    def _means(pointmap: VoxelPointMap, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((pointmap.pos_sum[rows] / pointmap.weight[rows][:, None]).T, dtype=np.float32)

    def sync(self, pointmap: VoxelPointMap) -> None:
        """Index the rows added to ``pointmap`` since the last call and refresh moved means
        (rebuilds when ``pointmap`` is another map object than last time)."""
        current = self._map_ref() if self._map_ref is not None else None
        n = len(pointmap)
        if current is not pointmap or n < self.known or pointmap.voxel_size != self.voxel_size \
                or pointmap.version < self.map_version:
            self._map_ref = weakref.ref(pointmap)
            self._clear(pointmap.voxel_size)
        elif pointmap.version != self.map_version and self.known:
            changed = pointmap.changed_since(self.map_version)
            changed = changed[changed < self.known]
            if len(changed):
                means = self._means(pointmap, changed)
                merged = changed < self.indexed
                self.xyz[:, self.position[changed[merged]]] = means[:, merged]
                self.pending_xyz[:, changed[~merged] - self.indexed] = means[:, ~merged]
        if n > self.known:
            new = np.arange(self.known, n, dtype=np.int64)
            coords = voxel_coords_of_keys(pointmap.keys[new])
            level, rep = self._levels(coords, new)
            if n > len(self._level):
                cap = max(n, 2 * len(self._level))
                self._level = np.concatenate([self._level[: self.known], np.zeros(cap - self.known, np.int8)])
                self._rep = np.concatenate([self._rep[: self.known], np.zeros(cap - self.known, ROW_DTYPE)])
            self._level[self.known: n] = level
            self._rep[self.known: n] = rep
            self.pending_rows = np.concatenate([self.pending_rows, new.astype(ROW_DTYPE)])
            self.pending_keys = np.concatenate([self.pending_keys, self._row_keys(new, level, coords)])
            self.pending_xyz = np.concatenate([self.pending_xyz, self._means(pointmap, new)], axis=1)
            self.known = n
        self.map_version = pointmap.version
        if len(self.pending_rows) >= self.merge_every or (len(self.pending_rows) and not len(self.keys)):
            self._merge()

    def _merge(self) -> None:
        """Insert the pending rows into the sorted arrays (one sort of the pending rows, O(N) inserts)."""
        order = np.argsort(self.pending_keys, kind="stable")
        pk, pr, pxyz = self.pending_keys[order], self.pending_rows[order], self.pending_xyz[:, order]
        at = np.searchsorted(self.keys, pk, side="right")
        self.keys = np.insert(self.keys, at, pk)
        self.rows = np.insert(self.rows, at, pr)
        self.xyz = np.insert(self.xyz, at, pxyz, axis=1)
        self.indexed += len(pr)
        self.position = np.empty(self.indexed, ROW_DTYPE)
        self.position[self.rows] = np.arange(self.indexed)
        self.pending_rows = np.zeros(0, ROW_DTYPE)
        self.pending_keys = np.zeros(0, np.int64)
        self.pending_xyz = np.zeros((3, 0), np.float32)
        self._cells()

    def _cells(self) -> None:
        """Per-cell slices of the sorted arrays, level prefix lengths and content bounds."""
        cells = self.keys >> _LOW_BITS
        if len(cells) == 0:
            self.cell_keys = np.zeros(0, np.int64)
            self.cell_start = self.cell_count = np.zeros(0, np.int64)
            self.cell_level = np.zeros((0, len(BLOCK_VOXELS)), np.int64)
            self.cell_centre = np.zeros((0, 3))
            self.cell_lo = self.cell_hi = np.zeros((0, 3), np.float32)
            return
        starts = np.concatenate([[0], np.flatnonzero(cells[1:] != cells[:-1]) + 1])
        self.cell_keys = cells[starts]
        self.cell_start = starts.astype(np.int64)
        ends = np.append(starts[1:], len(cells))
        self.cell_count = (ends - starts).astype(np.int64)
        level = (self.keys >> _HASH_BITS) & ((1 << _LEVEL_BITS) - 1)
        prefix = []
        for lvl in range(len(BLOCK_VOXELS)):
            c = np.concatenate([[0], np.cumsum(level <= lvl)])
            prefix.append(c[ends] - c[starts])
        self.cell_level = np.stack(prefix, axis=1).astype(np.int64)
        c = self.cell_keys
        ijk = np.stack([(c >> (2 * _CELL_BITS)) & _CELL_MASK, (c >> _CELL_BITS) & _CELL_MASK, c & _CELL_MASK], 1)
        self.cell_centre = (ijk - _CELL_OFFSET + 0.5) * self.cell_size
        # content bounds, padded by a voxel (means move a little within their voxels), kept inside the cell
        pad = np.float32(self.voxel_size)
        half = 0.5 * self.cell_size
        self.cell_lo = np.maximum(np.minimum.reduceat(self.xyz, starts, axis=1).T - pad, self.cell_centre - half)
        self.cell_hi = np.minimum(np.maximum.reduceat(self.xyz, starts, axis=1).T + pad, self.cell_centre + half)

    @property
    def nbytes(self) -> int:
        arrays = (self._level, self._rep, self.keys, self.rows, self.xyz, self.position, self.pending_rows,
                  self.pending_keys, self.pending_xyz, self.cell_keys, self.cell_start, self.cell_count,
                  self.cell_level, self.cell_centre, self.cell_lo, self.cell_hi)
        return sum(a.nbytes for a in arrays) + sum(t.nbytes for t in self._blocks)

    # ------------------------------------------------------------------ queries
    def query(self, frustum: Frustum) -> CellQuery:
        """Cells whose bounding sphere intersects ``frustum`` (x-slab lookup, then box and plane tests)."""
        corners = frustum.corners()
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        ilo = np.clip(np.floor(lo / self.cell_size).astype(np.int64) + _CELL_OFFSET, 0, _CELL_MASK)
        ihi = np.clip(np.floor(hi / self.cell_size).astype(np.int64) + _CELL_OFFSET, 0, _CELL_MASK)
        # cells are sorted x-major: the x range is one contiguous slab of the cell arrays
        a = np.searchsorted(self.cell_keys, ilo[0] << (2 * _CELL_BITS), side="left")
        b = np.searchsorted(self.cell_keys, (ihi[0] + 1) << (2 * _CELL_BITS), side="left")
        centre = self.cell_centre[a:b]
        r = 0.5 * math.sqrt(3.0) * self.cell_size
        inside = np.all((centre >= lo - r) & (centre <= hi + r), axis=1)
        planes = frustum.planes()
        inside &= np.all(centre @ planes[:, :3].T + planes[:, 3] >= -r, axis=1)
        sel = a + np.flatnonzero(inside)
        R, t = frustum.w2c[:3, :3], frustum.w2c[:3, 3]
        depth = self.cell_centre[sel] @ R[2] + t[2]
        # nearest camera depth of the content box: minimise over its 8 corners (a box is convex)
        lo_b, hi_b = self.cell_lo[sel], self.cell_hi[sel]
        near = (np.minimum(lo_b * R[2], hi_b * R[2])).sum(axis=1) + t[2]
        return CellQuery(self.cell_start[sel], self.cell_count[sel], self.cell_level[sel], depth, near)

    @staticmethod
    def take(start: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Positions in the sorted arrays of the first ``n[i]`` entries of every cell slice starting at
        ``start[i]``, (sum n,) int64 (use them to index ``rows`` and ``xyz``)."""
        n = np.asarray(n, dtype=np.int64)
        total = int(n.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        offsets = np.cumsum(n) - n
        return np.repeat(start - offsets, n) + np.arange(total)
