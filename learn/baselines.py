"""Baseline 'world models' for the evaluation table. Each follows the simulator's true trajectory (an oracle
pose, an advantage the learned model does not get) and makes frames only from what it has seen:

- ``repeat``: the last frame again;
- ``warp``: the last frame forward-warped into the new camera (holes stay empty);
- ``cache_fill``: the cache render of the fused map where it has a surface, the warped last frame elsewhere,
  and the far-field panorama where neither has anything.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from worldmodel.actions import Action, TargetPose
from worldmodel.frame import BaseWorldModel, Context, Frame
from worldmodel.neural.inputs import depth_to_tensor, forward_warp, image_to_tensor, tensor_to_image
from worldmodel.procedural import ProceduralWorld

BASELINES = ("repeat", "warp", "cache_fill")


def warp_frame(last: Frame, target_c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-warp ``last`` into ``target_c2w`` (same K): (rgb uint8, depth float32, mask bool)."""
    K = torch.from_numpy(np.asarray(last.K, np.float32))[None]
    w_rgb, w_depth, mask = forward_warp(image_to_tensor(last.rgb), depth_to_tensor(last.depth), K,
                                        torch.from_numpy(last.c2w)[None],
                                        torch.from_numpy(np.asarray(target_c2w, np.float64))[None])
    return tensor_to_image(w_rgb[0]), w_depth[0, 0].numpy(), mask[0, 0].numpy() > 0


class BaselineWorld(BaseWorldModel):
    """A baseline of :data:`BASELINES` driven along the simulator's poses (see the module docstring)."""

    exact_depth = False

    def __init__(self, kind: str, simulator: ProceduralWorld, first_frame: Frame | None = None):
        if kind not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
        self.name, self.kind, self.simulator = f"baseline-{kind}", kind, simulator
        self.kinematics = simulator.config.kinematics
        self.first_frame = first_frame  # where it starts, as a learned world handed a frame (else the simulator's)

    def describe(self) -> dict:
        return {"kind": "baseline", "baseline": self.kind}

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        if self.first_frame is not None:
            return dataclasses.replace(self.first_frame, index=0, action=None)
        return self.simulator.reset(seed, start)

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        return self.simulator.predict_c2w(last, action)

    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        last = context.last
        target = self.target_c2w(action, context)
        if self.kind == "repeat":
            return Frame(last.index + 1, last.rgb.copy(), last.depth.copy(), last.K.copy(), target, action,
                         zero_depth_is_sky=last.zero_depth_is_sky)
        rgb, depth, mask = warp_frame(last, target)
        cache = context.cache
        if self.kind == "cache_fill" and cache is not None and cache.rgb.shape == rgb.shape:
            valid = cache.valid
            rgb = np.where(valid[..., None], cache.rgb, rgb)
            depth = np.where(valid, cache.depth, depth).astype(np.float32)
            if cache.far_rgb is not None:
                far = cache.far_valid & ~valid & ~mask
                rgb = np.where(far[..., None], cache.far_rgb, rgb)
        # depth 0 here is a hole of the warp (unknown), not the sky: zero_depth_is_sky stays False
        return Frame(last.index + 1, rgb, depth.astype(np.float32), last.K.copy(), target, action)
