"""`python launch.py eval`: autoregressive rollouts of the learned model on held-out seeds, against the simulator.

For each held-out seed a loop walk (out along a wandering path with turns, then back along the same poses
with the same headings: A -> B -> A, longer than any context the model sees) is first driven through the
simulator, which fixes the action sequence and the true poses. Every mode then replays those actions in its
own Scene (its frames fill its own map and memory):

- ``memory_on``: the learned model with the memory inputs (cache render + far field);
- ``memory_off``: the same network with no memory: its inputs zeroed, and no map for the camera to ride the
  ground on (the pose head alone places it), so its path differs too;
- baselines on the simulator's poses (:mod:`learn.baselines`): ``repeat``, ``warp``, ``cache_fill``;
- ``memory_on_true_out`` / ``memory_off_true_out`` / ``cache_fill_true_out``: WorldMem's protocol (memory of
  real frames, generation beyond the context). The way out is the simulator's own frames at its poses, handed
  to the mode's world as the studio's *Continue with the learned model* hands a walk (``Scene.reset(prelude=)``:
  observed frames, fused into the map as a recording's would be); from the turn the learned model makes every
  frame of the return, with the memory inputs on / zeroed, or the cache + fill baseline does (on the true
  poses). Only
  the return counts in these modes' metrics: what the model recalls of places it was shown, apart from what it
  made up on the way out (which bounds ``memory_on``'s revisits). With more than
  ``MemoryConfig.observed_layer_frames`` observed frames the memory keeps no observed layer to win the
  render (as for a recording); the camera rides the ground of the map as it stood before the model's first
  frame (``GeometricMemory.ground``).

Each generated frame is compared with the simulator's render *at the pose the mode reached*. Metrics:
``psnr``, ``ssim`` (data range 1), ``depth_absrel`` and ``depth_delta1`` (pixels where both have a surface;
per frame, then the mean over frames), ``depth_absrel_covered`` / ``depth_absrel_new`` (the same, split by
whether the cache render had a surface at the pixel), ``depth_absrel_median`` (the median over frames: a few
frames whose camera stands against a surface the simulator has and the model does not can move the mean
several-fold),
``pose_drift_pct`` (final position error / path length, %), ``eye_height_err_m`` (mean distance of the
camera's height from the simulator's eye height over the true ground under it: does the camera ride the
terrain, as the simulator's does), ``sharpness_ratio_new`` (mean gradient magnitude
of generated over true pixels where the cache had nothing), PSNR split by cache-covered / uncovered pixels,
and on the *revisits* — return-half steps whose true pose is within 0.75 m (position plus a heading term) of a
true pose of the way out, the same steps for every mode: ``revisit_psnr`` (vs the simulator),
``revisit_self_psnr`` (vs the frame the mode made at that outbound step — reported beside, never alone: a blur
scores high on it), ``revisit_far_psnr`` (pixels beyond the fuse range: far towers and sky),
``revisit_outbound_psnr`` (the outbound frames those revisits match, vs the simulator: what giving back the
mode's own frames of the way out would score; this and ``revisit_self_psnr`` leave out the revisit that
matches the start frame, which no mode made — memory can recall no better than what was made),
``revisit_psnr_start_seen`` / ``revisit_psnr_unseen`` (surfaces within the fuse range that the simulator's start
frame saw / did not see: memory can give back the first, the second was made on the way out),
``revisit_silhouette_share`` / ``revisit_silhouette_err_share`` (the share of revisit pixels where the mode shows
sky and the world a surface or the other way round — an object missed or made up — and the share of the
revisits' squared colour error they carry), ``memory_share`` / ``revisit_memory_share`` (the learned modes' share
of pixels copied from the map, over all steps / the revisits: ``StepResult.pixel_sources``), and, per walk,
``revisit_start_seen`` (share of the true return views' surface pixels that the start frame, the only frame the
simulator made, saw: the rest was generated on the way out, so the truth there was never shown).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from learn.baselines import BASELINES, BaselineWorld
from learn.data import Pilot, WalkSpec, walk_start
from memory.metrics import psnr
from scenes.atomic import WriteError, writable_file, writable_folder, write_json_or_print
from worldmodel.actions import Kinematics
from worldmodel.frame import Context, Frame

if TYPE_CHECKING:
    from worldmodel.neural.world import NeuralWorld
    from worldmodel.procedural import ProceduralWorld

EVAL_SEEDS_START = 0  # held out: training uses 1000+, validation 100..107
TRUE_OUTBOUND = "_true_out"  # a mode's suffix: the way out is the simulator's (see the module docstring)
TRUE_OUTBOUND_MODES = ("memory_on_true_out", "memory_off_true_out", "cache_fill_true_out")
MODES = ("memory_on", "memory_off") + BASELINES + TRUE_OUTBOUND_MODES
MODEL_MODES = ("memory_on", "memory_off", "memory_on_true_out", "memory_off_true_out")  # they load the weights
NO_MEMORY_MODES = ("memory_off", "memory_off_true_out", "repeat", "warp")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (H, W, 3) uint8 images (Gaussian 11x11 window, sigma 1.5, data range 1; float64).

    The window is separable: the five local moments are blurred along rows, then columns, in one grouped
    convolution each (the same values as the 11x11 window to 1e-15, 10x faster: an 11x11 float64 convolution
    has no fast kernel on the CPU, and the eval's SSIM took 40 % of its time)."""
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double() / 255
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (1, 15, H, W)
    c = moments.shape[1]
    blurred = F.conv2d(F.conv2d(moments, g.view(1, 1, 1, 11).expand(c, 1, 1, 11), groups=c),
                       g.view(1, 1, 11, 1).expand(c, 1, 11, 1), groups=c)
    mx, my, xx, yy, xy = blurred.split(3, dim=1)
    vx, vy, cxy = xx - mx ** 2, yy - my ** 2, xy - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


def gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    """(H, W) mean absolute forward difference of a uint8 image (0 on the last row/column)."""
    g = rgb.astype(np.float32).mean(-1) / 255
    out = np.zeros_like(g)
    out[:-1, :-1] = np.abs(g[1:, :-1] - g[:-1, :-1]) + np.abs(g[:-1, 1:] - g[:-1, :-1])
    return out


@dataclass
class WalkRecord:
    """One mode's rollout of one walk: per step frames, truth at the reached poses, cache coverage."""

    frames: list = field(default_factory=list)
    truth: list = field(default_factory=list)        # (rgb, depth) of the simulator at the frame's pose
    covered: list = field(default_factory=list)      # (H, W) bool: cache render had a surface
    cache: list = field(default_factory=list)        # cache rgb (for the contact sheet)
    true_poses: list = field(default_factory=list)   # the simulator's own trajectory under the actions
    eye_height_err: list = field(default_factory=list)  # |camera height - (true ground + eye height)|, metres
    memory_share: list = field(default_factory=list)  # share of the frame's pixels copied from the map (nan: unsaid)


def simulator_walk(seed: int, steps: int, size: int, kinematics: Kinematics):
    """Drive the simulator along a retrace loop -> (actions, true c2w list (steps + 1), return_from, start c2w,
    the simulator's frames (steps + 1): the first is the one view of the world every mode is given, those up to
    ``return_from`` the way out the true-outbound modes are shown)."""
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    world = ProceduralWorld(ProceduralConfig(width=size, height=size, kinematics=kinematics), seed=seed)
    start = walk_start(world, seed)
    frames = [world.reset(seed, start)]
    pilot = Pilot(WalkSpec(seed, "retrace", steps, size), kinematics)
    actions = []
    for t in range(steps):
        actions.append(pilot.next(t, frames[-1].c2w))
        frames.append(world.step(actions[-1], Context(recent=[frames[-1]])))
    return actions, [f.c2w for f in frames], pilot.return_from, start, frames


def rollout(mode: str, seed: int, actions, start: np.ndarray, weights, size: int, kinematics: Kinematics,
            progress=None, context_noise: float | None = None, shown: list[Frame] = ()) -> WalkRecord:
    """Replay ``actions`` with one mode in its own Scene; record frames and the truth at their poses.
    ``shown``: the simulator's frames of the way out (frame 0 to the turn), handed to a true-outbound mode's
    world as the studio's *Continue with the learned model* hands a walk (``Scene.reset(prelude=)``): it goes on
    from the last with the others as its own; they are recorded as they are (the metrics leave them out)."""
    from memory.bank import GeometricMemory, MemoryConfig
    from scenes.scene import Scene, SceneConfig
    from worldmodel.neural.world import NeuralWorld
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    def simulator() -> ProceduralWorld:  # each world its own (a simulator keeps the state of its walk)
        return ProceduralWorld(ProceduralConfig(width=size, height=size, kinematics=kinematics), seed=seed)

    sim = simulator()  # the truth at the poses the mode reaches
    handed = list(shown) if mode in TRUE_OUTBOUND_MODES else []
    if mode in TRUE_OUTBOUND_MODES and not handed:
        raise ValueError(f"the {mode} mode needs the way out it is shown (shown=)")
    if mode in MODEL_MODES:
        model = NeuralWorld.from_pretrained(weights, seed=seed, kinematics=kinematics, context_noise=context_noise,
                                            first_frame=handed[-1] if handed else None,
                                            eye_height=sim.walker_eye_height)  # (a walker's frames are handed)
    else:
        model = BaselineWorld(mode.removesuffix(TRUE_OUTBOUND), simulator(), first_frame=handed[-1] if handed else None)
    memory = None if mode in NO_MEMORY_MODES else GeometricMemory(MemoryConfig())
    scene = Scene(model, SceneConfig(memory_k=4 if memory is not None else 0), memory=memory)
    rec = WalkRecord()

    def record(f: Frame, cache, sources: np.ndarray | None = None) -> None:
        rec.frames.append(f)
        rec.memory_share.append(float(sources[..., 2].mean()) if sources is not None else float("nan"))
        rec.truth.append(sim.render(f.c2w))
        x, y, z = f.c2w[:3, 3]
        rec.eye_height_err.append(abs(y - float(sim.terrain_height(x, z)) - sim.config.eye_height))
        same_size = cache is not None and cache.depth.shape == f.depth.shape
        rec.covered.append(cache.valid if same_size else np.zeros(f.depth.shape, bool))
        rec.cache.append(cache.rgb if same_size else np.zeros_like(f.rgb))
        if progress is not None:
            progress()

    try:
        scene.reset(seed, None if handed else start, prelude=handed[:-1])  # handed: from the turn's frame
        for f in handed[1:]:
            record(f, None)
        for a in actions[max(0, len(handed) - 1):]:
            result = scene.step(a)
            record(result.frame, result.cache, result.pixel_sources)
    finally:
        scene.close()
    return rec


def revisit_pairs(true_poses: list[np.ndarray], return_from: int, radius: float = 0.75) -> list[tuple[int, int]]:
    """(return frame i, matching outbound frame j) for every return-half frame whose true pose lies within
    ``radius`` of an outbound one (distance in m + 2 (1 - cos heading change)); j = -1 is the start frame.
    Frame i's true pose is ``true_poses[i + 1]``."""
    out = np.array([p[:3, 3] for p in true_poses[:return_from + 1]])
    out_fwd = np.array([p[:3, 2] for p in true_poses[:return_from + 1]])
    pairs = []
    for i in range(return_from, len(true_poses) - 1):
        pose = true_poses[i + 1]
        d = np.linalg.norm(out - pose[:3, 3], axis=1) + 2.0 * (1 - out_fwd @ pose[:3, 2])
        k = int(np.argmin(d))
        if d[k] < radius:
            pairs.append((i, k - 1))
    return pairs


def walk_metrics(rec: WalkRecord, true_poses: list[np.ndarray], return_from: int, first: Frame | None = None,
                 max_depth: float = 60.0, generated_from: int = 0) -> dict:
    """Per-walk metrics of one mode (see the module docstring); ``first`` (the simulator's start frame) adds
    the revisits' PSNR on surfaces it saw / did not see. Steps before ``generated_from`` are the simulator's
    frames (the true-outbound modes): left out of every metric, their per-step PSNR nan."""
    step_psnr, ssim_v, cov_psnr, new_psnr, absrel, delta1, sharp_g, sharp_t = ([] for _ in range(8))
    absrel_cov, absrel_new = [], []
    for t, (f, (t_rgb, t_depth), cov) in enumerate(zip(rec.frames, rec.truth, rec.covered)):
        if t < generated_from:
            step_psnr.append(float("nan"))
            continue
        step_psnr.append(psnr(f.rgb, t_rgb))
        ssim_v.append(ssim(f.rgb, t_rgb))
        cov_psnr.append(psnr(f.rgb, t_rgb, cov))
        new_psnr.append(psnr(f.rgb, t_rgb, ~cov))
        both = (t_depth > 0) & (f.depth > 0)
        if both.any():
            rel = np.abs(f.depth[both] - t_depth[both]) / t_depth[both]
            ratio = np.maximum(f.depth[both] / t_depth[both], t_depth[both] / f.depth[both])
            absrel.append(float(rel.mean()))
            for region, out in ((cov[both], absrel_cov), (~cov[both], absrel_new)):
                if region.any():
                    out.append(float(rel[region].mean()))
            delta1.append(float((ratio < 1.25).mean()))
        new = ~cov
        new[-1, :] = new[:, -1] = False
        if new.sum() > 100:
            sharp_g.append(float(gradient_magnitude(f.rgb)[new].mean()))
            sharp_t.append(float(gradient_magnitude(t_rgb)[new].mean()))
    path = sum(np.linalg.norm(true_poses[i + 1][:3, 3] - true_poses[i][:3, 3])
               for i in range(generated_from, len(true_poses) - 1))  # the path the mode walked itself
    drift = np.linalg.norm(rec.frames[-1].c2w[:3, 3] - true_poses[-1][:3, 3])
    # revisits: return-half frames whose true pose matches a true outbound pose (frame i sits at true_poses[i + 1])
    revisit, far_psnr, self_psnr, outbound_psnr, seen_psnr, unseen_psnr, revisit_memory = ([] for _ in range(7))
    silhouette_px = silhouette_err = total_px = total_err = 0.0
    pairs = revisit_pairs(true_poses, return_from)
    shares = rec.memory_share or [float("nan")] * len(rec.frames)  # (a record made without them: not said)
    for i, j in pairs:
        f, (t_rgb, t_depth) = rec.frames[i], rec.truth[i]
        revisit.append(step_psnr[i])
        revisit_memory.append(shares[i])
        far = (t_depth <= 0) | (t_depth >= max_depth)
        far_psnr.append(psnr(f.rgb, t_rgb, far))
        if first is not None:
            seen = seen_by(first, t_depth, f.K, f.c2w, max_depth)
            seen_psnr.append(psnr(f.rgb, t_rgb, seen))
            unseen_psnr.append(psnr(f.rgb, t_rgb, ~far & ~seen))
        # sky where the world has a surface, or a surface where it has sky: an object made or missed
        silhouette = (t_depth > 0) != (f.depth > 0)
        sq_err = (((f.rgb.astype(np.float64) - t_rgb.astype(np.float64)) / 255.0) ** 2).mean(-1)
        silhouette_px += silhouette.sum()
        silhouette_err += sq_err[silhouette].sum()
        total_px += silhouette.size
        total_err += sq_err.sum()
        if j >= generated_from:  # an outbound frame the mode made (not the start frame, nor a true one)
            self_psnr.append(psnr(f.rgb, rec.frames[j].rgb))
            outbound_psnr.append(step_psnr[j])

    def mean(v):
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    return {"psnr": mean(step_psnr), "ssim": mean(ssim_v), "psnr_covered": mean(cov_psnr), "psnr_new": mean(new_psnr),
            "depth_absrel": mean(absrel), "depth_absrel_median": float(np.median(absrel)) if absrel else float("nan"),
            "depth_absrel_covered": mean(absrel_cov), "depth_absrel_new": mean(absrel_new),
            "depth_delta1": mean(delta1),
            "pose_drift_pct": float(100 * drift / max(path, 1e-6)), "eye_height_err_m": mean(rec.eye_height_err[generated_from:]),
            "sharpness_ratio_new": float(np.sum(sharp_g) / max(np.sum(sharp_t), 1e-9)) if sharp_t else float("nan"),
            "revisit_psnr": mean(revisit), "revisit_self_psnr": mean(self_psnr), "revisit_far_psnr": mean(far_psnr),
            "revisit_outbound_psnr": mean(outbound_psnr), "revisit_frames": float(len(pairs)),
            "revisit_psnr_start_seen": mean(seen_psnr), "revisit_psnr_unseen": mean(unseen_psnr),
            "revisit_silhouette_share": float(silhouette_px / total_px) if total_px else float("nan"),
            "revisit_silhouette_err_share": float(silhouette_err / total_err) if total_err > 0 else float("nan"),
            "memory_share": mean(shares[generated_from:]), "revisit_memory_share": mean(revisit_memory),
            "per_step_psnr": step_psnr}


def seen_by(first: Frame, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, max_depth: float = 60.0,
            tolerance: float = 0.05) -> np.ndarray:
    """(H, W) bool: the pixels of a true view (z-depth ``depth`` at camera ``K``, ``c2w``) whose surface, within
    ``max_depth``, the frame ``first`` saw: the surface point projects into its camera and its depth there (at
    any range) agrees with the point's distance within ``tolerance`` (relative; nearest pixel)."""
    from worldmodel.camera import reprojection_errors, valid_depth_mask

    # the first frame's depth counts at any range: only the view's surfaces are limited to max_depth
    flat, err = reprojection_errors(np.where(valid_depth_mask(depth, max_depth), depth, 0), K, c2w, first.depth,
                                    first.K, first.c2w, relative=True)
    seen = np.zeros(depth.size, bool)
    seen[flat[err <= tolerance]] = True
    return seen.reshape(depth.shape)


def start_seen_share(seed: int, start: np.ndarray, true_poses: list[np.ndarray], return_from: int, size: int,
                     kinematics: Kinematics, max_depth: float = 60.0) -> float:
    """Share of the revisits' true views (surface pixels within ``max_depth``, at the true poses) that the
    simulator's start frame saw (:func:`seen_by`). Nan when the walk has no revisit."""
    from worldmodel.camera import valid_depth_mask
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    sim = ProceduralWorld(ProceduralConfig(width=size, height=size, kinematics=kinematics), seed=seed)
    first = sim.reset(seed, start)
    seen, surface = 0, 0
    for i, _ in revisit_pairs(true_poses, return_from):
        _, t_depth = sim.render(true_poses[i + 1])
        seen += int(seen_by(first, t_depth, first.K, true_poses[i + 1], max_depth).sum())
        surface += int(valid_depth_mask(t_depth, max_depth).sum())
    return seen / surface if surface else float("nan")


def evaluate(weights, walks: int = 8, steps: int = 80, size: int = 128, modes=MODES, progress: bool = True,
             plots: str | Path | None = None, context_noise: float | None = None) -> dict:
    """Run every mode on ``walks`` held-out loop walks; returns {metric: value} (flat, JSON-able) and the
    per-step PSNR curves under "curves" and each loop's metrics under "per_walk". ``size``: frames of the walks
    (the weights' own size, and their kinematics, when the model is among the modes)."""
    from tqdm import tqdm

    from worldmodel.neural.weights import WeightsError, load_pretrained
    from worldmodel.procedural import ProceduralConfig

    kin = Kinematics()
    if set(MODEL_MODES) & set(modes):
        # unusable weights are one WeightsError line now, not under the progress bar; the walks are driven with
        # the model's own frame size and steps, and its camera must be the simulator's
        config, _ = load_pretrained(weights)
        (width, height), fov = config["size"], float(config["fov_y_deg"])
        if width != height or fov != ProceduralConfig().fov_y_deg:
            raise WeightsError(f"{weights}: the eval renders square frames with a {ProceduralConfig().fov_y_deg:g} "
                               f"degree field of view; these weights make {width}x{height} frames at {fov:g} "
                               "degrees (evaluate them with your own walks)")
        size, kin = int(width), Kinematics(float(config["step_m"]), float(config["yaw_deg"]))
    bar = tqdm(total=walks * len(modes) * steps, desc="eval", unit="frame", disable=not progress)
    per_mode: dict[str, list[dict]] = {m: [] for m in modes}
    start_seen = []
    sheets = []
    for w in range(walks):
        seed = EVAL_SEEDS_START + w
        actions, poses, return_from, start, true_frames = simulator_walk(seed, steps, size, kin)
        start_seen.append(start_seen_share(seed, start, poses, return_from, size, kin))
        records = {}
        for mode in modes:
            records[mode] = rollout(mode, seed, actions, start, weights, size, kin, progress=bar.update,
                                    context_noise=context_noise, shown=true_frames[:return_from + 1])
            generated_from = return_from if mode in TRUE_OUTBOUND_MODES else 0
            per_mode[mode].append(walk_metrics(records[mode], poses, return_from, true_frames[0],
                                               generated_from=generated_from))
        if w == 0:
            sheets = records
            first_return = return_from
    bar.close()
    seen_any = np.isfinite(start_seen).any()
    summary: dict = {"walks": walks, "steps": steps, "size": size,
                     "revisit_start_seen": float(np.nanmean(start_seen)) if seen_any else float("nan")}
    for mode, items in per_mode.items():
        for key in items[0]:
            if key == "per_step_psnr":
                continue
            vals = [it[key] for it in items if np.isfinite(it[key])]
            summary[f"{key}_{mode}"] = float(np.mean(vals)) if vals else float("nan")
    with warnings.catch_warnings():  # the steps a true-outbound mode did not make are nan in every walk
        warnings.simplefilter("ignore", RuntimeWarning)
        summary["curves"] = {m: np.nanmean([it["per_step_psnr"] for it in items], axis=0).tolist()
                             for m, items in per_mode.items()}
    # the same metrics per loop (a mean over 8 loops hides which walks went wrong): {mode: [{metric: value}]}
    summary["per_walk"] = {m: [{"seed": EVAL_SEEDS_START + w,
                                **{k: v for k, v in it.items() if k != "per_step_psnr"}}
                               for w, it in enumerate(items)] for m, items in per_mode.items()}
    if plots is not None:
        write_plots(Path(plots), summary["curves"], sheets, first_return)
    return summary


def write_plots(folder: Path, curves: dict[str, list[float]], records: dict, return_from: int) -> list[Path]:
    """PSNR per step (every mode) and a contact sheet (true | generated | cache) of walk 0 -> PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4))
    for mode, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), c, label=mode, lw=2 if mode.startswith("memory") else 1)
    ax.axvline(return_from, color="k", ls=":", lw=1)
    ax.text(return_from + 0.5, ax.get_ylim()[0] + 0.5, "return", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("PSNR vs simulator (dB)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    curve_png = folder / "psnr_per_step.png"
    fig.savefig(curve_png, dpi=110)
    plt.close(fig)
    rec = records.get("memory_on") or next(iter(records.values()))
    n = len(rec.frames)
    picks = sorted({5, n // 4, return_from - 1, return_from + (n - return_from) // 2, n - 1} & set(range(n)))
    rows = [np.concatenate([rec.truth[i][0], rec.frames[i].rgb, rec.cache[i]], axis=1) for i in picks]
    sheet = np.concatenate(rows, axis=0)
    fig, ax = plt.subplots(figsize=(7.5, 2.5 * len(picks)))
    ax.imshow(sheet)
    ax.set_yticks([(k + 0.5) * rec.frames[0].height for k in range(len(picks))], [f"step {i + 1}" for i in picks])
    w = rec.frames[0].width
    ax.set_xticks([w * 0.5, w * 1.5, w * 2.5], ["simulator", "generated (memory on)", "cache render"])
    fig.tight_layout()
    sheet_png = folder / "contact_sheet.png"
    fig.savefig(sheet_png, dpi=110)
    plt.close(fig)
    return [curve_png, sheet_png]


TABLE_KEYS = ("psnr", "ssim", "psnr_covered", "psnr_new", "depth_absrel", "depth_absrel_median",
              "depth_absrel_covered", "depth_absrel_new", "depth_delta1",
              "pose_drift_pct", "eye_height_err_m", "sharpness_ratio_new", "revisit_psnr", "revisit_self_psnr",
              "revisit_far_psnr", "revisit_psnr_start_seen", "revisit_psnr_unseen", "revisit_silhouette_share",
              "revisit_silhouette_err_share", "revisit_outbound_psnr", "memory_share", "revisit_memory_share")


def format_table(summary: dict) -> str:
    """A markdown table, metric rows x mode columns, of a summary (read back from JSON too: null = "-")."""
    modes = [m for m in MODES if f"psnr_{m}" in summary]
    lines = ["| metric | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for key in TABLE_KEYS:
        cells = []
        for m in modes:
            v = summary.get(f"{key}_{m}")
            cells.append("-" if v is None or not np.isfinite(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> int:
    from worldmodel.neural.weights import WeightsError
    from worldmodel.neural.world import SHIPPED_WEIGHTS

    try:  # a path that cannot be written must not cost a whole evaluation at the end
        if args.json:
            writable_file(args.json, "--json")
        if args.plots:
            writable_folder(args.plots)
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = evaluate(args.weights or SHIPPED_WEIGHTS, walks=args.walks, steps=args.steps, plots=args.plots)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(summary))
    on, off = summary.get("revisit_psnr_memory_on"), summary.get("revisit_psnr_memory_off")
    fill = summary.get("revisit_psnr_cache_fill")
    true_on, true_off = summary.get("revisit_psnr_memory_on_true_out"), summary.get("revisit_psnr_memory_off_true_out")
    true_fill = summary.get("revisit_psnr_cache_fill_true_out")
    print(f"revisit_psnr_memory_on {on:.2f} dB, memory_off {off:.2f} dB (gain {on - off:+.2f}), "
          f"cache_fill {fill:.2f} dB (gain {on - fill:+.2f}); shown the true way out (WorldMem's protocol): "
          f"{true_on:.2f} dB, memory zeroed {true_off:.2f} dB (gain {true_on - true_off:+.2f}), cache_fill "
          f"{true_fill:.2f} dB (gain {true_on - true_fill:+.2f}); the start frame saw "
          f"{100 * summary['revisit_start_seen']:.0f} % of the surfaces the revisits show (the rest, and the far "
          "field, the model made on the way out); "
          f"{100 * summary['revisit_silhouette_err_share_memory_on']:.0f} % of the revisit error is in the "
          f"{100 * summary['revisit_silhouette_share_memory_on']:.1f} % of pixels where sky and surface disagree")
    if args.json:
        if not write_json_or_print(args.json, summary):  # the numbers went to the terminal instead
            return 1
    return 0
