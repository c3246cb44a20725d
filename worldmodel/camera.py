"""Camera math, the vocabulary of :class:`worldmodel.frame.Frame`. OpenCV pinhole cameras (x right, y down,
z forward), poses camera-to-world (c2w). Image sizes are always passed as ``(K, width, height)``.

Every function names the convention it uses. Shapes are in the docstrings; N = number of points.
"""

from __future__ import annotations

import math

import numpy as np


# Right-multiplying a c2w by this flips the camera's y and z axes: OpenCV (y down, z forward) <-> OpenGL /
# nerfstudio / Blender (y up, z backward). It is its own inverse.
CV_GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def flip_cv_gl(c2w: np.ndarray) -> np.ndarray:
    """(..., 4, 4) OpenCV c2w -> OpenGL c2w of the same camera, and OpenGL -> OpenCV (the flip is its own inverse)."""
    return np.asarray(c2w, dtype=np.float64) @ CV_GL_FLIP


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> np.ndarray:
    """(3, 3) pinhole K with square pixels and the principal point at the image centre."""
    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[fy, 0.0, (width - 1) / 2.0], [0.0, fy, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def resize_intrinsics(K: np.ndarray, width: int, height: int, out_width: int, out_height: int) -> np.ndarray:
    """(3, 3) K of the same camera imaged at ``out_width`` x ``out_height`` (same field of view).

    Pixel centres stay at integer coordinates: u' = (u + 0.5) * out_width / width - 0.5."""
    sx, sy = out_width / float(width), out_height / float(height)
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 0], out[0, 2] = K[0, 0] * sx, (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1], out[1, 2] = K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5
    return out


def fov_y_deg_of(K: np.ndarray, height: int) -> float:
    return math.degrees(2.0 * math.atan(0.5 * height / K[1, 1]))


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform (c2w <-> w2c)."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def look_at_c2w(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """(4, 4) OpenCV c2w of a camera at ``eye`` looking at ``target`` with world ``up`` (+Y)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # OpenCV: x = right = forward x up
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # y points down
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def pixels_to_camera(u: np.ndarray, v: np.ndarray, z: np.ndarray | float, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates u, v (any same shape S) at z-depth ``z`` (shape S or scalar) -> (*S, 3) OpenCV
    camera points: x = (u - cx) / fx * z, y = (v - cy) / fy * z."""
    z = np.broadcast_to(z, np.shape(u))
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)


def camera_to_pixels(cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., N, 3) OpenCV camera points -> (u, v, z), each (..., N): pixel coordinates and camera depth.

    K: (3, 3), or (..., 3, 3) batched with ``cam`` (one camera per leading index). Points with z <= 0
    get meaningless u, v (inf/nan at z = 0; callers mask on z)."""
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[..., 0, 0, None] * cam[..., 0] / z + K[..., 0, 2, None]
        v = K[..., 1, 1, None] * cam[..., 1] / z + K[..., 1, 2, None]
    return u, v, z


def pixel_rays_camera(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 camera-space directions with z = 1 for every pixel centre."""
    u = np.arange(width, dtype=np.float32)
    v = np.arange(height, dtype=np.float32)
    uu, vv = np.meshgrid(u, v)
    return pixels_to_camera(uu, vv, np.float32(1.0), K).astype(np.float32)


def valid_depth_mask(depth: np.ndarray, max_depth: float = np.inf) -> np.ndarray:
    """(H, W) bool: finite, > 0 and < max_depth. NaN/inf and 0 are invalid."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0) & (depth < max_depth)


def depth_edge_mask(depth: np.ndarray, max_log_jump: float) -> np.ndarray:
    """(H, W) bool: pixels at a depth discontinuity — their log z-depth differs from a 4-neighbour's by more
    than ``max_log_jump`` (0.1 = 10 %), or a 4-neighbour has no depth (0/NaN/inf). Blended or noisy depth puts
    "flying pixels" between the near and the far surface there."""
    valid = valid_depth_mask(depth)
    logd = np.log(np.where(valid, depth, 1.0))
    edge = np.zeros(depth.shape, bool)
    for axis in (0, 1):
        jump = (np.abs(np.diff(logd, axis=axis)) > max_log_jump) | (np.diff(valid, axis=axis) != 0)
        lo, hi = [slice(None), slice(None)], [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= jump
        edge[tuple(hi)] |= jump
    return edge


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, max_depth: float = np.inf,
                    stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Lift a z-depth image to world points.

    depth: (H, W) z-depth metres (0/NaN/inf invalid). Returns (points (N, 3) float64 world,
    flat pixel indices (N,) int64 into the (H, W) image of the valid pixels). ``stride`` subsamples.
    """
    h, w = depth.shape
    if stride > 1:
        sub = depth[::stride, ::stride]
        mask = valid_depth_mask(sub, max_depth)
        vv, uu = np.nonzero(mask)
        z = sub[vv, uu].astype(np.float64)
        u_full, v_full = uu * stride, vv * stride
    else:
        mask = valid_depth_mask(depth, max_depth)
        vv, uu = np.nonzero(mask)
        z = depth[vv, uu].astype(np.float64)
        u_full, v_full = uu, vv
    cam = pixels_to_camera(u_full, v_full, z, K)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return world, v_full.astype(np.int64) * w + u_full.astype(np.int64)


def world_to_camera(points: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> (N, 3) OpenCV camera coordinates."""
    return points @ w2c[:3, :3].T + w2c[:3, 3]


def world_to_pixels(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) world points. Returns (uv (N, 2) float pixel coordinates, z (N,) camera depth).

    Points behind the camera get z <= 0; their uv are meaningless (callers mask on z > 0).
    """
    cam = world_to_camera(points, w2c)
    z = cam[:, 2].copy()
    cam[:, 2] = np.where(np.abs(z) < 1e-9, 1e-9, z)  # finite uv everywhere
    u, v, _ = camera_to_pixels(cam, K)
    return np.stack([u, v], axis=1), z


def points_to_depth(points: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 3) world points -> (height, width) float32 z-depth image of the nearest point per pixel (0 where
    none lands): the depth of a frame that came as a point cloud (``Frame.world_points``)."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    uv, z = world_to_pixels(points, np.asarray(K, np.float64), invert_pose(np.asarray(c2w, np.float64)))
    u, v = (np.floor(uv + 0.5).astype(np.int64)).T  # pixel centres sit at integer coordinates
    keep = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat, z = v[keep] * width + u[keep], z[keep]
    depth = np.full(width * height, np.inf)
    np.minimum.at(depth, flat, z)
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(height, width).astype(np.float32)


def reproject_depth(depth_src: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray,
                    depth_dst: np.ndarray, K_dst: np.ndarray, c2w_dst: np.ndarray,
                    max_depth: float = np.inf, stride: int = 1, relative: bool = False) -> np.ndarray:
    """Lift ``depth_src`` to the world, project into the destination camera and compare.

    Returns (M,) float64 |z_projected - depth_dst| (``relative``: divided by z_projected) for the source
    pixels that land on a valid destination pixel (nearest-pixel lookup). A correct pair of poses gives
    small values. :func:`reprojection_errors` also says which source pixels they are.
    """
    return reprojection_errors(depth_src, K_src, c2w_src, depth_dst, K_dst, c2w_dst, max_depth, stride, relative)[1]


def reprojection_errors(depth_src: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray,
                        depth_dst: np.ndarray, K_dst: np.ndarray, c2w_dst: np.ndarray,
                        max_depth: float = np.inf, stride: int = 1, relative: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reproject_depth` with the pixels: (flat indices (M,) int64 into the (H, W) source image, errors
    (M,) float64) for the source pixels that land on a valid destination pixel."""
    flat, z, inside, landed = depth_landing(depth_src, K_src, c2w_src, depth_dst, K_dst, c2w_dst, max_depth, stride)
    ok = inside & valid_depth_mask(landed, max_depth)
    err = np.abs(z[ok] - landed[ok])
    return flat[ok], (err / z[ok] if relative else err)


def depth_landing(depth_src: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray,
                  depth_dst: np.ndarray, K_dst: np.ndarray, c2w_dst: np.ndarray,
                  max_depth: float = np.inf, stride: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lift ``depth_src`` (valid pixels, every ``stride``-th) to the world and project it into the destination
    camera -> (flat indices (N,) int64 into the source image, the points' z-depth in the destination camera (N,),
    whether each lands in its view, in front of it (N,) bool, the destination's depth at the nearest pixel where it
    lands (N,) float64, 0 elsewhere)."""
    pts, flat = unproject_depth(depth_src, K_src, c2w_src, max_depth=max_depth, stride=stride)
    uv, z = world_to_pixels(pts, K_dst, invert_pose(c2w_dst))
    h, w = depth_dst.shape
    u = np.rint(uv[:, 0]).astype(np.int64)
    v = np.rint(uv[:, 1]).astype(np.int64)
    inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    landed = np.zeros(len(z), dtype=np.float64)
    landed[inside] = depth_dst[v[inside], u[inside]]
    return flat, z, inside, landed
