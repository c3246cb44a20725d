"""Seeded procedural fields of the procedural world: hashes, value noise, the terrain heightfield, paths.

Everything here is a pure, vectorised function of world coordinates (metres, +Y up) and the seed, so
chunks generated in any order agree at their borders and colour is view-independent.
"""

from __future__ import annotations

import numpy as np

from worldmodel.hashing import TERRAIN_MIX, mix32

_M1, _M2, _M3 = np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F)  # lattice axis mixers
_INV32 = np.float32(1.0 / 4294967296.0)

# Paths: two families of wiggly roads, one every PATH_SPACING metres along x and along z.
PATH_SPACING = 96.0
PATH_HALF_WIDTH = 1.6
PATH_BLEND = 1.6  # metres over which terrain and colour blend from path to grass


def _u32(a: np.ndarray) -> np.ndarray:
    """Integer array (any sign) -> uint32 with two's-complement wrap-around (same for int32 and int64)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        a = a.astype(np.int64)
    return a.astype(np.uint32)


def hash2(ix: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic hash of integer lattice points -> float32 in [0, 1), same shape as ix."""
    with np.errstate(over="ignore"):
        h = _u32(ix) * _M1 ^ _u32(iz) * _M2 ^ np.uint32(seed & 0xFFFFFFFF) * _M3
    return mix32(h, TERRAIN_MIX).astype(np.float32) * _INV32


def hash3(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic hash of 3D integer lattice points -> float32 in [0, 1)."""
    with np.errstate(over="ignore"):
        h = _u32(ix) * _M1 ^ _u32(iy) * _M3 ^ _u32(iz) * _M2 ^ np.uint32((seed * 7919 + 17) & 0xFFFFFFFF)
    return mix32(h, TERRAIN_MIX).astype(np.float32) * _INV32


def value_noise(x: np.ndarray, z: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth (C1) value noise in [0, 1) with lattice spacing ``scale`` metres.

    float32 inputs give a (faster) float32 result, anything else float64.
    """
    x, z = np.asarray(x), np.asarray(z)
    if x.dtype == np.float32 and z.dtype == np.float32:
        fdt, idt = np.float32, np.int32
    else:
        fdt, idt = np.float64, np.int64
    inv = fdt(1.0 / scale)
    fx, fz = x.astype(fdt, copy=False) * inv, z.astype(fdt, copy=False) * inv
    x0, z0 = np.floor(fx), np.floor(fz)
    tx, tz = fx - x0, fz - z0
    tx = tx * tx * (fdt(3.0) - fdt(2.0) * tx)
    tz = tz * tz * (fdt(3.0) - fdt(2.0) * tz)
    ix, iz = x0.astype(idt), z0.astype(idt)
    a = hash2(ix, iz, seed)
    b = hash2(ix + 1, iz, seed)
    c = hash2(ix, iz + 1, seed)
    d = hash2(ix + 1, iz + 1, seed)
    top = a + (b - a) * tx
    bot = c + (d - c) * tx
    return (top + (bot - top) * tz).astype(fdt, copy=False)


def path_distance(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """Horizontal distance (approximate, metres) from (x, z) to the nearest path centre line.

    float32 inputs are evaluated in float32 (for shading), anything else in float64.
    """
    x, z = np.asarray(x), np.asarray(z)
    if not (x.dtype == np.float32 and z.dtype == np.float32):
        x, z = x.astype(np.float64), z.astype(np.float64)
    ph = (seed % 997) * 0.37
    half = PATH_SPACING / 2.0
    ux = x - 9.0 * np.sin(z / 41.0 + ph) - 17.0
    dx = np.abs(np.mod(ux + half, PATH_SPACING) - half)
    uz = z - 9.0 * np.sin(x / 37.0 + 2.0 * ph) + 23.0
    dz = np.abs(np.mod(uz + half, PATH_SPACING) - half)
    return np.minimum(dx, dz)


def path_weight(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """1 on a path, 0 away from it, smooth in between; float64."""
    d = path_distance(x, z, seed)
    t = np.clip((d - PATH_HALF_WIDTH) / PATH_BLEND, 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def height_field(x: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """The smooth terrain height (metres) at world (x, z), float64. The mesh samples it on a grid."""
    s = seed * 4 + 1
    low = 16.0 * value_noise(x, z, 110.0, s) + 6.0 * value_noise(x, z, 43.0, s + 1) - 11.0
    detail = 1.8 * value_noise(x, z, 13.0, s + 2) + 0.5 * value_noise(x, z, 5.0, s + 3) - 1.15
    w = path_weight(x, z, seed)
    return low + (1.0 - w) * detail


def grid_height(ix: np.ndarray, iz: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Height of the terrain mesh vertex on integer lattice point (ix, iz) (world x = ix * cell)."""
    return height_field(np.asarray(ix, dtype=np.float64) * cell, np.asarray(iz, dtype=np.float64) * cell, seed)


def mesh_height(x: np.ndarray, z: np.ndarray, cell: float, seed: int,
                known: tuple[int, int, np.ndarray] | None = None) -> np.ndarray:
    """Exact height of the terrain *mesh* at (x, z): piecewise-linear over the grid triangles.

    Each cell [i, i+1] x [j, j+1] is split along its (i, j)-(i+1, j+1) diagonal, exactly as the mesh is.
    ``known``: (i0, j0, H), the :func:`grid_height` of a block of lattice points (``H[j - j0, i - i0]``, as a
    chunk computes for its mesh); vertices inside it are read from it instead of computed again (same values).
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    gx, gz = x / cell, z / cell
    i0, j0 = np.floor(gx), np.floor(gz)
    fx, fz = gx - i0, gz - j0
    i0, j0 = i0.astype(np.int64), j0.astype(np.int64)
    corners_i = np.stack([i0, i0 + 1, i0, i0 + 1])  # 00, 10, 01, 11: one call (small inputs pay per call)
    corners_j = np.stack([j0, j0, j0 + 1, j0 + 1])
    h00, h10, h01, h11 = _vertex_height(corners_i, corners_j, cell, seed, known)
    lower = fx >= fz  # triangle (00, 10, 11)
    h_lower = h00 + fx * (h10 - h00) + fz * (h11 - h10)
    h_upper = h00 + fz * (h01 - h00) + fx * (h11 - h01)
    return np.where(lower, h_lower, h_upper)


def _vertex_height(i: np.ndarray, j: np.ndarray, cell: float, seed: int,
                   known: tuple[int, int, np.ndarray] | None) -> np.ndarray:
    """:func:`grid_height` of lattice points (i, j), read from ``known`` (see :func:`mesh_height`) where it has them."""
    if known is None:
        return grid_height(i, j, cell, seed)
    i_first, j_first, heights = known
    li, lj = i - i_first, j - j_first
    inside = (li >= 0) & (li < heights.shape[1]) & (lj >= 0) & (lj < heights.shape[0])
    out = np.empty(np.shape(i), np.float64)
    out[inside] = heights[lj[inside], li[inside]]
    if not inside.all():
        out[~inside] = grid_height(i[~inside], j[~inside], cell, seed)
    return out
