"""End to end: the real studio page in headless Debian chromium, driven by playwright.

Opens the page, presses the forward pad button five times, waits for the frame counter to read 5,
checks the streamed point cloud exists and grew, and that the 3D canvas is not blank.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from memory.bank import GeometricMemory
from scenes.scene import Scene, SceneConfig
from studio.app import Studio
from studio.bench_studio import CHROMIUM, CHROMIUM_FLAGS as FLAGS
from studio.bench_util import free_port
from worldmodel.registry import create_world


@pytest.fixture(scope="module")
def studio():
    # Small frames and coarse voxels keep the browser scene small (software WebGL).
    scene = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.25),
                  memory=GeometricMemory())
    scene.reset(0)
    app = Studio(scene, port=free_port())
    assert app.worker.wait_idle(30)
    yield app
    app.close()


@pytest.fixture(scope="module")
def page(studio):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pg = browser.new_page(viewport={"width": 1280, "height": 800})
        pg.goto(f"http://127.0.0.1:{studio.server.get_port()}/", wait_until="load")
        pg.wait_for_selector("canvas", timeout=60_000)
        yield pg
        browser.close()


def canvas_png(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB"))


def test_drive_forward_five_times(studio, page):
    page.get_by_text("Frame 0", exact=False).first.wait_for(timeout=60_000)
    points_before = studio.view.sink.points_shown
    nodes_before = len(studio.view.sink.handles)
    assert points_before > 0 and nodes_before > 0
    before = canvas_png(page)
    forward = page.get_by_role("button", name="↑ F")
    for _ in range(5):
        forward.click()
        time.sleep(0.15)
    page.get_by_text("Frame 5", exact=False).first.wait_for(timeout=60_000)
    assert studio.worker.wait_idle(30)
    scene = studio.worker.scene
    assert scene.length == 6 and scene.cursor == 5
    # the point cloud in the browser grew with the map, and matches it
    assert studio.view.sink.points_shown > points_before
    studio.submit("full", lambda s: setattr(studio, "full_resync", True), None)
    studio.submit("sync", lambda s: None, None)
    assert studio.worker.wait_idle(30)
    assert studio.view.sink.points_shown == len(scene.map.points()[0])
    time.sleep(1.0)
    after = canvas_png(page)
    # not blank: many distinct colours, clear spatial variation; and the view changed as the camera moved
    assert len(np.unique(after.reshape(-1, 3), axis=0)) > 200
    assert after.std() > 10
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 1.0
    page.screenshot(path="/tmp/worldstudio_e2e.png")


def test_bad_action_string_changes_nothing(studio, page):
    scene = studio.worker.scene
    length = scene.length
    boxes = page.get_by_role("textbox")
    box = next(boxes.nth(i) for i in range(boxes.count()) if boxes.nth(i).input_value().startswith("(FN)"))
    box.fill("(FN)(fR_L)")
    box.press("Enter")
    page.get_by_role("button", name="Play actions").click()
    page.get_by_text("position 7", exact=False).first.wait_for(timeout=30_000)
    assert studio.worker.wait_idle(10)
    assert scene.length == length
