"""Which past keyframes to condition on: three retrieval rules over the same keyframe bank.

- ``"deepverse"`` (DeepVerse, arXiv 2506.01103): the 5 keyframes with the nearest camera centres, ranked by
  the angle between forward axes; the top k by that angle.
- ``"worldmem"`` (WorldMem, arXiv 2504.12369): points sampled uniformly in a sphere around the target camera;
  those inside the target frustum are the target's field of view; greedily pick the keyframe whose frustum
  holds the largest share of the not-yet-covered points, minus a recency penalty
  (``overlap - 0.2 * age / now``), and remove the points it covers.
- ``"ours"``: candidates from a KD-tree on camera centres plus a view-direction test, then a co-visibility
  score from the fused map: the 8^3-voxel blocks of the map that the target camera really sees (a coarse
  z-buffer of block cubes, so occluded blocks drop out; each visible block weighted by the pixels it
  covers), and for each candidate the share of that pixel weight that it observed while being fused.
  A greedy set cover picks the top k (each pick removes the blocks it covers) with a small recency term.

Every rule returns ``(indices into the bank (k',) int64, scores (k',) float64)``, best first, and copes with
an empty bank (empty arrays). Poses are OpenCV c2w (4, 4); K (3, 3) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from memory.cache import rasterize
from memory.grid import BLOCK_VOXELS, CellQuery, Frustum, MapGrid
from recon.pointmap import VoxelPointMap
from worldmodel.camera import camera_to_pixels, invert_pose, resize_intrinsics, world_to_camera

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float64))


@dataclass
class KeyframeArrays:
    """The bank as arrays (views, not copies). N keyframes.

    c2w (N, 4, 4) float64, K (N, 3, 3) float64, size (N, 2) int64 (width, height), index (N,) int64 frame
    index; row_offsets (N + 1,) int64 and rows (M,) int32: keyframe i observed the map blocks whose level-0
    representative rows are ``rows[row_offsets[i]:row_offsets[i + 1]]`` (sorted).
    """

    c2w: np.ndarray
    K: np.ndarray
    size: np.ndarray
    index: np.ndarray
    row_offsets: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def centres(self) -> np.ndarray:
        return self.c2w[:, :3, 3]

    @property
    def forwards(self) -> np.ndarray:
        return self.c2w[:, :3, 2]


def valid_camera(c2w: np.ndarray, K: np.ndarray | None = None, width: int = 1, height: int = 1) -> bool:
    """True for a finite rigid c2w (orthonormal rotation, det +1), a finite K with positive focal lengths
    and a non-empty image."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        return False
    R = c2w[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0.5:
        return False
    if K is not None:
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            return False
    return int(width) > 0 and int(height) > 0


class CentreIndex:
    """cKDTree over keyframe camera centres, rebuilt lazily in batches.

    Keyframes added since the last build (the tail) are searched by brute force; the tree is rebuilt
    when the tail exceeds ``max(min_batch, rebuild_fraction * tree size)``, so appending one keyframe per
    step costs amortised O(log N), not a rebuild per step.
    """

    def __init__(self, min_batch: int = 64, rebuild_fraction: float = 0.1):
        self.min_batch = int(min_batch)
        self.rebuild_fraction = float(rebuild_fraction)
        self.reset()

    def reset(self) -> None:
        self.tree: cKDTree | None = None
        self.n_tree = 0

    def update(self, centres: np.ndarray) -> None:
        n = len(centres)
        if n < self.n_tree:
            self.reset()
        if n - self.n_tree > max(self.min_batch, self.rebuild_fraction * self.n_tree) or (self.tree is None and n):
            self.tree = cKDTree(centres) if n else None
            self.n_tree = n

    def nearest(self, centres: np.ndarray, point: np.ndarray, n: int, eligible: np.ndarray | None = None,
                max_dist: float = np.inf) -> np.ndarray:
        """Up to ``n`` eligible keyframe indices within ``max_dist`` of ``point``, nearest first."""
        self.update(centres)
        total = len(centres)
        if total == 0 or n <= 0:
            return np.zeros(0, np.int64)
        found_i, found_d = [], []
        if self.tree is not None and self.n_tree:
            k = min(self.n_tree, n + 8)
            while True:
                d, i = self.tree.query(point, k=k, distance_upper_bound=max_dist)
                d, i = np.atleast_1d(d), np.atleast_1d(i)
                ok = i < self.n_tree
                d, i = d[ok], i[ok]
                if eligible is not None:
                    keep = eligible[i]
                    d, i = d[keep], i[keep]
                if len(i) >= n or k >= self.n_tree or not ok.all():
                    break
                k = min(self.n_tree, 4 * k)
            found_i.append(i.astype(np.int64))
            found_d.append(d)
        if total > self.n_tree:  # tail not in the tree yet
            tail = np.arange(self.n_tree, total)
            d = np.linalg.norm(centres[tail] - point, axis=1)
            keep = d <= max_dist
            if eligible is not None:
                keep &= eligible[tail]
            found_i.append(tail[keep])
            found_d.append(d[keep])
        idx, dist = np.concatenate(found_i), np.concatenate(found_d)
        return idx[np.argsort(dist, kind="stable")[:n]]


# ---------------------------------------------------------------------------------------------- DeepVerse


def retrieve_deepverse(bank: KeyframeArrays, index: CentreIndex, target_c2w: np.ndarray, k: int,
                       eligible: np.ndarray | None = None, n_nearest: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_nearest`` nearest camera centres, then the top ``k`` by the smallest angle between forward
    axes. Scores are cos(angle) in [-1, 1]."""
    if len(bank) == 0 or k <= 0 or not valid_camera(target_c2w):
        return _EMPTY
    near = index.nearest(bank.centres, target_c2w[:3, 3], n_nearest, eligible)
    if len(near) == 0:
        return _EMPTY
    cos = bank.forwards[near] @ target_c2w[:3, 2]
    order = np.argsort(-cos, kind="stable")[:k]
    return near[order], cos[order].astype(np.float64)


# ---------------------------------------------------------------------------------------------- WorldMem


def in_frustum(points: np.ndarray, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(P,) bool: world points (P, 3) in front of camera ``c2w`` and inside its image."""
    u, v, z = camera_to_pixels(world_to_camera(points, invert_pose(c2w)), K)
    return (z > 1e-6) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)


def _in_frusta(points: np.ndarray, c2w: np.ndarray, K: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(C, P) bool: points (P, 3) inside each of C cameras (c2w (C, 4, 4), K (C, 3, 3), size (C, 2))."""
    R = c2w[:, :3, :3]
    rel = points[None, :, :] - c2w[:, None, :3, 3]            # (C, P, 3)
    cam = np.einsum("cpi,cij->cpj", rel, R)                    # R^T (p - t): camera coordinates
    u, v, z = camera_to_pixels(cam, K)
    w, h = size[:, 0, None] - 0.5, size[:, 1, None] - 0.5
    return (z > 1e-6) & (u >= -0.5) & (u < w) & (v >= -0.5) & (v < h)


def sphere_samples(n: int, radius: float, seed: int = 0) -> np.ndarray:
    """(n, 3) points uniform in a ball of ``radius`` around the origin (fixed seed: deterministic)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * (radius * rng.random(n) ** (1.0 / 3.0))[:, None]


def retrieve_worldmem(bank: KeyframeArrays, index: CentreIndex, target_c2w: np.ndarray, K: np.ndarray, width: int,
                      height: int, k: int, now: int, eligible: np.ndarray | None = None, n_samples: int = 8192,
                      radius: float = 30.0, recency: float = 0.2, max_candidates: int = 512, seed: int = 0,
                      chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """WorldMem's FOV-overlap rule (see the module docstring). Scores are the overlap shares at pick time.

    WorldMem scores every past frame; to keep large banks interactive this scores the ``max_candidates``
    keyframes nearest to the target within ``2 * radius`` (farther cameras see the sampled ball, if at all,
    from beyond its radius)."""
    if len(bank) == 0 or k <= 0 or not valid_camera(target_c2w, K, width, height):
        return _EMPTY
    cand = np.sort(index.nearest(bank.centres, target_c2w[:3, 3], max_candidates, eligible, 2.0 * radius))
    if len(cand) == 0:
        return _EMPTY
    pts = sphere_samples(n_samples, radius, seed) + target_c2w[:3, 3]
    pts = pts[in_frustum(pts, target_c2w, K, width, height)]
    if len(pts) == 0:
        return _EMPTY
    covers = np.concatenate([_in_frusta(pts, bank.c2w[c], bank.K[c], bank.size[c])
                             for c in np.array_split(cand, max(1, math.ceil(len(cand) / chunk)))])
    penalty = recency * (now - bank.index[cand]) / max(now, 1)
    remaining = np.ones(len(pts), bool)
    picked, scores = [], []
    for _ in range(min(k, len(cand))):
        left = int(remaining.sum())
        overlap = (covers[:, remaining].sum(axis=1) / left) if left else np.zeros(len(cand))
        conf = overlap - penalty
        conf[picked] = -np.inf
        i = int(np.argmax(conf))
        picked.append(i)
        scores.append(float(overlap[i]))
        remaining &= ~covers[i]
    return cand[np.array(picked, np.int64)], np.array(scores)


# ---------------------------------------------------------------------------------------------- ours


def coarse_intrinsics(K: np.ndarray, width: int, height: int, out_width: int) -> tuple[np.ndarray, int, int]:
    """K rescaled to an image ``out_width`` pixels wide (same field of view; pixel centres at integers)."""
    out_height = max(1, int(round(height * out_width / float(width))))
    return resize_intrinsics(K, width, height, out_width, out_height), int(out_width), out_height


def visible_blocks(grid: MapGrid, K: np.ndarray, c2w: np.ndarray, width: int, height: int, far: float,
                   zbuffer_width: int = 48, max_blocks: int = 65536, max_radius: int = 8,
                   pointmap: VoxelPointMap | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The map blocks the camera really sees, with their pixel weights.

    Every 8^3-voxel block of the map (its level-0 row) in the frustum is drawn as a block-sized cube into a
    z-buffer ``zbuffer_width`` pixels wide; a block is visible when it wins at least one pixel and weighs
    the number of pixels it wins (so shares are image shares, as a person would judge them). Blocks right
    in front of the camera are clipped to ``2 * max_radius + 1`` pixels. ``grid`` must be synced with the map.
    ``pointmap``: the map ``grid`` indexes; with carving on, a block of which carving left no voxel (in the
    sample :func:`blocks_carving_left` reads) is neither seen nor hides what lies behind it.
    Returns (rows (V,) int64 level-0 rows, weights (V,) float64 pixel counts).
    """
    Kc, wc, hc = coarse_intrinsics(np.asarray(K, dtype=np.float64), width, height, zbuffer_width)
    q = grid.query(Frustum(invert_pose(c2w), Kc, wc, hc, 0.05, far))
    pos = grid.take(q.start, q.n_level[:, 0])
    rows = grid.rows[pos]
    xyz = [np.take(grid.xyz[i], pos) for i in range(3)]
    pending = np.flatnonzero(grid.level[grid.pending_rows] == 0) if len(grid.pending_rows) else np.zeros(0, np.int64)
    if len(pending):
        rows = np.concatenate([rows, grid.pending_rows[pending]])
        xyz = [np.concatenate([a, grid.pending_xyz[i, pending]]) for i, a in enumerate(xyz)]
    if pointmap is not None and pointmap.carve and len(rows):
        carved = pointmap.carved_mask(rows)  # a block whose first voxel stands is kept without more work
        if carved.any():
            cell_of = np.repeat(np.arange(len(q.start)), q.n_level[:, 0])  # the cell of each merged level-0 row
            cells = np.unique(cell_of[carved[: len(cell_of)]])
            carved[carved] = ~blocks_carving_left(grid, pointmap, q, cells, rows[carved])
            rows, xyz = rows[~carved], [a[~carved] for a in xyz]
    if len(rows) > max_blocks:  # thin out uniformly (rare: only for huge open views)
        step = math.ceil(len(rows) / max_blocks)
        rows, xyz = rows[::step], [a[::step] for a in xyz]
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    edge = np.float32(BLOCK_VOXELS[0] * grid.voxel_size)
    xyz = [(np.floor(a / edge) + np.float32(0.5)) * edge for a in xyz]  # block centres
    half = np.full(len(rows), 0.5 * edge, np.float32)
    _, winner = rasterize(xyz, half, Kc, c2w, wc, hc, 0.05, far, max_radius, exact=False, ids=rows)
    won, counts = np.unique(winner[winner >= 0], return_counts=True)
    return won, counts.astype(np.float64)


def blocks_carving_left(grid: MapGrid, pointmap: VoxelPointMap, q: CellQuery, cells: np.ndarray, blocks: np.ndarray,
                        max_level: int = 2) -> np.ndarray:
    """(B,) bool: which ``blocks`` (level-0 rows) still hold a voxel that free-space carving left, judged on the
    rows of levels <= ``max_level`` of the queried ``cells`` (indices into ``q``: those that hold the blocks) and
    the pending rows of those levels. A block's first voxel alone is not enough: a ghost surface fused first and
    carved away later would take the real surface behind it with it. Level 2 (one voxel per 2^3) is enough:
    carving stops 2 voxels in front of a surface, so a carved ghost and the surface behind it never share a 2^3
    block (level 1 lost a wall 0.3 m behind a ghost in the same 4^3 blocks)."""
    sample = grid.rows[grid.take(q.start[cells], q.n_level[cells, max_level])]
    if len(grid.pending_rows):
        sample = np.concatenate([sample, grid.pending_rows[grid.level[grid.pending_rows] <= max_level]])
    return np.isin(blocks, grid.rep[sample[~pointmap.carved_mask(sample)]])


def view_candidates(bank: KeyframeArrays, index: CentreIndex, target_c2w: np.ndarray, n: int, radius: float,
                    max_angle_deg: float, eligible: np.ndarray | None = None) -> np.ndarray:
    """Up to ``n`` keyframes near the target camera (KD-tree, within ``radius`` m) whose forward axis is
    within ``max_angle_deg`` of the target's, nearest first."""
    ok = None
    if max_angle_deg < 180.0:
        ok = bank.forwards @ target_c2w[:3, 2] >= math.cos(math.radians(max_angle_deg))
        if eligible is not None:
            ok &= eligible
    elif eligible is not None:
        ok = eligible
    return index.nearest(bank.centres, target_c2w[:3, 3], n, ok, radius)


def greedy_cover(bank: KeyframeArrays, candidates: np.ndarray, rows: np.ndarray, weights: np.ndarray, k: int,
                 now: int, recency: float, min_share: float, mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy weighted set cover of the visible blocks ``rows`` by the candidates' observed blocks.

    Each pick maximises (newly covered weight share + recency * freshness), freshness = 1 - age / now;
    once nothing new can be covered, the rest of the k slots go to the remaining candidates whose own share
    is at least ``min_share``. ``mark`` is a zeroed int32 scratch array longer than every visible row
    (left zeroed; its last entry must stay 0).
    Returns (bank indices, co-visibility share of each pick in [0, 1]).
    """
    if len(candidates) == 0 or len(rows) == 0 or k <= 0:
        return _EMPTY
    mark[rows] = np.arange(1, len(rows) + 1, dtype=np.int32)
    try:
        starts, ends = bank.row_offsets[candidates], bank.row_offsets[candidates + 1]
        lens = ends - starts
        flat = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        # rows beyond the scratch array (a bank from another map) read its last entry, which stays 0
        hit = mark[np.minimum(bank.rows[flat], len(mark) - 1)]
    finally:
        mark[rows] = 0
    seen = np.flatnonzero(hit)
    owner = np.repeat(np.arange(len(candidates)), lens)[seen]   # (candidate, visible block) pairs,
    vis = hit[seen].astype(np.int64) - 1                         # grouped by candidate
    w = weights[vis]
    total = float(weights.sum())
    share = np.bincount(owner, w, minlength=len(candidates)) / total
    fresh = recency * (1.0 - (now - bank.index[candidates]) / max(now, 1))
    bounds = np.searchsorted(owner, np.arange(len(candidates) + 1))
    covered = np.zeros(len(rows), bool)
    picked: list[int] = []
    for _ in range(min(k, len(candidates))):
        live = ~covered[vis]
        gain = np.bincount(owner[live], w[live], minlength=len(candidates)) / total
        gain[picked] = 0.0
        if gain.max() <= 0.0:
            break
        i = int(np.argmax(np.where(gain > 0, gain + fresh, -np.inf)))
        picked.append(i)
        covered[vis[bounds[i]:bounds[i + 1]]] = True
    if len(picked) < k:  # redundant views that still see a fair part of the target
        rest = np.setdiff1d(np.flatnonzero(share >= max(min_share, 1e-12)), picked)
        rest = rest[np.argsort(-(share[rest] + fresh[rest]), kind="stable")]
        picked += rest[: k - len(picked)].tolist()
    picked_arr = np.array(picked, np.int64)
    return candidates[picked_arr], share[picked_arr]
