"""The movable live panel: newest frame (RGB and colour-mapped depth), frame number and frames/s, the cache
render with its agreement figures, where the pixels came from, and what each step costs."""

from __future__ import annotations

import collections
import time

import numpy as np
import viser

from memory.metrics import psnr
from recon.visual import colorize_depth
from scenes.scene import Scene, StepResult
from studio.bench_util import process_rss_mb
from worldmodel.frame import ComparableWorld


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """(near, far) metres for colouring: 2nd / 98th percentile of the valid depth (desk or landscape alike)."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    near, far = np.percentile(valid[:: max(1, valid.size // 20000)], [2.0, 98.0])
    return float(near), float(max(far, near + 1e-3))


def _blank(h: int = 96, w: int = 128) -> np.ndarray:
    return np.full((h, w, 3), 30, np.uint8)


NO_MEMORY_YET = "No memory retrieved yet."


class LivePanel:
    def __init__(self, server: viser.ViserServer):
        gui = server.gui
        self.panel = gui.add_panel()
        with self.panel.add_tab("Live", viser.Icon.VIDEO):
            self.status = gui.add_markdown("Frame **0**")
            self.rgb = gui.add_image(_blank(), label="RGB", format="jpeg", jpeg_quality=85)
            self.depth = gui.add_image(_blank(), label="Depth (near blue, far red)", format="jpeg", jpeg_quality=85)
            self.compare = gui.add_checkbox("Compare with the simulator", False,
                                            hint="a learned world started from the simulator (or handed frames of "
                                                 "its world): show the simulator's view of the same pose beside the "
                                                 "generated frame")
            self.compare_md = gui.add_markdown("", visible=False)
            self.reference = gui.add_image(_blank(), label="Simulator at this pose", format="jpeg", jpeg_quality=85,
                                           visible=False)
        with self.panel.add_tab("Memory", viser.Icon.BRAIN):
            self.memory_md = gui.add_markdown(NO_MEMORY_YET)
            self.show_cache = gui.add_checkbox("Show cache render", False,
                                               hint="the fused map rendered into the new camera "
                                                    "(what the model is given)")
            self.cache_rgb = gui.add_image(_blank(), label="Cache render (RGB)", format="jpeg", visible=False)
            self.cache_depth = gui.add_image(_blank(), label="Cache render (depth)", format="jpeg", visible=False)
            self.show_cache.on_update(lambda _: self._cache_visibility())
            self.sources_md = gui.add_markdown("", visible=False)
            self.show_sources = gui.add_checkbox("Show where the pixels came from", False,
                                                 hint="a learned world: each pixel's share made up (red), copied "
                                                      "from the previous frame (green), from the map (blue)")
            self.sources = gui.add_image(_blank(), label="Pixels: red made up, green previous frame, blue memory",
                                         format="png", visible=False)
            self.show_sources.on_update(lambda _: self._show_sources())
            # the last step's pixel sources and the frame they are of: (branch, position, (H, W, 3) shares)
            self._sources: tuple[str, int, np.ndarray] | None = None
            self._on_screen: tuple[str, int] | None = None  # (branch, position) of the frame on screen
        with self.panel.add_tab("Cost", viser.Icon.CHART_BAR):
            self.cost = gui.add_markdown("")
        self.panel.dock_right()
        self.panel.set_width(340)
        self._times: collections.deque[float] = collections.deque(maxlen=20)
        self._step_stream = (0.0, 0)  # (ms, bytes) of the last step's map streaming

    def _show_reference(self, scene: Scene, frame) -> None:
        """The compare view: the model's ground truth at the frame's pose, with the PSNR of the frame."""
        comparable = isinstance(scene.model, ComparableWorld)  # an optional part of a world's contract
        ref = scene.model.reference_view(frame.c2w) if self.compare.value and comparable else None
        self.reference.visible = self.compare_md.visible = bool(self.compare.value)
        if not self.compare.value:
            return
        if ref is None:
            self.compare_md.content = "This world has no simulator to compare with."
            self.reference.visible = False  # no stale image of another world's simulator
            return
        rgb = ref[0]
        if rgb.shape == frame.rgb.shape:
            self.compare_md.content = f"Generated vs simulator: **{psnr(frame.rgb, rgb):.1f} dB** PSNR"
        self.reference.image = rgb

    def _cache_visibility(self) -> None:
        self.cache_rgb.visible = self.cache_depth.visible = bool(self.show_cache.value)

    def _show_sources(self, on_screen: tuple[str, int] | None = None) -> None:
        """Where the pixels of the frame on screen (``on_screen``: its branch and position; None: the one shown
        last) came from: the last step's StepResult.pixel_sources when it made that frame, else nothing (the
        world does not say, or the cursor moved to another frame without a step)."""
        if on_screen is not None:
            self._on_screen = on_screen
        held = self._sources
        shares = held[2] if held is not None and held[:2] == self._on_screen else None
        self.sources_md.visible = shares is not None
        self.sources.visible = shares is not None and bool(self.show_sources.value)
        if shares is None:
            return
        made_up, previous, memory = (100 * shares.reshape(-1, 3).mean(axis=0)).tolist()
        self.sources_md.content = (f"Pixels: **{memory:.0f} %** from memory, {previous:.0f} % from the previous "
                                   f"frame, {made_up:.0f} % made up")
        if self.show_sources.value:
            self.sources.image = np.clip(shares * 255 + 0.5, 0, 255).astype(np.uint8)

    def forget_memory(self) -> None:
        """Another world: its memory has retrieved nothing yet (the old world's picks are not shown)."""
        self.memory_md.content = NO_MEMORY_YET
        self._sources = None
        self._show_sources()

    def update(self, scene: Scene, step: StepResult | None, stream_ms: float, stream_bytes: int,
               points_shown: int, agreement: dict | None) -> None:
        """Refresh the panel after a command; ``step`` (None when the command was not a step) carries the
        retrieved keyframes and the cache render, so no frame is read from the store here."""
        frame = scene.current
        now = time.monotonic()
        if step is not None:
            self._times.append(now)
            self._step_stream = (stream_ms, stream_bytes)
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 and \
            self._times[-1] > self._times[0] else 0.0
        behind = "" if scene.cursor == scene.length - 1 else f" (of {scene.length - 1}, viewing the past)"
        blocked = (" · **did not move**: the world kept the camera where it stood (blocked: turn or step back; or "
                   "the recording ended)" if step is not None and step.move_refused else "")
        self.status.content = (f"World **{scene.model.name}** · Frame **{frame.index}**{behind} · branch "
                               f"**{scene.branch_name}** · {fps:.1f} frames/s{blocked}")
        self.rgb.image = frame.rgb
        self._show_reference(scene, frame)
        near, far = depth_range(frame.depth)
        self.depth.image = colorize_depth(frame.depth, near, far)
        if step is not None and step.memory_fids:
            rows = [f"| {i + 1} | {index} | {s:.3f} |"
                    for i, (index, s) in enumerate(zip(step.memory_indices, step.memory_scores))]
            text = "| # | frame | score |\n|---|---|---|\n" + "\n".join(rows)
            if agreement:
                text += (f"\n\nNew frame vs cache: **{agreement.get('psnr_db', float('nan')):.1f} dB** PSNR, "
                         f"depth error **{100 * agreement.get('depth_abs_err_m', float('nan')):.1f} cm**, "
                         f"coverage {100 * agreement.get('coverage', 0.0):.0f} %")
            self.memory_md.content = text
        if step is not None:
            self._sources = (None if step.pixel_sources is None else
                             (step.branch, step.frame.index, step.pixel_sources))
        self._show_sources((scene.branch_name, scene.cursor))
        cache = None if step is None else step.cache
        if cache is not None and self.show_cache.value:
            self.cache_rgb.image = np.where(cache.valid[..., None], cache.rgb, 30).astype(np.uint8)
            self.cache_depth.image = colorize_depth(np.where(cache.valid, cache.depth, 0), near, far)
        last = step or scene.last_step
        cost = [f"- points in map: **{len(scene.map):,}** (browser nodes hold {points_shown:,}, "
                "incl. deltas not yet merged)",
                f"- frames: **{scene.length}** in branch, {len(scene.store)} stored, {len(scene.branches)} branches"]
        if last is not None:
            cost.append(f"- last step: model **{last.model_ms:.1f} ms**, memory {last.memory_ms:.1f} ms, "
                        f"fuse **{last.fuse_ms:.1f} ms**, stream {self._step_stream[0]:.1f} ms "
                        f"({self._step_stream[1] / 1024:.0f} KiB)")
        cost.append(f"- memory in use: **{process_rss_mb():.0f} MB** RSS "
                    f"(map {scene.map.nbytes / 2**20:.0f} MB, frames in RAM {scene.store.ram_bytes / 2**20:.0f} MB)")
        self.cost.content = "\n".join(cost)
