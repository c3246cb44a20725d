"""`python launch.py bench`: speed and memory figures (targets in DESIGN.md). Prints a table; never asserts.

Each section is a function returning {metric: number}; ``--only a,b`` runs some of them. Timings are
medians over repetitions (the machine is noisy: compare ratios within one run).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from scenes.atomic import WriteError, writable_file, write_json_or_print
from studio.bench_util import peak_rss_mb


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def bench_procedural(quick: bool) -> dict[str, float]:
    """Procedural frame (ray cast + shade) at 256x256 and 512x512, median over a short walk."""
    from worldmodel.actions import generated_walk
    from worldmodel.frame import Context
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    out = {}
    for size in (256, 512):
        world = ProceduralWorld(ProceduralConfig(width=size, height=size), seed=0)
        frames = [world.reset(0)]
        for a in generated_walk("random", 10, 0):
            frames.append(world.step(a, Context(recent=frames[-1:])))
        poses = [f.c2w for f in frames]
        reps = 3 if quick else 10
        out[f"procedural_ms_{size}"] = float(np.median([_median_ms(lambda p=p: world.render(p), 1)
                                                        for p in poses[:reps] * 2]))
    return out


def bench_fusion(quick: bool) -> dict[str, float]:
    """Fusion ms per 256x256 frame after 10, 100 and 1000 frames of a wandering walk (flat = good).

    As the Scene fuses procedural frames: exact depth, so no free-space carving; ``fuse_carve_ms_*`` is the
    same walk fused with carving, as recorded or generated depth is."""
    from worldmodel.actions import generated_walk
    from recon.pointmap import VoxelPointMap
    from worldmodel.frame import Context
    from worldmodel.procedural import ProceduralWorld

    n = 300 if quick else 1000
    marks = [m for m in (10, 100, 1000) if m <= n]
    world = ProceduralWorld(seed=0)
    plain = VoxelPointMap(voxel_size=0.1, max_depth=60.0)
    carving = VoxelPointMap(voxel_size=0.1, max_depth=60.0, carve=True)
    frame = world.reset(0)
    times, carve_times, sizes = [], [], []
    from tqdm import tqdm

    walk = generated_walk("random", n, 1)
    for i in tqdm(range(n), desc="fusion walk", unit="frame", file=sys.stderr):
        for pmap, log in ((plain, times), (carving, carve_times)):
            t0 = time.perf_counter()
            pmap.fuse(frame.depth, frame.rgb, frame.K, frame.c2w, i)
            log.append(time.perf_counter() - t0)
        sizes.append(len(plain))
        frame = world.step(walk[i], Context(recent=[frame]))
    out = {}
    for m in marks:
        out[f"fuse_ms_at_{m}"] = 1e3 * float(np.median(times[max(0, m - 10):m]))
        out[f"fuse_carve_ms_at_{m}"] = 1e3 * float(np.median(carve_times[max(0, m - 10):m]))
        out[f"map_points_at_{m}"] = float(sizes[m - 1])
    out["map_mb_at_end"] = plain.nbytes / 2**20
    return out


def bench_export(quick: bool) -> dict[str, float]:
    """PLY and GLB export of a 5M-point map (synthetic points; files go to a temporary folder)."""
    from scenes.export import write_glb, write_ply

    n = 1_000_000 if quick else 5_000_000
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(n, 3)).astype(np.float32) * 20
    cols = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    tag = "1m" if quick else "5m"
    with tempfile.TemporaryDirectory() as d:
        ply = _median_ms(lambda: write_ply(Path(d) / "a.ply", pts, cols), 3) / 1e3
        glb = _median_ms(lambda: write_glb(Path(d) / "a.glb", pts, cols), 3) / 1e3
    return {f"ply_export_s_{tag}": ply, f"glb_export_s_{tag}": glb}


def bench_rss(quick: bool) -> dict[str, float]:
    """Peak RSS of a fresh ``launch.py run --steps 3000`` (procedural 256x256 random walk with geometry-aware
    memory, as run has by default; autosave on; every export but the MP4), read from the child's own rusage;
    --quick walks 300 steps."""
    import os
    import subprocess

    steps = 300 if quick else 3000
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="worldstudio-bench-rss-") as tmp:
        proc = subprocess.Popen([sys.executable, str(root / "launch.py"), "run", "--steps", str(steps), "--walk",
                                 "random", "--out", tmp, "--no-video"], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"launch.py run --steps {steps} failed with exit code {proc.returncode}")
    return {f"rss_mb_{steps}_steps": usage.ru_maxrss / 1024.0}


SECTIONS: dict[str, Callable[[bool], dict[str, float]]] = {
    "procedural": bench_procedural,
    "fusion": bench_fusion,
    "export": bench_export,
    "rss": bench_rss,
}


def register_section(name: str, fn: Callable[[bool], dict[str, float]]) -> None:
    SECTIONS[name] = fn


def _load_optional_sections() -> None:
    """Sections owned by other layers register here (each module exposes ``bench_sections()``)."""
    import importlib

    for module in ("memory.bench", "learn.bench", "studio.bench_studio"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue
            raise
        for name, fn in mod.bench_sections().items():
            SECTIONS[name] = fn


def main(args) -> int:
    _load_optional_sections()
    names = list(SECTIONS) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        what = f"unknown bench section(s) {unknown}" if unknown else "--only names no section"
        print(f"error: {what}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.json:  # found now, not after the whole bench
        try:
            writable_file(args.json, "--json")
        except WriteError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    results: dict[str, float] = {}
    failed = []
    for name in names:
        t0 = time.perf_counter()
        try:
            results.update(SECTIONS[name](args.quick))
        except Exception as e:  # noqa: BLE001 - one section's failure must not lose the others' figures
            failed.append(name)
            print(f"error: bench section {name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                  file=sys.stderr)
            continue
        print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results["peak_rss_mb"] = peak_rss_mb()
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  ----------")
    for k, v in results.items():
        print(f"{k:<{width}}  {v:,.3f}" if abs(v) < 1e6 else f"{k:<{width}}  {v:,.0f}")
    if args.json:
        if not write_json_or_print(args.json, results):
            return 1
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if failed else 0
