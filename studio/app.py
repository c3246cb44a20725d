"""The studio: a viser app over one Scene. `python launch.py` (= `launch.py view`) starts it.

Threads: viser runs GUI callbacks in its thread pool; they only submit commands. The SceneWorker runs
commands one at a time and then syncs the view (3D map, cameras, panels) from its own thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import viser

from memory.bank import GeometricMemory
from memory.metrics import agreement
from scenes.scene import Scene, SceneConfig, StepResult
from studio.controls import Controls
from studio.export_panel import ExportPanel
from studio.live_panel import LivePanel
from studio.security import AccessPolicy, guarded_viser_server
from studio.stream import COLOUR_MODES
from studio.view3d import SceneView
from studio.worker import Command, SceneWorker
from worldmodel.actions import Action, Kinematics, TargetPose


class InspectPanel:
    """Point size, colour mode, voxel size, trail, follow camera, reset view."""

    def __init__(self, studio: "Studio"):
        self.studio = studio
        gui = studio.server.gui
        with gui.add_folder("Inspect", order=2):
            self.point_size = gui.add_slider("Point size", 0.01, 0.5, 0.01, 0.08)
            self.point_size.on_update(self._point_size_changed)
            self.colour = gui.add_dropdown("Colour by", list(COLOUR_MODES), initial_value="rgb",
                                           hint="depth: distance from the camera where you picked it; age: "
                                                "first frame blue, frames since you picked it red")
            self.colour.on_update(self._colour_changed)
            self.voxel = gui.add_number("Voxel size (m)", 0.1, min=0.02, max=1.0, step=0.01)
            rebuild = gui.add_button("Apply voxel size", hint="re-fuses the branch's frames at the new size")
            rebuild.on_click(self._voxel_changed)
            self.trail = gui.add_checkbox("Show camera trail", True)
            self.trail.on_update(self._trail_changed)
            self.follow = gui.add_checkbox("Follow the camera", True, hint="off: look around freely")
            reset = gui.add_button("Reset view", icon=viser.Icon.HOME)
            reset.on_click(lambda event: studio.look_at_current(event.client))

    def _point_size_changed(self, event: viser.GuiEvent) -> None:
        size = float(self.point_size.value)
        self.studio.submit("point size", lambda _: self.studio.view.sink.set_point_size(size), event.client,
                           coalesce="point-size")

    def _colour_changed(self, event: viser.GuiEvent) -> None:
        mode = self.colour.value

        def run(scene: Scene) -> None:
            self.studio.view.set_colour_mode(mode, scene)
            self.studio.full_resync = True

        self.studio.submit(f"colour by {mode}", run, event.client)

    def _voxel_changed(self, event: viser.GuiEvent) -> None:
        size = float(self.voxel.value)

        def run(scene: Scene) -> None:
            scene.set_voxel_size(size)

        self.studio.submit(f"voxel size {size}", run, event.client)

    def _trail_changed(self, event: viser.GuiEvent) -> None:
        visible = bool(self.trail.value)
        self.studio.submit("trail", lambda scene: self.studio.view.set_trail_visible(scene, visible), event.client)


class Studio:
    def __init__(self, scene: Scene, host: str = "127.0.0.1", port: int = 8080,
                 memory_factory: Callable[[], GeometricMemory] = GeometricMemory,
                 policy: AccessPolicy | None = None, root: str | Path = "."):
        self.policy = policy or AccessPolicy.for_host(host)
        self.root = Path(root).resolve()  # paths typed in the browser stay inside it (studio.security)
        self.server = guarded_viser_server(self.policy, host=host, port=port, label="WorldStudio", verbose=False)
        self.server.scene.set_up_direction("+y")
        self.memory_factory = memory_factory
        self.view = SceneView(self.server)
        self.worker = SceneWorker(scene, after=self._after, on_error=self._command_failed)
        self.live = LivePanel(self.server)
        self.controls = Controls(self)
        self.inspect = InspectPanel(self)
        self.exports = ExportPanel(self)
        self.full_resync = True
        self.inspect.point_size.value = min(0.5, max(0.01, 0.9 * scene.config.voxel_size))
        self.inspect.voxel.value = scene.config.voxel_size
        self.last_agreement: dict | None = None
        self.server.on_client_connect(self._client_connected)
        self.worker.start()
        self.submit("initial view", lambda s: None, None)

    # ------------------------------------------------------------------ commands
    def memory_kwargs(self) -> dict:
        """Keyword arguments that give a scene opened from the studio its own memory bank."""
        return {"memory": self.memory_factory()}

    def submit(self, label: str, run: Callable[[Scene], Any], client: viser.ClientHandle | None,
               coalesce: str | None = None, on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None) -> None:
        def report(message: str) -> None:
            self.notify(client, f"{label} failed", message, error=True)
        self.worker.submit(Command(label, run, coalesce, on_error or report, on_done))

    def step_command(self, action: Action | TargetPose, client: viser.ClientHandle | None = None,
                     coalesce: str | None = None) -> Command:
        return Command(f"step {action}", lambda scene: scene.step(action), coalesce,
                       lambda message: self.notify(client, f"step {action} failed", message, error=True))

    def submit_step(self, action: Action | TargetPose, client: viser.ClientHandle | None,
                    coalesce: str | None = None) -> None:
        self.worker.submit(self.step_command(action, client, coalesce))

    def replace_scene(self, scene: Scene) -> None:
        """Swap in another scene (worker thread only): the view drops the old map and trail."""
        old = self.worker.scene
        self.worker.scene = scene
        self.view.clear_trail()
        self.full_resync = True
        self.inspect.point_size.value = min(0.5, max(0.01, 0.9 * scene.config.voxel_size))
        self.inspect.voxel.value = scene.config.voxel_size
        if old is not scene:
            old.close()

    def notify(self, client: viser.ClientHandle | None, title: str, body: str, error: bool = False) -> None:
        targets = [client] if client is not None else list(self.server.get_clients().values())
        for c in targets:
            c.add_notification(title, body, auto_close_seconds=None if error else 4.0,
                               color="red" if error else None)

    def _command_failed(self, label: str, message: str) -> None:
        self.notify(None, f"{label} failed", message, error=True)

    # ------------------------------------------------------------------ view sync (worker thread)
    def _after(self, command: Command, result: Any) -> None:
        scene = self.worker.scene
        if scene.cursor < 0:
            return
        step = result if isinstance(result, StepResult) else None
        t0 = time.perf_counter()
        with self.server.atomic():
            if self.full_resync:
                self.view.sink.set_point_size(self.inspect.point_size.value)
                self.view.set_scale(scene.config.voxel_size)
            sent = self.view.sync_map(scene, full=self.full_resync)
            self.full_resync = False
            self.view.sync_cameras(scene)
        stream_ms = 1e3 * (time.perf_counter() - t0)
        cache = None
        if step is not None:
            self.view.show_memory(scene, step.memory_fids, step.memory_scores)
            cache = getattr(scene, "last_cache", None)
            self.last_agreement = self._agreement(step, cache)
        self.live.update(scene, step, stream_ms, sent, self.view.sink.points_shown, self.last_agreement, cache)
        self.controls.sync(scene)
        if self.inspect.follow.value:
            for client in self.server.get_clients().values():
                self._follow(client, scene.current.c2w)

    @staticmethod
    def _agreement(step: StepResult, cache: dict | None) -> dict | None:
        return None if cache is None else agreement(step.frame.rgb, step.frame.depth, cache)

    def _follow(self, client: viser.ClientHandle, c2w: np.ndarray) -> None:
        """Chase view: behind and above the camera, looking where it looks."""
        eye, forward = c2w[:3, 3], c2w[:3, 2]
        flat = np.array([forward[0], 0.0, forward[2]])
        flat /= max(np.linalg.norm(flat), 1e-9)
        with client.atomic():
            client.camera.up_direction = (0.0, 1.0, 0.0)
            client.camera.position = eye - 4.0 * flat + np.array([0.0, 2.0, 0.0])
            client.camera.look_at = eye + 6.0 * flat

    def look_at_current(self, client: viser.ClientHandle | None) -> None:
        def run(scene: Scene) -> None:
            for c in ([client] if client else self.server.get_clients().values()):
                self._follow(c, scene.current.c2w)
        self.submit("reset view", run, client)

    def _client_connected(self, client: viser.ClientHandle) -> None:
        client.camera.on_update(self.controls.camera_moved)
        self.submit("show a new tab", lambda scene: self._follow(client, scene.current.c2w), client)

    def close(self) -> None:
        self.worker.stop()
        self.server.stop()


def build_scene(args) -> Scene:
    """The scene the studio opens on: a saved session (--session) or a new world."""
    from worldmodel.registry import create_world

    if getattr(args, "session", None):
        from scenes.session import load_session

        return load_session(args.session, memory=GeometricMemory())
    model = create_world(args.world, seed=args.seed, width=args.size[0], height=args.size[1],
                         kinematics=Kinematics(step_m=args.step_m, yaw_deg=args.yaw_deg))
    scene = Scene(model, SceneConfig(voxel_size=args.voxel), memory=GeometricMemory())
    scene.reset(args.seed)
    return scene


def main(args) -> int:
    from scenes.session import SessionError
    from scenes.spill import install_signal_handlers
    from worldmodel.registry import WorldSpecError

    install_signal_handlers()  # SIGTERM closes the studio like Ctrl-C; spill folders go at exit

    policy = AccessPolicy.for_host(args.host, no_token=getattr(args, "no_token", False))
    if not policy.loopback and policy.token is None:
        print(f"warning: listening on {args.host} with --no-token: anyone who can reach this machine can drive "
              "the studio and read files under the workspace root", file=sys.stderr)
    root = Path(getattr(args, "root", None) or ".").expanduser()
    if not root.is_dir():
        print(f"error: workspace root {root} is not a folder; pass --root FOLDER", file=sys.stderr)
        return 2
    try:
        scene = build_scene(args)
    except (SessionError, WorldSpecError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        studio = Studio(scene, host=args.host, port=args.port, policy=policy, root=root)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); try --port {args.port + 1}",
              file=sys.stderr)
        return 2
    query = f"/?token={policy.token}" if policy.token else ""
    print(f"WorldStudio is running: http://{args.host}:{studio.server.get_port()}{query}"
          f"  (Ctrl-C to stop; browser paths stay inside {studio.root})", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        studio.close()
        studio.worker.scene.close()
    return 0
