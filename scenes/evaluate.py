"""`python launch.py eval-recon PATH`: fuse a recorded sequence and compare our map with open3d's TSDF.

Both methods fuse the same frames at the same voxel size and depth range:

- **ours**: :class:`recon.pointmap.VoxelPointMap` (voxel running means of the depth pixels), fused the way
  :func:`recon.pointmap.fuse_frame` does, except that large frames are subsampled to the voxel size
  (:func:`auto_stride`: about two depth pixels per voxel side at the frame's median depth, the sampling
  rate the voxel grid can represent; 1 = every pixel; the TSDF itself reads one depth pixel per voxel);
- **peer**: :class:`recon.tsdf.TSDFFusion` with its defaults (open3d ``VoxelBlockGrid``, truncation 8 voxels,
  extraction weight threshold 1.0, which open3d applies strictly: surfaces seen by one frame are dropped),
  whose extracted surface point cloud is evaluated.

Metrics (names as written by ``--json``; ``peer_`` prefix for the TSDF):

- ``median_abs_dz_m``: agreement between each frame's depth and the final map re-projected into it
  (:func:`map_depth_agreement`), median over pixels per frame, then median over frames;
  ``p90_frame_abs_dz_m``: the 90th percentile of those per-frame medians;
- ``fuse_ms_per_frame`` / ``peer_tsdf_ms_per_frame``: median wall time of ``fuse`` / ``integrate``
  (file decoding excluded; ``peer_extract_ms``: one point-cloud extraction at the end);
- ``map_points`` / ``peer_points``;
- with ``--reference``: ``accuracy_m`` (median distance from reconstruction points to the reference) and
  ``completeness`` (share of reference points within two voxels of the reconstruction).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from worldmodel.camera import camera_to_pixels, invert_pose, valid_depth_mask, world_to_camera
from recon.pointmap import SAMPLES_PER_VOXEL, VoxelPointMap, auto_stride
from recon.tsdf import TSDFFusion
from scenes.atomic import WriteError, writable_file, write_json_or_print
from worldmodel.frame import Frame

DEFAULT_MAX_DEPTH = 20.0     # metres, for both methods
OCCLUSION_VOXELS = 3.0       # map points this many voxels behind the nearest map surface at a pixel are hidden
MAX_FOOTPRINT_PX = 12        # cap on the half-size of a point's screen footprint (pixels)


class EvalError(ValueError):
    """The evaluation cannot run (bad path, empty sequence, unreadable reference); one line, what to do."""


# --------------------------------------------------------------------------------------------- geometry


def project_zbuffer(points: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int,
                    voxel: float, near: float = 0.05) -> dict:
    """Render world points (N, 3) into an OpenCV camera (pixel centres at integer coordinates).

    Returns a dict: ``front`` (H, W) float64, inf = empty: the nearest depth among points whose screen
    footprint covers the pixel, a square of half-size ceil(0.5 * f * voxel / z) pixels (capped), i.e. the
    size of the point's voxel on screen, so ``front`` is the closest map surface even where points are
    sparse; and for every pixel that some point projects into, the nearest such point: ``pixel`` (M,)
    flat pixel index, ``uv`` (M, 2) its exact projection, ``z`` (M,) its depth.
    """
    from scipy.ndimage import minimum_filter

    cam = world_to_camera(points.astype(np.float64), invert_pose(np.asarray(c2w, dtype=np.float64)))
    uf, vf, z = camera_to_pixels(cam[cam[:, 2] > near], K)
    u, v = np.rint(uf).astype(np.int64), np.rint(vf).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    uf, vf, u, v, z = uf[inside], vf[inside], u[inside], v[inside], z[inside]
    flat = v * width + u
    order = np.argsort(z, kind="stable")
    pixel, first = np.unique(flat[order], return_index=True)  # nearest point of each pixel
    win = order[first]
    front = np.full(height * width, np.inf)
    front[pixel] = z[win]
    half = np.clip(np.ceil(0.5 * K[0, 0] * voxel / z), 0, MAX_FOOTPRINT_PX).astype(np.int64)
    for h in np.unique(half):
        if h == 0:
            continue
        sel = half == h
        zb = np.full(height * width, np.inf)
        np.minimum.at(zb, flat[sel], z[sel])
        np.minimum(front, minimum_filter(zb.reshape(height, width), size=2 * int(h) + 1, mode="constant",
                                         cval=np.inf).reshape(-1), out=front)
    return {"front": front.reshape(height, width), "pixel": pixel, "uv": np.stack([uf[win], vf[win]], axis=1),
            "z": z[win]}


def sample_depth(depth: np.ndarray, uv: np.ndarray, max_depth: float = np.inf) -> np.ndarray:
    """Depth (M,) at sub-pixel positions uv (M, 2): bilinear where the 4 neighbours are valid and agree
    (spread < 5 %), else the nearest pixel; 0 where that is invalid. depth (H, W) metres, 0 = invalid."""
    h, w = depth.shape
    d = np.where(valid_depth_mask(depth, max_depth), depth, 0.0).astype(np.float64)
    u0 = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, w - 2)
    v0 = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, h - 2)
    a, b = np.clip(uv[:, 0] - u0, 0, 1), np.clip(uv[:, 1] - v0, 0, 1)
    q = np.stack([d[v0, u0], d[v0, u0 + 1], d[v0 + 1, u0], d[v0 + 1, u0 + 1]], axis=1)
    bil = (q[:, 0] * (1 - a) + q[:, 1] * a) * (1 - b) + (q[:, 2] * (1 - a) + q[:, 3] * a) * b
    lo, hi = q.min(axis=1), q.max(axis=1)
    smooth = (lo > 0) & (hi - lo < 0.05 * lo)
    un = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, w - 1)
    vn = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, h - 1)
    return np.where(smooth, bil, d[vn, un])


def map_depth_agreement(points: np.ndarray, frame: Frame, voxel: float,
                        max_depth: float = DEFAULT_MAX_DEPTH) -> np.ndarray:
    """|dz| (M,) metres between ``frame.depth`` and the map points (N, 3) re-projected into the frame.

    Compared at pixels where both exist: the pixel holds a map point (the nearest of those projecting
    into it) that is not hidden behind a nearer map surface (more than OCCLUSION_VOXELS voxels behind
    :func:`project_zbuffer`'s ``front``), and the frame has a valid depth there, read at the point's exact
    projection (:func:`sample_depth`).
    """
    h, w = frame.depth.shape
    r = project_zbuffer(points, frame.K, frame.c2w, w, h, voxel)
    visible = r["z"] <= r["front"].reshape(-1)[r["pixel"]] + OCCLUSION_VOXELS * voxel
    d = sample_depth(frame.depth, r["uv"][visible], max_depth)
    ok = d > 0
    return np.abs(r["z"][visible][ok] - d[ok])


def load_reference(path: str | Path, voxel: float) -> np.ndarray:
    """Reference geometry as points (N, 3) float64: a point cloud's points, or a mesh sampled uniformly at
    about one point per (voxel / 2)^2 of area (PLY, OBJ, GLB...; read with trimesh)."""
    import trimesh

    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalError(f"reference {path} does not exist; pass a mesh or point cloud file")
    try:
        geom = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises many types for bad files (a KeyError names what a header lacks)
        why = f"it lacks {e.args[0]!r}" if isinstance(e, KeyError) else str(e)[:100]
        raise EvalError(f"cannot read reference {path}: {why}; pass a PLY/OBJ/GLB mesh or point cloud") from None
    if isinstance(geom, trimesh.Scene):
        geoms = list(geom.dump())
        meshes = [g for g in geoms if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if meshes:
            geom = trimesh.util.concatenate(meshes)
        else:
            pts = [np.asarray(g.vertices) for g in geoms if hasattr(g, "vertices")]
            geom = trimesh.PointCloud(np.concatenate(pts)) if pts else None
    if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
        n = int(np.clip(geom.area / (0.5 * voxel) ** 2, 10_000, 3_000_000))
        pts = np.asarray(trimesh.sample.sample_surface(geom, n, seed=0)[0], dtype=np.float64)
    elif geom is not None and hasattr(geom, "vertices") and len(geom.vertices):
        pts = np.asarray(geom.vertices, dtype=np.float64)
    else:
        raise EvalError(f"reference {path} holds no points or triangles")
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise EvalError(f"reference {path}: its points are not 3-D (shape {pts.shape}); pass a PLY/OBJ/GLB with "
                        "x y z vertices")
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        raise EvalError(f"reference {path} holds no finite points")
    return pts


def accuracy_completeness(recon: np.ndarray, reference: np.ndarray, voxel: float) -> tuple[float, float]:
    """(median distance recon -> reference in metres, share of reference points within 2 voxels of recon)."""
    from scipy.spatial import cKDTree

    if len(recon) == 0:
        return float("nan"), 0.0
    acc = float(np.median(cKDTree(reference).query(recon, workers=-1)[0]))
    dist, _ = cKDTree(recon).query(reference, distance_upper_bound=2.0 * voxel, workers=-1)
    return acc, float(np.mean(np.isfinite(dist)))


# --------------------------------------------------------------------------------------------- evaluation


def evaluate_sequence(seq, voxel: float = 0.02, reference: str | Path | None = None,
                      max_depth: float = DEFAULT_MAX_DEPTH, stride: int | str = "auto", peer: bool = True,
                      progress: bool = False, carve: bool = True, reference_up: str = "+y",
                      reference_to_world: np.ndarray | None = None) -> dict:
    """Fuse ``seq`` (a worldmodel.recordings.Sequence or any list of Frames) with ours and the TSDF peer.

    stride: pixel stride for our fusion, an int or "auto" (:func:`auto_stride`, per frame).
    reference: a mesh or point cloud in the recording's own coordinates (as a dataset's reference comes), whose
    up axis is ``reference_up`` (the recording's ``world_up``): it is turned to +Y-up as the frames were (or by
    ``reference_to_world`` (3, 3), a Sequence's ``world_from_source()``, when the reader did more: ICL-NUIM's
    reflection). It is read before any frame is fused.
    Returns a flat {metric: number} dict (see the module docstring); peer metrics are absent when the
    frames carry no depth (per-frame point clouds) or ``peer`` is False.
    """
    if not voxel > 0:
        raise EvalError(f"--voxel must be > 0, got {voxel}")
    n = len(seq)
    if n == 0:
        raise EvalError("the sequence has no frames")
    ref = None
    if reference is not None:  # a bad file is found before the fusion, not after it
        from worldmodel.recordings import up_rotation

        to_world = up_rotation(reference_up)[:3, :3] if reference_to_world is None else reference_to_world
        ref = load_reference(reference, voxel) @ np.asarray(to_world, dtype=np.float64).T
    bar = _bar(progress, n, "fuse")
    ours = VoxelPointMap(voxel, max_depth=max_depth, carve=carve)
    tsdf = TSDFFusion(voxel_size=voxel, depth_max=max_depth) if peer else None
    fuse_ms, peer_ms, strides, load_ms, has_depth = [], [], [], [], False
    for i in range(n):
        t0 = time.perf_counter()
        f = seq[i]
        t1 = time.perf_counter()
        if f.world_points is not None:
            ours.fuse_points(f.world_points, f.world_colors, i)
            t2 = time.perf_counter()
        else:
            has_depth = True
            s = auto_stride(f.depth, f.K, voxel) if stride == "auto" else int(stride)
            strides.append(s)
            ours.fuse(f.depth, f.rgb, f.K, f.c2w, i, f.confidence, stride=s)
            t2 = time.perf_counter()
            if tsdf is not None:
                tsdf.integrate(f)
                peer_ms.append(1e3 * (time.perf_counter() - t2))
        load_ms.append(1e3 * (t1 - t0))
        fuse_ms.append(1e3 * (t2 - t1))
        bar.update()
    bar.close()

    pts, _ = ours.points()
    if has_depth and not len(pts):
        depth = np.asarray(seq[0].depth)
        valid = depth[np.isfinite(depth) & (depth > 0)]
        median = f"{np.median(valid):.4g} m" if valid.size else "no valid pixel"
        raise EvalError(f"no frame has depth within 0..{max_depth:g} m (frame 0's median depth: {median}); check the "
                        "recording's depth scale (depth_scale in its worldstudio.json)")
    out: dict = {"frames": n, "voxel_m": float(voxel), "max_depth_m": float(max_depth),
                 "fuse_ms_per_frame": float(np.median(fuse_ms)), "load_ms_per_frame": float(np.median(load_ms)),
                 "map_points": int(len(pts))}
    if strides:
        out["fuse_stride_median"] = float(np.median(strides))
    peer_pts = None
    if tsdf is not None and has_depth:
        t = time.perf_counter()
        peer_pts, _ = tsdf.point_cloud()
        out.update({"peer_tsdf_ms_per_frame": float(np.median(peer_ms)),
                    "peer_extract_ms": 1e3 * (time.perf_counter() - t), "peer_points": int(len(peer_pts))})

    if has_depth:
        ours_med, peer_med, ours_n = [], [], []
        bar = _bar(progress, n, "compare")
        for i in range(n):
            f = seq[i]
            if f.world_points is None:
                dz = map_depth_agreement(pts, f, voxel, max_depth)
                if len(dz):
                    ours_med.append(float(np.median(dz)))
                    ours_n.append(len(dz))
                if peer_pts is not None:
                    dzp = map_depth_agreement(peer_pts, f, voxel, max_depth)
                    if len(dzp):
                        peer_med.append(float(np.median(dzp)))
            bar.update()
        bar.close()
        if ours_med:
            out["median_abs_dz_m"] = float(np.median(ours_med))
            out["p90_frame_abs_dz_m"] = float(np.percentile(ours_med, 90))
            out["compared_pixels_per_frame"] = float(np.median(ours_n))
        if peer_med:
            out["peer_median_abs_dz_m"] = float(np.median(peer_med))
            out["peer_p90_frame_abs_dz_m"] = float(np.percentile(peer_med, 90))

    if ref is not None:
        out["reference_points"] = int(len(ref))
        out["accuracy_m"], out["completeness"] = accuracy_completeness(pts.astype(np.float64), ref, voxel)
        if peer_pts is not None:
            out["peer_accuracy_m"], out["peer_completeness"] = accuracy_completeness(peer_pts, ref, voxel)
    return out


def _bar(progress: bool, total: int, desc: str):
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)

    class _Null:
        def update(self, n: int = 1) -> None: ...

        def close(self) -> None: ...

    return _Null()


ROWS = [  # (label, our key, peer key, format)
    ("ms per frame (fuse / integrate)", "fuse_ms_per_frame", "peer_tsdf_ms_per_frame", "{:.1f}"),
    ("median |dz| per frame (m)", "median_abs_dz_m", "peer_median_abs_dz_m", "{:.4f}"),
    ("p90 of per-frame |dz| (m)", "p90_frame_abs_dz_m", "peer_p90_frame_abs_dz_m", "{:.4f}"),
    ("map points", "map_points", "peer_points", "{:,}"),
    ("accuracy: median dist to ref (m)", "accuracy_m", "peer_accuracy_m", "{:.4f}"),
    ("completeness: ref within 2 voxels", "completeness", "peer_completeness", "{:.1%}"),
]


def format_table(metrics: dict, title: str = "") -> str:
    """The side-by-side table printed by eval-recon (rows without values are left out)."""
    lines = [title] if title else []
    lines.append(f"{'metric':36s} {'ours (voxel map)':>18s} {'peer (open3d TSDF)':>20s}")
    for label, ours_key, peer_key, fmt in ROWS:
        if ours_key not in metrics and peer_key not in metrics:
            continue
        cells = [fmt.format(metrics[k]) if k in metrics and metrics[k] == metrics[k] else "n/a"
                 for k in (ours_key, peer_key)]
        lines.append(f"{label:36s} {cells[0]:>18s} {cells[1]:>20s}")
    return "\n".join(lines)


def main(args) -> int:
    """CLI entry (launch.py eval-recon): prints the table, optionally writes --json (atomically); errors -> exit 2;
    a --json that cannot be written after the fusion (a full disk) -> the JSON printed instead, exit 1."""
    from worldmodel.recordings import SequenceError
    from worldmodel.recordings.checks import misreading_note, pose_agreement
    from worldmodel.replay import open_recording

    try:
        if args.json:  # found now, not after the fusion
            writable_file(args.json, "--json")
        # PATH?up=+z&stride=2&max_frames=N&level=1, as --world replay: takes
        seq = open_recording(args.path, **({} if args.max_frames is None else {"max_frames": args.max_frames}))
        metrics = evaluate_sequence(seq, voxel=float(args.voxel), reference=args.reference, progress=True,
                                    carve=not args.no_carve, reference_to_world=seq.world_from_source())
    except (SequenceError, EvalError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    f0 = seq[0]
    title = (f"eval-recon {seq.path} ({seq.format}, {len(seq)} frames, {f0.width}x{f0.height}, "
             f"voxel {args.voxel:g} m, world up {seq.world_up} -> +Y)")
    print(format_table(metrics, title))
    if "fuse_stride_median" in metrics:
        print(f"ours: pixel stride {metrics['fuse_stride_median']:g} (median of auto strides, ~{SAMPLES_PER_VOXEL:g} "
              f"depth samples per voxel side); |dz| compared at {metrics.get('compared_pixels_per_frame', 0):,.0f} "
              "pixels per frame (median)")
    for note in seq.notes:
        print(f"note: {note}")
    misread = misreading_note(pose_agreement(seq)["shares"], seq.format)
    if misread:  # a large |dz| above may be a convention the reader or the folder got wrong
        print(f"note: {misread}")
    if not metrics.get("map_points"):
        print("note: the map is empty: no frame has valid depth within the fuse range (check the depth scale, "
              "e.g. depth_scale in worldstudio.json, and the invalid value)")
    if args.reference:
        print(f"note: the reference was read in the recording's coordinates (up {seq.world_up}) and turned to +Y-up")
    if args.json:
        if not write_json_or_print(args.json, metrics):  # the numbers went to the terminal instead
            return 1
    return 0
