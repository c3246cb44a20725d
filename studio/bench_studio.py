"""Bench section "studio": action -> frame sent latency and bytes streamed per step, against map size.

The map is pre-grown to 100k / 1M / 3M points with synthetic voxels on a plane far below the walk (so
the walk's own voxels stay new), then a short procedural walk is stepped through a real Studio (viser
server, no browser): latency = submit of a step command -> worker idle (model + memory + fuse + stream +
panels), bytes = what the map streamer sent for that step.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grow(scene, n_points: int) -> None:
    """Add about ``n_points`` voxels on a horizontal plane 200 m below the world (one fuse call per 500k)."""
    v = scene.map.voxel_size
    side = int(np.ceil(np.sqrt(n_points)))
    done = 0
    while done < n_points:
        idx = np.arange(done, min(n_points, done + 500_000))
        pts = np.stack([(idx % side) * v, np.full(len(idx), -200.0), (idx // side) * v], axis=1) + v / 2
        cols = np.full((len(idx), 3), 128, np.uint8)
        scene.map.fuse_points(pts, cols, frame_index=0)
        done += len(idx)


def bench_studio(quick: bool) -> dict[str, float]:
    from scenes.factory import make_scene
    from scenes.scene import SceneConfig
    from studio.app import Studio
    from worldmodel.actions import generated_walk

    out: dict[str, float] = {}
    sizes = {"100k": 100_000, "1m": 1_000_000} if quick else {"100k": 100_000, "1m": 1_000_000, "3m": 3_000_000}
    steps = 8 if quick else 20
    for tag, n in sizes.items():
        scene = make_scene("procedural", 0, config=SceneConfig(voxel_size=0.1))  # with memory, as the studio
        _grow(scene, n)
        studio = Studio(scene, port=_free_port())
        studio.worker.wait_idle(120)
        latencies, sent = [], []
        for action in generated_walk("random", steps, 3):
            t0 = time.perf_counter()
            studio.submit_step(action, None)
            studio.worker.wait_idle(60)
            latencies.append(time.perf_counter() - t0)
            sent.append(studio.view.last_stream_bytes)
        studio.close()
        scene.close()
        out[f"studio_step_ms_{tag}"] = 1e3 * float(np.median(latencies))
        out[f"stream_bytes_per_step_{tag}"] = float(np.median(sent))
    out["studio_step_ms"] = out["studio_step_ms_100k"]
    return out


def bench_studio_neural(quick: bool) -> dict[str, float]:
    """The studio's whole step with the learned model (model + memory + fuse + stream + panels), fresh world,
    measured in a fresh process set up as ``launch.py view`` sets itself up (torch's threads owned by the
    worker thread: :func:`studio.worker.hand_compute_threads_to_worker`; earlier sections of this process
    have run torch on the main thread)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_studio_neural_in_this_process, (quick,))


def _studio_neural_in_this_process(quick: bool) -> dict[str, float]:
    from scenes.factory import make_scene
    from studio.app import Studio
    from studio.worker import hand_compute_threads_to_worker
    from worldmodel.actions import generated_walk

    hand_compute_threads_to_worker()
    scene = make_scene("neural", 0)
    studio = Studio(scene, port=_free_port())
    studio.worker.wait_idle(120)
    latencies = []
    for action in generated_walk("random", 12 if quick else 30, 3):
        t0 = time.perf_counter()
        studio.submit_step(action, None)
        studio.worker.wait_idle(60)
        latencies.append(time.perf_counter() - t0)
    studio.close()
    scene.close()
    return {"studio_step_ms_neural": 1e3 * float(np.median(latencies[2:]))}


def bench_sections() -> dict[str, Callable[[bool], dict[str, float]]]:
    return {"studio": bench_studio, "studio_neural": bench_studio_neural}
