"""Replay a recorded RGB-D folder, then ask the geometry-aware memory about a camera pose: which keyframes
see what it would see, and what the fused map looks like from there (the cache render, saved as a PNG).

    python3 examples/replay_memory.py ../shared/data/tum_fr1_rpy --frames 40 --out cache.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from scenes.factory import make_scene
from scenes.scene import SceneConfig
from worldmodel.actions import Action


def main(folder: Path, frames: int, out: Path, voxel: float = 0.02) -> np.ndarray:
    """Returns the cache render's (h, w, 3) RGB (black where the map has nothing)."""
    scene = make_scene(f"replay:{folder}?max_frames={frames}", config=SceneConfig(voxel_size=voxel))
    scene.run([Action("F", "N")] * (frames - 1))  # each step plays the next recorded frame
    target = scene.frame_at(frames // 2)          # ask about a pose from the middle of the walk
    fids, scores, cache = scene.memory.build_context(target.c2w, target.K, target.width, target.height,
                                                     scene.map, k=4)
    for fid, score in zip(fids, scores):
        print(f"keyframe: recorded frame {scene.store.get(fid).index}, co-visibility {score:.2f}")
    rgb = np.where(cache.valid[..., None], cache.rgb, 0).astype(np.uint8)
    Image.fromarray(rgb).save(out)
    print(f"cache render {cache.width}x{cache.height}, {cache.valid.mean():.0%} covered -> {out}")
    scene.close()
    return rgb


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a recorded sequence folder (TUM, 7-Scenes, ScanNet, ...)")
    p.add_argument("--frames", type=int, default=40, help="how many recorded frames to fuse")
    p.add_argument("--out", type=Path, default=Path("cache.png"))
    p.add_argument("--voxel", type=float, default=0.02, help="voxel size in metres")
    a = p.parse_args()
    try:
        main(a.folder, a.frames, a.out, a.voxel)
    except (ValueError, OSError) as e:  # a bad folder, action string, size or output path: one line
        raise SystemExit(f"error: {e}") from None
