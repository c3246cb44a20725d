"""Hand a recording over to the learned world model: it goes on from the last recorded frame with the frames before
it as its memory (what the studio's *Continue with the learned model from this frame* does). Steered back to where
earlier frames were recorded, it shows what they saw; with --alone (handed the last frame only) it must guess.

    python3 examples/continue_recording.py ../shared/data/tum_fr1_rpy --frames 30 [--alone]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from memory.metrics import psnr
from scenes.factory import continue_with_learned_model, make_scene
from scenes.scene import SceneConfig
from worldmodel.actions import Action, TargetPose, parse_actions
from worldmodel.neural.world import NeuralWorld


def main(folder: Path, frames: int, out: Path, actions: str, alone: bool = False, voxel: float = 0.02) -> list[float]:
    """Returns the PSNR (dB) of the views made at four earlier recorded poses against those recorded frames."""
    config = SceneConfig(voxel_size=voxel)  # a room: 2 cm voxels
    recording = make_scene(f"replay:{folder}?max_frames={frames}", config=config)
    recording.run([Action("F", "N")] * (frames - 1))  # each step plays the next recorded frame
    learned = (make_scene(NeuralWorld(first_frame=recording.current, kinematics=recording.model.kinematics),
                          config=config) if alone else continue_with_learned_model(recording))
    print(f"handed over {learned.length} recorded frame(s) at {learned.current.width}x{learned.current.height}")
    scores = []
    for k in range(0, frames - 1, max(1, (frames - 1) // 4))[:4]:
        recorded = recording.frame_at(k)
        made = learned.step(TargetPose(recorded.c2w)).frame  # steered back to where frame k was recorded
        scores.append(psnr(made.rgb, learned.model.adopt(recorded).rgb))
        print(f"back at recorded frame {k}: {scores[-1]:.1f} dB against the recording")
    recording.close()
    learned.run(parse_actions(actions))  # and on
    out.mkdir(parents=True, exist_ok=True)
    print("wrote", learned.export_mp4(out / "frames.mp4"), "and", learned.export_ply(out / "scene.ply"))
    learned.close()
    return scores


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a recorded sequence folder (TUM, 7-Scenes, ScanNet, ...)")
    p.add_argument("--frames", type=int, default=30, help="how many recorded frames to hand over")
    p.add_argument("--actions", default="(SL)(SL)(SR)(SR)", help="what the learned world does next")
    p.add_argument("--alone", action="store_true", help="hand over the last frame only (for comparison)")
    p.add_argument("--out", type=Path, default=Path("out/continued"))
    a = p.parse_args()
    try:
        main(a.folder, a.frames, a.out, a.actions, a.alone)
    except (ValueError, OSError) as e:  # a bad folder, action string, size or output path: one line
        raise SystemExit(f"error: {e}") from None
