"""Steering and history controls: translation pad, hold-to-repeat buttons, hotkeys, action strings,
autoplay, steering by the viewer camera, and the timeline/branch panel.

Every callback only submits a command to the worker; nothing here touches the Scene directly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import viser
import viser.transforms as vtf

from scenes.scene import Scene
from studio.panel_api import Notify, Submit, SubmitStep
from worldmodel.actions import Action, ActionParseError, TargetPose, parse_actions

# Translation pad, as rows of (label, translation token).
PAD_ROWS = (
    (("↖ fL", "fL"), ("↑ F", "F"), ("↗ fR", "fR")),
    (("← L", "L"), ("· S", "S"), ("→ R", "R")),
    (("↙ rL", "rL"), ("↓ B", "B"), ("↘ rR", "rR")),
)
TURNS = {"⟲ left": "L", "none": "N", "⟳ right": "R"}

MAX_STEPS_PER_STRING = 1000  # an action string queues at most this many steps (about 30 s of stepping)

# Single-key hotkeys (viser's own camera uses W/A/S/D/Q/E and the arrows).
HOTKEYS = (
    ("I", "Forward", Action("F", "N")), ("K", "Back", Action("B", "N")),
    ("J", "Step left", Action("L", "N")), ("L", "Step right", Action("R", "N")),
    ("U", "Forward-left", Action("fL", "N")), ("O", "Forward-right", Action("fR", "N")),
    ("Z", "Turn left", Action("S", "L")), ("X", "Turn right", Action("S", "R")),
    ("C", "Forward + turn left", Action("F", "L")), ("V", "Forward + turn right", Action("F", "R")),
)


def viewer_camera_c2w(camera: viser.CameraHandle) -> np.ndarray:
    """The browser camera as an OpenCV c2w (viser cameras use OpenCV axes)."""
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(camera.wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = camera.position
    return c2w


class Controls:
    """Steer and Timeline folders.

    submit / submit_step / notify: see studio.panel_api. pending: commands waiting on the worker (hold buttons
    do not queue a backlog). set_autoplay(next_action or None, steps per second): start/stop autoplay.
    steering_by_camera(on): told when steering by the viewer camera is switched on or off.
    clear_queue(): drop every queued step and stop autoplay (the running one finishes; exports, saves and world
    switches stay queued) -> how many dropped.
    """

    def __init__(self, gui: viser.GuiApi, submit: Submit, submit_step: SubmitStep, notify: Notify,
                 pending: Callable[[], int],
                 set_autoplay: Callable[[Callable[[], Action] | None, float], None],
                 steering_by_camera: Callable[[bool], None], clear_queue: Callable[[], int]):
        self.submit, self.submit_step, self.notify, self.pending = submit, submit_step, notify, pending
        self.set_autoplay, self.steering_by_camera, self.clear_queue = set_autoplay, steering_by_camera, clear_queue
        self.turn = "N"
        with gui.add_folder("Steer", order=0):
            for r, row in enumerate(PAD_ROWS):
                group = gui.add_button_group(" " if r else "Move", [label for label, _ in row])
                group.on_click(self._pad_clicked(dict(row)))
            turn = gui.add_button_group("Turn", list(TURNS))
            turn.on_click(self._turn_clicked)
            self.turn_md = gui.add_markdown("Pad steps turn: **none**")
            for label, action in (("Hold: forward", Action("F", "N")), ("Hold: back", Action("B", "N")),
                                  ("Hold: turn left", Action("S", "L")), ("Hold: turn right", Action("S", "R"))):
                button = gui.add_button(label, hint="hold to repeat")
                button.on_hold(self._held(action), callback_hz=8.0)
            self.action_text = gui.add_text("Actions", initial_value="(FN)(FN)(fLN)(FL)(FL)",
                                            hint="DeepVerse grammar, e.g. (FN)(fLR)(BN)")
            play = gui.add_button("Play actions", icon=viser.Icon.PLAYER_PLAY)
            play.on_click(self._play_clicked)
            stop = gui.add_button("Stop", icon=viser.Icon.PLAYER_STOP, color="red",
                                  hint="clear the queued steps and stop autoplay (hotkey: Esc)")
            stop.on_click(self._stop_clicked)
            self.autoplay = gui.add_checkbox("Autoplay", False, hint="keep stepping with the action below")
            self.autoplay_action = gui.add_dropdown("Autoplay action",
                                                    ["(FN)", "(FL)", "(FR)", "(fLN)", "(fRN)", "random"],
                                                    initial_value="(FN)")
            self.autoplay_hz = gui.add_slider("Autoplay rate (steps/s)", 0.5, 20.0, 0.5, 4.0)
            self.autoplay.on_update(lambda _: self._sync_autoplay())
            self.autoplay_hz.on_update(lambda _: self._sync_autoplay())
            self.steer_by_camera = gui.add_dropdown(
                "Steer by viewer camera", ["off", "exact pose", "nearest action"], initial_value="off",
                hint="fly the 3D view; the world model generates the view at that pose")
            self.steer_by_camera.on_update(lambda _: self._steer_mode_changed())
        for key, label, action in HOTKEYS:
            command = gui.add_command(f"{label} {action}", hotkey=key)  # type: ignore[arg-type]
            command.on_trigger(self._held(action))
        gui.add_command("Stop: clear the queue", hotkey="escape").on_trigger(self._stop_clicked)
        toggle = gui.add_command("Autoplay on/off", hotkey="P")
        toggle.on_trigger(lambda _: setattr(self.autoplay, "value", not self.autoplay.value))
        self._rng = np.random.default_rng(0)
        self._last_camera_target: np.ndarray | None = None

        with gui.add_folder("Timeline", order=1):
            self.timeline = gui.add_slider("Frame", 0, 1, 1, 0, hint="drag back to see the world as it was; "
                                           "stepping from an earlier frame starts a new branch")
            self.timeline.on_update(self._timeline_moved)
            self.branch = gui.add_dropdown("Branch", ["main"], initial_value="main")
            self.branch.on_update(self._branch_chosen)
            discard = gui.add_button("Discard other branch…", hint="forget the branch chosen below")
            self.discard_choice = gui.add_dropdown("Branch to discard", ["—"], initial_value="—")
            discard.on_click(self._discard_clicked)
        self._syncing = False

    # ------------------------------------------------------------------ steering
    def _pad_clicked(self, tokens: dict[str, str]):
        def handler(event: viser.GuiEvent) -> None:
            self.submit_step(Action(tokens[event.target.value], self.turn), event.client)
        return handler

    def _turn_clicked(self, event: viser.GuiEvent) -> None:
        self.turn = TURNS[event.target.value]
        self.turn_md.content = f"Pad steps turn: **{event.target.value}**"

    def _held(self, action: Action):
        def handler(event) -> None:
            if self.pending() < 3:  # holding must not queue up a backlog
                self.submit_step(action, getattr(event, "client", None))
        return handler

    def _play_clicked(self, event: viser.GuiEvent) -> None:
        try:
            actions = parse_actions(self.action_text.value)
        except ActionParseError as e:
            self.notify(event.client, "Not played", str(e), error=True)
            return
        if len(actions) > MAX_STEPS_PER_STRING:
            self.notify(event.client, "Not played",
                        f"{len(actions):,} steps; an action string may hold at most {MAX_STEPS_PER_STRING:,}. "
                        "Play it in parts, or use autoplay or `launch.py run` for long walks", error=True)
            return
        for a in actions:
            self.submit_step(a, event.client)

    def _stop_clicked(self, event) -> None:
        """Stop: drop every queued step (the running one finishes) and switch autoplay off."""
        self.notify(getattr(event, "client", None), "Stopped", f"{self.stop_steps()} queued step(s) dropped")

    def stop_steps(self) -> int:
        """Drop every queued step and switch autoplay off -> how many were dropped. Stop does it, and so does a
        failed step: the steps queued behind it would go on from a frame that was never made."""
        dropped = self.clear_queue()
        if self.autoplay.value:
            self.autoplay.value = False
        return dropped

    def _next_autoplay(self) -> Action:
        choice = self.autoplay_action.value
        if choice == "random":
            return Action(str(self._rng.choice(["F", "F", "F", "fL", "fR"])),
                          str(self._rng.choice(["N", "N", "L", "R"])))
        return Action.parse(choice)

    def _sync_autoplay(self) -> None:
        self.set_autoplay(self._next_autoplay if self.autoplay.value else None, float(self.autoplay_hz.value))

    def _steer_mode_changed(self) -> None:
        self.steering_by_camera(self.steer_by_camera.value != "off")

    def steering_starts_at(self, c2w: np.ndarray) -> None:
        """The viewer camera is being put at ``c2w`` (4, 4): its arrival there asks for no frame."""
        self._last_camera_target = np.asarray(c2w, dtype=np.float64).copy()

    def camera_moved(self, camera: viser.CameraHandle) -> None:
        """Viewer camera moved: when steering by camera, ask for the view at that pose (coalesced)."""
        mode = self.steer_by_camera.value
        if mode == "off":
            return
        c2w = viewer_camera_c2w(camera)
        if not np.isfinite(c2w).all():  # a client's broken camera steers nothing
            return
        if self._last_camera_target is not None and np.allclose(c2w, self._last_camera_target, atol=1e-3):
            return
        self._last_camera_target = c2w
        if mode == "exact pose":
            self.submit_step(TargetPose(c2w), camera.client, coalesce="camera-target")
        else:
            def nearest(scene: Scene):
                return scene.step(scene.model.kinematics.nearest_action(scene.current.c2w, c2w))
            self.submit("step towards camera", nearest, camera.client, coalesce="camera-target", droppable=True)

    # ------------------------------------------------------------------ timeline and branches
    def sync(self, scene: Scene) -> None:
        """Reflect the scene's length, cursor and branches (called on the worker thread)."""
        self._syncing = True
        try:
            top = max(1, scene.length - 1)
            if self.timeline.max != top:
                self.timeline.max = top
            if self.timeline.value != scene.cursor:
                self.timeline.value = scene.cursor
            names = list(scene.branches)
            if tuple(self.branch.options) != tuple(names):
                self.branch.options = names
            if self.branch.value != scene.branch_name:
                self.branch.value = scene.branch_name
            others = [n for n in names if n != scene.branch_name] or ["—"]
            if tuple(self.discard_choice.options) != tuple(others):
                self.discard_choice.options = others
        finally:
            self._syncing = False

    def _timeline_moved(self, event: viser.GuiEvent) -> None:
        if self._syncing or event.client is None:
            return
        position = int(self.timeline.value)
        self.submit(f"seek {position}", lambda scene: scene.seek(min(position, scene.length - 1)),
                    event.client, coalesce="seek")

    def _branch_chosen(self, event: viser.GuiEvent) -> None:
        if self._syncing or event.client is None:
            return
        name = self.branch.value
        self.submit(f"switch to {name}", lambda scene: scene.switch_branch(name), event.client)

    def _discard_clicked(self, event: viser.GuiEvent) -> None:
        name = self.discard_choice.value
        if name == "—":
            self.notify(event.client, "Nothing to discard", "there is only one branch", error=True)
            return
        self.submit(f"discard {name}", lambda scene: scene.discard_branch(name), event.client)
