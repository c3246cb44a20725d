"""Export of fused maps, cameras and frames: PLY, GLB, TUM trajectories, nerfstudio transforms.json, MP4.

Conventions (DESIGN.md): metres, right-handed +Y-up world (same as glTF, so GLB needs no rotation),
OpenCV cameras (x right, y down, z forward), c2w 4x4 poses, float32 z-depth with 0 = invalid, uint8 RGB.

Every writer validates its inputs and raises :class:`ExportError` with a one-line message that says
what to do. Files are written to a temporary file in the target folder and moved into place with
``os.replace``, so a failed export never leaves a truncated file nor destroys an existing one.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import shutil
import struct
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from recon.visual import colorize_depth, colorize_scalar
from scenes.atomic import WriteError, check_mp4, replacing, swap_in, write_error
from scenes.spill import process_alive, this_host
from worldmodel.camera import flip_cv_gl
from worldmodel.tum import format_tum, read_tum
from worldmodel.frame import Frame

__all__ = [
    "ExportError",
    "write_ply",
    "read_ply",
    "write_glb",
    "write_tum_trajectory",
    "read_tum_trajectory",
    "write_transforms_json",
    "TRANSFORMS_NAMES",
    "write_mp4",
]


class ExportError(RuntimeError):
    """An export (or import of an exported file) failed; the message says what to do."""


# --------------------------------------------------------------------------------------------- files


def _os_error(path: Path, e: OSError) -> ExportError:
    return ExportError(str(write_error(e, path)))


def _check_target(path: str | os.PathLike) -> Path:
    """Validate an output file path; the folder must already exist and be writable."""
    try:
        path = Path(path).expanduser()
    except TypeError as e:
        raise ExportError(f"invalid output path {path!r}: {e}; pass a file path") from None
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a folder; pass a file path inside it")
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {path}: folder {parent} does not exist; create it or choose another folder")
    return path


@contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``, else delete it
    (scenes.atomic.replacing). Write errors (permissions, disk full, ...) become ExportError."""
    try:
        with replacing(path) as tmp:
            yield tmp
    except WriteError as e:
        raise ExportError(str(e)) from None


def _raw_bytes(a: np.ndarray) -> memoryview:
    """Zero-copy byte view of a C-contiguous array (also for empty arrays)."""
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _write_bytes_atomic(path: Path, chunks: Iterable[bytes | memoryview]) -> None:
    with _atomic_file(path) as tmp:
        size = 0
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
                size += len(c) if isinstance(c, bytes) else c.nbytes
        if os.path.getsize(tmp) != size:  # a short write must not replace a good file
            raise ExportError(f"cannot write {path}: only {os.path.getsize(tmp)} of {size} bytes arrived; "
                              f"free space in {path.parent} and export again")


# ---------------------------------------------------------------------------------------- validation


def _as_points_colors(points, colors, what: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, 3) points and colours; returns (float32 (N,3), uint8 (N,3)) with non-finite rows dropped.

    colors: (N, 3|4) uint8 (alpha ignored), float in [0, 1] (scaled by 255), a single (3,) colour, or None
    (light grey).
    """
    try:
        pts = np.asarray(points)
    except Exception as e:  # noqa: BLE001 - anything array-like that fails
        raise ExportError(f"{what} must be an (N, 3) array: {e}") from None
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.number):
        raise ExportError(f"{what} must be an (N, 3) numeric array, got shape {pts.shape} {pts.dtype}; "
                          "pass points as (N, 3) float")
    n = pts.shape[0]
    if colors is None:
        cols = np.full((n, 3), 200, dtype=np.uint8)
    else:
        cols = np.asarray(colors)
        if cols.shape in ((3,), (4,)):
            cols = np.broadcast_to(cols[:3], (n, 3))
        if cols.ndim != 2 or cols.shape[0] != n or cols.shape[1] not in (3, 4):
            raise ExportError(f"colors must be ({n}, 3) uint8 to match {n} {what}, got shape {cols.shape}; "
                              "pass one RGB colour per point")
        cols = cols[:, :3]
        if cols.dtype != np.uint8:
            if np.issubdtype(cols.dtype, np.floating):
                finite = np.nan_to_num(cols.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
                scale = 255.0 if (finite.size == 0 or finite.max() <= 1.0) else 1.0
                cols = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
            elif np.issubdtype(cols.dtype, np.integer) or cols.dtype == bool:
                cols = np.clip(cols, 0, 255).astype(np.uint8)
            else:
                raise ExportError(f"colors must be uint8, got {cols.dtype}; pass (N, 3) uint8 RGB")
    pts32 = pts.astype(np.float32, copy=False)
    finite = np.isfinite(pts32).all(axis=1)
    if not finite.all():
        pts32, cols = pts32[finite], cols[finite]
    return np.ascontiguousarray(pts32), np.ascontiguousarray(cols, dtype=np.uint8)


def _as_poses(c2ws, what: str = "c2ws") -> np.ndarray:
    arr = np.asarray(c2ws, dtype=np.float64)
    if arr.ndim == 2 and arr.shape == (4, 4):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise ExportError(f"{what} must be (M, 4, 4) camera-to-world matrices, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ExportError(f"{what} contain NaN/inf; drop the broken poses before exporting")
    return arr


# ----------------------------------------------------------------------------------------------- PLY

_PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def write_ply(path, points: np.ndarray, colors: np.ndarray | None) -> Path:
    """Write a binary little-endian PLY point cloud: ``x y z`` float32 + ``red green blue`` uchar.

    points: (N, 3) float (world, metres). colors: (N, 3) uint8 (float [0, 1] and None are accepted).
    Rows with NaN/inf coordinates are dropped. Readable by open3d, trimesh, MeshLab, CloudCompare.
    """
    path = _check_target(path)
    pts, cols = _as_points_colors(points, colors)
    n = len(pts)
    arr = np.empty(n, dtype=_PLY_DTYPE)
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    arr["red"], arr["green"], arr["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment WorldStudio export (metres, +Y up)\n"
        f"element vertex {n}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    ).encode("ascii")
    _write_bytes_atomic(path, [header, _raw_bytes(arr)])
    return path


def _parse_ply_header(f: IO[bytes]) -> tuple[str, list[tuple[str, int, list[tuple[str, str | None]]]]]:
    first = f.readline()
    if first.strip() != b"ply":
        raise ValueError("not a PLY file")
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str | None]]]] = []
    while True:
        line = f.readline()
        if not line:
            raise ValueError("PLY header has no end_header")
        tok = line.decode("ascii", errors="replace").split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "end_header":
            break
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise ValueError("PLY property before element")
            if tok[1] == "list":
                elements[-1][2].append((tok[-1], None))
            else:
                elements[-1][2].append((tok[2], _PLY_TYPES.get(tok[1])))
    return fmt, elements


def _colors_from_fields(data: np.ndarray, n: int) -> np.ndarray:
    names = data.dtype.names or ()
    for trio in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(t in names for t in trio):
            c = np.stack([data[t] for t in trio], axis=1)
            if np.issubdtype(c.dtype, np.floating):
                return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)
            return np.clip(c, 0, 255).astype(np.uint8)
    return np.full((n, 3), 255, dtype=np.uint8)


def read_ply(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY point cloud -> (points (N, 3) float32, colors (N, 3) uint8).

    Binary little-endian files with scalar vertex properties (ours) are read directly; anything else
    (ASCII, big endian, list properties before the vertices) goes through open3d. Points without
    colours come back white.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"cannot read {path}: no such file; check the path")
    try:
        with open(path, "rb") as f:
            try:
                fmt, elements = _parse_ply_header(f)
            except (ValueError, UnicodeError) as e:
                raise ExportError(f"cannot read {path}: {e}; pass a .ply point cloud") from None
            offset = f.tell()
        if (fmt == "binary_little_endian" and elements and elements[0][0] == "vertex"
                and all(t is not None for _, t in elements[0][2])):
            _, n, props = elements[0]
            dtype = np.dtype([(name, "<" + t) for name, t in props])  # type: ignore[operator]
            data = np.fromfile(path, dtype=dtype, count=n, offset=offset)
            if len(data) != n:
                raise ExportError(f"cannot read {path}: file is truncated ({len(data)} of {n} points); "
                                  "export it again")
            names = dtype.names or ()
            if not all(k in names for k in ("x", "y", "z")):
                raise ExportError(f"cannot read {path}: vertices have no x/y/z; pass a point cloud PLY")
            pts = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
            return pts, _colors_from_fields(data, n)
    except OSError as e:
        raise ExportError(f"cannot read {path}: {e.strerror or e}; check the path and permissions") from None
    # Fallback: open3d handles ASCII / big endian / meshes.
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pcd.points, dtype=np.float32)
    if len(pts) == 0:
        raise ExportError(f"cannot read {path}: no points found; pass a point cloud PLY")
    if pcd.has_colors():
        cols = np.clip(np.rint(np.asarray(pcd.colors) * 255.0), 0, 255).astype(np.uint8)
    else:
        cols = np.full((len(pts), 3), 255, dtype=np.uint8)
    return pts, cols


# ----------------------------------------------------------------------------------------------- GLB

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942


def _default_K(image_size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    w, h = image_size if image_size is not None else (640, 480)
    f = 0.5 * h / math.tan(math.radians(60.0) / 2.0)
    return np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]]), (int(w), int(h))


def camera_wireframe_segments(c2ws: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                              scale: float) -> np.ndarray:
    """Frustum wireframes in world coordinates: (M, 10, 2, 3) line segments per camera.

    OpenCV camera: the image plane sits at z = ``scale`` metres; the small triangle marks the top
    edge of the image (camera -y), i.e. "up" in the picture. 4 rays + 4 edges + 2 triangle sides.
    """
    w, h = image_size
    Kinv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    pix = np.array([[0, 0], [w, 0], [w, h], [0, h],  # corners
                    [0.3 * w, 0], [0.7 * w, 0], [0.5 * w, -0.25 * h]], dtype=np.float64)  # up triangle
    pix -= 0.5  # pixel centres are at integers: the image's edges at -0.5 and w - 0.5
    rays = np.c_[pix, np.ones(len(pix))] @ Kinv.T * scale  # (7, 3) camera coordinates at z = scale
    world = np.einsum("mij,pj->mpi", c2ws[:, :3, :3], rays) + c2ws[:, None, :3, 3]  # (M, 7, 3)
    c = c2ws[:, None, :3, 3]
    corners = world[:, :4]
    segs = [np.stack([c[:, 0], corners[:, i]], axis=1) for i in range(4)]
    segs += [np.stack([corners[:, i], corners[:, (i + 1) % 4]], axis=1) for i in range(4)]
    segs += [np.stack([world[:, 4], world[:, 6]], axis=1), np.stack([world[:, 6], world[:, 5]], axis=1)]
    return np.stack(segs, axis=1)


def _camera_path_geometry(c2ws: np.ndarray, K, image_size, frustum_scale: float, max_frustums: int):
    import trimesh
    from trimesh.path.entities import Line

    m = len(c2ws)
    if K is None:
        K_arr, size = _default_K(image_size)
    else:
        K_arr = np.asarray(K, dtype=np.float64)
        if K_arr.shape != (3, 3) or not np.isfinite(K_arr).all() or K_arr[0, 0] <= 0 or K_arr[1, 1] <= 0:
            raise ExportError(f"K must be a (3, 3) pinhole matrix with positive focal lengths, got {K_arr.shape}")
        size = image_size if image_size is not None else (
            max(1, int(round(2 * K_arr[0, 2] + 1))), max(1, int(round(2 * K_arr[1, 2] + 1))))
    size = (int(size[0]), int(size[1]))
    step = max(1, int(math.ceil(m / max_frustums)))
    sel = list(range(0, m, step))
    if sel[-1] != m - 1:
        sel.append(m - 1)
    sel_arr = np.asarray(sel)
    segs = camera_wireframe_segments(c2ws[sel_arr], K_arr, size, frustum_scale)  # (S, 10, 2, 3)
    nseg_per = segs.shape[1]
    verts = segs.reshape(-1, 3)
    entities = [Line(points=np.array([2 * i, 2 * i + 1])) for i in range(len(verts) // 2)]
    cam_colors = colorize_scalar(sel_arr.astype(np.float64), lo=0.0, hi=max(1.0, m - 1.0))
    ent_colors = np.repeat(np.c_[cam_colors, np.full(len(sel), 255, np.uint8)], nseg_per, axis=0)
    frustums = trimesh.path.Path3D(entities=entities, vertices=verts, colors=ent_colors, process=False)
    geoms = {"camera_frustums": frustums}
    if m >= 2:
        centres = c2ws[:, :3, 3]
        path = trimesh.path.Path3D(entities=[Line(points=np.arange(m))], vertices=centres,
                                   colors=np.array([[255, 60, 200, 255]], np.uint8), process=False)
        geoms["camera_path"] = path
    return geoms


def _pad4(b: bytes, fill: bytes = b"\x00") -> bytes:
    return b + fill * ((-len(b)) % 4)


def _empty_gltf() -> tuple[dict, bytes]:
    tree = {"asset": {"version": "2.0", "generator": "WorldStudio"}, "scene": 0,
            "scenes": [{"nodes": []}], "nodes": [], "meshes": [], "accessors": [], "bufferViews": [],
            "buffers": [{"byteLength": 0}]}
    return tree, b""


def _parse_glb(blob: bytes) -> tuple[dict, bytes]:
    magic, _version, _length = struct.unpack_from("<III", blob, 0)
    if magic != _GLB_MAGIC:
        raise ExportError("internal error: trimesh produced an invalid GLB; report this bug")
    off = 12
    tree: dict | None = None
    binary = b""
    while off < len(blob):
        clen, ctype = struct.unpack_from("<II", blob, off)
        data = blob[off + 8: off + 8 + clen]
        if ctype == _CHUNK_JSON:
            tree = json.loads(data.decode("utf-8"))
        elif ctype == _CHUNK_BIN:
            binary = bytes(data)
        off += 8 + clen
    if tree is None:
        raise ExportError("internal error: trimesh produced a GLB without JSON; report this bug")
    return tree, binary


def _append_points_to_gltf(tree: dict, bin_len: int, pts: np.ndarray, cols: np.ndarray,
                           name: str) -> list[bytes | memoryview]:
    """Add a POINTS primitive (POSITION float32 + COLOR_0 RGBA uint8 normalized) to ``tree``.

    Returns the buffer pieces to append after the existing binary chunk (already 4-byte aligned).
    """
    n = len(pts)
    pieces: list[bytes | memoryview] = []
    pad = (-bin_len) % 4
    if pad:
        pieces.append(b"\x00" * pad)
    offset = bin_len + pad
    rgba = np.empty((n, 4), dtype=np.uint8)
    rgba[:, :3] = cols
    rgba[:, 3] = 255
    tree.setdefault("bufferViews", [])
    tree.setdefault("accessors", [])
    tree.setdefault("meshes", [])
    tree.setdefault("nodes", [])
    tree.setdefault("buffers", [{"byteLength": 0}])
    if not tree["buffers"]:
        tree["buffers"].append({"byteLength": 0})
    tree.setdefault("scenes", [{"nodes": []}])
    if not tree["scenes"]:
        tree["scenes"].append({"nodes": []})
    tree.setdefault("scene", 0)

    bv_pos = len(tree["bufferViews"])
    tree["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": pts.nbytes, "target": 34962})
    pieces.append(_raw_bytes(pts))
    offset += pts.nbytes
    bv_col = len(tree["bufferViews"])
    tree["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": rgba.nbytes, "target": 34962})
    pieces.append(_raw_bytes(rgba))
    offset += rgba.nbytes

    acc_pos = len(tree["accessors"])
    if n:
        lo, hi = pts.min(axis=0).tolist(), pts.max(axis=0).tolist()
    else:
        lo, hi = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    tree["accessors"].append({"bufferView": bv_pos, "byteOffset": 0, "componentType": 5126, "count": n,
                              "type": "VEC3", "min": lo, "max": hi})
    acc_col = len(tree["accessors"])
    tree["accessors"].append({"bufferView": bv_col, "byteOffset": 0, "componentType": 5121, "count": n,
                              "type": "VEC4", "normalized": True})
    mesh_idx = len(tree["meshes"])
    tree["meshes"].append({"name": name, "primitives": [
        {"attributes": {"POSITION": acc_pos, "COLOR_0": acc_col}, "mode": 0}]})
    node_idx = len(tree["nodes"])
    tree["nodes"].append({"name": name, "mesh": mesh_idx})
    tree["scenes"][tree["scene"]].setdefault("nodes", []).append(node_idx)
    tree["buffers"][0]["byteLength"] = offset
    return pieces


def write_glb(path, points: np.ndarray, colors: np.ndarray | None, c2ws: np.ndarray | None = None,
              K: np.ndarray | None = None, image_size: tuple[int, int] | None = None, mesh=None,
              frustum_scale: float = 0.3, max_points: int | None = None,
              max_frustums: int = 200) -> Path:
    """Write a binary glTF scene: coloured point cloud, camera path + frustums, optional mesh.

    points: (N, 3) float world (+Y up, so no rotation). colors: (N, 3) uint8. c2ws: (M, 4, 4) OpenCV
    camera-to-world poses or None. K: (3, 3) intrinsics for the frustum shape (default: 60° vertical
    FOV). image_size: (W, H) in pixels (default: from K's principal point). mesh: trimesh.Trimesh.
    frustum_scale: frustum depth in metres. max_points: random (seeded) subsample above this many points.
    max_frustums: draw every k-th camera (and the last) so that at most about this many are drawn.

    The points are a glTF POINTS primitive (trimesh.load gives a trimesh.PointCloud with colours);
    the camera path and frustums are LINES (trimesh.Path3D), coloured by time with the turbo map.
    Paths and mesh go through trimesh's exporter; the points are appended to its buffer directly
    (trimesh's point exporter converts through Python lists and is ~3x slower at 5M points).
    """
    path = _check_target(path)
    pts, cols = _as_points_colors(points, colors)
    if max_points is not None:
        if int(max_points) < 0:
            raise ExportError(f"max_points must be >= 0, got {max_points}")
        if len(pts) > int(max_points):
            idx = np.sort(np.random.default_rng(0).choice(len(pts), int(max_points), replace=False))
            pts, cols = pts[idx], cols[idx]
    if not (isinstance(frustum_scale, (int, float)) and math.isfinite(frustum_scale) and frustum_scale > 0):
        raise ExportError(f"frustum_scale must be a positive number of metres, got {frustum_scale!r}")

    geoms: dict = {}
    if c2ws is not None:
        poses = _as_poses(c2ws)
        if len(poses):
            geoms.update(_camera_path_geometry(poses, K, image_size, float(frustum_scale), max(1, max_frustums)))
    if mesh is not None:
        import trimesh

        if not isinstance(mesh, trimesh.Trimesh):
            raise ExportError(f"mesh must be a trimesh.Trimesh, got {type(mesh).__name__}")
        if len(mesh.faces):
            geoms["mesh"] = mesh

    if geoms:
        import trimesh

        scene = trimesh.Scene()
        for name, g in geoms.items():
            scene.add_geometry(g, geom_name=name, node_name=name)
        try:
            tree, binary = _parse_glb(scene.export(file_type="glb"))
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - trimesh raises many kinds
            raise ExportError(f"cannot build GLB scene: {e}; try exporting without the mesh") from None
    else:
        tree, binary = _empty_gltf()

    if len(pts):
        pieces = _append_points_to_gltf(tree, len(binary), pts, cols, "points")
    else:  # glTF accessors cannot be empty: no point primitive at all
        pieces = []
        tree["buffers"][0]["byteLength"] = len(binary)
    bin_total = tree["buffers"][0]["byteLength"]
    bin_pad = (-bin_total) % 4
    tree["buffers"][0]["byteLength"] = bin_total  # padding is not part of the buffer
    js = _pad4(json.dumps(tree, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(js) + 8 + bin_total + bin_pad
    out: list[bytes | memoryview] = [
        struct.pack("<III", _GLB_MAGIC, 2, total),
        struct.pack("<II", len(js), _CHUNK_JSON), js,
        struct.pack("<II", bin_total + bin_pad, _CHUNK_BIN), binary, *pieces, b"\x00" * bin_pad,
    ]
    _write_bytes_atomic(path, out)
    return path


# ----------------------------------------------------------------------------------------------- TUM


def write_tum_trajectory(path, c2ws: np.ndarray, timestamps: np.ndarray | None = None) -> Path:
    """Write a TUM RGB-D trajectory: one ``timestamp tx ty tz qx qy qz qw`` line per camera.

    c2ws: (M, 4, 4) camera-to-world (OpenCV camera, as in the scene; no axis change).
    Quaternion is Hamilton, scalar-last (scipy). timestamps: (M,) seconds, default index / 10.
    """
    path = _check_target(path)
    poses = _as_poses(c2ws)
    m = len(poses)
    if timestamps is None:
        ts = np.arange(m, dtype=np.float64) / 10.0
    else:
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if ts.shape != (m,) or not np.isfinite(ts).all():
            raise ExportError(f"timestamps must be {m} finite numbers (one per pose), got shape {ts.shape}")
    dets = np.linalg.det(poses[:, :3, :3]) if m else np.zeros(0)
    if m and (np.abs(dets - 1.0) > 1e-3).any():
        raise ExportError("c2ws contain rotations that are not proper (det != 1); pass rigid camera-to-world poses")
    text = format_tum(poses, ts, header="WorldStudio camera-to-world trajectory (OpenCV camera, +Y-up world, metres)")
    _write_bytes_atomic(path, [text.encode("ascii")])
    return path


def read_tum_trajectory(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory -> (timestamps (M,) float64, c2ws (M, 4, 4) float64) (see worldmodel.tum)."""
    try:
        return read_tum(path)
    except ValueError as e:
        raise ExportError(str(e)) from None


# ------------------------------------------------------------------------------------ transforms.json

def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # uint16 (H, W) -> 16-bit grey PNG
    return buf.getvalue()


def _intrinsics_dict(K: np.ndarray, w: int, h: int) -> dict:
    """nerfstudio's intrinsics keys. Our K puts pixel centres at whole numbers; nerfstudio, instant-ngp and COLMAP
    put them at +0.5 (the image spans 0..w), so the principal point moves by half a pixel."""
    return {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]) + 0.5, "cy": float(K[1, 2]) + 0.5,
            "w": int(w), "h": int(h)}


def depth_to_png_mm(depth: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres -> uint16 millimetres; invalid (0/NaN/inf) and depths > 65.535 m become 0."""
    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
        mm = np.where(ok, np.rint(d * 1000.0), 0.0)
    mm[(mm > 65535) | (mm < 0)] = 0
    return mm.astype(np.uint16)


TRANSFORMS_NAMES = ("transforms.json", "images", "depth")  # what write_transforms_json writes


def write_transforms_json(out_dir, frames: Iterable[Frame], image_subdir: str = "images") -> Path:
    """Write a nerfstudio dataset: ``images/frame_00000.png``, ``depth/frame_00000.png``, ``transforms.json``.

    Depth PNGs are 16-bit millimetres (``depth_unit_scale_factor`` 0.001; 0 = invalid; > 65.5 m dropped).
    Poses are converted to nerfstudio's OpenGL camera: c2w_gl = c2w_cv @ diag(1, -1, -1, 1).
    Intrinsics of the first frame are global; frames with other K or size carry their own. The world stays ours
    (+Y up, where nerfstudio's is z-up): ``"world_up": "+y"`` in transforms.json says so (nerfstudio ignores it),
    so the folder opens again as a recording (``replay:FOLDER``) the right way up, without a worldstudio.json that
    could clash with a recording's own in the same folder. ``out_dir`` is created if missing. Every file is written into
    a hidden staging folder in ``out_dir`` first and swapped in at the end (:func:`scenes.atomic.swap_in`,
    transforms.json last): a failed or interrupted export leaves an earlier one there as it was. Files of the
    folder the export does not write (a user's own, an earlier export's further frames) stay. Returns the path
    of transforms.json.
    """
    try:
        out = Path(out_dir).expanduser()
    except TypeError as e:
        raise ExportError(f"invalid output folder {out_dir!r}: {e}; pass a folder path") from None
    frames = iter(frames)  # one frame at a time: a 10k-frame export needs the RAM of one frame
    f0 = next(frames, None)
    if f0 is None:
        raise ExportError("no frames to export; generate some frames first")
    if not isinstance(f0, Frame):
        raise ExportError(f"frames must be worldmodel.frame.Frame objects, got {type(f0).__name__}")
    sub = str(image_subdir).strip("/\\") or "images"
    if os.path.isabs(sub) or ".." in Path(sub).parts:
        raise ExportError(f"image_subdir must be a relative folder name, got {image_subdir!r}")
    if Path(sub).parts[0] == "depth":
        raise ExportError(f"image_subdir must not be depth/ (the depth images go there), got {image_subdir!r}")
    if out.exists() and not out.is_dir():
        raise ExportError(f"cannot write {out}: it is a file; pass a folder path")
    _remove_stale_staging(out)
    work = f"{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = out / f"{TRANSFORMS_STAGING}{work}"
    try:
        try:
            (staging / sub).mkdir(parents=True)
            (staging / "depth").mkdir()
        except OSError as e:
            raise _os_error(out, e) from None
        written = _write_transforms_into(staging, f0, frames, sub)
        try:
            swap_in(staging, out, written, out / f"{TRANSFORMS_RETIRED}{work}")
        except OSError as e:
            raise _os_error(out, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "transforms.json"


# + HOST-PID-RANDOM: an export's work folders in its output folder; the new files, then the old ones it replaced
TRANSFORMS_STAGING, TRANSFORMS_RETIRED = ".transforms-staging-", ".transforms-old-"


def _remove_stale_staging(out: Path) -> None:
    """Remove the staging folders that exports of this machine left in ``out`` when they were killed (kill -9, a
    power cut): new files only. The folders of the files an interrupted swap had set aside are left alone (they
    may be the only copy of the earlier export)."""
    ours = re.compile(rf"{re.escape(TRANSFORMS_STAGING)}{this_host()}-(\d{{1,10}})-[0-9a-f]{{8}}")
    try:
        entries = list(out.iterdir()) if out.is_dir() else []
    except OSError:
        return
    for entry in entries:
        named = ours.fullmatch(entry.name)
        if named and entry.is_dir() and not entry.is_symlink() and not process_alive(int(named[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _write_transforms_into(out: Path, f0: Frame, frames: Iterator[Frame], sub: str) -> list[str]:
    """The dataset of :func:`write_transforms_json` (first frame ``f0``, then ``frames``), written into ``out`` ->
    the paths written, relative to ``out``, transforms.json last."""
    meta: dict = {"camera_model": "OPENCV", **_intrinsics_dict(f0.K, f0.width, f0.height),
                  "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
                  "depth_unit_scale_factor": 0.001, "world_up": "+y", "frames": []}
    for i, f in enumerate(itertools.chain([f0], frames)):
        if not isinstance(f, Frame):
            raise ExportError(f"frames must be worldmodel.frame.Frame objects, got {type(f).__name__}")
        if not np.isfinite(f.c2w).all():
            raise ExportError(f"frame {f.index} has a NaN/inf pose; drop it before exporting")
        name = f"frame_{i:05d}.png"
        img_rel, depth_rel = f"{sub}/{name}", f"depth/{name}"
        _write_bytes_atomic(out / img_rel, [_png_bytes(np.ascontiguousarray(f.rgb))])
        _write_bytes_atomic(out / depth_rel, [_png_bytes(depth_to_png_mm(f.depth))])
        c2w_gl = flip_cv_gl(f.c2w)
        entry = {"file_path": img_rel, "depth_file_path": depth_rel,
                 "transform_matrix": c2w_gl.tolist(), "frame_index": int(f.index)}
        if f.width != f0.width or f.height != f0.height or not np.allclose(f.K, f0.K):
            entry.update(_intrinsics_dict(f.K, f.width, f.height))
        meta["frames"].append(entry)
    _write_bytes_atomic(out / "transforms.json", [json.dumps(meta, indent=2).encode("utf-8")])
    return [p for e in meta["frames"] for p in (e["file_path"], e["depth_file_path"])] + ["transforms.json"]


# ----------------------------------------------------------------------------------------------- MP4


def _even_pad(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
    return np.ascontiguousarray(img)


def write_mp4(path, frames: Iterable[Frame], fps: int = 10, depth_range: tuple | None = None,
              progress: bool = False) -> Path:
    """Write an H.264 MP4 where each video frame is RGB | colourised depth side by side.

    Size: (2W, H) padded to even dimensions (yuv420p). The depth colour range is fixed over the whole
    video: ``depth_range`` = (near, far) metres, or the 2nd/98th percentile of the first frame.
    ``frames`` may be a generator; all frames must have the first frame's size.
    """
    import imageio_ffmpeg

    path = _check_target(path)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ExportError(f"fps must be a positive number, got {fps!r}")
    if depth_range is not None:
        try:
            near, far = (float(v) for v in depth_range)
        except (TypeError, ValueError):
            raise ExportError(f"depth_range must be (near, far) in metres, got {depth_range!r}") from None
        if not (math.isfinite(near) and math.isfinite(far) and far > near):
            raise ExportError(f"depth_range must satisfy near < far, got {depth_range!r}")
    else:
        near = far = None  # type: ignore[assignment]

    it: Iterable[Frame] = frames
    if progress:
        from tqdm import tqdm

        total = len(frames) if hasattr(frames, "__len__") else None  # type: ignore[arg-type]
        it = tqdm(frames, total=total, desc=f"mp4 {path.name}", unit="frame")

    count = 0
    with _atomic_file(path) as tmp:
        writer = ffmpeg = None
        size = None
        try:
            for f in it:
                if not isinstance(f, Frame):
                    raise ExportError(f"frames must be Frame objects, got {type(f).__name__}")
                if size is None:
                    size = (f.width, f.height)
                    if near is None:
                        d = f.depth[np.isfinite(f.depth) & (f.depth > 0)]
                        if d.size:
                            near, far = (float(v) for v in np.percentile(d, [2.0, 98.0]))
                        else:
                            near, far = 0.0, 1.0
                        if not far > near:
                            far = near + 1e-3
                elif (f.width, f.height) != size:
                    raise ExportError(f"frame {f.index} is {f.width}x{f.height} but the video is "
                                      f"{size[0]}x{size[1]}; export frames of one size")
                img = _even_pad(np.concatenate([f.rgb, colorize_depth(f.depth, near, far)], axis=1))
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (img.shape[1], img.shape[0]), fps=float(fps), codec="libx264",
                        pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=1, quality=7,
                        output_params=["-f", "mp4"], ffmpeg_log_level="quiet")  # (a failure is one ExportError)
                    writer.send(None)
                    ffmpeg = writer.gi_frame.f_locals.get("p") if writer.gi_frame else None  # its process
                writer.send(img)
                count += 1
            if count == 0:
                raise ExportError("no frames to write; generate some frames first")
            writer.close()  # type: ignore[union-attr]
            writer = None
            if ffmpeg is not None and ffmpeg.returncode not in (0, None):
                raise ExportError(f"cannot write {path}: ffmpeg stopped with an error (disk full?); "
                                  f"free space in {path.parent} and export again")
            check_mp4(tmp)  # a cut-short file never replaces a good one
        except (BrokenPipeError, RuntimeError, IOError) as e:
            if isinstance(e, ExportError):
                raise
            if isinstance(e, OSError) and e.errno is not None and not isinstance(e, BrokenPipeError):
                raise _os_error(path, e) from None
            raise ExportError(f"cannot write {path}: ffmpeg failed ({str(e).splitlines()[0] if str(e) else e}); "
                              "choose another folder or free disk space") from None
        finally:
            if writer is not None:
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - already failing
                    pass
    return path
