"""The studio: a viser app over one Scene. `python launch.py` (= `launch.py view`) starts it.

Threads: viser runs GUI callbacks in its thread pool; they only submit commands. The SceneWorker runs
commands one at a time and then syncs the view (3D map, cameras, panels) from its own thread.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import viser
import viser.transforms as vtf

from scenes.factory import (START_FROM_A_SESSION_NOTE, StepsAsked, command_kinematics, learned_weights,
                            make_scene, note_options_the_session_overrides, recording_notes, settings_not_kept,
                            start_learned_from)
from scenes.scene import Scene, SceneConfig, StepResult
from studio.controls import Controls
from studio.export_panel import ExportPanel, refuse_large_uploads_as_they_start
from studio.inspect_panel import InspectPanel
from studio.live_panel import LivePanel
from studio.security import AccessPolicy, guarded_viser_server
from studio.view3d import SceneView
from studio.worker import Command, SceneWorker, hand_compute_threads_to_worker
from worldmodel.actions import Action, TargetPose


class Studio:
    """The viser app over one Scene. Panels get narrow callables (submit, notify, ...), never the Studio.

    policy: who may connect (studio.security: the websocket Origin check, the access token off loopback);
    root: the workspace root that folders typed in the browser must stay inside; steps: the step sizes asked for on
    the command line, for the worlds opened from the browser (what is not asked: each world's own)."""

    def __init__(self, scene: Scene, host: str = "127.0.0.1", port: int = 8080,
                 policy: AccessPolicy | None = None, root: str | Path = ".", steps: StepsAsked = StepsAsked()):
        self.policy = policy or AccessPolicy.for_host(host)
        self.root = Path(root).resolve()  # paths typed in the browser stay inside it (studio.security)
        self.server = guarded_viser_server(self.policy, host=host, port=port, label="WorldStudio", verbose=False)
        self.server.scene.set_up_direction("+y")
        self.view = SceneView(self.server)
        self.worker = SceneWorker(scene, after=self._after, on_error=self._command_failed)
        self.full_resync = True
        gui = self.server.gui

        def notify(client: viser.ClientHandle | None, title: str, body: str, error: bool = False) -> None:
            self.notify(client, title, body, error)  # looked up at each call: Studio.notify may be replaced

        self.live = LivePanel(self.server)
        # the comparison shows (or hides) for the frame on screen at once, not at the next step
        self.live.compare.on_update(lambda _: self.submit("compare with the simulator", lambda scene: None, None))
        self.controls = Controls(gui, self.submit, self.submit_step, notify, pending=lambda: self.worker.pending,
                                 set_autoplay=self._set_autoplay, steering_by_camera=self._steering_by_camera,
                                 clear_queue=self.worker.clear)
        self.inspect = InspectPanel(gui, self.submit, self.view, request_resync=self.request_resync,
                                    reset_view=self.look_at_current)
        self.exports = ExportPanel(gui, self.submit, notify, replace_scene=self.replace_scene, root=self.root,
                                    steps=steps)
        refuse_large_uploads_as_they_start(self.server, lambda client, why: notify(client, "Upload refused", why, True))
        self.inspect.show_scale(scene.config.voxel_size)
        self.last_agreement: dict | None = None
        self._steering_from: tuple | None = None  # (scene id, branch, cursor) the view was last steered from
        self.server.on_client_connect(self._client_connected)
        self.worker.start()
        self.submit("initial view", lambda s: None, None)

    # ------------------------------------------------------------------ commands
    def submit(self, label: str, run: Callable[[Scene], Any], client: viser.ClientHandle | None,
               coalesce: str | None = None, on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None, droppable: bool = False) -> None:
        def report(message: str) -> None:
            self.notify(client, f"{label} failed", message, error=True)
        self.worker.submit(Command(label, run, coalesce, on_error or report, on_done, droppable=droppable))

    def step_command(self, action: Action | TargetPose, client: viser.ClientHandle | None = None,
                     coalesce: str | None = None) -> Command:
        def failed(message: str) -> None:  # the queued steps and autoplay stop with it (Controls.stop_steps)
            autoplay, dropped = self.controls.autoplay.value, self.controls.stop_steps()
            stopped = [f"{dropped} queued step(s) dropped"] * (dropped > 0) + ["autoplay off"] * autoplay
            self.notify(client, f"step {action} failed", message + (f" ({', '.join(stopped)})" if stopped else ""),
                        error=True)

        return Command(f"step {action}", lambda scene: scene.step(action), coalesce, failed, droppable=True)

    def submit_step(self, action: Action | TargetPose, client: viser.ClientHandle | None,
                    coalesce: str | None = None) -> None:
        self.worker.submit(self.step_command(action, client, coalesce))

    def request_resync(self) -> None:
        """After the running command, resend everything: whole map, camera scale, point size, trail."""
        self.full_resync = True

    def _set_autoplay(self, next_action: Callable[[], Action] | None, hz: float) -> None:
        self.worker.autoplay_hz = hz if next_action is not None else 0.0
        self.worker.autoplay = (lambda: self.step_command(next_action())) if next_action is not None else None
        self.worker.wake()

    def _steering_by_camera(self, on: bool) -> None:
        """Steering by the viewer camera starts where the generated camera is: each tab's view jumps from the
        chase view into the generated camera (steering from the chase view would first take the camera 4 m
        back and 2 m up). Following is switched off: it would feed the camera back into itself."""
        if not on:
            return
        self.inspect.follow.value = False
        self.submit("steer from the generated camera", self._views_to_generated_camera, None)

    def _views_to_generated_camera(self, scene: Scene) -> None:
        """Put every tab's view at the scene's current camera (worker thread): where steering goes on from.
        Also after a command that moved the current frame other than by a step (another world or session, a
        seek, a branch switch) while steering is on; else the next small move of the view would ask for a
        frame at the view's old pose, far from the new current one."""
        c2w = scene.current.c2w
        self._steering_from = (id(scene), scene.branch_name, scene.cursor)
        self.controls.steering_starts_at(c2w)  # the jump itself is not a move
        wxyz = vtf.SO3.from_matrix(c2w[:3, :3]).wxyz  # the full orientation, roll included (viser: OpenCV)
        for client in self.server.get_clients().values():
            with client.atomic():
                client.camera.position = c2w[:3, 3]
                client.camera.wxyz = wxyz

    def replace_scene(self, scene: Scene) -> None:
        """Swap in another scene (worker thread only): the view drops the old map and trail."""
        old = self.worker.scene
        self.worker.scene = scene
        self.inspect.show_scale(scene.config.voxel_size)
        self.request_resync()
        self.last_agreement = None  # the old world's memory picks and agreement are not this one's
        self.view.clear_memory()
        self.live.forget_memory()
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
            if self.full_resync:  # new scene, voxel size or colours: every node is redrawn at the new scale
                self.view.sink.set_point_size(self.inspect.point_size.value)
                self.view.set_scale(scene.config.voxel_size)
                self.view.clear_trail()
            sent = self.view.sync_map(scene, full=self.full_resync)
            self.full_resync = False
            self.view.sync_cameras(scene)
        stream_ms = 1e3 * (time.perf_counter() - t0)
        if step is not None:
            self.view.show_memory(step)
            self.last_agreement = step.agreement
        self.live.update(scene, step, stream_ms, sent, self.view.sink.points_shown, self.last_agreement)
        self.controls.sync(scene)
        if self.controls.steer_by_camera.value != "off":
            where = (id(scene), scene.branch_name, scene.cursor)
            if step is None and where != self._steering_from:
                self._views_to_generated_camera(scene)
            self._steering_from = where
        if self.inspect.follow.value:
            for client in self.server.get_clients().values():
                self._follow(client, scene.current.c2w)

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

    def close(self, wait_s: float | None = 60.0) -> list[str]:
        """Stop the worker once its running command is done (up to ``wait_s`` seconds; None: as long as it takes),
        then the server -> the labels of queued exports and saves that were not done (:meth:`SceneWorker.stop`)."""
        not_done = self.worker.stop(wait_s)
        self.server.stop()
        return not_done


def build_scene(args) -> Scene:
    """The scene the studio opens on: a saved session (--session), the learned model going on from a frame of a
    session or recording (--start-from), or a new world; with memory."""
    if args.session is not None:  # its own world and settings
        scene = make_scene(session=args.session)
        note_options_the_session_overrides(args, scene, "--session opens the session with its own seed, size, voxel "
                                           "size and step settings")
        return scene
    config = None if args.voxel is None else SceneConfig(voxel_size=args.voxel)  # None: fitted to the world
    if args.start_from is not None:  # (a recording's notes are printed as its frames are handed over)
        scene = start_learned_from(args.start_from, args.start_frame, weights=learned_weights(args.world),
                                   seed=args.seed, kinematics=command_kinematics(args),
                                   config=config, progress=True)
        note_options_the_session_overrides(args, scene, START_FROM_A_SESSION_NOTE)
        return scene
    size, kinematics = tuple(args.size) if args.size else None, command_kinematics(args)
    scene = make_scene(args.world, args.seed, size=size, kinematics=kinematics, config=config)
    for note in recording_notes(scene) + [settings_not_kept(scene, size, kinematics)]:
        if note is not None:
            print(f"note: {note}", file=sys.stderr)
    return scene


def cannot_listen_on(host: str) -> str | None:
    """Why no server socket can be bound on ``host`` (a name that does not resolve, an address that is not this
    machine's), or None when one can (on a free port; a busy one is viser's to skip)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as e:
        return e.strerror or str(e)
    return None


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
    why = cannot_listen_on(args.host)
    if why is not None:  # viser would retry 1000 ports on it and then wait for ever
        print(f"error: cannot listen on {args.host} ({why}); pass an address of this machine, e.g. --host 127.0.0.1",
              file=sys.stderr)
        return 2
    # the worker makes the frames; torch's threads are its alone, less a core for the browser drawing the page
    # when that runs on this machine (a loopback studio)
    hand_compute_threads_to_worker(cores_for_the_page=1 if policy.loopback else 0)
    stop = _StopRequests()  # from here on Ctrl-C, SIGTERM and SIGHUP take one path
    try:
        scene = build_scene(args)
    except (SessionError, WorldSpecError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:  # (Ctrl-C inside open3d's import surfaces as an ImportError)
        if not (isinstance(e, KeyboardInterrupt) or isinstance(e, Exception) and stop.requested.is_set()):
            raise
        print("stopped while opening the world", file=sys.stderr)
        return 130
    try:
        with stop.deferred():  # a half-built server would be left running: it is built, then stopped
            studio = Studio(scene, host=args.host, port=args.port, policy=policy, root=root,
                            steps=StepsAsked(args.step_m, args.yaw_deg))
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}); try --port {args.port + 1}",
              file=sys.stderr)
        scene.close()
        return 2
    query = f"/?token={policy.token}" if policy.token else ""
    if args.port and studio.server.get_port() != args.port:  # viser moves on from a busy port (0: any free one)
        print(f"note: port {args.port} is in use; listening on {studio.server.get_port()} instead", file=sys.stderr)
    try:
        if not stop.requested.is_set():
            print(f"WorldStudio is running: http://{args.host}:{studio.server.get_port()}{query}"
                  f"  (Ctrl-C to stop; browser paths stay inside {studio.root})", flush=True)
        while not stop.requested.is_set():  # (also when the interrupt was swallowed, e.g. inside a weakref callback)
            time.sleep(1.0)
            studio.live.refresh_rate()
    except (KeyboardInterrupt, SystemExit):
        pass
    return _stop(studio)


class _StopRequests:
    """Ctrl-C, SIGTERM and SIGHUP (a service stopped, a terminal closed) all stop the studio as Ctrl-C does
    (:func:`_stop`), instead of killing it under a running export or save. Each sets :attr:`requested` and raises
    KeyboardInterrupt in the main thread, except inside :meth:`deferred`, where the request waits to be seen."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._deferring = False
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._interrupt)

    def _interrupt(self, signum, frame) -> None:
        self.requested.set()
        if not self._deferring:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


def _stop(studio: Studio) -> int:
    """The studio's Ctrl-C: wait for the running command (an export, a save) and for a download it sent to reach
    the browser, then stop; a second Ctrl-C quits at once -> the exit status."""
    running = studio.worker.running
    if running:
        print(f"stopping: waiting for '{running}' to finish (Ctrl-C again to quit without it; saves and exports are "
              "written whole or not at all)", file=sys.stderr, flush=True)
    try:
        not_done = studio.worker.stop(wait_s=None)
    except KeyboardInterrupt:  # a second Ctrl-C: quit now, leaving the scene to the worker still using it
        print(f"stopped without finishing '{studio.worker.running or running}'", file=sys.stderr)
        return 130
    try:
        left = studio.exports.download_seconds_left()
        if left > 0:
            print(f"stopping: {left:.0f} s for the last download to reach the browser (Ctrl-C to quit now)",
                  file=sys.stderr, flush=True)
            time.sleep(left)
    except KeyboardInterrupt:
        pass
    try:
        studio.close(wait_s=0)
        for label in not_done:
            print(f"note: '{label}' was queued and not done", file=sys.stderr)
        studio.worker.scene.close()
    except KeyboardInterrupt:
        return 130
    return 0
