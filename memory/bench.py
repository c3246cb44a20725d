"""Bench section "memory" (``python launch.py bench --only memory``): retrieval latency against bank size
and cache-render time against map size. Prints through studio/bench.py; never asserts.

The map is real: a seeded procedural walk (256x256 frames) fused at 0.1 m until it holds about 1M voxels
(a copy is taken at 100k). The banks of 100 / 1k / 10k keyframes are the walk's own keyframes, repeated with
jittered poses (yaw ~ N(0, 0.3 rad), position ~ N(0, 1 m)) and later frame indices past the walk's count.
Targets are the walk's poses turned by a random yaw. Retrieval uses rule "ours" with k = 4.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable

import numpy as np

_MAP_POINTS = 1_000_000


def _build_walk(quick: bool):
    """Fuse a procedural walk (256x256 frames) until the map has ~1M voxels, observing every frame.

    Returns (1M map, a copy of the map when it passed 100k, memory, poses (F, 4, 4), K, (width, height)).
    Quick mode takes 3 m / 30 degree steps (about 160 frames), full mode 1 m / 15 degree steps."""
    from tqdm import tqdm

    from memory.bank import GeometricMemory
    from recon.pointmap import VoxelPointMap
    from worldmodel.actions import generated_walk
    from worldmodel.actions import Kinematics
    from worldmodel.frame import Context
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    kin = Kinematics(step_m=3.0, yaw_deg=30.0) if quick else Kinematics(step_m=1.0, yaw_deg=15.0)
    world = ProceduralWorld(ProceduralConfig(width=256, height=256, kinematics=kin), seed=0)
    big, small = VoxelPointMap(0.1, 60.0), None
    memory = GeometricMemory()
    frame = world.reset(0)
    poses = []
    bar = tqdm(total=_MAP_POINTS, desc="memory bench map", unit="pt", file=sys.stderr, mininterval=1.0)
    for i, action in enumerate(generated_walk("random", 4000, 1)):
        fused = big.fuse(frame.depth, frame.rgb, frame.K, frame.c2w, frame.index)
        if small is None and len(big) >= 100_000:
            small = VoxelPointMap.from_state_dict(big.state_dict())
        memory.observe(frame, i, fused, big)
        poses.append(frame.c2w)
        bar.update(len(big) - bar.n)
        if len(big) >= _MAP_POINTS:
            break
        frame = world.step(action, Context(recent=[frame]))
    bar.close()
    return big, small, memory, np.array(poses), frame.K, (frame.width, frame.height)


def _synthetic_bank(memory, n: int, rng: np.random.Generator):
    """A bank of ``n`` keyframes: the walk's keyframes, then copies with jittered poses and later indices."""
    from memory.bank import GeometricMemory
    from worldmodel.actions import yaw_rotation

    out = GeometricMemory(memory.config)
    base = len(memory)
    for j in range(n):
        i = j % base
        c2w = memory.poses[i].copy()
        if j >= base:
            c2w[:3, :3] = yaw_rotation(rng.normal(0.0, 0.3)) @ c2w[:3, :3]
            c2w[[0, 2], 3] += rng.normal(0.0, 1.0, size=2)
        rgb, depth = memory._thumb_rgb[i], memory._thumb_depth[i]
        out._append(j, j, c2w, memory._K[i], tuple(memory._size[i]), rgb, depth, memory.observed_rows(i))
    out._last_index = n + 10
    return out


def _targets(poses: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    from worldmodel.actions import yaw_rotation

    out = []
    for i in rng.integers(0, len(poses), size=n):
        c2w = poses[i].copy()
        c2w[:3, :3] = yaw_rotation(rng.uniform(-math.pi, math.pi)) @ c2w[:3, :3]
        out.append(c2w)
    return out


def _times_ms(fn: Callable[[np.ndarray], object], targets: list[np.ndarray]) -> np.ndarray:
    fn(targets[0])  # warm-up (lazy index builds)
    times = []
    for t in targets:
        t0 = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - t0)
    return 1e3 * np.array(times)


def bench_memory(quick: bool) -> dict[str, float]:
    """Retrieval p95 at 100 / 1k / 10k keyframes (rule "ours", k=4) and cache render at 128x128 for 100k / 1M
    points (median and p95); bank RAM at 10k keyframes."""
    from memory.cache import render_map_cache
    from memory.grid import MapGrid
    from worldmodel.camera import intrinsics_from_fov

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    big, small, memory, poses, K, (w, h) = _build_walk(quick)
    out: dict[str, float] = {"memory_map_points": float(len(big)), "memory_walk_frames": float(len(poses)),
                             "memory_walk_keyframes": float(len(memory)), "memory_build_s": time.perf_counter() - t0}
    n_queries = 100 if quick else 400
    targets = _targets(poses, n_queries, rng)
    for n, tag in ((100, "100"), (1000, "1k"), (10_000, "10k")):
        bank = _synthetic_bank(memory, n, rng)
        times = _times_ms(lambda c2w: bank.retrieve(c2w, K, w, h, big, 4), targets)
        out[f"retrieve_p95_ms_{tag}"] = float(np.percentile(times, 95))
        out[f"retrieve_median_ms_{tag}"] = float(np.median(times))
        if tag == "10k":
            out["memory_bank_mb_10k"] = bank.nbytes / 2**20
            out["memory_bank_kb_per_keyframe"] = bank.nbytes / n / 1024
            out["memory_index_mb_1m"] = bank.index_nbytes / 2**20
            for rule in ("deepverse", "worldmem"):
                few = targets[: max(10, n_queries // 10)]
                times = _times_ms(lambda c2w: bank.retrieve(c2w, K, w, h, big, 4, rule=rule), few)
                out[f"retrieve_median_ms_10k_{rule}"] = float(np.median(times))
    Kc = intrinsics_from_fov(128, 128, 70.0)
    for pmap, tag in ((small, "100k"), (big, "1m")):
        grid = MapGrid()
        grid.sync(pmap)
        for lod, suffix in ((0.0, ""), (1.0, "_lod1")):
            times = _times_ms(lambda c2w: render_map_cache(pmap, grid, Kc, c2w, 128, 128, lod_pixels=lod), targets)
            out[f"cache_render_ms_{tag}{suffix}"] = float(np.median(times))
            out[f"cache_render_p95_ms_{tag}{suffix}"] = float(np.percentile(times, 95))
    return out


def bench_sections() -> dict[str, Callable[[bool], dict[str, float]]]:
    return {"memory": bench_memory}
