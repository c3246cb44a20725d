"""The fused global point map: a voxel-hashed running mean of every observed surface point.

Each occupied voxel keeps the mean world position and mean colour of the pixels that fell into it,
an observation count (weight), the first and last frame index that saw it, and the map version at
which it last changed (for incremental streaming).

Fusing a frame costs O(pixels in the frame), independent of the map size: the frame's points are
reduced per voxel first (``np.unique`` + ``np.bincount``), then looked up in a vectorised hash table
(voxel key -> row, :class:`recon.voxelhash.Int64HashTable`), and only those rows of the column arrays
are touched.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from worldmodel.camera import pixels_to_camera, unproject_depth, valid_depth_mask
from worldmodel.frame import Frame
from recon.voxelhash import Int64HashTable

_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)  # voxel coordinates in [-2^20, 2^20) fit in 21 bits each
_KEY_MASK = (1 << _KEY_BITS) - 1


def voxel_keys(voxel_coords: np.ndarray) -> np.ndarray:
    """(N, 3) int64 integer voxel coordinates -> (N,) int64 packed keys (21 bits per axis)."""
    v = voxel_coords.astype(np.int64) + _KEY_OFFSET
    return (v[:, 0] << (2 * _KEY_BITS)) | (v[:, 1] << _KEY_BITS) | v[:, 2]


def voxel_coords_of_keys(keys: np.ndarray) -> np.ndarray:
    """(N,) packed keys -> (N, 3) int64 voxel coordinates (inverse of :func:`voxel_keys`)."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.stack([(keys >> (2 * _KEY_BITS)) & _KEY_MASK, (keys >> _KEY_BITS) & _KEY_MASK,
                     keys & _KEY_MASK], axis=1) - _KEY_OFFSET


SAMPLES_PER_VOXEL = 2.0  # auto_stride: depth pixels per voxel side at the median depth


def auto_stride(depth: np.ndarray, K: np.ndarray, voxel: float, samples_per_voxel: float = SAMPLES_PER_VOXEL) -> int:
    """Pixel stride that keeps about ``samples_per_voxel`` depth samples along a voxel side at the frame's
    median valid depth: floor(f * voxel / (z_median * samples)), at least 1. (H, W) depth, (3, 3) K.

    Fusing more pixels than that adds cost, not accuracy (each voxel keeps a mean)."""
    valid = valid_depth_mask(depth[::4, ::4])
    if not valid.any():
        return 1
    z = float(np.median(depth[::4, ::4][valid]))
    f = 0.5 * (K[0, 0] + K[1, 1])
    return max(1, int(math.floor(f * voxel / (z * samples_per_voxel))))


@dataclass
class FuseStats:
    """What one call to :meth:`VoxelPointMap.fuse` did."""

    version: int
    points_in: int      # valid pixels fused
    voxels_touched: int
    voxels_new: int
    rows: np.ndarray    # (voxels_touched,) int64 map rows this frame observed (for the memory bank)


CARVE_STEPS = (2, 3, 4, 6, 8, 12, 16)  # free-space samples, in voxels in front of each measured surface
CARVE_CLEARANCE = 1.5                   # a sample must be this many voxels off the surface (along its normal)
CARVE_MIN_STRIDE = 3                    # carving casts every k-th ray at most (coverage builds up over frames)


class VoxelPointMap:
    """Incremental voxel point map. Positions in metres, +Y-up world; colours uint8 RGB.

    voxel_size: edge of a voxel in metres.  max_depth: pixels farther than this are ignored.
    min_weight: voxels seen by fewer frames are hidden from :meth:`points` (1 = show everything).
    carve: free-space carving, for noisy depth (sensors, learned models; the procedural world's depth is
        exact and does not need it). Each fused ray also samples the space just in front of its surface
        (CARVE_STEPS voxels along the ray); existing voxels found there count a *free* frame. A voxel is
        hidden once more than ``carve_ratio`` times as many frames saw through it as saw it: noisy or
        inconsistent depth (a fast-turning sensor, a generative model) stops leaving ghost surfaces in
        front of the real ones. Cost stays O(pixels): samples are hash look-ups, never a scan of the map
        (about +5 ms per 256x256 frame here).
    """

    COLUMNS = ("keys", "pos_sum", "color_sum", "weight", "first_seen", "last_seen", "modified",
               "seen_frames", "free_frames")
    ADDED_COLUMNS = ("seen_frames", "free_frames")  # not in maps saved before free-space carving
    _LOG_VERSIONS = 64  # versions of change logs kept for changed_since() (older asks scan the map)

    def __init__(self, voxel_size: float = 0.1, max_depth: float = 50.0, min_weight: int = 1,
                 initial_capacity: int = 1 << 16, carve: bool = False, carve_ratio: float = 0.5):
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.max_depth = float(max_depth)
        self.min_weight = int(min_weight)
        self.carve = bool(carve)
        self.carve_ratio = float(carve_ratio)
        self.version = 0
        self._size = 0
        cap = max(int(initial_capacity), 16)
        self.keys = np.zeros(cap, np.int64)
        self.pos_sum = np.zeros((cap, 3), np.float64)
        self.color_sum = np.zeros((cap, 3), np.float32)
        self.weight = np.zeros(cap, np.float32)
        self.first_seen = np.zeros(cap, np.int32)
        self.last_seen = np.zeros(cap, np.int32)
        self.modified = np.zeros(cap, np.int32)
        self.seen_frames = np.zeros(cap, np.int32)   # frames that observed the voxel
        self.free_frames = np.zeros(cap, np.int32)   # frames whose rays passed through it (carving)
        self._hash = Int64HashTable(cap)
        self._log: deque[tuple[int, np.ndarray]] = deque(maxlen=self._LOG_VERSIONS)

    # ------------------------------------------------------------------ size and storage
    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """RAM the map holds: its column arrays as allocated (capacity grows by doubling) and its hash table.
        (The used rows alone were a third of it: 17 of 52 MB after a 200-step walk.)"""
        return sum(getattr(self, c).nbytes for c in self.COLUMNS) + self._hash.nbytes

    def _reserve(self, n: int) -> None:
        cap = self.keys.shape[0]
        if n <= cap:
            return
        new_cap = max(n, 2 * cap)
        for name in self.COLUMNS:
            old = getattr(self, name)
            grown = np.zeros((new_cap,) + old.shape[1:], old.dtype)
            grown[: self._size] = old[: self._size]
            setattr(self, name, grown)

    def _lookup_or_insert(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M,) unique keys -> (rows (M,) int64, is_new (M,) bool); new keys get fresh rows."""
        rows = self._hash.find(keys)
        is_new = rows < 0
        n_new = int(is_new.sum())
        if n_new:
            new_rows = np.arange(self._size, self._size + n_new, dtype=np.int64)
            self._reserve(self._size + n_new)
            self._hash.insert(keys[is_new], new_rows)
            rows[is_new] = new_rows
            self.keys[new_rows] = keys[is_new]
            self._size += n_new
        return rows, is_new

    # ------------------------------------------------------------------ fusion
    def fuse(self, depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray,
             frame_index: int, confidence: np.ndarray | None = None, stride: int = 1) -> FuseStats:
        """Fuse one RGB-D frame. depth (H, W) z-depth metres (0/NaN/inf ignored), rgb (H, W, 3) uint8."""
        if not np.all(np.isfinite(c2w)):
            raise ValueError("camera pose contains NaN/inf; the frame was not fused")
        points, pix = unproject_depth(depth, K, c2w, max_depth=self.max_depth, stride=stride)
        colors = rgb.reshape(-1, 3)[pix]
        weights = None
        if confidence is not None:
            weights = confidence.reshape(-1)[pix].astype(np.float32)
            keep = np.isfinite(weights) & (weights > 0)
            points, colors, weights = points[keep], colors[keep], weights[keep]
        stats = self.fuse_points(points, colors, frame_index, weights)
        if self.carve and len(points):
            self._carve(depth, K, np.asarray(c2w, dtype=np.float64), max(CARVE_MIN_STRIDE, 2 * stride), stats.rows)
        return stats

    def _carve(self, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, stride: int,
               observed_rows: np.ndarray) -> None:
        """Count a free frame for existing voxels just in front of this frame's surfaces (not those it saw).

        Rays are taken every ``stride`` pixels. A sample ``steps`` voxels before the surface is used only when
        its clearance from the surface, steps * cos(angle between ray and surface normal), is at least
        CARVE_CLEARANCE voxels, so rays grazing a surface do not carve the surface itself."""
        d = np.where(valid_depth_mask(depth, self.max_depth), depth, 0.0)[::stride, ::stride].astype(np.float64)
        h, w = d.shape
        if h < 2 or w < 2:
            return
        vv, uu = np.mgrid[0:h, 0:w] * stride
        cam = pixels_to_camera(uu, vv, d, K)                                                      # (h, w, 3)
        normal = np.cross(cam[:-1, 1:] - cam[:-1, :-1], cam[1:, :-1] - cam[:-1, :-1])            # (h-1, w-1, 3)
        ok = (d[:-1, :-1] > 0) & (d[:-1, 1:] > 0) & (d[1:, :-1] > 0)
        ray = cam[:-1, :-1][ok]
        n = normal[ok]
        cos = np.abs((n * ray).sum(axis=1)) / np.maximum(np.linalg.norm(n, axis=1) * np.linalg.norm(ray, axis=1), 1e-12)
        R, origin = c2w[:3, :3], c2w[:3, 3]
        world = ray @ R.T + origin
        rays = world - origin
        z = ray[:, 2]
        samples = []
        for steps in CARVE_STEPS:
            scale = 1.0 - steps * self.voxel_size / z  # ``steps`` voxels nearer in z (more along an oblique ray)
            use = (scale > 0.05) & (steps * cos >= CARVE_CLEARANCE)
            samples.append(origin + rays[use] * scale[use, None])
        # Neighbouring rays share voxels: look each voxel up once (hash probes miss the cache on big maps).
        rows = self._hash.find(np.unique(self.keys_of_points(np.concatenate(samples))))
        rows = rows[rows >= 0]
        if len(rows):
            observed = np.zeros(self._size, bool)
            observed[observed_rows] = True
            carved = rows[~observed[rows]]  # unique rows (unique keys), none of them observed by this fuse
            self.free_frames[carved] += 1
            if len(carved):  # part of this fuse's change: same version, one log entry (disjoint from it)
                self.modified[carved] = self.version
                version, changed = self._log[-1]
                self._log[-1] = (version, np.concatenate([changed, carved]))

    def fuse_points(self, points: np.ndarray, colors: np.ndarray, frame_index: int,
                    weights: np.ndarray | None = None) -> FuseStats:
        """Fuse (N, 3) world points with (N, 3) uint8 colours observed by frame ``frame_index``. Non-finite points and
        points beyond the key range (±2^20 voxels of the origin) are left out; ValueError when none is left of a
        non-empty input (a camera that far out)."""
        finite = np.isfinite(points).all(axis=1)
        if not finite.all():
            points, colors = points[finite], colors[finite]
            weights = None if weights is None else weights[finite]
        self.version += 1
        if len(points) == 0:
            self._log.append((self.version, np.zeros(0, np.int64)))
            return FuseStats(self.version, 0, 0, 0, np.zeros(0, np.int64))
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = points / self.voxel_size
        keyable = (np.abs(scaled) < _KEY_OFFSET).all(axis=1)
        if not keyable.all():  # an outlier (a point cloud's sky point) is left out as a far pixel is, not the frame
            if not keyable.any():
                raise ValueError(f"every point of frame {frame_index} lies beyond ±{_KEY_OFFSET * self.voxel_size:.0f} m "
                                 "of the world origin, which the map cannot key at this voxel size; use a larger voxel "
                                 "or a world re-centred near its cameras")
            scaled, points, colors = scaled[keyable], points[keyable], colors[keyable]
            weights = None if weights is None else weights[keyable]
        coords = np.floor(scaled).astype(np.int64)
        unique_keys, inverse = np.unique(voxel_keys(coords), return_inverse=True)
        m = len(unique_keys)
        w = np.ones(len(points)) if weights is None else weights.astype(np.float64)
        pos = np.stack([np.bincount(inverse, points[:, i] * w, minlength=m) for i in range(3)], axis=1)
        col = np.stack([np.bincount(inverse, colors[:, i] * w, minlength=m) for i in range(3)], axis=1)
        wsum = np.bincount(inverse, w, minlength=m)

        rows, is_new = self._lookup_or_insert(unique_keys)
        self.pos_sum[rows] += pos
        self.color_sum[rows] += col.astype(np.float32)
        self.weight[rows] += wsum.astype(np.float32)
        self.first_seen[rows[is_new]] = frame_index
        self.last_seen[rows] = frame_index
        self.seen_frames[rows] += 1
        self.modified[rows] = self.version
        self._log.append((self.version, rows))
        return FuseStats(self.version, len(points), m, int(is_new.sum()), rows)

    # ------------------------------------------------------------------ queries
    def carved_mask(self, rows: np.ndarray) -> np.ndarray:
        """(M,) bool: which of ``rows`` free-space carving removed (more than ``carve_ratio`` times as many frames
        saw through them as saw them)."""
        return self.free_frames[rows] > self.carve_ratio * self.seen_frames[rows]

    def visible_mask(self, rows: np.ndarray) -> np.ndarray:
        """(M,) bool: which of ``rows`` are shown (seen by ``min_weight`` frames or more, and not carved away).
        Frames, not the summed weight: a learned model's confidences are below 1, so a voxel one generated frame
        saw weighs under 1 (86 % of a learned walk's voxels were missing from the viewer and the exports)."""
        return (self.seen_frames[rows] >= self.min_weight) & ~self.carved_mask(rows)

    def _visible_rows(self, rows: np.ndarray | None = None, upto_frame: int | None = None) -> np.ndarray:
        if rows is None:
            rows = np.arange(self._size)
        keep = self.visible_mask(rows)
        if upto_frame is not None:
            keep &= self.first_seen[rows] <= upto_frame
        return rows[keep]

    def rows_points(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean positions (N, 3) float32 and colours (N, 3) uint8 of the given rows."""
        w = self.weight[rows][:, None]
        pts = (self.pos_sum[rows] / w).astype(np.float32)
        cols = np.clip(np.rint(self.color_sum[rows] / w), 0, 255).astype(np.uint8)
        return pts, cols

    def points(self, upto_frame: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All (shown) points: (N, 3) float32 world positions, (N, 3) uint8 colours.

        upto_frame: only voxels first seen at or before this frame index (the map 'as it was').
        """
        return self.rows_points(self._visible_rows(upto_frame=upto_frame))

    def changed_since(self, version: int) -> np.ndarray:
        """Rows (int64, sorted, unique) added or changed after map version ``version``.

        Uses the per-version change log (cost ~ size of the change); falls back to a scan of the
        map when ``version`` is older than the log.
        """
        if version >= self.version:
            return np.zeros(0, np.int64)
        if self._log and self._log[0][0] <= version + 1:
            parts = [rows for v, rows in self._log if v > version]
            return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        return np.nonzero(self.modified[: self._size] > version)[0]

    def rows_in_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Rows whose mean position lies inside the axis-aligned box [lo, hi]."""
        rows = self._visible_rows()
        pts = self.pos_sum[rows] / self.weight[rows][:, None]
        inside = np.all((pts >= np.asarray(lo)) & (pts <= np.asarray(hi)), axis=1)
        return rows[inside]

    def points_in_box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.rows_points(self.rows_in_box(lo, hi))

    def _shown_in_column_box(self, x: float, z: float, bottom: float, top: float, radius: float):
        """Shown voxels in the box around the vertical column at (x, z) (``radius`` horizontally, a square;
        heights ``bottom``..``top``) -> (rows, integer voxel coords (N, 3), x voxel range, z voxel range); None
        for an empty or over-large box (> 1e6 voxels). A hash look-up of the box's voxels, never a scan."""
        v = self.voxel_size
        ix = np.arange(math.floor((x - radius) / v), math.floor((x + radius) / v) + 1)
        iy = np.arange(math.floor(bottom / v), math.floor(top / v) + 1)
        iz = np.arange(math.floor((z - radius) / v), math.floor((z + radius) / v) + 1)
        if not (len(ix) and len(iy) and len(iz)) or len(ix) * len(iy) * len(iz) > 1_000_000:
            return None
        coords = np.stack(np.meshgrid(ix, iy, iz, indexing="ij"), axis=-1).reshape(-1, 3)
        rows = self.rows_of_keys(voxel_keys(coords))
        found = rows >= 0
        rows, coords = rows[found], coords[found]
        shown = self.visible_mask(rows)
        return rows[shown], coords[shown], ix, iz

    def ground_height(self, x: float, z: float, bottom: float, top: float, radius: float,
                      min_columns: int = 4) -> float | None:
        """Height (world +Y, metres) of the ground under the vertical column at (x, z): in each voxel column
        within ``radius`` of it (a square, as the walking camera's body), the lowest shown voxel between
        heights ``bottom`` and ``top`` (what stands on the ground is above it), then the median over columns.
        None when fewer than ``min_columns`` columns have one. Cost: a hash look-up of the voxels of that box
        (about 2,000 at 0.1 m voxels), never a scan of the map."""
        box = self._shown_in_column_box(x, z, bottom, top, radius)
        if box is None or len(box[0]) == 0:
            return None
        rows, coords, ix, iz = box
        heights = self.pos_sum[rows, 1] / self.weight[rows]
        column = (coords[:, 0] - ix[0]) * len(iz) + (coords[:, 2] - iz[0])
        lowest = np.full(len(ix) * len(iz), np.inf)
        np.minimum.at(lowest, column, heights)
        lowest = lowest[np.isfinite(lowest)]
        return float(np.median(lowest)) if len(lowest) >= min_columns else None

    def surface_voxels(self, x: float, z: float, bottom: float, top: float, radius: float) -> int:
        """Number of shown voxels whose mean point lies within ``radius`` (a square) of the vertical column at
        (x, z), between heights ``bottom`` and ``top``: what a body standing there would touch. Same cost as
        :meth:`ground_height`."""
        box = self._shown_in_column_box(x, z, bottom, top, radius)
        if box is None or len(box[0]) == 0:
            return 0
        points = self.pos_sum[box[0]] / self.weight[box[0]][:, None]
        inside = ((np.abs(points[:, 0] - x) < radius) & (np.abs(points[:, 2] - z) < radius)
                  & (points[:, 1] > bottom) & (points[:, 1] < top))
        return int(inside.sum())

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given voxel keys, -1 where absent."""
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        return self._hash.find(np.asarray(keys, np.int64))

    def keys_of_points(self, points: np.ndarray) -> np.ndarray:
        """Voxel keys of (N, 3) world points."""
        return voxel_keys(np.floor(np.asarray(points) / self.voxel_size).astype(np.int64))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the map (for safetensors)."""
        out = {name: np.ascontiguousarray(getattr(self, name)[: self._size]) for name in self.COLUMNS}
        out["meta"] = np.array([self.voxel_size, self.max_depth, self.min_weight, self.version, self.carve,
                                self.carve_ratio], np.float64)
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> "VoxelPointMap":
        missing = [c for c in cls.COLUMNS + ("meta",) if c not in state]
        if missing:
            raise ValueError(f"point map file lacks arrays {missing}; the session is incomplete or corrupt")
        if np.ndim(state["meta"]) != 1 or len(state["meta"]) != 6:
            raise ValueError("point map settings are garbled; the session is corrupt")
        voxel_size, max_depth, min_weight, version, carve, carve_ratio = state["meta"].tolist()
        if any(np.ndim(state[c]) == 0 for c in cls.COLUMNS):
            raise ValueError("point map arrays are garbled; the session is corrupt")
        n = len(state["keys"])
        if any(len(state[c]) != n for c in cls.COLUMNS):
            raise ValueError("point map arrays have different lengths; the session is corrupt")
        m = cls(voxel_size, max_depth, int(min_weight), initial_capacity=max(n, 16), carve=bool(carve),
                carve_ratio=carve_ratio)
        for name in cls.COLUMNS:
            getattr(m, name)[:n] = state[name]
        m._size = n
        m.version = int(version)
        if len(np.unique(state["keys"])) != n:
            raise ValueError("point map has duplicate voxel keys; the session is corrupt")
        m._hash.insert(state["keys"], np.arange(n, dtype=np.int64))
        return m


def supersample_factor(depth: np.ndarray, K: np.ndarray, voxel: float, max_depth: float = np.inf,
                       max_factor: int = 4) -> int:
    """Integer upsampling that brings a pixel's footprint (z / f) at the frame's far surfaces (95th percentile
    of the valid depth within ``max_depth``) down to one voxel: ceil(z95 / (f * voxel)), 1 to ``max_factor``."""
    valid = valid_depth_mask(depth, max_depth)
    if not valid.any():
        return 1
    z = float(np.percentile(depth[valid], 95))
    f = 0.5 * (K[0, 0] + K[1, 1])
    return int(min(max(1, math.ceil(z / (f * voxel))), max_factor))


def supersample_rgbd(depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, factor: int, max_slope: float = 1.0,
                     max_jump: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample an RGB-D frame ``factor`` times denser: (H, W) z-depth, (H, W, 3) uint8, (3, 3) K ->
    (H*f, W*f) depth, (H*f, W*f, 3) uint8, K of the denser grid (same camera: pixel centres map to centres).

    Where the four source pixels around a sample are all valid and their inverse depth spans at most
    ``max_slope`` / f (f: focal length in pixels; a floor 1 m below the camera changes by 1 / f per pixel row at
    any distance) and at most ``max_jump`` of itself (far surfaces: a tree 40 m away before a hill at 50 m
    passes the first test), they are taken as one surface: inverse depth (exact along a plane) and colour are
    bilinear.
    Elsewhere (depth edges, holes) a sample takes its nearest source pixel, so no point is made between a
    near and a far surface."""
    if factor <= 1:
        return depth, rgb, K
    h, w = depth.shape
    x = (np.arange(w * factor) + 0.5) / factor - 0.5   # source pixel coordinates of the dense grid
    y = (np.arange(h * factor) + 0.5) / factor - 0.5
    x0 = np.clip(np.floor(x), 0, w - 2).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, h - 2).astype(np.int64)
    ax, ay = np.clip(x - x0, 0, 1)[None, :], np.clip(y - y0, 0, 1)[:, None]
    valid = valid_depth_mask(depth)
    d = np.where(valid, depth, 0).astype(np.float64)
    corners = [(y0[:, None], x0[None, :]), (y0[:, None], x0[None, :] + 1),
               (y0[:, None] + 1, x0[None, :]), (y0[:, None] + 1, x0[None, :] + 1)]
    bilinear = [(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax]
    inverse = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    corner_inv = [inverse[c] for c in corners]
    lo, hi = np.minimum.reduce(corner_inv), np.maximum.reduce(corner_inv)
    f = 0.5 * (K[0, 0] + K[1, 1])
    surface = (lo > 0) & ((hi - lo) * f <= max_slope) & (hi <= lo * (1 + max_jump))
    near_y = np.clip(np.rint(y), 0, h - 1).astype(np.int64)[:, None]
    near_x = np.clip(np.rint(x), 0, w - 1).astype(np.int64)[None, :]
    smooth_inv = sum(wt * ci for wt, ci in zip(bilinear, corner_inv))
    dense_d = np.where(surface, 1.0 / np.where(surface, smooth_inv, 1.0), d[near_y, near_x])
    colour = rgb.astype(np.float32)
    smooth_rgb = sum(wt[..., None] * colour[c] for wt, c in zip(bilinear, corners))
    dense_rgb = np.where(surface[..., None], smooth_rgb, colour[near_y, near_x])
    K_dense = np.array(K, dtype=np.float64)
    K_dense[:2, :2] *= factor
    K_dense[:2, 2] = (K_dense[:2, 2] + 0.5) * factor - 0.5
    return (dense_d.astype(np.float32), np.clip(np.rint(dense_rgb), 0, 255).astype(np.uint8), K_dense)


def fuse_frame_dense(pointmap: VoxelPointMap, frame: Frame, max_factor: int = 4) -> FuseStats:
    """Fuse a depth frame with every surface sampled at least once per voxel: where its pixels are larger than a
    voxel (far surfaces), a plain fuse leaves voxels that far apart, and a nearer view of the map then shows
    gaps between them. Costs up to ``max_factor``^2 the points of :func:`fuse_frame`; meant for the few
    observed frames a world starts from, not for every step."""
    factor = supersample_factor(frame.depth, frame.K, pointmap.voxel_size, pointmap.max_depth, max_factor)
    if frame.world_points is not None or factor <= 1:
        return fuse_frame(pointmap, frame)  # its pixels are no larger than a voxel: the plain fuse is dense
    confidence = None
    if frame.confidence is not None:
        confidence = np.kron(frame.confidence, np.ones((factor, factor), frame.confidence.dtype))
    depth, rgb, K = supersample_rgbd(frame.depth, frame.rgb, frame.K, factor)
    return pointmap.fuse(depth, rgb, K, frame.c2w, frame.index, confidence, stride=1)


def fuse_frame(pointmap: VoxelPointMap, frame: Frame, stride: int = 0) -> FuseStats:
    """Fuse a frame's depth (or its world points, for point-cloud sources) into ``pointmap``.

    stride: pixel stride; 0 picks :func:`auto_stride` (large recorded frames at coarse voxels need far fewer
    pixels than they have)."""
    if frame.world_points is not None:
        return pointmap.fuse_points(frame.world_points, frame.world_colors, frame.index)
    if stride <= 0:
        stride = auto_stride(frame.depth, frame.K, pointmap.voxel_size)
    return pointmap.fuse(frame.depth, frame.rgb, frame.K, frame.c2w, frame.index, frame.confidence, stride=stride)
