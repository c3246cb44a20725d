"""The keyframe bank: which frames are remembered, what of them stays in RAM, and retrieval for a target view.

:class:`GeometricMemory` implements ``scenes.scene.MemoryProvider``. The Scene calls :meth:`observe` after
fusing every frame and :meth:`build_context` before every step.

Keyframe policy: the first frame, then every frame whose pose differs from the last keyframe by at least
``key_translation_m`` metres or ``key_rotation_deg`` degrees.

RAM per keyframe (full frames stay in the Scene's frame store, on disk): fid, frame index, c2w, K, image
size, an RGB-D thumbnail (``1 / thumbnail_factor`` of each side; depth float16) and the map blocks it
observed (the level-0 representative rows of the 8^3-voxel blocks its pixels fell in, int32; see
:mod:`memory.grid`). At 256x256 and 0.1 m voxels that is about 30 kB per keyframe, against 460 kB for the
full frame.

Retrieval rules (:mod:`memory.retrieval`): ``"ours"`` (default), ``"deepverse"``, ``"worldmem"``.
Keyframes from the last ``exclude_recent`` frames are not retrieved: they are in ``Context.recent`` already.

Conventions: metres, +Y-up world, OpenCV cameras, c2w float64, depth float32 z-depth 0 = invalid.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from memory.cache import render_map_cache
from memory.grid import BLOCK_VOXELS, MapGrid
from memory.panorama import FarFieldPanorama
from memory.retrieval import (CentreIndex, KeyframeArrays, greedy_cover, retrieve_deepverse, retrieve_worldmem,
                              valid_camera, view_candidates, visible_blocks)
from worldmodel.camera import resize_intrinsics
from worldmodel.checks import CheckError, boolean, number, short
from recon.pointmap import FuseStats, VoxelPointMap, fuse_frame_dense
from worldmodel.frame import CacheView, Frame, GroundProbe

RULES = ("ours", "deepverse", "worldmem")
STATE_VERSION = 2  # 2: observed frames not fused yet are named by store id (1 is read too: its layer is fused)
OBSERVED_PREFIX = "observed."  # state_dict keys of the observed frames' own map


# MemoryConfig's numbers: (lo, hi, integer); visible_range_m may also be None
MEMORY_RANGES = {
    "key_translation_m": (0.0, 1000.0, False), "key_rotation_deg": (0.0, 360.0, False),
    "thumbnail_factor": (1, 64, True), "exclude_recent": (0, 1_000_000, True), "n_candidates": (1, 100_000, True),
    "candidate_radius_m": (0.0, 100_000.0, False), "max_view_angle_deg": (0.0, 180.0, False),
    "zbuffer_width": (1, 4096, True), "visible_range_m": (0.01, 100_000.0, False), "recency": (0.0, 100.0, False),
    "min_share": (0.0, 1.0, False), "deepverse_nearest": (1, 100_000, True), "worldmem_samples": (1, 10_000_000, True),
    "worldmem_radius_m": (0.0, 100_000.0, False), "worldmem_recency": (0.0, 100.0, False),
    "cache_max_side": (0, 8192, True), "cache_lod_pixels": (0.0, 10_000.0, False), "cell_m": (0.05, 1000.0, False),
    "observed_layer_frames": (0, 1_000_000, True),
}


@dataclass
class MemoryConfig:
    """Settings of :class:`GeometricMemory` (distances in metres, angles in degrees)."""

    retrieval_rule: str = "ours"      # "ours" | "deepverse" | "worldmem"
    key_translation_m: float = 0.75   # a frame becomes a keyframe when it moved this far from the last one ...
    key_rotation_deg: float = 15.0    # ... or turned this much
    thumbnail_factor: int = 4         # thumbnails keep 1/factor of each image side
    exclude_recent: int = 4           # keyframes of the last this-many frames are not retrieved (0 = all)
    # ours
    n_candidates: int = 32            # keyframes nearest to the target camera that are scored
    candidate_radius_m: float = 60.0
    max_view_angle_deg: float = 120.0 # candidates look at most this far away from the target's view direction
    zbuffer_width: int = 48           # width in pixels of the visibility z-buffer
    visible_range_m: float | None = None  # None: the map's max_depth
    recency: float = 0.05             # weight of freshness (1 - age / now) in the greedy pick
    min_share: float = 0.05           # redundant keyframes fill leftover slots only above this share
    fallback_nearest: bool = True     # nothing co-visible (unexplored view): fall back to the DeepVerse rule
    # baselines
    deepverse_nearest: int = 5
    worldmem_samples: int = 8192
    worldmem_radius_m: float = 30.0
    worldmem_recency: float = 0.2
    # cache render
    render_cache: bool = True
    cache_max_side: int = 128         # the cache is rendered at most this many pixels on its long side (0 = frame size)
    cache_lod_pixels: float = 0.0     # > 0: far cells draw one voxel per block spanning <= this many pixels
    cell_m: float = 4.0               # cell edge of the map's spatial index
    # Frames with no confidence (observed by a camera or the simulator, not generated) are also fused into a
    # small map of their own whose surfaces win the cache render over generated ones, so a learned world never
    # paints over what was observed (its start frame). A world with more observed frames than this (a
    # recording, the simulator) is all observation: the layer is dropped, and should a learned world go on
    # from them (a handover), the map as it stands before its first generated frame is kept as the layer for
    # the ground alone (riding it, its obstacles), not for the render. 0 = off. The layer is fused densely
    # (recon.pointmap.fuse_frame_dense), so a nearer view of a surface the frame saw far away has no gaps.
    observed_layer_frames: int = 16

    def __post_init__(self) -> None:
        """Every setting of its type and in MEMORY_RANGES (a session's saved settings are checked by building one):
        CheckError naming it."""
        if self.retrieval_rule not in RULES:
            raise CheckError(f"retrieval_rule must be one of {', '.join(RULES)}, got {short(self.retrieval_rule)}")
        for key, (lo, hi, integer) in MEMORY_RANGES.items():
            value = getattr(self, key)
            if not (key == "visible_range_m" and value is None):
                setattr(self, key, number(value, key, lo, hi, integer))
        for key in ("fallback_nearest", "render_cache"):
            boolean(getattr(self, key), key)



def scaled_camera(K: np.ndarray, width: int, height: int, max_side: int) -> tuple[np.ndarray, int, int]:
    """The same camera at most ``max_side`` pixels on its long side: (K' (3, 3), width', height').

    Pixel centres stay at integer coordinates (see worldmodel.camera.resize_intrinsics)."""
    s = 1.0 if max_side <= 0 else min(1.0, max_side / max(width, height))
    if s == 1.0:
        return K, width, height
    out_w, out_h = max(1, round(width * s)), max(1, round(height * s))
    return resize_intrinsics(K, width, height, out_w, out_h), out_w, out_h


def _grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with room for at least ``n`` entries along axis 0 (capacity doubles)."""
    if n <= len(a):
        return a
    out = np.zeros((max(n, 2 * len(a), 16),) + a.shape[1:], a.dtype)
    out[: len(a)] = a
    return out


def thumbnail(rgb: np.ndarray, depth: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Downsample an RGB-D frame by ``factor``: block-mean colour (uint8), centre-sample depth (float16)."""
    h, w = depth.shape
    th, tw = max(1, h // factor), max(1, w // factor)
    f_y, f_x = max(1, h // th), max(1, w // tw)
    blocks = rgb[: th * f_y, : tw * f_x].reshape(th, f_y, tw, f_x, 3).astype(np.float32)
    small_rgb = np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)
    d = depth[f_y // 2:: f_y, f_x // 2:: f_x][:th, :tw]
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0)
    return small_rgb, np.minimum(d, 65000.0).astype(np.float16)


@dataclass
class MapGround:
    """The map's :class:`~worldmodel.frame.GroundProbe`: the ground in ``observed``, the observed frames' own
    map (the whole map while no generated frame has been fused; past MemoryConfig.observed_layer_frames the
    copy of it :meth:`GeometricMemory.ground` kept, or None where none was kept)."""

    observed: VoxelPointMap | None

    def ground_height(self, x: float, z: float, bottom: float, top: float, radius: float) -> float | None:
        return None if self.observed is None else self.observed.ground_height(x, z, bottom, top, radius)

    def surface_voxels(self, x: float, z: float, bottom: float, top: float, radius: float) -> int:
        return 0 if self.observed is None else self.observed.surface_voxels(x, z, bottom, top, radius)


class GeometricMemory:
    """Keyframe bank + geometry-aware retrieval + cache render (the Scene's ``MemoryProvider``)."""

    def __init__(self, config: MemoryConfig | None = None):
        self.config = config or MemoryConfig()
        self.grid = MapGrid(cell_m=self.config.cell_m)
        self.index = CentreIndex()
        self.far = FarFieldPanorama()  # what lies beyond the map's fuse range (far towers, hills, sky)
        self.last_timings: dict[str, float] = {}
        self.reset()

    # ------------------------------------------------------------------ storage
    def reset(self) -> None:
        """Forget every keyframe (the Scene calls this when it starts or rebuilds a map)."""
        self._n = 0
        self._fid = np.zeros(0, np.int64)
        self._index = np.zeros(0, np.int64)
        self._c2w = np.zeros((0, 4, 4))
        self._K = np.zeros((0, 3, 3))
        self._size = np.zeros((0, 2), np.int64)
        self._thumb_rgb: list[np.ndarray] = []
        self._thumb_depth: list[np.ndarray] = []
        self._offsets = np.zeros(1, np.int64)
        self._rows = np.zeros(0, np.int32)
        self._last_index = -1
        self._mark = np.zeros(0, np.int32)
        self.index.reset()
        self.far.reset()
        self._observed_map: VoxelPointMap | None = None  # see MemoryConfig.observed_layer_frames
        # observed frames not yet fused into it (see _observed_layer): (store id, the frame, or None when a loaded
        # state named it: read from the store with _frame_of when the layer is first used)
        self._observed_pending: list[tuple[int, Frame | None]] = []
        self._frame_of: Callable[[int], Frame] | None = None
        self._observed_grid = MapGrid(cell_m=self.config.cell_m)
        self._observed_frames = 0
        self._generated_seen = False

    def __len__(self) -> int:
        return self._n

    @property
    def fids(self) -> np.ndarray:
        """(N,) int64 frame-store ids of the keyframes, oldest first."""
        return self._fid[: self._n]

    @property
    def frame_indices(self) -> np.ndarray:
        return self._index[: self._n]

    @property
    def poses(self) -> np.ndarray:
        """(N, 4, 4) c2w of the keyframes."""
        return self._c2w[: self._n]

    def thumbnail(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe ``i``'s thumbnail: (rgb (h, w, 3) uint8, depth (h, w) float32)."""
        return self._thumb_rgb[i], self._thumb_depth[i].astype(np.float32)

    def observed_rows(self, i: int) -> np.ndarray:
        """Sorted level-0 map rows of the blocks keyframe ``i`` observed, (M,) int64."""
        return self._rows[self._offsets[i]: self._offsets[i + 1]].astype(np.int64)

    def arrays(self) -> KeyframeArrays:
        n = self._n
        return KeyframeArrays(self._c2w[:n], self._K[:n], self._size[:n], self._index[:n],
                              self._offsets[: n + 1], self._rows[: self._offsets[n]])

    @property
    def nbytes(self) -> int:
        """RAM the bank holds (thumbnails; poses and observed blocks as allocated: they grow by doubling)."""
        arrays = (self._fid, self._index, self._c2w, self._K, self._size, self._offsets, self._rows)
        thumbs = sum(a.nbytes for a in self._thumb_rgb) + sum(a.nbytes for a in self._thumb_depth)
        return sum(a.nbytes for a in arrays) + thumbs

    @property
    def index_nbytes(self) -> int:
        """Bytes of the derived indexes (map grid, scratch), which scale with the map, not the bank."""
        return self.grid.nbytes + self._mark.nbytes

    # ------------------------------------------------------------------ observing
    def is_keyframe(self, c2w: np.ndarray) -> bool:
        """Pose policy: the first frame, then a move of key_translation_m or a turn of key_rotation_deg."""
        if self._n == 0:
            return True
        last = self._c2w[self._n - 1]
        if np.linalg.norm(c2w[:3, 3] - last[:3, 3]) >= self.config.key_translation_m:
            return True
        cos = (np.trace(last[:3, :3].T @ c2w[:3, :3]) - 1.0) / 2.0
        return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0)))) >= self.config.key_rotation_deg

    def observe(self, frame: Frame, fid: int, fused: FuseStats, pointmap: VoxelPointMap) -> None:
        """Called after ``frame`` (store id ``fid``) was fused into ``pointmap``; keeps it if it is a keyframe."""
        c2w = np.asarray(frame.c2w, dtype=np.float64)
        if not valid_camera(c2w, frame.K, frame.width, frame.height):
            return
        self._last_index = max(self._last_index, int(frame.index))
        self._observe_layer(frame, fid, pointmap)
        step = max(1, frame.width // 100)  # the panorama has 0.7 degree cells: ~100-200 px across a view fill them
        K_strided = np.array(frame.K, np.float64)
        K_strided[:2] /= step  # pixel i of the strided image is pixel i * step of the frame
        if frame.world_points is None:  # a point-cloud frame's depth is all 0: no pixel of it is known to be far
            self.far.observe(frame.rgb[::step, ::step], frame.depth[::step, ::step], K_strided, c2w,
                             min_depth=pointmap.max_depth, zero_is_far=frame.zero_depth_is_sky)
        if not self.is_keyframe(c2w):
            return
        rows = np.asarray(fused.rows, dtype=np.int64)
        if len(rows):
            self.grid.sync(pointmap)
            rows = np.unique(self.grid.rep[rows])
        self._append(fid, frame.index, c2w, frame.K, (frame.width, frame.height),
                     *thumbnail(frame.rgb, frame.depth, self.config.thumbnail_factor), rows)

    def _observe_layer(self, frame: Frame, fid: int, pointmap: VoxelPointMap) -> None:
        """Keep the observed frames' own map (MemoryConfig.observed_layer_frames). Frames are fused into it when
        it is first used (:meth:`_observed_layer`): a world whose frames are all observed (the simulator, a
        recording) never uses it, and its first frames would each pay a dense fuse (~150 ms at 256x256, the
        procedural studio step 78 -> 220 ms) for a layer dropped after ``observed_layer_frames`` frames."""
        if frame.confidence is not None:
            self._generated_seen = True
            return
        self._observed_frames += 1
        if self._observed_frames > self.config.observed_layer_frames:
            self._observed_map, self._observed_pending = None, []
            return
        if self._observed_map is None:
            self._observed_map = VoxelPointMap(pointmap.voxel_size, pointmap.max_depth)
        self._observed_pending.append((fid, frame))

    def _observed_layer(self) -> VoxelPointMap | None:
        """The observed layer with every observed frame fused in (densely: far pixels span several voxels, so a
        nearer view has no gaps between them); None when there is none. Frames a loaded state named are read from
        the frame store here: one that is gone or corrupt is left out; a read error (OSError) is raised."""
        while self._observed_pending:  # one at a time, each fused at most once
            fid, frame = self._observed_pending[0]
            if frame is None:  # named by a loaded state: read now (a full disk raises and leaves it pending)
                try:
                    frame = self._frame_of(fid)  # type: ignore[misc]
                except (KeyError, ValueError):  # gone or corrupt: the layer does without it
                    frame = None
            self._observed_pending.pop(0)
            if frame is not None and frame.confidence is None:  # (a corrupt state could name a generated frame)
                fuse_frame_dense(self._observed_map, frame)
        return self._observed_map

    def _observed_wins(self, cache: CacheView, K: np.ndarray, c2w: np.ndarray) -> CacheView:
        """``cache`` with the observed layer's surfaces in front wherever it has one (``observed`` says where);
        unchanged while no generated frame has been seen (the whole map is then observation)."""
        if not self._generated_seen or self._observed_frames > self.config.observed_layer_frames:
            return cache  # all observation so far; or a ground-only copy of the map (see MemoryConfig)
        layer = self._observed_layer()
        if layer is None or not len(layer):
            return cache
        h, w = cache.depth.shape
        seen = render_map_cache(layer, self._observed_grid, K, c2w, w, h, lod_pixels=self.config.cache_lod_pixels,
                                subpixel_fills=True)  # the layer is fused densely
        won = seen.valid
        return dataclasses.replace(cache, rgb=np.where(won[..., None], seen.rgb, cache.rgb),
                                   depth=np.where(won, seen.depth, cache.depth).astype(np.float32),
                                   valid=cache.valid | won, observed=won)

    def _append(self, fid: int, index: int, c2w: np.ndarray, K: np.ndarray, size: tuple[int, int],
                thumb_rgb: np.ndarray, thumb_depth: np.ndarray, rows: np.ndarray) -> None:
        n = self._n
        self._fid, self._index = _grow(self._fid, n + 1), _grow(self._index, n + 1)
        self._c2w, self._K, self._size = _grow(self._c2w, n + 1), _grow(self._K, n + 1), _grow(self._size, n + 1)
        self._offsets = _grow(self._offsets, n + 2)
        m = int(self._offsets[n])
        self._rows = _grow(self._rows, m + len(rows))
        self._fid[n], self._index[n], self._c2w[n], self._K[n], self._size[n] = fid, index, c2w, K, size
        self._rows[m: m + len(rows)] = rows
        self._offsets[n + 1] = m + len(rows)
        self._thumb_rgb.append(thumb_rgb)
        self._thumb_depth.append(thumb_depth)
        self._n = n + 1

    # ------------------------------------------------------------------ retrieval
    def eligible(self) -> np.ndarray:
        """(N,) bool: keyframes old enough to be retrieved (not in the recent context window)."""
        idx = self.frame_indices
        if self.config.exclude_recent <= 0:
            return np.ones(len(idx), bool)
        return idx <= self._last_index - self.config.exclude_recent

    def retrieve(self, target_c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                 pointmap: VoxelPointMap | None, k: int, rule: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Bank indices (k',) int64 and scores (k',) float64 of the keyframes for the target view, best first.

        Empty for an empty bank, k <= 0 or a degenerate camera (non-finite or non-rigid pose, bad K,
        empty image)."""
        cfg = self.config
        rule = rule or cfg.retrieval_rule
        if rule not in RULES:
            raise ValueError(f"unknown retrieval rule {rule!r}; choose one of {', '.join(RULES)}")
        target_c2w = np.asarray(target_c2w, dtype=np.float64)
        empty = np.zeros(0, np.int64), np.zeros(0, np.float64)
        if self._n == 0 or k <= 0 or not valid_camera(target_c2w, K, width, height):
            return empty
        K = np.asarray(K, dtype=np.float64)
        bank, eligible = self.arrays(), self.eligible()
        now = self._last_index + 1
        if rule == "deepverse":
            return retrieve_deepverse(bank, self.index, target_c2w, k, eligible, cfg.deepverse_nearest)
        if rule == "worldmem":
            return retrieve_worldmem(bank, self.index, target_c2w, K, width, height, k, now, eligible,
                                     cfg.worldmem_samples, cfg.worldmem_radius_m, cfg.worldmem_recency)
        idx, scores = empty
        if pointmap is not None and len(pointmap):
            t0 = time.perf_counter()
            self.grid.sync(pointmap)
            far = cfg.visible_range_m or pointmap.max_depth
            rows, weights = visible_blocks(self.grid, K, target_c2w, width, height, far, cfg.zbuffer_width,
                                           pointmap=pointmap)
            t1 = time.perf_counter()
            cand = view_candidates(bank, self.index, target_c2w, cfg.n_candidates, cfg.candidate_radius_m,
                                   cfg.max_view_angle_deg, eligible)
            if len(self._mark) <= self.grid.known:  # one spare entry that stays 0 (see greedy_cover)
                self._mark = np.zeros(max(self.grid.known + 1, 2 * len(self._mark)), np.int32)
            idx, scores = greedy_cover(bank, cand, rows, weights, k, now, cfg.recency, cfg.min_share, self._mark)
            self.last_timings.update(visible_ms=1e3 * (t1 - t0), cover_ms=1e3 * (time.perf_counter() - t1))
        if len(idx) == 0 and cfg.fallback_nearest:
            idx, _ = retrieve_deepverse(bank, self.index, target_c2w, k, eligible, cfg.deepverse_nearest)
            scores = np.zeros(len(idx))  # nothing known to be co-visible
        return idx, scores

    def render_cache(self, target_c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                     pointmap: VoxelPointMap) -> CacheView:
        """The fused map rendered into the target view (see memory.cache)."""
        return render_map_cache(pointmap, self.grid, np.asarray(K, dtype=np.float64),
                                np.asarray(target_c2w, dtype=np.float64), width, height,
                                lod_pixels=self.config.cache_lod_pixels)

    def build_context(self, target_c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                      pointmap: VoxelPointMap | None, k: int) -> tuple[list[int], list[float], CacheView | None]:
        """-> (keyframe fids, scores, cache render or None) for the camera about to be generated.

        The cache is rendered at most ``cache_max_side`` pixels on its long side; its own K says how."""
        t0 = time.perf_counter()
        target_c2w = np.asarray(target_c2w, dtype=np.float64)
        if not valid_camera(target_c2w, K, width, height):
            return [], [], None
        idx, scores = self.retrieve(target_c2w, K, width, height, pointmap, k)
        t1 = time.perf_counter()
        cache = None
        if self.config.render_cache and pointmap is not None and len(pointmap):
            cK, cw, ch = scaled_camera(np.asarray(K, dtype=np.float64), int(width), int(height),
                                       self.config.cache_max_side)
            cache = self._observed_wins(self.render_cache(target_c2w, cK, cw, ch, pointmap), cK, target_c2w)
            far_rgb, far_valid = self.far.render(cK, target_c2w, cw, ch)
            cache = dataclasses.replace(cache, far_rgb=far_rgb, far_valid=far_valid)
        self.last_timings.update(retrieve_ms=1e3 * (t1 - t0), cache_ms=1e3 * (time.perf_counter() - t1))
        return self.fids[idx].tolist(), [float(s) for s in scores], cache

    def ground(self, pointmap: VoxelPointMap) -> GroundProbe:
        """The ground observed frames show, for a ground-following world: the observed layer once generated
        frames were fused into ``pointmap``, ``pointmap`` itself before. When more frames were observed than
        the layer takes (a learned world handed a long walk or a recording), ``pointmap`` as it is now, before
        the first generated frame, is copied as the layer for the ground alone: a 40-frame handover then rides
        the ground (pose drift 3.7 -> 0.9 % on the eval's loops) instead of none. (A Scene that rebuilds its
        map asks again before the first frame the world made, so a fork keeps the copy.)"""
        if self._generated_seen:
            return MapGround(self._observed_layer())
        if self._observed_map is None and self._observed_frames > self.config.observed_layer_frames > 0:
            self._observed_map = VoxelPointMap.from_state_dict(pointmap.state_dict())  # a copy
        return MapGround(pointmap)

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict:
        """The retrieval settings as JSON (sessions record them; :meth:`from_description` rebuilds)."""
        return {"kind": "geometric", **dataclasses.asdict(self.config)}

    @classmethod
    def from_description(cls, desc: dict) -> "GeometricMemory":
        """A fresh (empty) memory with the settings of :meth:`describe`; unknown keys are ignored. CheckError
        names a bad one as ``memory.KEY``."""
        known = {f.name for f in dataclasses.fields(MemoryConfig)}
        try:
            return cls(MemoryConfig(**{k: v for k, v in desc.items() if k in known}))
        except CheckError as e:
            raise CheckError(f"memory.{e}") from None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays (safetensors-compatible) that describe the bank; ragged parts are concatenated. The
        observed frames not yet fused into the observed layer are saved by store id (``observed_pending_fid``),
        not fused: a world of observed frames never uses the layer, and fusing its first 16 frames for a save
        or a fork's undo copy took 2.8 s at 256x256 (and 17.7 MB in the session)."""
        n = self._n
        observed_map = self._observed_map
        shapes = np.array([t.shape[:2] for t in self._thumb_rgb], np.int64).reshape(n, 2)
        return {
            "meta": np.array([STATE_VERSION, BLOCK_VOXELS[0], self.config.thumbnail_factor, self._last_index, n],
                             np.int64),
            "fid": self._fid[:n].copy(), "frame_index": self._index[:n].copy(),
            "c2w": self._c2w[:n].copy(), "K": self._K[:n].copy(), "size": self._size[:n].copy(),
            "thumb_shape": shapes,
            "thumb_rgb": np.concatenate([t.reshape(-1) for t in self._thumb_rgb]) if n else np.zeros(0, np.uint8),
            "thumb_depth": (np.concatenate([t.reshape(-1) for t in self._thumb_depth]) if n
                            else np.zeros(0, np.float16)),
            "row_offsets": self._offsets[: n + 1].copy(),
            "rows": self._rows[: self._offsets[n]].copy(),
            **self.far.state_dict(),
            "observed_meta": np.array([self._observed_frames, int(self._generated_seen)], np.int64),
            "observed_pending_fid": np.array([fid for fid, _ in self._observed_pending], np.int64),
            # copies: the layer's state_dict gives views of its live arrays, which later fuses change
            **({f"{OBSERVED_PREFIX}{k}": v.copy() for k, v in observed_map.state_dict().items()}
               if observed_map is not None else {}),
        }

    def load_state_dict(self, state: dict[str, np.ndarray], frames: Callable[[int], Frame] | None = None) -> None:
        """Restore a bank saved by :meth:`state_dict`; ValueError (one line) when it is incomplete or corrupt.
        ``frames``: the frame of a store id (the Scene's store), for the observed frames the layer had not fused
        yet; they are read when the layer is first used, not here (a fork's undo must not touch the store)."""
        def fail(why: str) -> ValueError:
            return ValueError(f"memory state is corrupt: {why}; "
                              "delete memory.safetensors to rebuild it from the frames")

        expected = {"meta": np.int64, "fid": np.int64, "frame_index": np.int64, "c2w": np.float64, "K": np.float64,
                    "size": np.int64, "thumb_shape": np.int64, "thumb_rgb": np.uint8, "thumb_depth": np.float16,
                    "row_offsets": np.int64, "rows": np.int32}
        missing = [k for k in expected if k not in state]
        if missing:
            raise fail(f"arrays {missing} are missing")
        for key, dtype in expected.items():
            if np.asarray(state[key]).dtype != dtype:
                raise fail(f"{key} has dtype {np.asarray(state[key]).dtype}, expected {np.dtype(dtype)}")
        meta = state["meta"]
        if meta.shape != (5,) or meta[0] not in (1, STATE_VERSION):
            raise fail(f"unknown format {meta[:1].tolist()} (this build writes version {STATE_VERSION})")
        if meta[1] != BLOCK_VOXELS[0]:
            raise fail(f"it was made with {meta[1]}-voxel blocks, this build uses {BLOCK_VOXELS[0]}")
        n = int(meta[4])
        shapes = {"fid": (n,), "frame_index": (n,), "c2w": (n, 4, 4), "K": (n, 3, 3), "size": (n, 2),
                  "thumb_shape": (n, 2), "row_offsets": (n + 1,)}
        for key, shape in shapes.items():
            if state[key].shape != shape:
                raise fail(f"{key} has shape {state[key].shape}, expected {shape} for {n} keyframes")
        offsets, rows = state["row_offsets"], state["rows"]
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(rows):
            raise fail("row offsets do not describe the row array")
        if len(rows) and rows.min() < 0:
            raise fail("negative map rows")
        if not (np.isfinite(state["c2w"]).all() and np.isfinite(state["K"]).all()):
            raise fail("non-finite camera poses or intrinsics")
        ts = state["thumb_shape"]
        if np.any(ts < 1) or np.any(state["size"] < 1):
            raise fail("empty image sizes")
        pixels = ts[:, 0] * ts[:, 1]
        if state["thumb_rgb"].shape != (int(pixels.sum()) * 3,) or state["thumb_depth"].shape != (int(pixels.sum()),):
            raise fail("thumbnail arrays do not match their shapes")
        observed_meta = np.asarray(state.get("observed_meta", np.zeros(2, np.int64)))  # absent: saved before it
        if observed_meta.shape != (2,) or observed_meta.dtype != np.int64 or observed_meta.min() < 0:
            raise fail("observed_meta must be two non-negative int64 counts")
        pending_fids = np.asarray(state.get("observed_pending_fid", np.zeros(0, np.int64)))  # absent: saved fused
        if (pending_fids.ndim != 1 or pending_fids.dtype != np.int64 or len(pending_fids) > observed_meta[0]
                or (len(pending_fids) and pending_fids.min() < 0) or len(np.unique(pending_fids)) != len(pending_fids)):
            raise fail("observed_pending_fid must be distinct int64 store ids of at most observed_meta[0] frames")
        if len(pending_fids) and frames is None:
            raise fail("it names observed frames by store id and no frame store was given")
        layer_state = {k[len(OBSERVED_PREFIX):]: v for k, v in state.items() if k.startswith(OBSERVED_PREFIX)}
        try:
            observed_map = VoxelPointMap.from_state_dict(layer_state) if layer_state else None
        except ValueError as e:
            raise fail(f"the observed layer: {e}") from None
        if len(pending_fids) and observed_map is None:
            raise fail("it names observed frames for an observed layer it does not have")
        self.reset()
        self._observed_frames, self._generated_seen = int(observed_meta[0]), bool(observed_meta[1])
        self._observed_map = observed_map
        self._observed_pending = [(fid, None) for fid in pending_fids.tolist()]
        self._frame_of = frames
        n_alloc = max(n, 1)
        self._fid, self._index = _grow(self._fid, n_alloc), _grow(self._index, n_alloc)
        self._c2w, self._K, self._size = _grow(self._c2w, n_alloc), _grow(self._K, n_alloc), _grow(self._size, n_alloc)
        self._fid[:n], self._index[:n] = state["fid"], state["frame_index"]
        self._c2w[:n], self._K[:n], self._size[:n] = state["c2w"], state["K"], state["size"]
        self._offsets = offsets.astype(np.int64).copy()
        self._rows = rows.astype(np.int32).copy()
        p_rgb = np.concatenate([[0], np.cumsum(pixels * 3)])
        p_d = np.concatenate([[0], np.cumsum(pixels)])
        for i, (h, w) in enumerate(ts):
            self._thumb_rgb.append(state["thumb_rgb"][p_rgb[i]: p_rgb[i + 1]].reshape(h, w, 3).copy())
            self._thumb_depth.append(state["thumb_depth"][p_d[i]: p_d[i + 1]].reshape(h, w).copy())
        if "far_rgb" in state and "far_valid" in state:  # sessions saved before the far field have none
            try:
                self.far.load_state_dict(state)
            except ValueError as e:
                raise fail(str(e)) from None
        self._n = n
        self._last_index = int(meta[3])
