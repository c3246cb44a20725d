"""The scripts in examples/ run as documented (each is also documentation, so each is run here)."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from scenes.export import read_ply
from scenes.session import load_session, save_session
from studio.bench_util import free_port
from worldmodel.actions import parse_actions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TUM = ROOT.parents[0] / "shared" / "data" / "tum_fr1_rpy"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def test_examples_are_short():
    for path in EXAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 60, path.name


def test_headless_walk_exports_ply_and_glb(tmp_path):
    res = run_example("headless_walk.py", "--out", str(tmp_path), "--size", "64", "48", "--actions", "(FN)(FL)(FN)")
    pts, cols = read_ply(tmp_path / "scene.ply")
    assert len(pts) > 1000 and f"{len(pts):,} map points, 4 frames" in res.stdout
    assert (tmp_path / "scene.glb").read_bytes()[:4] == b"glTF"


def test_custom_world_opens_in_the_studio_and_steps(tmp_path):
    module = runpy.run_path(str(EXAMPLES / "custom_world.py"))  # not __main__: nothing blocks
    port = free_port()
    studio = module["open_in_studio"](port)
    try:
        for a in parse_actions("(FN)(FL)(FL)(BN)"):
            studio.submit_step(a, None)
        assert studio.worker.wait_idle(60)
        scene = studio.worker.scene
        assert scene.length == 5 and scene.model.name == "boxroom" and studio.view.sink.points_shown > 0
        # every fused point lies on a wall of the room (exact depth; half a voxel of tolerance)
        pts, _ = scene.map_points()
        off = np.abs(np.abs(pts - module["CENTRE"]) - module["HALF"]).min(axis=1)
        assert len(pts) > 1000 and np.percentile(off, 99) <= 0.5 * scene.config.voxel_size
        assert scene.last_step.cache is not None and scene.last_step.agreement["coverage"] > 0.5
        again = load_session(save_session(scene, tmp_path / "room"))  # its sessions reopen (it is registered)
        assert again.model.name == "boxroom" and again.length == 5
        again.close()
    finally:
        studio.close()


def test_replay_memory_saves_the_cache_render(tmp_path):
    out = tmp_path / "cache.png"
    res = run_example("replay_memory.py", str(TUM), "--frames", "30", "--out", str(out))
    img = np.asarray(Image.open(out))
    assert img.shape == (96, 128, 3) and (img.sum(axis=2) > 0).mean() > 0.8
    assert res.stdout.count("keyframe: recorded frame") == 4


def test_continue_recording_remembers_the_recording(tmp_path):
    """30 TUM frames handed to the learned model (cut square, 128x128): steered back to four earlier recorded
    poses it shows the recorded views (17-20 dB against them); handed the last frame alone it guesses (7-11 dB)."""
    import re

    runs = {}
    for name, extra, handed in (("handed", (), 30), ("alone", ("--alone",), 1)):
        res = run_example("continue_recording.py", str(TUM), "--frames", "30", "--out", str(tmp_path / name), *extra)
        assert f"handed over {handed} recorded frame(s) at 128x128" in res.stdout
        runs[name] = [float(v) for v in re.findall(r"back at recorded frame \d+: ([\d.]+) dB", res.stdout)]
    assert len(runs["handed"]) == len(runs["alone"]) == 4
    assert all(h > 15 and h > a + 5 for h, a in zip(runs["handed"], runs["alone"])), runs
    pts, _ = read_ply(tmp_path / "handed" / "scene.ply")
    assert len(pts) > 1000 and (tmp_path / "handed" / "frames.mp4").stat().st_size > 0
