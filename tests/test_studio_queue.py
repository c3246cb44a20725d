"""A long queue of steps can be stopped (what else is queued still runs), and an action string cannot
queue hours of steps."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from studio.app import Studio
from studio.bench_util import free_port
from studio.controls import MAX_STEPS_PER_STRING, PAD_ROWS, viewer_camera_c2w
from studio.worker import Command
from tests.test_security import small_scene
from worldmodel.actions import Action, parse_actions


def _studio_holding_its_worker(scene, root) -> tuple[Studio, list, threading.Event]:
    """A studio whose notes are kept in a list, its worker held inside a command until the event is set (what
    is submitted meanwhile stays queued) -> (studio, notes, gate)."""
    app = Studio(scene, port=free_port(), root=root)
    notes = []
    app.notify = lambda client, title, body, error=False: notes.append((title, body, error))
    assert app.worker.wait_idle(30)
    gate, holding = threading.Event(), threading.Event()
    app.worker.submit(Command("hold", lambda s: (holding.set(), gate.wait(10))))
    assert holding.wait(10)
    return app, notes, gate


def test_stop_clears_the_queue_and_long_strings_are_refused(tmp_path):
    app, notes, gate = _studio_holding_its_worker(small_scene(), tmp_path)  # Stop cannot drop the hold itself
    try:
        app.controls.action_text.value = "(FN)" * 500
        app.controls._play_clicked(SimpleNamespace(client=None))
        assert app.worker.pending >= 500
        saved = []  # a save (or an export, an Open world) queued among the steps is not a step: Stop keeps it
        app.submit("save session", lambda s: saved.append(s.length), None, on_done=lambda _: saved.append("done"))
        app.controls.action_text.value = "(FN)(FN)"
        app.controls._play_clicked(SimpleNamespace(client=None))
        app.controls.autoplay.value = True
        app.controls._stop_clicked(SimpleNamespace(client=None))
        gate.set()
        assert app.worker.wait_idle(30)
        assert app.worker.scene.length == 1 and app.worker.pending == 0 and app.worker.autoplay is None
        assert saved == [1, "done"]
        title, body, _ = notes[-1]
        assert title == "Stopped" and body.startswith("502 queued step")  # the steps; the running hold finished
        # a valid 1 MB string would queue 262,144 steps: refused with one clear line, nothing queued
        app.controls.action_text.value = "(FN)" * 262_144
        app.controls._play_clicked(SimpleNamespace(client=None))
        title, body, error = notes[-1]
        assert error and title == "Not played" and f"at most {MAX_STEPS_PER_STRING:,}" in body
        assert app.worker.pending == 0
        # and the studio still steps
        app.controls.action_text.value = "(FN)(FN)"
        app.controls._play_clicked(SimpleNamespace(client=None))
        assert app.worker.wait_idle(30) and app.worker.scene.length == 3
    finally:
        app.close()


def test_stop_drops_a_waiting_step_towards_the_viewer_camera(tmp_path):
    """Steering by the viewer camera in 'nearest action' mode queues steps too: Stop drops them."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    app = Studio(small_scene(), port=free_port(), root=tmp_path)
    try:
        assert app.worker.wait_idle(30)
        app.controls.steer_by_camera.value = "nearest action"
        assert app.worker.wait_idle(30)
        gate, holding = threading.Event(), threading.Event()
        app.worker.submit(Command("hold", lambda s: (holding.set(), gate.wait(10))))
        assert holding.wait(10)
        c2w = app.worker.scene.current.c2w.copy()
        c2w[:3, 3] += 0.5 * c2w[:3, 2]
        x, y, z, w = Rotation.from_matrix(c2w[:3, :3]).as_quat()
        app.controls.camera_moved(SimpleNamespace(wxyz=np.array([w, x, y, z]), position=c2w[:3, 3], client=None))
        app.controls._stop_clicked(SimpleNamespace(client=None))
        gate.set()
        assert app.worker.wait_idle(30) and app.worker.scene.length == 1
    finally:
        app.close()


def test_a_failed_step_stops_the_steps_queued_behind_it(tmp_path):
    """A world that fails at a step: the steps queued behind it (and autoplay) stop with it, in one note, instead of
    each failing in turn from a frame that was never made; the frames made before it stay, and the studio steps on
    once the world is sound again."""
    scene = small_scene()
    world_step, failing = scene.model.step, threading.Event()

    def step(action, context):
        if failing.is_set():
            raise RuntimeError("model exploded")
        return world_step(action, context)

    scene.model.step = step
    app, notes, gate = _studio_holding_its_worker(scene, tmp_path)
    try:
        app.controls.action_text.value = "(FN)(FN)(FN)(FN)"
        app.controls._play_clicked(SimpleNamespace(client=None))
        app.controls.autoplay.value = True
        failing.set()
        gate.set()
        assert app.worker.wait_idle(30)
        failures = [n for n in notes if n[2]]
        assert len(failures) == 1, failures
        title, body, _ = failures[0]
        assert title == "step (FN) failed" and body == "model exploded (3 queued step(s) dropped, autoplay off)"
        assert app.worker.scene.length == 1 and app.worker.autoplay is None and not app.controls.autoplay.value
        failing.clear()
        app.controls._play_clicked(SimpleNamespace(client=None))
        assert app.worker.wait_idle(30) and app.worker.scene.length == 5
        failing.set()  # a failed step with nothing behind it says only why
        app.submit_step(Action("F", "N"), None)
        assert app.worker.wait_idle(30) and notes[-1] == ("step (FN) failed", "model exploded", True)
    finally:
        app.close()


def test_a_held_button_queues_no_backlog_and_the_pad_steps_with_the_turn_chosen(tmp_path):
    """Holding a button repeats its step while at most 3 wait (no backlog to walk off after letting go); a pad
    button steps with the turn chosen beside it (⟲ left: L, counter-clockwise seen from above)."""
    app, notes, gate = _studio_holding_its_worker(small_scene(), tmp_path)
    try:
        held = app.controls._held(Action("F", "N"))
        for _ in range(10):  # the page repeats a held button 8 times a second
            held(SimpleNamespace(client=None))
        assert app.worker.pending == 3
        gate.set()
        assert app.worker.wait_idle(30) and app.worker.scene.length == 4
        app.controls._turn_clicked(SimpleNamespace(target=SimpleNamespace(value="⟲ left")))
        forward = app.controls._pad_clicked(dict(PAD_ROWS[0]))
        forward(SimpleNamespace(target=SimpleNamespace(value="↑ F"), client=None))
        assert app.worker.wait_idle(30) and app.worker.scene.current.action == Action("F", "L")
        assert "⟲ left" in app.controls.turn_md.content and not notes
    finally:
        app.close()


def test_an_action_string_of_the_limit_plays_and_a_bad_one_is_an_error(tmp_path):
    app, notes, gate = _studio_holding_its_worker(small_scene(), tmp_path)
    try:
        app.controls.action_text.value = "(FN)" * MAX_STEPS_PER_STRING
        app.controls._play_clicked(SimpleNamespace(client=None))
        assert app.worker.pending == MAX_STEPS_PER_STRING and not notes
        assert app.worker.clear() == MAX_STEPS_PER_STRING
        app.controls.action_text.value = "(FN)(fR_L)"
        app.controls._play_clicked(SimpleNamespace(client=None))
        assert notes == [("Not played", notes[0][1], True)] and "position 7" in notes[0][1]
        assert app.worker.pending == 0
    finally:
        gate.set()
        app.close()


def test_steering_by_the_viewer_camera_steps_only_while_on_once_per_new_pose(tmp_path):
    """Off, a moving view (following the camera, looking around) asks for nothing, and switching it off leaves
    following alone; on, a pose asks for one frame (not again when the view reports it twice, nothing for a broken
    camera); in 'nearest action' mode only the newest pose waiting is stepped to."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    def camera(c2w):
        x, y, z, w = Rotation.from_matrix(c2w[:3, :3]).as_quat()
        return SimpleNamespace(wxyz=np.array([w, x, y, z]), position=c2w[:3, 3].copy(), client=None)

    app = Studio(small_scene(), port=free_port(), root=tmp_path)
    try:
        assert app.worker.wait_idle(30)
        scene, controls = app.worker.scene, app.controls
        ahead = scene.current.c2w.copy()
        ahead[:3, 3] += 0.5 * ahead[:3, 2]
        controls.camera_moved(camera(ahead))
        assert app.worker.wait_idle(30) and scene.length == 1
        controls.steer_by_camera.value = "exact pose"
        assert app.worker.wait_idle(30) and not app.inspect.follow.value
        app.inspect.follow.value = True
        controls.steer_by_camera.value = "off"
        assert app.worker.wait_idle(30) and app.inspect.follow.value
        controls.steer_by_camera.value = "exact pose"
        assert app.worker.wait_idle(30)
        broken = camera(ahead)
        broken.position[1] = np.nan
        controls.camera_moved(broken)
        for _ in range(2):
            controls.camera_moved(camera(ahead))
            assert app.worker.wait_idle(30) and scene.length == 2
        controls.steer_by_camera.value = "nearest action"
        assert app.worker.wait_idle(30)
        gate, holding = threading.Event(), threading.Event()
        app.worker.submit(Command("hold", lambda s: (holding.set(), gate.wait(10))))
        assert holding.wait(10)
        for metres in (0.3, 0.6, 0.9):
            further = scene.current.c2w.copy()
            further[:3, 3] += metres * further[:3, 2]
            controls.camera_moved(camera(further))
        gate.set()
        assert app.worker.wait_idle(30) and scene.length == 3
        # the view stays where it was flown (a step is not a jump: the next move steers from the view's pose)
        assert np.allclose(controls._last_camera_target, viewer_camera_c2w(camera(further)))
        assert not np.allclose(scene.current.c2w, controls._last_camera_target, atol=1e-3)
    finally:
        app.close()


def test_discard_needs_another_branch_and_errors_stay_on_screen(tmp_path):
    """Discard with no other branch says so; with one, it goes. Errors stay until closed, other notes close."""
    app = Studio(small_scene(), port=free_port(), root=tmp_path)
    try:
        shown = []
        tab = SimpleNamespace(add_notification=lambda title, body, **kw: shown.append((title, kw)))
        app.controls._discard_clicked(SimpleNamespace(client=tab))
        assert shown == [("Nothing to discard", dict(auto_close_seconds=None, color="red"))]
        app.notify(tab, "Session saved", "sessions/latest")
        assert shown[-1] == ("Session saved", dict(auto_close_seconds=4.0, color=None))
        app.submit_step(Action("F", "N"), None)
        app.submit("seek", lambda s: s.seek(0), None)
        app.submit_step(Action("B", "N"), None)
        assert app.worker.wait_idle(30)
        scene = app.worker.scene
        assert scene.branch_name != "main" and tuple(app.controls.discard_choice.options) == ("main",)
        app.controls.discard_choice.value = "main"
        app.controls._discard_clicked(SimpleNamespace(client=tab))
        assert app.worker.wait_idle(30) and list(scene.branches) == [scene.branch_name] and len(shown) == 2
    finally:
        app.close()


def test_a_seek_queued_behind_a_switch_to_a_shorter_branch_goes_to_its_last_frame(tmp_path):
    """The timeline dragged to frame 4 of 'main' while a switch to a 3-frame branch waits: the seek runs in that
    branch and stops at its last frame (it is not an error)."""
    scene = small_scene()
    scene.run(parse_actions("(FN)(FN)(FN)(FN)"))
    scene.seek(1)
    scene.step(Action("B", "N"))
    fork = scene.branch_name
    scene.switch_branch("main")
    app, notes, gate = _studio_holding_its_worker(scene, tmp_path)
    try:
        tab = SimpleNamespace()  # (a tab's event; the studio's notes are kept in a list)
        app.controls.branch.value = fork
        app.controls._branch_chosen(SimpleNamespace(client=tab))
        app.controls.timeline.value = 4
        app.controls._timeline_moved(SimpleNamespace(client=tab))
        gate.set()
        assert app.worker.wait_idle(30) and not notes, notes
        assert (scene.branch_name, scene.length, scene.cursor) == (fork, 3, 2)
    finally:
        app.close()
