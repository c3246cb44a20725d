"""A long queue of steps can be stopped (what else is queued still runs), and an action string cannot
queue hours of steps."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from studio.app import Studio
from studio.bench_util import free_port
from studio.controls import MAX_STEPS_PER_STRING
from studio.worker import Command
from tests.test_security import small_scene


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
    finally:
        app.close()
