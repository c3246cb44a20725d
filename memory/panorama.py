"""Far-field memory: a panorama of everything the fused map does not keep.

The voxel map only fuses surfaces nearer than its ``max_depth`` (the studio's 60 m), so far towers, hills and the
sky seen on the way out would be gone on return. Beyond that range parallax is small for a walking camera, so the far
field is well described by colour as a function of view direction alone: an equirectangular panorama.

Every observed frame writes its far pixels (z-depth at or beyond the map's fuse range, and no depth where the
frame says that means sky: ``Frame.zero_depth_is_sky``; a sensor's dropouts are not far) into the panorama cell
of their world ray direction (the newest observation wins); rendering looks up the target
camera's ray directions. Cells: azimuth ``atan2(x, z)`` over the columns, elevation ``asin(y)`` (world +Y up)
over the rows.
"""

from __future__ import annotations

import numpy as np

from worldmodel.camera import pixel_rays_camera, valid_depth_mask


class FarFieldPanorama:
    """Direction -> colour map of the far field. ``rgb`` (rows, cols, 3) uint8, ``valid`` (rows, cols) bool."""

    def __init__(self, cols: int = 512, rows: int = 256):
        self.cols, self.rows = int(cols), int(rows)
        self.rgb = np.zeros((self.rows, self.cols, 3), np.uint8)
        self.valid = np.zeros((self.rows, self.cols), bool)

    def reset(self) -> None:
        self.rgb[:] = 0
        self.valid[:] = False

    def _cells(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> np.ndarray:
        """(H*W,) flat panorama cell of each pixel ray of camera (K, c2w)."""
        cam = pixel_rays_camera(np.asarray(K, np.float64), int(width), int(height)).reshape(-1, 3)
        d = cam @ np.asarray(c2w, np.float64)[:3, :3].T.astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        az = np.arctan2(d[:, 0], d[:, 2])
        el = np.arcsin(np.clip(d[:, 1], -1.0, 1.0))
        col = np.clip(((az + np.pi) * (self.cols / (2 * np.pi))).astype(np.int64), 0, self.cols - 1)
        row = np.clip(((np.pi / 2 - el) * (self.rows / np.pi)).astype(np.int64), 0, self.rows - 1)
        return row * self.cols + col

    def observe(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, min_depth: float,
                zero_is_far: bool) -> None:
        """Write the far pixels of a frame: rgb (H, W, 3) uint8, depth (H, W) z-depth; far = a valid z-depth >=
        ``min_depth`` (metres: the fuse range of the map it complements), and no depth (0, NaN) when
        ``zero_is_far`` (the frame's sky; else no depth is no measurement and is left out). Invalid depth (inf,
        negative) is neither."""
        if not np.isfinite(np.asarray(c2w)).all():
            return
        h, w = depth.shape
        with np.errstate(invalid="ignore"):
            far = (valid_depth_mask(depth) & (depth >= min_depth)) | (zero_is_far & ((depth == 0) | np.isnan(depth)))
        cells = self._cells(K, c2w, w, h)[far.reshape(-1)]
        self.rgb.reshape(-1, 3)[cells] = rgb.reshape(-1, 3)[far.reshape(-1)]
        self.valid.reshape(-1)[cells] = True

    def render(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """The far field seen from camera (K, c2w): (rgb (H, W, 3) uint8, valid (H, W) bool)."""
        cells = self._cells(K, c2w, width, height)
        return (self.rgb.reshape(-1, 3)[cells].reshape(height, width, 3),
                self.valid.reshape(-1)[cells].reshape(height, width))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"far_rgb": self.rgb.copy(), "far_valid": self.valid.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        rgb, valid = state["far_rgb"], state["far_valid"]
        if rgb.shape != self.rgb.shape or valid.shape != self.valid.shape or rgb.dtype != np.uint8:
            raise ValueError(f"far-field panorama must be {self.rgb.shape} uint8 with a {self.valid.shape} mask, "
                             f"got {rgb.shape} {rgb.dtype}")
        self.rgb[:], self.valid[:] = rgb, valid.astype(bool)
