"""Bench section "neural": the learned model's step alone (``neural_fps_128``: generated frames per second at
128x128 with a real context: last frame, cache render and far field from a Scene with memory), and the precision
it ran in (``neural_bf16``: 1 for bf16 autocast, 0 for fp32; chosen by the machine, see
:func:`worldmodel.neural.net.bf16_is_fast`)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def bench_neural(quick: bool) -> dict[str, float]:
    from scenes.factory import make_scene
    from worldmodel.actions import generated_walk
    from worldmodel.frame import Context

    scene = make_scene("neural", 0)
    walk = generated_walk("random", 12 if quick else 30, 5)
    contexts = []
    try:
        for action in walk:
            last = scene.current
            step = scene.step(action)
            contexts.append((action, Context(recent=[last], cache=step.cache)))
        model = scene.model
        step_s, pose_s = [], []
        for action, context in contexts * (1 if quick else 2):
            t0 = time.perf_counter()
            model.predict_c2w(context.last, action)
            t1 = time.perf_counter()
            model.step(action, context)  # predicts the pose again, then generates the frame
            step_s.append(time.perf_counter() - t1)
            pose_s.append(t1 - t0)
    finally:
        scene.close()
    ms = 1e3 * float(np.median(step_s))
    return {"neural_step_ms_128": ms, "neural_fps_128": 1e3 / ms, "neural_pose_ms_128": 1e3 * float(np.median(pose_s)),
            "neural_bf16": float(model.bf16)}


def bench_sections() -> dict[str, Callable[[bool], dict[str, float]]]:
    return {"neural": bench_neural}
