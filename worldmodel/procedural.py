"""The procedural world: an infinite, seeded, deterministic world made in chunks and ray cast with open3d.

World content (terrain, buildings, trees, rocks, paths) is a pure function of ``(seed, cx, cz)`` for each
square chunk of ``chunk_size`` metres, so the world is the same however it is walked into. Chunks within
``load_radius_chunks`` (Chebyshev) of the camera chunk are in the ray-casting scene; chunks beyond
``load_radius_chunks + 1`` are dropped whenever the scene is rebuilt (which happens only when a needed chunk
is missing). Generated chunk meshes are kept in a bounded LRU.

Rendering casts one ray per pixel centre with directions ``R @ [(u - cx) / fx, (v - cy) / fy, 1]``, i.e. the
same pixel convention as :mod:`worldmodel.camera` (pixel centres at integer coordinates), so ``t_hit`` *is* the
z-depth. (``RaycastingScene.create_rays_pinhole`` adds half a pixel, so it is not used.)

Shading: view-independent albedo computed from the world-space hit point (grass noise, checkered paths,
windows and floor bands on buildings, per-object colour variation, speckle), Lambert sun + sky ambient,
optional hard shadows (second ray cast), and distance fog towards the sky colour of the pixel.

Conventions: metres, right-handed +Y-up world, OpenCV cameras, c2w float64, depth float32 z-depth 0 = invalid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from worldmodel.camera import intrinsics_from_fov, look_at_c2w, pixel_rays_camera
from worldmodel import terrain as tr
from worldmodel.actions import Action, Kinematics, TargetPose
from worldmodel.checks import MAX_SEED, CheckError, boolean, number
from worldmodel.frame import BaseWorldModel, Context, Frame

INVALID_ID = np.uint32(o3d.t.geometry.RaycastingScene.INVALID_ID)

# Material ids (per triangle).
MAT_TERRAIN, MAT_BUILDING, MAT_TRUNK, MAT_CANOPY, MAT_ROCK, MAT_PATH = 0, 1, 2, 3, 4, 5  # MAT_PATH: terrain near a path

SUN_DIR = np.array([0.45, 0.8, 0.35], dtype=np.float32)
SUN_DIR /= np.linalg.norm(SUN_DIR)
SKY_HORIZON = np.array([0.80, 0.86, 0.93], dtype=np.float32)
SKY_ZENITH = np.array([0.36, 0.56, 0.86], dtype=np.float32)
GROUND_BELOW = np.array([0.55, 0.58, 0.55], dtype=np.float32)  # "sky" below the horizon (rarely seen)

GRASS_A = np.array([0.30, 0.52, 0.20], dtype=np.float32)
GRASS_B = np.array([0.52, 0.60, 0.26], dtype=np.float32)
DIRT = np.array([0.50, 0.42, 0.32], dtype=np.float32)
PAVE_A = np.array([0.78, 0.72, 0.60], dtype=np.float32)
PAVE_B = np.array([0.58, 0.52, 0.44], dtype=np.float32)
WINDOW = np.array([0.22, 0.30, 0.42], dtype=np.float32)
BUILDING_PALETTE = np.array([
    [0.85, 0.80, 0.70], [0.75, 0.75, 0.77], [0.70, 0.38, 0.30], [0.62, 0.70, 0.80],
    [0.88, 0.74, 0.52], [0.55, 0.55, 0.58], [0.80, 0.62, 0.60],
], dtype=np.float32)

# planar (3, 1) versions for shading
_SKY_H, _SKY_DZ = SKY_HORIZON[:, None], (SKY_ZENITH - SKY_HORIZON)[:, None]
_GROUND_BELOW = GROUND_BELOW[:, None]
_GRASS_A, _GRASS_D = GRASS_A[:, None], (GRASS_B - GRASS_A)[:, None]
_DIRT, _PAVE_A, _PAVE_B, _WINDOW = DIRT[:, None], PAVE_A[:, None], PAVE_B[:, None], WINDOW[:, None]

CAMERA_RADIUS = 0.35  # metres kept between a walking camera and obstacles
MIN_CLEARANCE = 0.3   # a camera never goes lower than this above the terrain


@dataclass
class ProceduralConfig:
    width: int = 256
    height: int = 256
    fov_y_deg: float = 70.0
    eye_height: float = 1.7          # camera height above terrain when walking
    fly: bool = False                # when True the camera keeps its height (no terrain following)
    chunk_size: float = 32.0
    load_radius_chunks: int = 3      # chunks within this Chebyshev radius of the camera chunk are loaded
    far: float = 150.0               # beyond this (ray length): depth 0 and sky colour
    fog_start: float = 40.0
    kinematics: Kinematics = field(default_factory=Kinematics)
    terrain_cell: float = 1.0        # terrain grid spacing, metres (chunk_size / terrain_cell must be an integer)
    shadows: bool = False            # hard sun shadows via a second ray cast (costs ~+60 % render time)
    chunk_cache: int = 160           # generated chunks kept in the LRU (>= loaded chunks)

    def __post_init__(self) -> None:
        """The checks a saved session's world is opened with (CheckError naming the setting): every number in
        PROCEDURAL_RANGES, the switches true or false, chunks a whole number of terrain cells (at most 256) and a
        chunk cache that holds every loaded chunk."""
        for key, (lo, hi, integer) in PROCEDURAL_RANGES.items():
            setattr(self, key, number(getattr(self, key), key, lo, hi, integer))
        self.fly, self.shadows = boolean(self.fly, "fly"), boolean(self.shadows, "shadows")
        if not isinstance(self.kinematics, Kinematics):
            raise CheckError(f"kinematics must be a Kinematics, got {type(self.kinematics).__name__}")
        cells = self.chunk_size / self.terrain_cell
        if abs(cells - round(cells)) > 1e-6 or cells > 256:
            raise CheckError(f"chunk_size ({self.chunk_size:g}) must be a whole number (at most 256) of terrain_cell "
                             f"({self.terrain_cell:g})")
        loaded = (2 * self.load_radius_chunks + 1) ** 2
        if self.chunk_cache < loaded:
            raise CheckError(f"chunk_cache ({self.chunk_cache}) must hold every loaded chunk: at least {loaded} for "
                             f"load_radius_chunks {self.load_radius_chunks}")


# ProceduralConfig settings of how the world is looked at, not of what is in it (shows_the_same_world_as)
CAMERA_SETTINGS = ("width", "height", "fov_y_deg", "eye_height", "fly", "kinematics", "chunk_cache")

# Ranges a saved world's settings must lie in: (lo, hi, integer). Booleans (fly, shadows) are checked apart.
PROCEDURAL_RANGES = {
    "width": (16, 4096, True), "height": (16, 4096, True), "fov_y_deg": (1.0, 170.0, False),
    "eye_height": (0.0, 1000.0, False), "chunk_size": (4.0, 1024.0, False), "load_radius_chunks": (0, 8, True),
    "far": (1.0, 100_000.0, False), "fog_start": (0.0, 100_000.0, False), "terrain_cell": (0.25, 64.0, False),
    "chunk_cache": (1, 10_000, True),
}


# --------------------------------------------------------------------------------------------- chunks


@dataclass
class Chunk:
    """Generated content of one chunk. Triangles are wound counter-clockwise seen from outside."""

    key: tuple[int, int]
    vertices: np.ndarray      # (V, 3) float32 world
    triangles: np.ndarray     # (T, 3) uint32
    tri_color: np.ndarray     # (T, 3) float32 base albedo (per object)
    tri_mat: np.ndarray       # (T,) uint8 material id
    boxes: np.ndarray         # (B, 5) float64 building footprints [xmin, zmin, xmax, zmax, ytop]
    circles: np.ndarray       # (C, 4) float64 round obstacles [x, z, r, ytop] (trunks, rocks)
    # (K, 6) float64 tree crowns [x, z, r, ybottom, height, cone]: cone 1 narrows to its top, 0 is an ellipsoid
    # around mid-height; obstacles of a flying camera only (a walker passes under them)
    crowns: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    @property
    def triangle_count(self) -> int:
        return int(self.triangles.shape[0])


def chunk_code(cx: int, cz: int) -> int:
    """Stable uint32 id of a chunk (the ``geometry_ids`` reported by render_hits)."""
    return (((cx + 32768) & 0xFFFF) << 16) | ((cz + 32768) & 0xFFFF)


class _MeshBuilder:
    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.tris: list[np.ndarray] = []
        self.colors: list[np.ndarray] = []
        self.mats: list[np.ndarray] = []
        self.centroids: list[np.ndarray] = []  # per part: (3,) centroid of a convex solid, NaN for others
        self.n = 0

    def add(self, verts: np.ndarray, tris: np.ndarray, color, mat: int) -> None:
        self.verts.append(np.asarray(verts, dtype=np.float64))
        self.tris.append(np.asarray(tris, dtype=np.int64) + self.n)
        self.colors.append(np.broadcast_to(np.asarray(color, dtype=np.float32), (len(tris), 3)))
        # (materials are a writable array so callers can refine them per triangle)
        self.mats.append(np.full(len(tris), mat, dtype=np.uint8))
        self.centroids.append(np.full(3, np.nan))
        self.n += len(verts)

    def add_convex(self, verts: np.ndarray, tris: np.ndarray, color, mat: int) -> None:
        """Add a convex (or star-shaped) solid; :meth:`build` re-winds its faces to point away from its centroid."""
        self.add(verts, tris, color, mat)
        self.centroids[-1] = self.verts[-1].mean(axis=0)

    def _outward_triangles(self, verts: np.ndarray) -> np.ndarray:
        """(T, 3) triangles, those of convex parts wound to face away from their part's centroid (one pass)."""
        tris = np.concatenate(self.tris)
        centre = np.repeat(np.stack(self.centroids), [len(t) for t in self.tris], axis=0)
        convex = ~np.isnan(centre[:, 0])
        a, b, c = verts[tris[convex, 0]], verts[tris[convex, 1]], verts[tris[convex, 2]]
        nrm = np.cross(b - a, c - a)
        inward = np.einsum("ij,ij->i", nrm, (a + b + c) / 3.0 - centre[convex]) < 0
        flip = np.flatnonzero(convex)[inward]
        tris[flip] = tris[flip][:, [0, 2, 1]]
        return tris

    def build(self, key, boxes, circles, crowns) -> Chunk:
        verts = np.concatenate(self.verts)
        return Chunk(
            key=key,
            vertices=verts.astype(np.float32),
            triangles=self._outward_triangles(verts).astype(np.uint32),
            tri_color=np.ascontiguousarray(np.concatenate(self.colors), dtype=np.float32),
            tri_mat=np.concatenate(self.mats),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 5),
            circles=np.asarray(circles, dtype=np.float64).reshape(-1, 4),
            crowns=np.asarray(crowns, dtype=np.float64).reshape(-1, 6),
        )


_BOX_TRIS = np.array([
    [0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
    [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7],
])


def _box_vertices(x0, y0, z0, x1, y1, z1) -> np.ndarray:
    return np.array([[x0, y0, z0], [x1, y0, z0], [x1, y0, z1], [x0, y0, z1],
                     [x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]])


def _cone(cx, y0, cz, radius, height, sides, phase):
    ang = phase + np.arange(sides) * (2 * math.pi / sides)
    ring = np.stack([cx + radius * np.cos(ang), np.full(sides, y0), cz + radius * np.sin(ang)], axis=1)
    verts = np.vstack([ring, [[cx, y0 + height, cz]], [[cx, y0, cz]]])
    i = np.arange(sides)
    j = (i + 1) % sides
    tris = np.concatenate([np.stack([i, j, np.full(sides, sides)], 1), np.stack([j, i, np.full(sides, sides + 1)], 1)])
    return verts, tris


def _icosahedron():
    p = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p],
                  [0, -1, -p], [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]], dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v, f


_ICO_V, _ICO_F = _icosahedron()
CROWN_JITTER = (0.85, 1.15)  # a broadleaf crown's vertices are scaled by a factor drawn from this range


def _chunk_rng(seed: int, cx: int, cz: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, (cx + 2 ** 31) & 0xFFFFFFFF, (cz + 2 ** 31) & 0xFFFFFFFF, 0x5EED])


# The settings generate_chunk reads: with the seed and the chunk's coordinates they fix its content.
CHUNK_SETTINGS = ("chunk_size", "terrain_cell")
SHARED_CHUNKS = 512  # chunks kept for every world in the process (~75 KB each, ~40 MB in all)


@functools.lru_cache(maxsize=SHARED_CHUNKS)
def _shared_chunk(seed: int, cx: int, cz: int, settings: tuple) -> Chunk:
    """generate_chunk, once per process for each chunk: every world of a seed (the eval's simulators, a
    learned world's, a reopened session's) reuses it. Its arrays are read-only (they are shared)."""
    chunk = generate_chunk(seed, cx, cz, ProceduralConfig(**dict(zip(CHUNK_SETTINGS, settings))))
    for array in (chunk.vertices, chunk.triangles, chunk.tri_color, chunk.tri_mat, chunk.boxes, chunk.circles,
                  chunk.crowns):
        array.flags.writeable = False
    return chunk


def generate_chunk(seed: int, cx: int, cz: int, cfg: ProceduralConfig) -> Chunk:
    """Content of chunk (cx, cz): a pure function of (seed, cx, cz) and the config's CHUNK_SETTINGS."""
    size, cell = cfg.chunk_size, cfg.terrain_cell
    n = int(round(size / cell))
    if abs(n * cell - size) > 1e-9:
        raise ValueError(f"chunk_size {size} must be a multiple of terrain_cell {cell}")
    rng = _chunk_rng(seed, cx, cz)
    mb = _MeshBuilder()

    # --- terrain: (n+1)^2 lattice vertices in world lattice coordinates, cells split along (i,j)-(i+1,j+1)
    li = np.arange(cx * n, cx * n + n + 1)
    lj = np.arange(cz * n, cz * n + n + 1)
    I, J = np.meshgrid(li, lj)  # row = j (z), column = i (x)
    H = tr.grid_height(I, J, cell, seed)
    verts = np.stack([I * cell, H, J * cell], axis=-1).reshape(-1, 3)
    a = (np.arange(n)[None, :] + (n + 1) * np.arange(n)[:, None]).ravel()  # v00 index of each cell
    v00, v10, v01, v11 = a, a + 1, a + n + 1, a + n + 2
    tris = np.concatenate([np.stack([v00, v11, v10], 1), np.stack([v00, v01, v11], 1)])
    # per-triangle albedo (view-independent): grass patches by value noise, dirt on steep slopes;
    # triangles that may touch a path get MAT_PATH and a per-point checker blend at shading time
    tv = verts[tris]
    cen = tv.mean(axis=1)
    fn = np.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
    ny = fn[:, 1] / np.linalg.norm(fn, axis=1)
    patch = tr.value_noise(cen[:, 0], cen[:, 2], 7.0, seed + 101)[:, None]
    col = GRASS_A + (GRASS_B - GRASS_A) * patch
    steep = np.clip((0.88 - ny) / 0.12, 0.0, 1.0)[:, None]
    col = col + (DIRT - col) * steep
    near_path = tr.path_distance(cen[:, 0], cen[:, 2], seed) < tr.PATH_HALF_WIDTH + tr.PATH_BLEND + 1.5 * cell
    mb.add(verts, tris, col, MAT_TERRAIN)
    mb.mats[-1][near_path] = MAT_PATH

    x0, z0 = cx * size, cz * size
    centre = np.array([x0 + size / 2, z0 + size / 2])
    town = float(tr.value_noise(centre[0], centre[1], 180.0, seed * 4 + 3))
    forest = float(tr.value_noise(centre[0], centre[1], 150.0, seed * 4 + 2))
    boxes: list[list[float]] = []
    circles: list[list[float]] = []
    crowns: list[list[float]] = []

    def ground(x, z):  # the mesh's own vertex heights (H), not computed again
        return tr.mesh_height(x, z, cell, seed, known=(cx * n, cz * n, H))

    def clear_of_paths(xa, za, xb, zb, margin):
        gx, gz = np.meshgrid(np.linspace(xa - margin, xb + margin, 12), np.linspace(za - margin, zb + margin, 12))
        return bool(np.all(tr.path_distance(gx, gz, seed) > tr.PATH_HALF_WIDTH + tr.PATH_BLEND))

    def clear_of_boxes(xa, za, xb, zb, gap):
        return all(xb + gap < b[0] or xa - gap > b[2] or zb + gap < b[1] or za - gap > b[3] for b in boxes)

    # --- buildings (fully inside the chunk)
    n_build = min(int(rng.poisson(0.3 + 4.5 * max(0.0, town - 0.35))), 6)
    for _ in range(n_build * 3):
        if len(boxes) >= n_build:
            break
        w, d = rng.uniform(5.0, 13.0, size=2)
        tall = rng.random() < 0.18
        h = rng.uniform(18.0, 42.0) if tall else rng.uniform(4.5, 12.0)
        xa = x0 + rng.uniform(1.0, size - 1.0 - w)
        za = z0 + rng.uniform(1.0, size - 1.0 - d)
        xb, zb = xa + w, za + d
        upper = rng.random() < 0.35
        color = BUILDING_PALETTE[rng.integers(len(BUILDING_PALETTE))] * rng.uniform(0.85, 1.1)
        if not (clear_of_paths(xa, za, xb, zb, 1.0) and clear_of_boxes(xa, za, xb, zb, 3.0)):
            continue
        gx, gz = np.meshgrid(np.arange(xa, xb + 0.5, 0.5), np.arange(za, zb + 0.5, 0.5))
        gh = ground(np.minimum(gx, xb), np.minimum(gz, zb))
        y0, top = float(gh.min()) - 1.0, float(gh.max()) + h
        mb.add_convex(_box_vertices(xa, y0, za, xb, top, zb), _BOX_TRIS, np.clip(color, 0, 1), MAT_BUILDING)
        if upper:
            ix, iz = 0.2 * w, 0.2 * d
            top2 = top + rng.uniform(2.5, 0.5 * h + 3.0)
            mb.add_convex(_box_vertices(xa + ix, top - 0.01, za + iz, xb - ix, top2, zb - iz), _BOX_TRIS,
                          np.clip(color * 0.92, 0, 1), MAT_BUILDING)
            top = top2
        boxes.append([xa, za, xb, zb, top])

    # --- trees (parameters drawn up front, terrain heights in one vectorised call)
    nt = int(rng.poisson(2.0 + 16.0 * forest * forest))
    tp = rng.uniform(0.0, size, size=(nt, 2)) + [x0, z0]
    trunk_h, trunk_w = rng.uniform(2.2, 3.5, nt), rng.uniform(0.25, 0.45, nt)
    crown_r, crown_h = rng.uniform(1.2, 2.6, nt), rng.uniform(2.5, 6.0, nt)
    kind, phase = rng.random(nt), rng.uniform(0, 2 * math.pi, nt)
    leaf = np.clip(np.array([0.16, 0.42, 0.15]) * rng.uniform(0.75, 1.25, size=(nt, 3)), 0, 1)
    bark = np.clip(np.array([0.40, 0.28, 0.18]) * rng.uniform(0.8, 1.2, size=(nt, 1)), 0, 1)
    ico_jitter = rng.uniform(*CROWN_JITTER, size=(nt, 12, 1))
    tg = ground(tp[:, 0], tp[:, 1]) if nt else np.zeros(0)
    tpd = tr.path_distance(tp[:, 0], tp[:, 1], seed) if nt else np.zeros(0)
    for i in range(nt):
        px, pz = tp[i]
        if tpd[i] < tr.PATH_HALF_WIDTH + 1.0 or not clear_of_boxes(px, pz, px, pz, 1.5):
            continue
        g, hw = float(tg[i]), trunk_w[i] / 2
        mb.add_convex(_box_vertices(px - hw, g - 0.5, pz - hw, px + hw, g + trunk_h[i], pz + hw), _BOX_TRIS,
                      bark[i], MAT_TRUNK)
        base = g + trunk_h[i] - 0.2
        if kind[i] < 0.6:  # conifer: cone
            v, f = _cone(px, base, pz, crown_r[i], crown_h[i], 7, phase[i])
            mb.add_convex(v, f, leaf[i], MAT_CANOPY)
        else:  # broadleaf: jittered icosahedron
            v = _ICO_V * np.array([crown_r[i], crown_h[i] / 2, crown_r[i]]) * ico_jitter[i]
            mb.add_convex(v + [px, base + crown_h[i] / 2, pz], _ICO_F, leaf[i], MAT_CANOPY)
        circles.append([px, pz, 0.6, base + crown_h[i]])
        crowns.append([px, pz, crown_r[i], base, crown_h[i], float(kind[i] < 0.6)])

    # --- rocks
    nr = int(rng.poisson(2.5))
    rp = rng.uniform(0.0, size, size=(nr, 2)) + [x0, z0]
    rr = rng.uniform(0.3, 1.4, nr)
    rscale = rr[:, None] * np.stack([np.ones(nr), rng.uniform(0.5, 0.9, nr), rng.uniform(0.7, 1.2, nr)], axis=1)
    rjit = rng.uniform(0.75, 1.2, size=(nr, 12, 1))
    grey = np.clip(np.array([0.52, 0.51, 0.49]) * rng.uniform(0.7, 1.2, size=(nr, 1)), 0, 1)
    rg = ground(rp[:, 0], rp[:, 1]) if nr else np.zeros(0)
    rpd = tr.path_distance(rp[:, 0], rp[:, 1], seed) if nr else np.zeros(0)
    for i in range(nr):
        px, pz = rp[i]
        if rpd[i] < tr.PATH_HALF_WIDTH + rr[i] or not clear_of_boxes(px, pz, px, pz, rr[i] + 0.5):
            continue
        sc = rscale[i]
        cy = float(rg[i]) - 0.3 * sc[1]
        mb.add_convex(_ICO_V * sc * rjit[i] + [px, cy, pz], _ICO_F, grey[i], MAT_ROCK)
        circles.append([px, pz, 0.9 * max(sc[0], sc[2]), cy + 1.2 * sc[1]])

    return mb.build((cx, cz), boxes, circles, crowns)


# --------------------------------------------------------------------------------------------- scene


class _Scene:
    """One RaycastingScene over a fixed set of chunks (merged into a single mesh: ~20 % faster casts)
    plus per-triangle lookup tables: base colour (3, T) planar, material, chunk code, index within chunk."""

    def __init__(self, chunks: list[Chunk]):
        self.keys = frozenset(c.key for c in chunks)
        self.scene = o3d.t.geometry.RaycastingScene()
        verts, tris, codes, local = [], [], [], []
        nv = 0
        for c in chunks:
            verts.append(c.vertices)
            tris.append(c.triangles.astype(np.int64) + nv)
            codes.append(np.full(c.triangle_count, chunk_code(*c.key), dtype=np.uint32))
            local.append(np.arange(c.triangle_count, dtype=np.uint32))
            nv += len(c.vertices)
        self.triangle_count = int(sum(c.triangle_count for c in chunks))
        if chunks:
            self.scene.add_triangles(o3d.core.Tensor(np.concatenate(verts)),
                                     o3d.core.Tensor(np.concatenate(tris).astype(np.uint32)))
        self.tri_code = np.concatenate(codes) if chunks else np.zeros(0, np.uint32)
        self.tri_local = np.concatenate(local) if chunks else np.zeros(0, np.uint32)
        self.tri_color = (np.ascontiguousarray(np.concatenate([c.tri_color for c in chunks]).T) if chunks
                          else np.zeros((3, 0), np.float32))
        self.tri_mat = np.concatenate([c.tri_mat for c in chunks]) if chunks else np.zeros(0, np.uint8)


# --------------------------------------------------------------------------------------------- world


class ProceduralWorld(BaseWorldModel):
    """Infinite seeded procedural world rendered by ray casting (a worldmodel.frame.WorldModel)."""

    name = "procedural"
    exact_depth = True  # ray-cast depth: the fused map needs no free-space carving

    @property
    def kinematics(self) -> Kinematics:  # type: ignore[override]
        return self.config.kinematics

    def __init__(self, config: ProceduralConfig | None = None, seed: int = 0):
        self.config = config or ProceduralConfig()
        self.seed = int(seed)
        self.K = intrinsics_from_fov(self.config.width, self.config.height, self.config.fov_y_deg)
        self._chunks: OrderedDict[tuple[int, int], Chunk] = OrderedDict()
        self._scene: _Scene | None = None
        self._aux_scene: _Scene | None = None  # for distance_to_surface
        self._ray_cache: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def describe(self) -> dict:
        """JSON-able description from which :func:`worldmodel.registry.world_from_description` rebuilds it."""
        return {"kind": "procedural", "seed": self.seed, "config": dataclasses.asdict(self.config)}

    def shows_the_same_world_as(self, other: "ProceduralWorld") -> bool:
        """True when ``other`` renders what this world renders at any pose and intrinsics: the same seed and the
        same settings of what is there (chunks, terrain, load radius, far, fog, shadows). How it is looked at
        (frame size, field of view, eye height, flying, kinematics, chunk cache) may differ."""
        mine, theirs = (dataclasses.asdict(world.config) for world in (self, other))
        for setting in CAMERA_SETTINGS:
            del mine[setting], theirs[setting]
        return self.seed == other.seed and mine == theirs

    @classmethod
    def from_description(cls, desc: dict) -> "ProceduralWorld":
        """Rebuild from :meth:`describe`; every setting is range-checked first (CheckError names it)."""
        cfg = desc.get("config", {})
        kin = cfg.get("kinematics", {}) if isinstance(cfg, dict) else None
        if not isinstance(cfg, dict) or not isinstance(kin, dict):
            raise CheckError("the procedural world's config must be an object")
        cfg = dict(cfg)
        kin = cfg.pop("kinematics", {})
        unknown = set(cfg) - {f.name for f in dataclasses.fields(ProceduralConfig)}
        if unknown:
            raise CheckError(f"unknown procedural settings {sorted(unknown)[:5]}")
        unknown = set(kin) - {"step_m", "yaw_deg"}
        if unknown:
            raise CheckError(f"unknown kinematics settings {sorted(unknown)[:5]}")
        try:  # (the configs check themselves, as they do when a scene is made)
            config = ProceduralConfig(**cfg, kinematics=Kinematics(**kin))
        except CheckError as e:
            raise CheckError(f"world.config.{e}") from None
        return cls(config, seed=number(desc.get("seed", 0), "world.seed", 0, MAX_SEED, integer=True))

    # ---- chunks -------------------------------------------------------------------------------------

    @property
    def loaded_chunks(self) -> set[tuple[int, int]]:
        return set(self._scene.keys) if self._scene is not None else set()

    @property
    def triangle_count(self) -> int:
        return self._scene.triangle_count if self._scene is not None else 0

    @property
    def walker_eye_height(self) -> float | None:
        """The walking camera's height above the terrain (a WalkingWorld); None for a flying one."""
        return None if self.config.fly else float(self.config.eye_height)

    def chunk_of(self, x: float, z: float) -> tuple[int, int]:
        s = self.config.chunk_size
        return int(math.floor(x / s)), int(math.floor(z / s))

    def chunk(self, cx: int, cz: int) -> Chunk:
        """Generated content of chunk (cx, cz) (cached in a bounded LRU)."""
        key = (int(cx), int(cz))
        c = self._chunks.get(key)
        if c is None:
            c = _shared_chunk(self.seed, key[0], key[1], tuple(getattr(self.config, k) for k in CHUNK_SETTINGS))
            self._chunks[key] = c
            limit = max(self.config.chunk_cache, (2 * self.config.load_radius_chunks + 3) ** 2 + 9)
            while len(self._chunks) > limit:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(key)
        return c

    def ensure_loaded(self, center_xz: np.ndarray, radius_chunks: int | None = None) -> None:
        """Make sure every chunk within ``radius_chunks`` of the chunk containing ``center_xz`` is in the scene.

        Rebuilds the ray-casting scene only when a needed chunk is missing; the rebuild drops chunks beyond
        radius + 1 (so an endless walk keeps memory bounded) and keeps the rest (no thrashing at borders).
        """
        r = self.config.load_radius_chunks if radius_chunks is None else int(radius_chunks)
        ccx, ccz = self.chunk_of(float(center_xz[0]), float(center_xz[1]))
        need = {(ccx + i, ccz + j) for i in range(-r, r + 1) for j in range(-r, r + 1)}
        have = self._scene.keys if self._scene is not None else frozenset()
        if need <= have:
            return
        keep = {k for k in have if max(abs(k[0] - ccx), abs(k[1] - ccz)) <= r + 1}
        self._scene = _Scene([self.chunk(*k) for k in sorted(need | keep)])

    def _chunks_around(self, x: float, z: float) -> list[Chunk]:
        """The 3x3 chunks around (x, z): every object a camera there can touch."""
        cx, cz = self.chunk_of(x, z)
        return [self.chunk(cx + i, cz + j) for i in (-1, 0, 1) for j in (-1, 0, 1)]

    def obstacles_near(self, x: float, z: float) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (B, 5), circles (C, 4)) of the 3x3 chunks around (x, z)."""
        chunks = self._chunks_around(x, z)
        return np.concatenate([c.boxes for c in chunks]), np.concatenate([c.circles for c in chunks])

    def is_blocked(self, position: np.ndarray, radius: float = CAMERA_RADIUS, crowns: bool = False) -> bool:
        """True when a camera at ``position`` (3,) would be inside a building, trunk or rock (plus radius), or
        with ``crowns`` (a flying camera) a tree's crown."""
        x, y, z = (float(v) for v in position[:3])
        if crowns and self._in_a_crown(x, y, z, radius):
            return True
        boxes, circles = self.obstacles_near(x, z)
        if len(boxes):
            inside = ((boxes[:, 0] - radius < x) & (x < boxes[:, 2] + radius) & (boxes[:, 1] - radius < z)
                      & (z < boxes[:, 3] + radius) & (y < boxes[:, 4] + radius))
            if inside.any():
                return True
        if len(circles):
            d2 = (circles[:, 0] - x) ** 2 + (circles[:, 1] - z) ** 2
            if np.any((d2 < (circles[:, 2] + radius) ** 2) & (y < circles[:, 3] + radius)):
                return True
        return False

    def _in_a_crown(self, x: float, y: float, z: float, radius: float) -> bool:
        """Whether a camera at (x, y, z) comes within ``radius`` of a tree crown of the 3x3 chunks around it:
        the crown's radius at the camera's height (a cone narrows to its top; a broadleaf crown is an ellipsoid,
        its jittered vertices up to CROWN_JITTER[1] out), measured horizontally."""
        crowns = np.concatenate([c.crowns for c in self._chunks_around(x, z)])
        if not len(crowns):
            return False
        px, pz, r, bottom, height, cone = crowns.T
        up = np.clip((y - bottom) / height, 0.0, 1.0)  # 0 at the crown's bottom, 1 at its top
        out = CROWN_JITTER[1]
        across = np.where(cone > 0, r * (1.0 - up), out * r * np.sqrt(np.clip(1.0 - (2.0 * up - 1.0) ** 2, 0, 1)))
        near = np.hypot(px - x, pz - z) < across + radius
        return bool(np.any(near & (y > bottom - radius) & (y < bottom + out * height + radius)))

    # ---- geometry queries ---------------------------------------------------------------------------

    def terrain_height(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Exact height of the rendered ground mesh at world (x, z) (vectorised, float64)."""
        return tr.mesh_height(x, z, self.config.terrain_cell, self.seed)

    def distance_to_surface(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N,) float64 unsigned distance to the nearest surface of the world.

        Uses a separate scene over the chunks covering the points' bounding box plus one chunk of margin
        (the render scene is not disturbed).
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            return np.zeros(0)
        s = self.config.chunk_size
        lo = np.floor(pts[:, [0, 2]].min(axis=0) / s).astype(int) - 1
        hi = np.floor(pts[:, [0, 2]].max(axis=0) / s).astype(int) + 1
        keys = frozenset((i, j) for i in range(lo[0], hi[0] + 1) for j in range(lo[1], hi[1] + 1))
        if self._aux_scene is None or self._aux_scene.keys != keys:
            self._aux_scene = _Scene([self.chunk(*k) for k in sorted(keys)])
        q = o3d.core.Tensor(pts.astype(np.float32))
        return self._aux_scene.scene.compute_distance(q).numpy().astype(np.float64)

    # ---- rendering ----------------------------------------------------------------------------------

    def _camera_rays(self, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cached planar camera-space ray components (x (N,), y (N,)) with z = 1, and their lengths (N,)."""
        key = (int(width), int(height), np.asarray(K, dtype=np.float64).tobytes())
        hit = self._ray_cache.get(key)
        if hit is None:
            cam = pixel_rays_camera(np.asarray(K, dtype=np.float64), int(width), int(height)).reshape(-1, 3)
            hit = (np.ascontiguousarray(cam[:, 0]), np.ascontiguousarray(cam[:, 1]),
                   np.linalg.norm(cam, axis=1).astype(np.float32))
            self._ray_cache[key] = hit
            if len(self._ray_cache) > 8:
                self._ray_cache.popitem(last=False)
        return hit

    def _cast(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> dict:
        """Cast one ray per pixel (all arrays flat, N = H * W; directions planar (3, N), z-depth units)."""
        c2w = np.asarray(c2w, dtype=np.float64)
        self.ensure_loaded(c2w[[0, 2], 3])
        cu, cv, norms = self._camera_rays(K, width, height)
        R = c2w[:3, :3].astype(np.float32)
        o = c2w[:3, 3].astype(np.float32)
        # Planar arithmetic: numpy is slow on (N, 3) broadcasts and BLAS on (N, 3) @ (3, 3).
        dirs = np.empty((3, cu.size), dtype=np.float32)
        rays = np.empty((cu.size, 6), dtype=np.float32)
        for i in range(3):
            np.multiply(cu, R[i, 0], out=dirs[i])
            dirs[i] += cv * R[i, 1]
            dirs[i] += R[i, 2]
            rays[:, i] = o[i]
            rays[:, 3 + i] = dirs[i]
        ans = self._scene.scene.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t = ans["t_hit"].numpy()
        hit = t * norms <= self.config.far  # inf (miss) compares False
        return {"origin": o, "dirs": dirs, "norms": norms, "t": t, "hit": hit,
                "primitive_ids": ans["primitive_ids"].numpy(), "normals": ans["primitive_normals"].numpy()}

    def render_hits(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> dict:
        """Raw ray cast of one view (ground truth for co-visibility tests).

        Returns "depth" (H, W) float32 z-depth (0 = miss or beyond ``far``, same as render()),
        "geometry_ids" (H, W) uint32: stable id of the hit chunk (see chunk_code) or INVALID_ID,
        "primitive_ids" (H, W) uint32: triangle index within that chunk's mesh (stable) or INVALID_ID,
        "normals" (H, W, 3) float32 world face normals turned towards the camera (0 for misses),
        "points" (H, W, 3) float32 world hit points (0 for misses).
        """
        r = self._cast(c2w, K, width, height)
        hit = r["hit"]
        h, w = int(height), int(width)
        depth = np.where(hit, r["t"], np.float32(0.0)).astype(np.float32)
        sc = self._scene
        tri = np.where(hit, r["primitive_ids"], 0).astype(np.int64)
        codes = np.where(hit, sc.tri_code[tri] if sc.triangle_count else 0, INVALID_ID).astype(np.uint32)
        pid = np.where(hit, sc.tri_local[tri] if sc.triangle_count else 0, INVALID_ID).astype(np.uint32)
        d = r["dirs"].T
        n = r["normals"]
        flip = (n * d).sum(axis=1) > 0
        n = np.where(flip[:, None], -n, n) * hit[:, None]
        pts = (r["origin"] + depth[:, None] * d) * hit[:, None]
        return {"depth": depth.reshape(h, w), "geometry_ids": codes.reshape(h, w), "primitive_ids": pid.reshape(h, w),
                "normals": n.astype(np.float32).reshape(h, w, 3), "points": pts.astype(np.float32).reshape(h, w, 3)}

    def render(self, c2w: np.ndarray, K: np.ndarray | None = None, width: int | None = None,
               height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Render (rgb (H, W, 3) uint8, depth (H, W) float32 z-depth, 0 = sky/beyond far) at ``c2w``."""
        cfg = self.config
        width = cfg.width if width is None else int(width)
        height = cfg.height if height is None else int(height)
        if K is None:
            K = self.K if (width, height) == (cfg.width, cfg.height) else intrinsics_from_fov(width, height, cfg.fov_y_deg)
        r = self._cast(c2w, K, width, height)
        t, hit, dirs, norms = r["t"], r["hit"], r["dirs"], r["norms"]

        # sky: gradient by elevation of the ray, planar (3, N)
        elev = dirs[1] / norms
        st = np.sqrt(np.clip(elev, 0.0, 1.0))
        below = np.clip(elev * -4.0, 0.0, 1.0)
        img = _SKY_H + _SKY_DZ * st
        img += (_GROUND_BELOW - img) * below

        idx = np.flatnonzero(hit)
        if idx.size:
            img[:, idx] = self._shade(r, idx, img[:, idx])
        img *= 255.0
        img += 0.5
        rgb = np.ascontiguousarray(img.astype(np.uint8).T).reshape(height, width, 3)
        depth = np.where(hit, t, np.float32(0.0)).astype(np.float32).reshape(height, width)
        return rgb, depth

    def _shade(self, r: dict, idx: np.ndarray, sky: np.ndarray) -> np.ndarray:
        """Colour (3, M) float32 in [0, 1] of the hit pixels ``idx``; ``sky`` (3, M) is their sky colour."""
        cfg, sc, seed = self.config, self._scene, self.seed
        t = r["t"][idx]
        dx, dy, dz = r["dirs"][0, idx], r["dirs"][1, idx], r["dirs"][2, idx]
        o = r["origin"]
        x, y, z = o[0] + t * dx, o[1] + t * dy, o[2] + t * dz
        # face normals: every visible face is wound outwards (terrain up), so no flip is needed here
        nrm = r["normals"]
        nx, ny, nz = nrm[idx, 0], nrm[idx, 1], nrm[idx, 2]
        tri = r["primitive_ids"][idx]
        mat = sc.tri_mat[tri]
        alb = np.take(sc.tri_color, tri, axis=1)  # (3, M) per-object / per-terrain-triangle albedo (copy)

        # speckle everywhere (view-independent: hashed 3D cells of the surface point) -> factor per pixel
        k = np.where(mat == MAT_CANOPY, np.float32(1.6), np.float32(3.0))
        spk = tr.hash3(np.floor(x * k + 0.37).astype(np.int32), np.floor(y * k + 0.37).astype(np.int32),
                       np.floor(z * k + 0.37).astype(np.int32), seed)
        is_b = mat == MAT_BUILDING
        amp = np.where(is_b, np.float32(0.08), np.float32(0.22))
        fac = 1.0 - amp * 0.5 + amp * spk

        # paths: checkered paving blended in by the exact path weight of the point
        pi = np.flatnonzero(mat == MAT_PATH)
        if pi.size:
            tx, tz = x[pi], z[pi]
            w = tr.path_weight(tx, tz, seed)
            on = np.flatnonzero(w > 0.0)
            if on.size:
                po = pi[on]
                chk = (np.floor(tx[on] * 1.25).astype(np.int32) + np.floor(tz[on] * 1.25).astype(np.int32)) & 1
                pave = np.where(chk == 1, _PAVE_A, _PAVE_B)
                wb = np.clip((w[on] - 0.25) * 2.0, 0.0, 1.0)
                g = alb[:, po]
                alb[:, po] = g + (pave - g) * wb

        # buildings: roofs darker, floor bands and windows on walls
        bi = np.flatnonzero(is_b)
        if bi.size:
            by, bh = y[bi] + np.float32(0.37), x[bi] + z[bi] + np.float32(0.37)
            ry, rh = np.floor(by * np.float32(1 / 3.0)), np.floor(bh * np.float32(1 / 2.5))  # floor / window cell
            fy, fh = by - ry * np.float32(3.0), bh - rh * np.float32(2.5)
            wall = np.abs(ny[bi]) < 0.5
            f = np.where(wall, np.float32(1.0), np.float32(0.6))
            f[wall & (fy < 0.3)] = 0.75
            fac[bi] *= f
            wi = np.flatnonzero(wall & (fy > 0.9) & (fy < 2.3) & (fh > 0.5) & (fh < 1.9))
            if wi.size:
                shade = tr.hash2(ry[wi].astype(np.int32), rh[wi].astype(np.int32), seed + 7)
                alb[:, bi[wi]] = _WINDOW * (0.7 + 0.6 * shade)

        # lighting: sun (Lambert, optional hard shadow) + sky ambient
        lam = np.clip(nx * SUN_DIR[0] + ny * SUN_DIR[1] + nz * SUN_DIR[2], 0.0, 1.0)
        if cfg.shadows:
            sr = np.empty((idx.size, 6), dtype=np.float32)
            eps = np.float32(0.02)
            sr[:, 0], sr[:, 1], sr[:, 2] = x + eps * nx, y + eps * ny, z + eps * nz
            sr[:, 3:] = SUN_DIR
            occ = sc.scene.test_occlusions(o3d.core.Tensor.from_numpy(sr)).numpy()
            lam[occ] = 0.0
        fac *= 0.39 + 0.09 * ny + 0.72 * lam
        alb *= fac

        # fog towards the sky colour of the pixel
        fog = np.clip((t * r["norms"][idx] - cfg.fog_start) * (1.0 / max(cfg.far - cfg.fog_start, 1e-6)), 0.0, 1.0)
        fog *= 2.0 - fog
        alb += (sky - alb) * fog
        return np.clip(alb, 0.0, 1.0, out=alb)

    # ---- WorldModel ---------------------------------------------------------------------------------

    def _frame(self, index: int, c2w: np.ndarray, action) -> Frame:
        rgb, depth = self.render(c2w)
        return Frame(index=index, rgb=rgb, depth=depth, K=self.K.copy(), c2w=c2w, action=action,
                     zero_depth_is_sky=True)  # a ray that hits nothing shows the sky

    def _clamp_above_ground(self, c2w: np.ndarray) -> np.ndarray:
        out = np.array(c2w, dtype=np.float64, copy=True)
        g = float(self.terrain_height(out[0, 3], out[2, 3]))
        out[1, 3] = max(out[1, 3], g + MIN_CLEARANCE)
        return out

    def spawn_pose(self) -> np.ndarray:
        """A c2w on open ground near the origin, at eye height, looking horizontally with a clear view."""
        cfg = self.config
        cand = [(0.0, 0.0)]
        for ring in range(1, 60):
            rr = 4.0 * ring
            m = 8 * ring
            ang = np.arange(m) * (2 * math.pi / m)
            cand += list(zip(rr * np.cos(ang), rr * np.sin(ang)))
        headings = [(0.0, 1.0), (1.0, 0.0), (0.0, -1.0), (-1.0, 0.0), (0.7071, 0.7071), (-0.7071, 0.7071),
                    (0.7071, -0.7071), (-0.7071, -0.7071)]
        fallback = None
        for x, z in cand:
            g = float(self.terrain_height(x, z))
            eye = np.array([x, g + (cfg.eye_height if not cfg.fly else max(cfg.eye_height, 1.7)), z])
            if self.is_blocked(eye, radius=3.0):
                continue
            if fallback is None:
                fallback = eye
            for hx, hz in headings:
                # clear line of sight along the heading for 20 m (no obstacles near the eye-level ray)
                s = np.linspace(1.0, 20.0, 20)
                ok = not any(self.is_blocked(eye + [hx * si, 0.0, hz * si], radius=1.0) for si in s)
                if ok:
                    return look_at_c2w(eye, eye + np.array([hx, 0.0, hz]))
        eye = fallback if fallback is not None else np.array([0.0, float(self.terrain_height(0.0, 0.0)) + cfg.eye_height, 0.0])
        return look_at_c2w(eye, eye + np.array([0.0, 0.0, 1.0]))

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        """Start (or restart) the world with ``seed``; returns Frame(index=0, action=None)."""
        if int(seed) != self.seed:
            self.seed = int(seed)
            self._chunks.clear()
            self._scene = None
            self._aux_scene = None
        c2w = self.spawn_pose() if start is None else self._clamp_above_ground(np.asarray(start, dtype=np.float64))
        return self._frame(0, c2w, None)

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        """Where the camera ends up after ``action`` from ``last``: the commanded motion, then walking follows
        the terrain at eye height and stops at obstacles (flying keeps its height above ground)."""
        cfg = self.config
        if isinstance(action, TargetPose):
            return self._clamp_above_ground(np.asarray(action.c2w, dtype=np.float64))
        if not isinstance(action, Action):
            raise TypeError(f"ProceduralWorld expects an Action or TargetPose, got {type(action).__name__}")
        c2w = cfg.kinematics.apply(last.c2w, action)
        if cfg.fly:
            c2w = self._clamp_above_ground(c2w)
            if any(self.is_blocked(p, crowns=True) for p in self._path_points(last.c2w[:3, 3], c2w[:3, 3])):
                c2w[:3, 3] = last.c2w[:3, 3]
            return c2w
        for x, _, z in self._path_points(last.c2w[:3, 3], c2w[:3, 3]):
            if self.is_blocked(np.array([x, float(self.terrain_height(x, z)) + cfg.eye_height, z])):
                c2w[:3, 3] = last.c2w[:3, 3]
                break
        x, z = c2w[0, 3], c2w[2, 3]
        c2w[1, 3] = float(self.terrain_height(x, z)) + cfg.eye_height
        return c2w

    @staticmethod
    def _path_points(start: np.ndarray, end: np.ndarray) -> list[np.ndarray]:
        """Where a move from ``start`` to ``end`` is checked for obstacles: its end, and for a move longer than
        the body (2 x CAMERA_RADIUS; not the default 0.5 m steps) points along it at most CAMERA_RADIUS apart, so a
        long step cannot jump through a trunk or a wall."""
        length = float(np.linalg.norm(end - start))
        n = 1 if length <= 2 * CAMERA_RADIUS else math.ceil(length / CAMERA_RADIUS)
        return [start + (end - start) * (i / n) for i in range(1, n + 1)]

    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        """The frame after ``action`` from ``context.last`` (see :meth:`predict_c2w` for where it is taken)."""
        return self._frame(context.last.index + 1, self.target_c2w(action, context), action)
