"""Hand a recording over to the learned world model: it goes on from a recorded frame, with the frames before it
as its memory (what the studio's *Continue with the learned model from this frame* does), then walks on.

    python3 examples/continue_recording.py ../shared/data/tum_fr1_rpy --frames 40 --actions "(SL)(SL)(SR)(SR)"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scenes.factory import continue_with_learned_model, make_scene
from scenes.scene import SceneConfig
from worldmodel.actions import Action, parse_actions


def main(folder: Path, frames: int, actions: str, out: Path, voxel: float = 0.02) -> list[float]:
    """Returns, per generated frame, the share of its view that the map (the recording's frames) covered."""
    recording = make_scene(f"replay:{folder}?max_frames={frames}", config=SceneConfig(voxel_size=voxel))
    recording.run([Action("F", "N")] * (frames - 1))  # each step plays the next recorded frame
    learned = continue_with_learned_model(recording)  # from the last recorded frame, all of them as memory
    recording.close()
    print(f"handed over {learned.length} recorded frames at {learned.current.width}x{learned.current.height}")
    covered = []
    for step in learned.steps(parse_actions(actions)):
        covered.append(float(step.cache.valid.mean()))
        print(f"generated frame {step.frame.index}: the map covered {covered[-1]:.0%} of its view")
    out.mkdir(parents=True, exist_ok=True)
    print("wrote", learned.export_mp4(out / "frames.mp4"), "and", learned.export_ply(out / "scene.ply"))
    learned.close()
    return covered


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="TUM, 7-Scenes, generic or per-frame PLY folder")
    p.add_argument("--frames", type=int, default=40, help="how many recorded frames to hand over")
    p.add_argument("--actions", default="(SL)(SL)(SR)(SR)", help="what the learned world does next")
    p.add_argument("--out", type=Path, default=Path("out/continued"))
    p.add_argument("--voxel", type=float, default=0.02, help="voxel size in metres (a room: 0.02)")
    a = p.parse_args()
    main(a.folder, a.frames, a.actions, a.out, a.voxel)
