"""The Inspect folder: point size, colour mode, voxel size (re-fuses), trail, follow camera, reset view."""

from __future__ import annotations

from typing import Callable

import viser

from scenes.scene import Scene
from studio.panel_api import Submit
from studio.stream import COLOUR_MODES
from studio.view3d import SceneView


def point_size_for(voxel_size: float) -> float:
    """Default point size (metres) for a map of ``voxel_size`` voxels, within the slider's range."""
    return min(0.5, max(0.01, 0.9 * voxel_size))


class InspectPanel:
    """submit: queue a command; view: the 3D view the panel restyles (on the worker thread);
    request_resync: ask for a full resync (map, scale, point size, trail) after the next command;
    reset_view: point the given tab (None: all) at the current camera."""

    def __init__(self, gui: viser.GuiApi, submit: Submit, view: SceneView, request_resync: Callable[[], None],
                 reset_view: Callable[[viser.ClientHandle | None], None]):
        self.submit, self.view, self.request_resync = submit, view, request_resync
        with gui.add_folder("Inspect", order=2):
            self.point_size = gui.add_slider("Point size", 0.01, 0.5, 0.01, 0.08)
            self.point_size.on_update(self._point_size_changed)
            self.colour = gui.add_dropdown("Colour by", list(COLOUR_MODES), initial_value="rgb",
                                           hint="depth: distance from the camera where you picked it; age: "
                                                "first frame blue, frames since you picked it red")
            self.colour.on_update(self._colour_changed)
            self.voxel = gui.add_number("Voxel size (m)", 0.1, min=0.01, max=1.0, step=0.01)
            rebuild = gui.add_button("Apply voxel size", hint="re-fuses the branch's frames at the new size")
            rebuild.on_click(self._voxel_changed)
            self.trail = gui.add_checkbox("Show camera trail", True)
            self.trail.on_update(self._trail_changed)
            self.follow = gui.add_checkbox("Follow the camera", True, hint="off: look around freely")
            reset = gui.add_button("Reset view", icon=viser.Icon.HOME)
            reset.on_click(lambda event: reset_view(event.client))

    def show_scale(self, voxel_size: float) -> None:
        """Reflect a scene's voxel size: the voxel box and the point size that goes with it."""
        self.point_size.value = point_size_for(voxel_size)
        self.voxel.value = voxel_size

    def _point_size_changed(self, event: viser.GuiEvent) -> None:
        size = float(self.point_size.value)
        self.submit("point size", lambda _: self.view.sink.set_point_size(size), event.client, coalesce="point-size")

    def _colour_changed(self, event: viser.GuiEvent) -> None:
        mode = self.colour.value

        def run(scene: Scene) -> None:
            self.view.set_colour_mode(mode, scene)
            self.request_resync()

        self.submit(f"colour by {mode}", run, event.client)

    def apply_voxel_size(self, size: float, client: viser.ClientHandle | None) -> None:
        """Re-fuse at ``size`` metres; cameras, trail and point size follow the new scale (full resync)."""
        def run(scene: Scene) -> None:
            scene.set_voxel_size(size)
            self.show_scale(scene.config.voxel_size)
            self.request_resync()

        self.submit(f"voxel size {size}", run, client)

    def _voxel_changed(self, event: viser.GuiEvent) -> None:
        self.apply_voxel_size(float(self.voxel.value), event.client)

    def _trail_changed(self, event: viser.GuiEvent) -> None:
        visible = bool(self.trail.value)
        self.submit("trail", lambda scene: self.view.set_trail_visible(scene, visible), event.client)
