"""Whether a recording's poses and depth agree, and whether they would agree better read another way.

A correct reader moves frame i's depth into frame j's camera and finds it on frame j's depth. The two mistakes
readers and hand-made folders make most, cameras of the other convention (OpenGL's y up, z back instead of
OpenCV's) and world-to-camera matrices taken for camera-to-world ones, move it elsewhere. ``launch.py info``
reports the share that agrees as read and as either mistake, and says so when a mistake fits far better.
"""

from __future__ import annotations

import numpy as np

from worldmodel.camera import CV_GL_FLIP, invert_pose, reprojection_errors

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


def readings(seq) -> dict[str, np.ndarray]:
    """The poses of ``seq`` as read, and as the two common misreadings would have made them (N, 4, 4), by name.
    Both are undone in the recording's own coordinates (before the reader turned its up axis to +Y)."""
    to_world = np.eye(4)
    to_world[:3, :3] = seq.world_from_source()
    source = np.linalg.inv(to_world) @ seq.c2ws
    return {"as read": seq.c2ws, "as OpenGL cameras": seq.c2ws @ CV_GL_FLIP,
            "as world-to-camera matrices": to_world @ np.stack([invert_pose(p) for p in source])}


def pose_agreement(seq, count: int = 4) -> dict:
    """{"pairs": [(i, j)], "shares": {reading: share of moved depth that agrees}} over :func:`frame_pairs` of
    ``seq`` (its frames are decoded); shares are empty when the camera does not move enough or a frame has no
    depth."""
    pairs = frame_pairs(seq.c2ws, count)
    if not pairs or not seq.has_depth:
        return {"pairs": pairs, "shares": {}}
    agree = {name: 0 for name in readings(seq)}
    total = {name: 0 for name in agree}
    for i, j in pairs:
        a, b = seq[i], seq[j]
        for name, c2ws in readings(seq).items():
            _, err = reprojection_errors(a.depth, a.K, c2ws[i], b.depth, b.K, c2ws[j], stride=STRIDE, relative=True)
            agree[name] += int(np.sum(err <= AGREE_RELATIVE))
            total[name] += int(np.sum(a.depth[::STRIDE, ::STRIDE] > 0))  # (landing outside counts as disagreeing)
    return {"pairs": pairs, "shares": {name: agree[name] / max(total[name], 1) for name in agree}}


def misreading(shares: dict[str, float]) -> str | None:
    """The name of a misreading that fits far better than the reading as read, or None."""
    if not shares:
        return None
    best = max(shares, key=shares.get)
    as_read = shares["as read"]
    return best if best != "as read" and as_read < MISREAD_BELOW and shares[best] >= as_read + MISREAD_MARGIN else None
