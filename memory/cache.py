"""Cache render: project fused map points into a target camera with a z-buffer (GEN3C-style conditioning).

:func:`render_cache` renders a plain point array; :func:`render_map_cache` renders a
:class:`recon.pointmap.VoxelPointMap` through a :class:`memory.grid.MapGrid`, so only the cells in the
target frustum are read (optionally, far cells draw one voxel per 2^3 / 4^3 / 8^3 block: level of detail),
and colours are computed for the winning voxels only.

Each point stands for a cube (a voxel: ``point_size`` = voxel edge) and covers every pixel whose centre ray
passes through that cube (its projected bounding box; cubes smaller than a pixel cover at most the one
pixel centre they contain). Cubes of the full voxel edge (``cube_scale=1``) therefore render a closed voxel surface
hole-free while a cube spans at most ``2 * max_radius + 1`` pixels, and silhouettes grow by at most one voxel in the
world instead of a pixel on screen. :func:`render_map_cache` draws 0.8-voxel cubes by default (the learned model was
trained on that render): a flat wall seen square-on then shows thin gaps (89-94 % of it drawn at 2-8 m, 256x256), and
nearer than the clip (about 1 m at 256 pixels, 0.5 m at 128) larger holes. The nearest cube wins
each pixel: ``np.minimum.at`` on packed ``depth bits << 32 | id`` keys (positive float32 bit patterns sort
like the floats; ties go to the smaller id, so results do not depend on the order of the points).

Conventions: OpenCV camera, c2w (4, 4), K (3, 3) in pixels (pixel centres at integer coordinates),
depth float32 z-depth metres with 0 = nothing rendered, images uint8 HxWx3.
"""

from __future__ import annotations

import numpy as np

from memory.grid import BLOCK_VOXELS, Frustum, MapGrid
from worldmodel.camera import invert_pose
from recon.pointmap import VoxelPointMap
from worldmodel.frame import CacheView

_EMPTY = np.iinfo(np.int64).max


def zbuffer(flat: np.ndarray, keys: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point per pixel from (pixel, key) pairs.

    flat: (M,) int64 flat pixel index (row * width + col) inside the image; keys: (M,) int64
    ``float32 depth bits << 32 | id`` (depth > 0, 0 <= id < 2^32). Returns (depth (H, W) float32 with 0
    where empty, winner (H, W) int64 id or -1).
    """
    buf = np.full(width * height, _EMPTY, np.int64)
    np.minimum.at(buf, flat, keys)
    hit = buf != _EMPTY
    winner = np.where(hit, buf & 0xFFFFFFFF, -1)
    depth = np.zeros(width * height, np.float32)
    depth[hit] = (buf[hit] >> 32).astype(np.int32).view(np.float32)
    return depth.reshape(height, width), winner.reshape(height, width)


def depth_keys(z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N,) int64 z-buffer keys: float32 bits of ``z`` (> 0) in the high word, ``index`` in the low word."""
    return (np.ascontiguousarray(z, dtype=np.float32).view(np.int32).astype(np.int64) << 32) | index


def expand_rectangles(px0: np.ndarray, px1: np.ndarray, py0: np.ndarray, py1: np.ndarray, width: int,
                      height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of inclusive rectangles clipped to the image: (flat pixel (M,), rectangle id (M,)) int64."""
    px0, py0 = np.maximum(px0, 0), np.maximum(py0, 0)
    nx = np.maximum(np.minimum(px1, width - 1) - px0 + 1, 0)
    ny = np.maximum(np.minimum(py1, height - 1) - py0 + 1, 0)
    cover = nx * ny
    total = int(cover.sum())
    owner = np.repeat(np.arange(len(cover)), cover)
    j = np.arange(total) - (np.cumsum(cover) - cover)[owner]  # rank of each pixel within its rectangle
    nxo = nx[owner]
    flat = (py0[owner] + j // nxo) * width + px0[owner] + j % nxo
    return flat, owner


def world_to_camera_planar(xyz, c2w: np.ndarray) -> np.ndarray:
    """Planar world points (3, N) float32 (or three (N,) arrays) -> (3, N) float32 OpenCV camera
    coordinates of camera ``c2w``."""
    w2c = invert_pose(np.asarray(c2w, dtype=np.float64))
    R, t = w2c[:3, :3].astype(np.float32), w2c[:3, 3].astype(np.float32)
    x, y, z = xyz
    out = np.empty((3, len(x)), np.float32)
    for i in range(3):
        np.multiply(x, R[i, 0], out=out[i])
        out[i] += y * R[i, 1]
        out[i] += z * R[i, 2]
        out[i] += t[i]
    return out


def cube_pixel_boxes(cam: np.ndarray, half: np.ndarray, K: np.ndarray, max_radius: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre rectangles covered by axis-aligned cubes (camera frame) of half-edge ``half`` around ``cam``.

    cam: (3, N) float32 planar camera-frame centres with z - half > 0; half: (N,) float32 > 0. The rectangle
    is the cube's projected bounding box, so every pixel whose centre ray passes through the cube is covered;
    it is clipped to ``max_radius`` pixels around the projected centre.
    Returns (px0, px1, py0, py1) (N,) int64 (px1 < px0 means no pixel).
    """
    x, y, z = cam
    inv_n, inv_f = np.float32(1.0) / (z - half), np.float32(1.0) / (z + half)
    inv_c = np.float32(1.0) / z

    def extent(a: np.ndarray, f: float, c: float) -> tuple[np.ndarray, np.ndarray]:
        f, c = np.float32(f), np.float32(c)
        lo, hi = a - half, a + half
        # min over the cube of a/z: lo/zn when lo < 0 else lo/zf (mirrored for the max)
        mn = lo * np.where(lo < 0, inv_n, inv_f) * f + c
        mx = hi * np.where(hi > 0, inv_n, inv_f) * f + c
        centre = a * inv_c * f + c
        lo_i = np.ceil(np.maximum(mn, centre - max_radius)).astype(np.int64)
        hi_i = np.floor(np.minimum(mx, centre + max_radius)).astype(np.int64)
        return lo_i, hi_i

    px0, px1 = extent(x, K[0, 0], K[0, 2])
    py0, py1 = extent(y, K[1, 1], K[1, 2])
    return px0, px1, py0, py1


def rasterize(xyz: np.ndarray, half: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int,
              near: float = 0.05, far: float = np.inf, max_radius: int = 6, exact: bool = True,
              ids: np.ndarray | None = None, subpixel_fills: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer of cubes and points. xyz (3, N) float32 planar world centres (or three (N,) arrays),
    half (N,) float32 half-edges (0 = a point, drawn into the pixel it falls in). ``exact=False`` draws
    cubes larger than a pixel as squares of the (slightly conservative) half-width bound instead of their
    exact projected bounding boxes (cheaper, for coarse visibility buffers).

    ids: optional (N,) distinct ints in [0, 2^32) reported for the winners and breaking depth ties (the
    smaller id wins), so the result does not depend on the order of the points; default: the point index.
    subpixel_fills: a cube smaller than a pixel is drawn into the pixel it falls in, as a point, even when the
    pixel's centre ray misses it (for densely sampled maps, whose voxels are closer together than a pixel).
    Returns (depth (H, W) float32 z-depth of the winning centre, 0 = empty; winner (H, W) int64 id, -1 = empty).
    """
    width, height = int(width), int(height)
    x, y, z = world_to_camera_planar(xyz, c2w)
    ids = np.arange(len(z), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    fx, fy, cx, cy = (np.float32(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    # elementwise on all points, one selection at the end (gathers cost more than arithmetic here)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        zn = z - half
        keep = (zn > near) & (z < far)
        inv = np.float32(1.0) / z
        u = x * inv * fx + cx
        v = y * inv * fy + cy
        # half-width in pixels of the cube's projected bounding box (an upper bound, exact enough for small
        # cubes): d(u)/d(x) = f/z plus the perspective growth towards the image border
        near_inv = half / zn
        ru = near_inv * (fx + np.abs(u - cx))
        rv = near_inv * (fy + np.abs(v - cy))
        small = (ru < 0.5) & (rv < 0.5)
        pu = np.floor(u + np.float32(0.5))
        pv = np.floor(v + np.float32(0.5))
        # points (half = 0) cover the pixel they fall in; sub-pixel cubes cover the nearest pixel centre when
        # it lies inside their footprint
        hit = keep & small & (pu >= 0) & (pu < width) & (pv >= 0) & (pv < height) \
            & ((half <= 0) | subpixel_fills | ((np.abs(pu - u) <= ru) & (np.abs(pv - v) <= rv)))
    flats, keys = [], []
    s_idx = np.flatnonzero(hit)
    if len(s_idx):
        flats.append(pv[s_idx].astype(np.int64) * width + pu[s_idx].astype(np.int64))
        keys.append(depth_keys(z[s_idx], ids[s_idx]))
    # larger cubes: every pixel whose ray passes through them (exact projected bounding box)
    with np.errstate(invalid="ignore"):
        big = np.flatnonzero(keep & ~small & (u + ru >= -0.5) & (u - ru <= width - 0.5)
                             & (v + rv >= -0.5) & (v - rv <= height - 0.5))
    if len(big):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if exact:
                cam = np.stack([x[big], y[big], z[big]])
                px0, px1, py0, py1 = cube_pixel_boxes(cam, half[big], K, max_radius)
            else:
                ub, vb = u[big], v[big]
                rub, rvb = np.minimum(ru[big], max_radius), np.minimum(rv[big], max_radius)
                px0, px1 = np.ceil(ub - rub).astype(np.int64), np.floor(ub + rub).astype(np.int64)
                py0, py1 = np.ceil(vb - rvb).astype(np.int64), np.floor(vb + rvb).astype(np.int64)
        ok = np.flatnonzero((px1 >= px0) & (py1 >= py0) & (px1 >= 0) & (px0 < width) & (py1 >= 0) & (py0 < height))
        flat, owner = expand_rectangles(px0[ok], px1[ok], py0[ok], py1[ok], width, height)
        flats.append(flat)
        keys.append(depth_keys(z[big[ok]], ids[big[ok]])[owner])
    if not flats:
        return np.zeros((height, width), np.float32), np.full((height, width), -1, np.int64)
    return zbuffer(np.concatenate(flats), np.concatenate(keys), width, height)


def _view(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> CacheView:
    return CacheView(rgb, depth, valid, np.array(K, dtype=np.float64), np.array(c2w, dtype=np.float64))


def _empty(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> CacheView:
    return _view(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.float32),
                 np.zeros((height, width), bool), K, c2w)


def render_cache(points: np.ndarray, colors: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int,
                 point_size: float | np.ndarray = 0.0, max_radius: int = 6, near: float = 0.05,
                 far: float = np.inf) -> CacheView:
    """Z-buffer render of coloured points into a pinhole camera.

    points (N, 3) float32 world, colors (N, 3) uint8, K (3, 3), c2w (4, 4) OpenCV camera-to-world.
    point_size: edge in metres of the cube each point stands for (scalar or (N,); the voxel size for voxel
    centres); cubes cover the pixels whose rays pass through them (at most ``2 * max_radius + 1`` pixels
    wide) and sub-pixel cubes that no pixel ray hits are not drawn. ``point_size=0`` draws each point into
    the pixel it falls in (unstructured points).
    Returns a :class:`worldmodel.frame.CacheView` (rgb (H, W, 3) uint8, depth (H, W) float32 z-depth with
    0 = empty, valid (H, W) bool, this K and c2w).
    """
    width, height = int(width), int(height)
    if len(points) == 0 or width <= 0 or height <= 0:
        return _empty(K, c2w, max(width, 0), max(height, 0))
    xyz = np.ascontiguousarray(np.asarray(points, dtype=np.float32).T)
    half = np.broadcast_to(np.float32(0.5) * np.asarray(point_size, np.float32), (len(points),))
    depth, winner = rasterize(xyz, half, K, c2w, width, height, near, far, max_radius)
    valid = winner >= 0
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[valid] = np.asarray(colors)[winner[valid]]
    return _view(rgb, depth, valid, K, c2w)


def render_map_cache(pointmap: VoxelPointMap, grid: MapGrid, K: np.ndarray, c2w: np.ndarray, width: int,
                     height: int, far: float | None = None, lod_pixels: float = 0.0, cube_scale: float = 0.8,
                     max_radius: int = 6, subpixel_fills: bool = False) -> CacheView:
    """Cache render of the fused map seen from ``c2w`` (see :func:`render_cache`).

    Only the cells in the frustum are read (through ``grid``, brought up to date with ``pointmap`` first).
    Near cells draw each voxel as a cube of edge ``cube_scale * voxel_size`` at its mean position (the mean
    lies on the surface, so silhouettes and grazing walls stay sharp). 0.8 does not quite close a surface: neighbouring
    means are about one voxel apart, so a wall seen square-on shows a grid of thin gaps (6-11 % of its pixels at 2-8 m;
    ``cube_scale=1`` closes it; README, Known limit).
    Level of detail (off by default; it costs colour fidelity): with ``lod_pixels`` > 0, a cell whose
    nearest point is so far that a 2^3 (4^3, 8^3) voxel block spans at most ``lod_pixels`` pixels draws only
    one voxel per such block (the grid's stratified levels), as a cube filling the whole block, with that
    voxel's colour. Depth is the z of the winning cube's centre. ``subpixel_fills``: see :func:`rasterize`
    (for a map fused with :func:`recon.pointmap.fuse_frame_dense`).
    Voxels that free-space carving removed (:meth:`VoxelPointMap.carved_mask`) are not drawn: the model is not
    handed a surface the map has found to be free space (with level of detail, a cell whose coarse
    representatives carving removed is drawn in full detail, so a surface behind a carved ghost in the same block
    is not lost with it). Voxels the viewer hides (seen by fewer than the map's
    ``min_weight`` frames) are drawn: hiding low-weight generated voxels (a weight is the summed confidence) cost
    the learned world 0.18 dB of revisit PSNR on the eval's 8 loops.
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        return _empty(K, c2w, max(width, 0), max(height, 0))
    grid.sync(pointmap)
    far = pointmap.max_depth if far is None else float(far)
    K = np.asarray(K, dtype=np.float64)
    q = grid.query(Frustum(invert_pose(np.asarray(c2w, dtype=np.float64)), K, width, height, 0.05, far))
    v = grid.voxel_size
    focal = float(max(K[0, 0], K[1, 1]))
    take = q.count.copy()
    block = np.ones(len(take))  # edge of the drawn cubes, in voxels
    for lvl in reversed(range(len(BLOCK_VOXELS))):  # coarsest level last, so it wins where allowed
        coarse = (q.near > 0) & (focal * BLOCK_VOXELS[lvl] * v <= lod_pixels * q.near)
        take = np.where(coarse, q.n_level[:, lvl], take)
        block = np.where(coarse, BLOCK_VOXELS[lvl], block)
    if pointmap.carve and (block > 1).any():
        take, block = _full_detail_where_carved(pointmap, grid, q, take, block)
    pos = grid.take(q.start, take)
    rows = grid.rows[pos]
    block = np.repeat(block, take)
    xyz = [np.take(grid.xyz[i], pos) for i in range(3)]
    if len(grid.pending_rows):  # not merged yet: drawn in full
        rows = np.concatenate([rows, grid.pending_rows])
        block = np.concatenate([block, np.ones(len(grid.pending_rows))])
        xyz = [np.concatenate([a, grid.pending_xyz[i]]) for i, a in enumerate(xyz)]
    if pointmap.carve:  # free space by the map's own carving: the viewer and the exports do not show it either
        kept = ~pointmap.carved_mask(rows)
        if not kept.all():
            rows, block, xyz = rows[kept], block[kept], [a[kept] for a in xyz]
    coarse = np.flatnonzero(block > 1)
    if len(coarse):  # snap to the centre of the block each representative stands for
        edge = (block[coarse] * v).astype(np.float32)
        for a in xyz:
            a[coarse] = (np.floor(a[coarse] / edge) + np.float32(0.5)) * edge
    half = np.where(block > 1, 0.5 * v * block, 0.5 * cube_scale * v).astype(np.float32)
    depth, winner = rasterize(xyz, half, K, c2w, width, height, 0.05, far, max_radius, ids=rows,
                              subpixel_fills=subpixel_fills)
    valid = winner >= 0
    rgb = np.zeros((height, width, 3), np.uint8)
    if valid.any():
        r = winner[valid]
        rgb[valid] = np.clip(np.rint(pointmap.color_sum[r] / pointmap.weight[r][:, None]), 0, 255).astype(np.uint8)
    return _view(rgb, depth, valid, K, c2w)


def _full_detail_where_carved(pointmap: VoxelPointMap, grid: MapGrid, q, take: np.ndarray, block: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray]:
    """(take, block) per queried cell, with cells that would draw a carved coarse representative set back to
    every voxel at its own size. A block's representative is one of its voxels (the first fused of its
    stratum); when carving removed it, the rest of the block (e.g. the wall a ghost stood in front of) must
    still be drawn. Carving is local, so few cells lose their level of detail."""
    rows = grid.rows[grid.take(q.start, take)]
    drawn_coarse = np.repeat(block > 1, take)
    bad = drawn_coarse & pointmap.carved_mask(rows)
    if not bad.any():
        return take, block
    cells = np.unique(np.repeat(np.arange(len(take)), take)[bad])
    take, block = take.copy(), block.copy()
    take[cells], block[cells] = q.count[cells], 1
    return take, block
