"""Walk a procedural world headless with the Python API and export the fused map as PLY and GLB.

    python3 examples/headless_walk.py --out out/walk            # then open out/walk/scene.glb in any viewer

A Scene runs model -> fuse -> remember for every action; make_scene gives it geometry-aware memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scenes.factory import make_scene
from scenes.scene import SceneConfig
from worldmodel.actions import parse_actions


def main(out: Path, actions: str, size: tuple[int, int], voxel: float) -> None:
    scene = make_scene("procedural", seed=0, size=size, config=SceneConfig(voxel_size=voxel))
    for step in scene.steps(parse_actions(actions)):  # each step as it is made (run() returns the last)
        print(f"frame {step.frame.index}: +{step.fused.voxels_new} voxels, "
              f"memory {step.memory_indices} (fuse {step.fuse_ms:.1f} ms)")
    out.mkdir(parents=True, exist_ok=True)
    print("wrote", scene.export_ply(out / "scene.ply"), "and", scene.export_glb(out / "scene.glb"))
    print(f"{len(scene.map):,} map points, {scene.length} frames")
    scene.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/walk"))
    p.add_argument("--actions", default="(FN)(FN)(fLN)(FL)(FL)(FN)(FR)(FN)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    p.add_argument("--voxel", type=float, default=0.1, help="voxel size in metres")
    a = p.parse_args()
    try:
        main(a.out, a.actions, tuple(a.size), a.voxel)
    except (ValueError, OSError) as e:  # a bad folder, action string, size or output path: one line
        raise SystemExit(f"error: {e}") from None
