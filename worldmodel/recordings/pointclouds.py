"""Folders of per-frame PLY point clouds (DeepVerse ``--add_ply``, Aether), with their video.

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldmodel.camera import camera_to_pixels, intrinsics_from_fov, invert_pose, world_to_camera
from worldmodel.frame import Frame
from worldmodel.recordings.base import (Sequence, SequenceError, _K_from_config, _VideoPanels, _last_number,
                                        _natural_key, _visible, read_poses_file, up_rotation)


@dataclass(eq=False)
class _PlySequence(Sequence):
    """Per-frame world point clouds (DeepVerse / Aether outputs) with an optional video for the images."""

    PER_FRAME = ("ply_files", "video_index")

    ply_files: list[Path] = field(default_factory=list)
    video: Path | None = None
    video_index: list[int] = field(default_factory=list)
    video_panels: int | None = None
    K_override: np.ndarray | None = None
    _video: _VideoPanels | None = field(default=None, repr=False)  # the decoder, made at the first image

    def files(self, i: int) -> list[Path]:
        return [self.ply_files[i]] + ([self.video] if self.video else [])

    VIDEO_CACHE_FRAMES = 16  # decoded frames kept (a long video is never decoded into RAM whole)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def _video_frame(self, k: int) -> np.ndarray | None:
        """Left panel of video frame ``k`` (:class:`_VideoPanels`); None past the video's end (a note says so).
        SequenceError when the video cannot be decoded (at its start or part-way)."""
        if self.video is None:
            return None
        if self._video is None:
            self._video = _VideoPanels(self.video, self.video_panels, fix="remove the video to use placeholder images")
        ended = self._video.ended_at
        img = self._video.frame(k, self.VIDEO_CACHE_FRAMES)
        if ended is None and self._video.ended_at is not None:  # the video is shorter than the PLY frames say
            self.notes.append(f"{self.video.name} ends at frame {self._video.ended_at}: later PLY frames get "
                              "placeholder images")
        return img

    def _read(self, i: int) -> Frame:
        pts, cols = read_ply_points(self.ply_files[i])
        A = up_rotation(self.world_up)
        pts = (pts.astype(np.float64) @ A[:3, :3].T).astype(np.float32)
        finite = np.isfinite(pts).all(axis=1)
        pts, cols = pts[finite], cols[finite]
        img = self._video_frame(self.video_index[i])
        c2w = self.c2ws[i].copy()
        if img is None:
            img = _placeholder_image(pts, cols, c2w)
        h, w = img.shape[:2]
        K = self.K_override if self.K_override is not None else intrinsics_from_fov(w, h, 60.0)
        return Frame(index=i, rgb=img, depth=np.zeros((h, w), np.float32), K=np.array(K, dtype=np.float64),
                     c2w=c2w, world_points=pts, world_colors=cols)


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A PLY point cloud (any variant open3d reads) -> (points (N, 3) float32, colours (N, 3) uint8, white if none)."""
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path), format="ply")
    pts = np.asarray(pcd.points, dtype=np.float32)
    if len(pts) == 0:
        raise SequenceError(f"cannot read {path}: no points in it (corrupt or not a point-cloud PLY); "
                            "copy it again or remove it")
    if pcd.has_colors():
        cols = np.clip(np.rint(np.asarray(pcd.colors) * 255.0), 0, 255).astype(np.uint8)
    else:
        cols = np.full((len(pts), 3), 255, np.uint8)
    return pts, cols


def _placeholder_image(pts: np.ndarray, cols: np.ndarray, c2w: np.ndarray, size=(128, 96)) -> np.ndarray:
    """A small (H, W, 3) uint8 preview: the points splatted from the frame's camera (60 degree view),
    or their mean colour when none is in view."""
    w, h = size
    K = intrinsics_from_fov(w, h, 60.0)
    mean = cols.mean(axis=0).astype(np.uint8) if len(cols) else np.array([128, 128, 128], np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = mean
    if len(pts):
        cam = world_to_camera(pts.astype(np.float64), invert_pose(c2w))
        front = cam[:, 2] > 1e-3
        uf, vf, z = camera_to_pixels(cam[front], K)
        c = cols[front]
        u, v = np.rint(uf).astype(np.int64), np.rint(vf).astype(np.int64)
        ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        order = np.argsort(-z[ok])  # far first, near last: nearest colour wins
        img[v[ok][order], u[ok][order]] = c[ok][order]
    return img


def _open_ply(folder: Path, cfg: dict, up: str) -> _PlySequence:
    plys = sorted(_visible(folder.glob("*.ply")), key=_natural_key)
    if not plys:
        raise SequenceError(f"{folder} holds no .ply files")
    videos = sorted(p for p in _visible(folder.iterdir())
                    if p.suffix.lower() in (".mp4", ".mov", ".avi", ".webm", ".mkv"))
    video = None
    if videos:  # prefer the video whose name the PLYs extend (DeepVerse: generated_video.mp4 + generated_video_frame8.ply)
        video = next((v for v in videos if plys[0].stem.startswith(v.stem)), videos[0])
    nums = [_last_number(p.stem[len(video.stem):] if video and p.stem.startswith(video.stem) else p.stem) for p in plys]
    video_index = nums if all(n is not None for n in nums) and len(set(nums)) == len(nums) else list(range(len(plys)))
    A = up_rotation(up)
    notes = []
    poses_path = folder / "poses.txt"
    if poses_path.is_file():
        poses = read_poses_file(poses_path)
        if len(poses) != len(plys):
            raise SequenceError(f"{poses_path} has {len(poses)} poses but the folder has {len(plys)} PLY files; "
                                "write one pose per PLY (file-name order) or delete poses.txt")
    else:
        poses = np.tile(np.eye(4), (len(plys), 1, 1))
        notes.append("no poses.txt: every frame gets the first camera's pose (identity in the source world)")
    panels = cfg.get("video_panels")
    return _PlySequence(
        path=folder, format="ply", c2ws=A @ poses, timestamps=np.asarray(video_index, dtype=np.float64),
        world_up=up, has_depth=False, notes=notes, ply_files=plys, video=video, video_index=list(video_index),
        video_panels=int(panels) if panels else None, K_override=_K_from_config(cfg, folder))
