"""Whether a recording's poses and depth agree, and whether they would agree better read another way.

A correct reader moves frame i's depth into frame j's camera and finds it on frame j's depth. The two mistakes
readers and hand-made folders make most, cameras of the other convention (OpenGL's y up, z back instead of
OpenCV's) and world-to-camera matrices taken for camera-to-world ones, move it elsewhere. ``launch.py info``
reports the share that agrees as read and as either mistake, and says so when a mistake fits far better.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from worldmodel.camera import CV_GL_FLIP, depth_landing, invert_pose, unproject_depth, valid_depth_mask
from worldmodel.frame import Frame

AGREE_RELATIVE = 0.03  # a moved depth agrees within 3 % of its own depth with the depth it lands on
MIN_MOTION_M, MIN_MOTION_DEG = 0.10, 5.0  # a pair's camera moves at least this far (or turns this much)
PAIRS_WITHIN = 300  # pairs are taken among the first frames: video formats decode up to the frame asked for
STRIDE = 4  # every 4th source pixel is moved
MISREAD_BELOW, MISREAD_MARGIN = 0.5, 0.25  # a reading that agrees below 50 % while another agrees 25 points more


def frame_pairs(c2ws: np.ndarray, count: int = 4) -> list[tuple[int, int]]:
    """Up to ``count`` pairs (i, j) spread over the first PAIRS_WITHIN poses ``c2ws`` (N, 4, 4), each j the first
    frame after i from which the camera has moved MIN_MOTION_M or turned MIN_MOTION_DEG; [] when it never does."""
    n = min(len(c2ws), PAIRS_WITHIN)
    pairs = []
    for i in np.unique(np.linspace(0, max(n - 2, 0), count).astype(int)):
        for j in range(i + 1, n):
            moved = np.linalg.norm(c2ws[j, :3, 3] - c2ws[i, :3, 3])
            cos = (np.trace(c2ws[i, :3, :3].T @ c2ws[j, :3, :3]) - 1.0) / 2.0
            if moved >= MIN_MOTION_M or np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) >= MIN_MOTION_DEG:
                pairs.append((int(i), j))
                break
    return pairs


def readings(seq, frames: list[int]) -> dict[str, dict[int, np.ndarray]]:
    """The poses of ``frames`` of ``seq`` as read, and as the two common misreadings would have made them, by
    name: {reading: {frame: (4, 4) c2w}}. Both are undone in the recording's own coordinates (before the reader
    turned its up axis to +Y)."""
    to_world = np.eye(4)
    to_world[:3, :3] = seq.world_from_source()
    from_world = np.linalg.inv(to_world)
    return {"as read": {i: seq.c2ws[i] for i in frames},
            "as OpenGL cameras": {i: seq.c2ws[i] @ CV_GL_FLIP for i in frames},
            "as world-to-camera matrices": {i: to_world @ invert_pose(from_world @ seq.c2ws[i]) for i in frames}}


def moved_depth_agreement(a, b, c2w_a: np.ndarray, c2w_b: np.ndarray) -> tuple[int, int, int, int]:
    """Frame ``a``'s depth (every STRIDE-th pixel) moved into frame ``b`` by the poses -> (points moved, points
    landing in b's view, of those the points landing on b's depth, of those the points within AGREE_RELATIVE of
    it)."""
    _, z, inside, landed = depth_landing(a.depth, a.K, c2w_a, b.depth, b.K, c2w_b, stride=STRIDE)
    on_depth = inside & valid_depth_mask(landed)
    agree = on_depth & (np.abs(z - landed) <= AGREE_RELATIVE * np.abs(z))
    return len(z), int(inside.sum()), int(on_depth.sum()), int(agree.sum())


def read_ascending(seq, indices) -> dict[int, Frame]:
    """{i: seq[i]} for ``indices``, read in ascending order: a video is decoded once, not again from its start."""
    return {int(k): seq[int(k)] for k in sorted(set(indices))}


def pose_agreement_frames(seq, count: int = 4) -> list[int]:
    """The frames :func:`pose_agreement` reads (none where it has nothing to check)."""
    return sorted({k for pair in frame_pairs(seq.c2ws, count) for k in pair}) if seq.has_depth else []


def pose_agreement(seq, count: int = 4, frames: Mapping[int, Frame] | None = None) -> dict:
    """{"pairs": [(i, j)], "shares": {reading: share}} over :func:`frame_pairs` of ``seq``; a share is the moved
    depth's share landing in the other frame's view times the share agreeing of what lands on its depth (holes in
    either frame's depth do not change it). ``frames``: frames already read (:func:`read_ascending`), else each is
    read once, in ascending order; shares are empty when the camera does not move enough or the frames have no
    depth."""
    pairs = frame_pairs(seq.c2ws, count)
    if not pairs or not seq.has_depth:
        return {"pairs": pairs, "shares": {}}
    needed = pose_agreement_frames(seq, count)
    if frames is None:
        frames = read_ascending(seq, needed)
    poses = readings(seq, needed)
    shares = {}
    for name, c2ws in poses.items():
        counts = np.sum([moved_depth_agreement(frames[i], frames[j], c2ws[i], c2ws[j]) for i, j in pairs], axis=0)
        moved, inside, on_depth, agree = (int(c) for c in counts)
        shares[name] = inside / max(moved, 1) * agree / max(on_depth, 1)
    return {"pairs": pairs, "shares": shares}


def misreading(shares: dict[str, float]) -> str | None:
    """The name of a misreading that fits far better than the reading as read, or None."""
    if not shares:
        return None
    best = max(shares, key=shares.get)
    as_read = shares["as read"]
    return best if best != "as read" and as_read < MISREAD_BELOW and shares[best] >= as_read + MISREAD_MARGIN else None


def misreading_note(shares: dict[str, float], fmt: str) -> str | None:
    """What to say when a misreading (:func:`misreading`) fits far better than the poses as read, for a recording
    of format ``fmt``: which, and what to set (a generic folder) or check (a known format); None otherwise."""
    better = misreading(shares)
    if better is None:
        return None
    fix = {"as OpenGL cameras": "the poses are OpenGL cameras (y up, z back)",
           "as world-to-camera matrices": "the poses are world-to-camera matrices"}[better]
    todo = ("check the recording is what its layout says" if fmt != "generic"
            else 'set "camera": "opengl" in worldstudio.json' if "OpenGL" in better else "write camera-to-world poses")
    return (f"the depth agrees far better with the poses read {better} ({shares[better]:.0%} against "
            f"{shares['as read']:.0%}): {fix}, it seems; {todo}")


FLOOR_FRAMES = 8  # frames spread over the recording whose depth is searched for a floor
FLOOR_STRIDE = 8  # every 8th pixel of each
FLOOR_MAX_DEPTH_M = 8.0  # far depth is noisy (a phone's, a Kinect's) and outdoors is not a room
FLOOR_UP_AGREEMENT = 0.5  # a plane is floor-like when its normal's mean cosine with the cameras' up is this high
FLOOR_MIN_SHARE = 0.05  # ... and it holds this share of the sampled points
LEVEL_MAX_DEG = 60.0  # a "floor" farther than this from +Y is a wall or a wrong up axis: level does not turn it
FLOOR_RANSAC_TRIES = 300  # planes through three random points tried for each plane found
FLOOR_RANSAC_JUDGES = 4000  # points each tried plane is judged on
FLOOR_REFITS = 4  # least-squares refits of each RANSAC plane to the points within its distance
FLOOR_PLANES = 4  # the largest planes tried, each found with the points of the ones before it removed


def floor_plane_frames(seq) -> list[int]:
    """The frames :func:`floor_plane` reads: :data:`FLOOR_FRAMES` spread over the first :data:`PAIRS_WITHIN` (a
    video decodes up to the frame asked for: not the whole of a long one)."""
    return spread_frames(len(seq), FLOOR_FRAMES, PAIRS_WITHIN) if seq.has_depth else []


def spread_frames(length: int, count: int, within: int) -> list[int]:
    """Up to ``count`` frame indices spread evenly over the first ``within`` of ``length`` frames, ascending."""
    last = min(length, within) - 1
    return [int(k) for k in np.unique(np.linspace(0, last, count).astype(int))] if last >= 0 else []


def floor_plane(seq, frames: Mapping[int, Frame] | None = None) -> dict | None:
    """The floor-like plane in a few frames' depth (:func:`floor_plane_frames`, taken from ``frames`` when they
    were read already; RANSAC refit by least squares) -> {"normal": (3,) unit, pointing to the
    cameras' side, in ``seq``'s world; "tilt_deg": its angle from +Y; "share": of the sampled points; "below_m":
    the cameras' mean centre's distance from it}. Of the :data:`FLOOR_PLANES` largest planes, those holding
    :data:`FLOOR_MIN_SHARE` of the points and facing the cameras' up (mean cosine with their -y axes at least
    :data:`FLOOR_UP_AGREEMENT`: a wall the camera looks at, pitched down, faces away from it) are candidates, and
    the one nearest the cameras' up wins (a stair's tread over the slope through the steps' edges); None when there
    is none. The world's own axes are not used: it may be a tilted camera's frame. A table top counts as well as a
    floor: both are level. Known limit: a wall seen by a camera pitched up faces its up as a floor seen by one
    pitched down does; with neither floor nor table in view, the wall is taken."""
    needed = floor_plane_frames(seq)
    if not needed:
        return None
    chunks = []
    for k in needed:  # ascending: a video decodes once
        f = frames[k] if frames is not None else seq[k]
        points, _ = unproject_depth(f.depth, f.K, f.c2w, max_depth=FLOOR_MAX_DEPTH_M, stride=FLOOR_STRIDE)
        chunks.append(points)
    points = np.concatenate(chunks)
    if len(points) < 100:
        return None
    centre, cameras_up = seq.c2ws[:, :3, 3].mean(axis=0), -seq.c2ws[:, :3, 1].mean(axis=0)
    distance = max(0.02, 0.01 * float(np.median(np.linalg.norm(points - centre, axis=1))))
    rng, here, total, best = np.random.default_rng(0), points, len(points), None
    for _ in range(FLOOR_PLANES):
        inliers = _ransac_plane(here, distance, rng)
        if len(inliers) < 3:
            break
        for _ in range(FLOOR_REFITS):  # least squares on the points within reach of the plane, until it settles
            normal, offset = _plane_through(here[inliers])
            inliers = np.nonzero(np.abs(here @ normal + offset) <= distance)[0]
        if normal @ centre + offset < 0:  # towards the cameras
            normal, offset = -normal, -offset
        tilt = float(np.degrees(np.arccos(np.clip(normal[1], -1.0, 1.0))))
        share = len(inliers) / total
        facing = float(normal @ cameras_up)
        if facing >= FLOOR_UP_AGREEMENT and share >= FLOOR_MIN_SHARE and (best is None or facing > best["facing"]):
            best = {"normal": normal, "tilt_deg": tilt, "share": share, "below_m": float(normal @ centre + offset),
                    "facing": facing}
        here = np.delete(here, inliers, axis=0)
    if best is not None:
        del best["facing"]
    return best


def _ransac_plane(points: np.ndarray, distance: float, rng: np.random.Generator,
                  tries: int = FLOOR_RANSAC_TRIES) -> np.ndarray:
    """Indices of the points (N, 3) within ``distance`` of the plane through three of them that has the most
    (RANSAC). Written here rather than open3d's ``segment_plane``, whose threads make it unrepeatable: the same
    recording must open as the same world."""
    if len(points) < 3:
        return np.zeros(0, dtype=np.int64)
    a, b, c = (points[rng.integers(0, len(points), tries)] for _ in range(3))
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    keep = lengths > 1e-12
    normals, a = normals[keep] / lengths[keep, None], a[keep]
    if not len(normals):
        return np.zeros(0, dtype=np.int64)
    judges = points[rng.permutation(len(points))[:FLOOR_RANSAC_JUDGES]]  # (a sample counts the inliers well)
    counts = (np.abs(judges @ normals.T - np.sum(normals * a, axis=1)) <= distance).sum(axis=0)
    best = int(np.argmax(counts))
    return np.nonzero(np.abs((points - a[best]) @ normals[best]) <= distance)[0]


def _plane_through(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The least-squares plane through ``points`` (N, 3) -> (unit normal (3,), offset): normal @ x + offset = 0."""
    mean = points.mean(axis=0)
    normal = np.linalg.svd(points - mean, full_matrices=False)[2][-1]
    return normal, float(-normal @ mean)


def levelling_rotation(normal: np.ndarray) -> np.ndarray:
    """(3, 3): the smallest rotation that turns ``normal`` (3,) unit to +Y (about the horizontal axis between
    them; no turn about +Y, so the cameras keep their heading)."""
    from scipy.spatial.transform import Rotation

    normal = np.asarray(normal, dtype=np.float64)
    axis = np.cross(normal, [0.0, 1.0, 0.0])
    angle = np.arctan2(np.linalg.norm(axis), normal[1])
    if np.linalg.norm(axis) < 1e-12:  # already +Y, or exactly -Y: half a turn about x
        axis = np.array([1.0, 0.0, 0.0])
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
