"""Bench section "studio": action -> frame sent latency and bytes streamed per step, against map size.

The map is pre-grown to 100k / 1M / 3M points with synthetic voxels on a plane far below the walk (so
the walk's own voxels stay new), then a short procedural walk is stepped through a real Studio (viser
server, no browser): latency = submit of a step command -> worker idle (model + memory + fuse + stream +
panels), bytes = what the map streamer sent for that step.

Section "studio_neural" times the same with the learned model: without a client, with one websocket client
connected from the studio's own page origin that reads everything the server sends (as a browser tab would, but
drawing nothing): viser then serialises and sends every update, and with the real page open in headless
chromium on this machine, drawing every update with software WebGL while the model steps (when Debian's
chromium and playwright are installed: ``install.sh --test``; otherwise that figure is left out).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from studio.bench_util import free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's; a downloaded browser is never used
CHROMIUM_FLAGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
# a page held open in headless chromium until stdin closes (run in its own process: playwright's sync API
# owns an event loop); prints "ready" once the studio's page has drawn its canvas
_BROWSER_PAGE = """
import sys
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=sys.argv[1], args=sys.argv[3:], headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(sys.argv[2], wait_until="load")
    page.wait_for_selector("canvas", timeout=90_000)
    print("ready", flush=True)
    sys.stdin.read()
    browser.close()
"""


def browser_available() -> bool:
    """Debian's chromium and Python playwright are installed (``install.sh --test``)."""
    import importlib.util

    return Path(CHROMIUM).is_file() and importlib.util.find_spec("playwright") is not None


def _grow(scene, n_points: int) -> None:
    """Add about ``n_points`` voxels on a horizontal plane 200 m below the world (one fuse call per 500k)."""
    v = scene.map.voxel_size
    side = int(np.ceil(np.sqrt(n_points)))
    done = 0
    while done < n_points:
        idx = np.arange(done, min(n_points, done + 500_000))
        pts = np.stack([(idx % side) * v, np.full(len(idx), -200.0), (idx // side) * v], axis=1) + v / 2
        cols = np.full((len(idx), 3), 128, np.uint8)
        scene.map.fuse_points(pts, cols, frame_index=0)
        done += len(idx)


def bench_studio(quick: bool) -> dict[str, float]:
    from scenes.factory import make_scene
    from scenes.scene import SceneConfig
    from studio.app import Studio
    from worldmodel.actions import generated_walk

    out: dict[str, float] = {}
    sizes = {"100k": 100_000, "1m": 1_000_000} if quick else {"100k": 100_000, "1m": 1_000_000, "3m": 3_000_000}
    steps = 8 if quick else 20
    for tag, n in sizes.items():
        scene = make_scene("procedural", 0, config=SceneConfig(voxel_size=0.1))  # with memory, as the studio
        _grow(scene, n)
        studio = Studio(scene, port=free_port())
        studio.worker.wait_idle(120)
        latencies, sent = [], []
        for action in generated_walk("random", steps, 3):
            t0 = time.perf_counter()
            studio.submit_step(action, None)
            studio.worker.wait_idle(60)
            latencies.append(time.perf_counter() - t0)
            sent.append(studio.view.last_stream_bytes)
        studio.close()
        scene.close()
        out[f"studio_step_ms_{tag}"] = 1e3 * float(np.median(latencies))
        out[f"stream_bytes_per_step_{tag}"] = float(np.median(sent))
    out["studio_step_ms"] = out["studio_step_ms_100k"]
    return out


def bench_studio_neural(quick: bool) -> dict[str, float]:
    """The studio's whole step with the learned model (model + memory + fuse + stream + panels), fresh world,
    measured in a fresh process set up as ``launch.py view`` on 127.0.0.1 sets itself up (torch's threads owned
    by the worker thread, less a core for the page: :func:`studio.worker.hand_compute_threads_to_worker`;
    earlier sections of this process have run torch on the main thread)."""
    import multiprocessing as mp

    out: dict[str, float] = {}
    clients = ["none", "socket"] + (["browser"] if browser_available() else [])
    if "browser" not in clients:
        print("studio_step_ms_neural_browser left out: no /usr/bin/chromium or playwright (bash install.sh --test)",
              file=sys.stderr)
    for client in clients:
        with mp.get_context("spawn").Pool(1) as pool:
            try:
                out.update(pool.apply(_studio_neural_in_this_process, (quick, client)))
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                if client != "browser":
                    raise
                print(f"studio_step_ms_neural_browser left out: {e}", file=sys.stderr)  # the rest still counts
    return out


class _PageClient:
    """A websocket client from the studio's own page origin that reads (and counts) every message the server
    sends, on a daemon thread, until :meth:`close`."""

    def __init__(self, port: int):
        import threading

        import viser
        from websockets.sync.client import connect

        self.bytes_received = 0
        self._ws = connect(f"ws://127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}",
                           subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self._ws:
                self.bytes_received += len(message)
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._ws.close()
        self._thread.join(5)


def _studio_neural_in_this_process(quick: bool, client: str = "none") -> dict[str, float]:
    """One studio with the learned world; ``client``: "none", "socket" (:class:`_PageClient`) or "browser" (the
    page in headless chromium)."""
    from scenes.factory import make_scene
    from studio.app import Studio
    from studio.worker import hand_compute_threads_to_worker
    from worldmodel.actions import generated_walk

    hand_compute_threads_to_worker(cores_for_the_page=1)  # as a loopback studio: the page is on this machine
    scene = make_scene("neural", 0)
    port = free_port()
    studio = Studio(scene, port=port)
    page, browser = None, None
    try:
        studio.worker.wait_idle(120)
        if client == "socket":
            page = _PageClient(port)
            time.sleep(2.0)  # the page's initial state (GUI, first frame, map) arrives before the walk
        elif client == "browser":
            browser = subprocess.Popen([sys.executable, "-c", _BROWSER_PAGE, CHROMIUM, f"http://127.0.0.1:{port}/",
                                        *CHROMIUM_FLAGS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if browser.stdout.readline().strip() != "ready":
                raise RuntimeError("headless chromium did not open the studio's page")
            time.sleep(2.0)
        received_before = page.bytes_received if page else 0
        steps = 12 if quick else 30
        latencies = []
        for action in generated_walk("random", steps, 3):
            t0 = time.perf_counter()
            studio.submit_step(action, None)
            studio.worker.wait_idle(60)
            latencies.append(time.perf_counter() - t0)
        median_ms = 1e3 * float(np.median(latencies[2:]))
        if client == "none":
            return {"studio_step_ms_neural": median_ms}
        if client == "socket":
            time.sleep(0.5)  # let the last step's messages arrive
            return {"studio_step_ms_neural_client": median_ms,
                    "client_bytes_per_step_neural": (page.bytes_received - received_before) / steps}
        return {"studio_step_ms_neural_browser": median_ms}
    finally:
        if page is not None:
            page.close()
        if browser is not None:
            browser.stdin.close()
            try:
                browser.wait(30)
            except subprocess.TimeoutExpired:
                browser.kill()
        studio.close()
        scene.close()


def bench_sections() -> dict[str, Callable[[bool], dict[str, float]]]:
    return {"studio": bench_studio, "studio_neural": bench_studio_neural}
