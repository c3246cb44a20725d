"""The studio without a browser: streaming, worker ordering, commands, exports and uploads."""

from __future__ import annotations

import io
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import viser
from scipy.spatial.transform import Rotation

from scenes.scene import Scene, SceneConfig
from scenes.session import SessionError
from studio.app import Studio
from studio.bench_studio import _grow
from studio.bench_util import free_port
from studio.export_panel import ExportPanel, unzip_session
from studio.stream import ColourContext, CountingSink, MapStreamer
from studio.worker import Command, SceneWorker
from worldmodel.actions import parse_actions
from worldmodel.registry import create_world


def small_scene(seed: int = 0) -> Scene:
    scene = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.2))
    scene.reset(seed)
    return scene


def test_viser_sink_updates_a_known_chunk_in_place():
    """A chunk sent again keeps its node and shows the new points and colours; a moved chunk gets a new node;
    an empty payload removes it."""
    import viser

    from studio.stream import ChunkPayload
    from studio.view3d import ViserSink

    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        sink, origin = ViserSink(server), np.array([4.0, 0.0, 8.0])
        rng = np.random.default_rng(0)
        sink.apply([ChunkPayload("/map/c0", origin, rng.random((50, 3), dtype=np.float32),
                                 np.zeros((50, 3), np.uint8))])
        node = sink.handles["/map/c0"]
        more = rng.random((80, 3), dtype=np.float32)
        sink.apply([ChunkPayload("/map/c0", origin, more, np.full((80, 3), 200, np.uint8))])
        assert sink.handles["/map/c0"] is node and sink.points_shown == 80
        assert np.allclose(node.points, more, atol=1e-3) and (node.colors == 200).all()
        sink.apply([ChunkPayload("/map/c0", origin + 4, more[:10], np.zeros((10, 3), np.uint8))])
        assert sink.handles["/map/c0"] is not node and sink.points_shown == 10
        sink.apply([ChunkPayload("/map/c0", origin, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))])
        assert sink.handles == {} and sink.points_shown == 0
    finally:
        server.stop()


def test_streamed_points_match_the_map_including_the_past():
    scene = small_scene()
    streamer, sink = MapStreamer(chunk_m=4.0, max_deltas=3), CountingSink()
    sink.apply(streamer.update(scene.map))
    for a in parse_actions("(FN)(FL)(FL)(FN)(fRN)(FN)(FR)"):
        scene.step(a)
        sink.apply(streamer.update(scene.map))
        assert streamer.node_count <= len(streamer._chunk_rows) + 3  # deltas stay bounded
    sink.apply(streamer.update(scene.map, full=True))
    assert sink.points == len(scene.map.points()[0])
    # scrubbing back shows exactly the map as it was
    scene.seek(2)
    sink.apply(streamer.update(scene.map, upto_frame=2))
    assert sink.points == len(scene.map_points()[0]) < len(scene.map)
    # a fork replaces the map object: every old node is dropped and the new map sent
    scene.step(parse_actions("(BN)")[0])
    sink.apply(streamer.update(scene.map))
    assert sink.points == len(scene.map.points()[0])


def test_the_browser_holds_the_map_after_scrubbing_forward_again_and_after_a_map_swap_with_deltas_pending():
    """Scrubbing back and then to the newest frame shows the whole map again; another map (a session opened, a
    branch switched) while step deltas are pending leaves none of the old map's chunks or deltas behind. Step
    deltas go as float32 (they span chunks: float16 offsets would lose centimetres)."""
    def shown_is(sink, pmap, upto=None) -> bool:
        return sink.voxel_keys(pmap.voxel_size) == set(pmap.keys_of_points(pmap.points(upto_frame=upto)[0]).tolist())

    scene = small_scene()
    streamer, sink = MapStreamer(chunk_m=4.0), CountingSink()
    sink.apply(streamer.update(scene.map))
    for a in parse_actions("(FN)(FL)(FN)"):
        scene.step(a)
        payloads = streamer.update(scene.map)
        assert all(p.precision == "float32" for p in payloads if "/d_" in p.name) and payloads
        sink.apply(payloads)
    sink.apply(streamer.update(scene.map, upto_frame=1))
    assert shown_is(sink, scene.map, upto=1)
    sink.apply(streamer.update(scene.map))
    assert shown_is(sink, scene.map)
    scene.step(parse_actions("(FN)")[0])
    sink.apply(streamer.update(scene.map))
    assert any("/d_" in name for name in sink.nodes)  # a delta pending
    other = small_scene(seed=5)
    sink.apply(streamer.update(other.map))
    assert shown_is(sink, other.map) and sink.points == len(other.map.points()[0])
    scene.close()
    other.close()


def _a_ghost_wall_then_carved() -> list[tuple[np.ndarray, np.ndarray]]:
    """(depth, c2w) of frames that see a wall 5 m ahead, then a ghost 0.75 m before it, then the wall again from
    nine poses about the first: free-space carving removes the ghost."""
    frames = [(5.0, 0.0, 0.0), (4.25, 0.0, 0.0)] + [(5.0, dx, dy) for dx in (-0.1, 0.0, 0.1) for dy in (-0.1, 0.0, 0.1)]
    out = []
    for depth, dx, dy in frames:
        c2w = np.eye(4)
        c2w[:2, 3] = dx, dy
        out.append((np.full((48, 64), depth, np.float32), c2w))
    return out


def test_carved_voxels_leave_the_browser_without_a_full_resync():
    from recon.pointmap import VoxelPointMap
    from worldmodel.camera import intrinsics_from_fov

    K, rgb = intrinsics_from_fov(64, 48, 60.0), np.full((48, 64, 3), 90, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.1, carve=True)
    streamer, sink = MapStreamer(max_deltas=1), CountingSink()
    frames = _a_ghost_wall_then_carved()
    for i, (depth, c2w) in enumerate(frames):
        pmap.fuse(depth, rgb, K, c2w, i)
        sink.apply(streamer.update(pmap))
    for _ in range(2):  # retire the pending deltas (nothing new arrives)
        pmap.fuse(np.zeros((48, 64), np.float32), rgb, K, np.eye(4), len(frames))
        sink.apply(streamer.update(pmap))
    visible = pmap.points()[0]
    assert len(visible) < len(pmap)  # the ghost was carved away ...
    assert sink.voxel_keys(0.1) == set(pmap.keys_of_points(visible).tolist())  # ... in the browser too


def test_a_delta_node_that_shows_a_carved_voxel_retires_at_once():
    """Whatever the budget of pending deltas (here more than the walk's steps), no delta node goes on showing a
    voxel carved away (a chunk node may, until the step's delta retires and re-sends it)."""
    from recon.pointmap import VoxelPointMap, voxel_keys
    from worldmodel.camera import intrinsics_from_fov

    K, rgb = intrinsics_from_fov(64, 48, 60.0), np.full((48, 64, 3), 90, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.1, carve=True)
    streamer, sink = MapStreamer(max_deltas=20), CountingSink()
    for i, (depth, c2w) in enumerate(_a_ghost_wall_then_carved()):
        pmap.fuse(depth, rgb, K, c2w, i)
        sink.apply(streamer.update(pmap))
        visible = set(pmap.keys_of_points(pmap.points()[0]).tolist())
        deltas = [points for name, points in sink.nodes.items() if "/d_" in name]
        assert all(set(voxel_keys(np.floor(p / 0.1).astype(np.int64)).tolist()) <= visible for p in deltas), i
    assert len(visible) < len(pmap) and len(deltas) > 1


def test_age_colours_run_from_the_first_frame_to_the_newest_when_picked():
    from recon.visual import colorize_scalar
    from studio.stream import point_colours

    scene = small_scene()
    scene.run(parse_actions("(FN)(FN)(FN)"))
    rows = np.arange(len(scene.map))
    pts, rgb = scene.map.rows_points(rows)
    colours = point_colours(scene.map, rows, pts, rgb, ColourContext("age", frame_count=scene.length))
    first_seen = scene.map.first_seen[rows]
    ends = colorize_scalar(np.array([0.0, 1.0], np.float32), lo=0.0, hi=1.0)
    assert (colours[first_seen == 0] == ends[0]).all() and (colours[first_seen == 3] == ends[1]).all()
    scene.close()


def test_bytes_per_step_do_not_grow_with_the_map():
    sent = []
    for extra in (0, 400_000):
        scene = small_scene(seed=4)
        _grow(scene, extra)
        streamer = MapStreamer()
        streamer.update(scene.map)
        per_step = []
        for a in parse_actions("(FN)(FN)(FL)(FN)(FR)(FN)"):
            scene.step(a)
            streamer.update(scene.map, ctx=ColourContext("age", frame_count=scene.length))
            per_step.append(streamer.last_bytes)
        sent.append(per_step)
    assert sent[0] == sent[1]  # identical walks: identical traffic, whatever else the map holds
    assert max(sent[1]) < 400_000 * 9 / 20


def test_worker_runs_in_order_and_coalesces_camera_targets():
    scene = small_scene()
    done, errors = [], []
    gate = threading.Event()
    worker = SceneWorker(scene, after=lambda c, r: done.append(c.label), on_error=lambda l, m: errors.append((l, m)))
    worker.start()
    worker.submit(Command("block", lambda s: gate.wait(5)))
    for i in range(5):
        worker.submit(Command(f"target {i}", lambda s: None, coalesce_key="cam"))
    worker.submit(Command("bad", lambda s: s.seek(99)))
    worker.submit(Command("last", lambda s: None))
    gate.set()
    assert worker.wait_idle(10)
    worker.stop()
    assert done == ["block", "target 4", "last"]
    assert len(errors) == 1 and "position 99" in errors[0][1]
    # stopping (the studio's Ctrl-C) waits for the running command, as long as it takes, and runs nothing queued:
    # the queued steps are dropped, and the exports and saves among them named as not done
    done.clear()
    worker = SceneWorker(scene, after=lambda c, r: done.append(c.label), on_error=lambda l, m: None)
    worker.start()
    started = threading.Event()
    worker.submit(Command("export MP4", lambda s: (started.set(), time.sleep(1.0))))
    worker.submit(Command("step", lambda s: None, droppable=True))
    worker.submit(Command("save session", lambda s: None))
    assert started.wait(5) and worker.running == "export MP4"
    assert worker.stop(wait_s=None) == ["save session"]
    assert done == ["export MP4"] and worker.running is None and not worker._thread.is_alive()
    refused = []  # a click while the studio stops is refused, with a line (its working note settles)
    worker.submit(Command("export PLY", lambda s: None, on_error=refused.append))
    assert refused == ["the studio is stopping; start it again and retry"] and done == ["export MP4"]


def test_the_worker_says_a_failures_first_line_autoplays_while_idle_and_names_only_real_work_not_done():
    scene = small_scene()
    done, errors = [], []
    worker = SceneWorker(scene, after=lambda c, r: done.append(c.label), on_error=lambda l, m: errors.append(m))
    worker.start()

    def fails(error: Exception):
        def run(scene):
            raise error
        return run

    worker.submit(Command("two lines", fails(ValueError("position 99 is outside\n(a second line)"))))
    worker.submit(Command("no message", fails(RuntimeError())))
    assert worker.wait_idle(10) and errors == ["position 99 is outside", "RuntimeError"]
    three = threading.Event()  # autoplay: steps come while nothing is queued, and the queue still works after
    worker.autoplay = lambda: None if three.is_set() else Command("auto", lambda s: len(done) >= 2 and three.set())
    worker.autoplay_hz = 100.0
    worker.wake()
    assert three.wait(10)
    worker.autoplay = None
    worker.submit(Command("after autoplay", lambda s: None))
    assert worker.wait_idle(10) and done[-1] == "after autoplay" and done.count("auto") >= 2
    gate, holding = threading.Event(), threading.Event()
    worker.submit(Command("hold", lambda s: (holding.set(), gate.wait(10))))
    assert holding.wait(10)
    worker.wake()  # (a settings change: not a command of the user's)
    worker.submit(Command("save session", lambda s: None))
    assert worker.stop(wait_s=0) == ["save session"]
    gate.set()
    worker.stop()
    scene.close()


@pytest.fixture()
def studio():
    app = Studio(small_scene(), port=free_port())
    assert app.worker.wait_idle(30)
    yield app
    app.close()


def test_studio_commands_step_seek_fork_and_camera_steering(studio):
    for a in parse_actions("(FN)(FN)(FN)"):
        studio.submit_step(a, None)
    assert studio.worker.wait_idle(30)
    scene = studio.worker.scene
    assert scene.length == 4 and studio.controls.timeline.value == 3
    studio.submit("seek", lambda s: s.seek(1), None)
    studio.submit_step(parse_actions("(RN)")[0], None)
    assert studio.worker.wait_idle(30)
    assert scene.branch_name != "main" and set(studio.controls.branch.options) == {"main", scene.branch_name}
    assert studio.view.sink.points_shown > 0
    # fly the viewer camera: the world model renders the view at that pose
    target = scene.current.c2w.copy()
    target[:3, 3] += [1.0, 0.5, 0.0]
    x, y, z, w = Rotation.from_matrix(target[:3, :3]).as_quat()
    camera = SimpleNamespace(wxyz=np.array([w, x, y, z]), position=target[:3, 3], client=None)
    studio.controls.steer_by_camera.value = "exact pose"
    studio.controls.camera_moved(camera)
    assert studio.worker.wait_idle(30)
    assert np.allclose(scene.current.c2w[:3, :3], target[:3, :3], atol=1e-9)
    assert np.allclose(scene.current.c2w[[0, 2], 3], target[[0, 2], 3])


def test_exports_from_the_studio_are_complete_files(studio, tmp_path):
    scene = studio.worker.scene
    scene.run(parse_actions("(FN)(FN)"))
    ply = ExportPanel._ply(scene, tmp_path)
    assert ply.read_bytes().startswith(b"ply\nformat binary_little_endian")
    z = ExportPanel._session_zip(scene, tmp_path)
    folder = unzip_session(z.read_bytes(), tmp_path / "unzipped")
    assert (folder / "session.json").is_file()


def test_an_uploaded_session_steps_on_after_its_upload_folder_is_gone(studio, tmp_path):
    """The opened scene's private copy of the frames must not live in the upload folder (removed right after
    the load): stepping reads the recent frames back from that copy."""
    scene = studio.worker.scene
    saved = Scene(create_world("procedural", width=96, height=72), SceneConfig(voxel_size=0.2, ram_frames=2))
    saved.reset(0)
    saved.run(parse_actions("(FN)(FN)(FL)(FN)"))
    flat = zipfile.ZipFile(ExportPanel._session_zip(saved, tmp_path))
    saved.close()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # as `zip -r s.zip mysession/` makes it: one folder inside
        for name in flat.namelist():
            z.writestr(f"mysession/{name}", flat.read(name))
    content = buf.getvalue()
    errors = []
    studio.notify = lambda client, title, body, error=False: errors.append(body) if error else None
    button = studio.exports.upload
    button._impl.value = viser.UploadedFile(name="session.zip", content=content)  # as viser leaves it
    studio.exports._uploaded(SimpleNamespace(target=button, client=None))
    assert studio.worker.wait_idle(30)
    opened = studio.worker.scene
    assert opened is not scene and opened.length == 5 and not errors, errors
    studio.submit_step(parse_actions("(FN)")[0], None)
    assert studio.worker.wait_idle(30)
    assert opened.length == 6 and not errors, errors


def test_an_upload_over_the_limit_is_refused_as_it_starts(studio, monkeypatch):
    """viser keeps an upload's parts in RAM until the last one arrives: an upload that announces more than the
    limit is dropped at its first message (its parts are not kept) and its tab is told why; one within the limit
    still reaches the button (here a file that is not a .zip, refused by unzip_session). Sent as the page sends
    them, through a websocket from the studio's own origin."""
    import threading
    import time

    import msgspec
    from websockets.sync.client import connect

    from studio import export_panel

    monkeypatch.setattr(export_panel, "MAX_UPLOAD_BYTES", 1000)
    notes: list[tuple[str, str]] = []
    monkeypatch.setattr(studio, "notify", lambda client, title, body, error=False: notes.append((title, body)))
    port, button = studio.server.get_port(), studio.exports.upload._impl.uuid
    in_flight = studio.server.gui._current_file_upload_states

    def wait_for(title: str) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for t, body in list(notes):
                if t == title:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"no {title!r} notification: {notes}")

    with connect(f"ws://127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}", max_size=None,
                 subprotocols=[f"viser-v{viser.__version__}"]) as ws:
        threading.Thread(target=lambda: [None for _ in ws], daemon=True).start()  # read what the server sends
        ws.send(msgspec.msgpack.encode(dict(  # viser counts a tab as connected once it reports its camera
            type="ViewerCameraMessage", wxyz=(1.0, 0.0, 0.0, 0.0), position=(0.0, 0.0, 0.0), fov=1.0, near=0.01,
            far=100.0, image_height=480, image_width=640, look_at=(0.0, 0.0, 1.0), up_direction=(0.0, -1.0, 0.0))))
        deadline = time.monotonic() + 20
        while not studio.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.05)

        def upload(name: str, content: bytes, announced: int) -> None:
            ws.send(msgspec.msgpack.encode(dict(type="FileTransferStartUpload", source_component_uuid=button,
                                                transfer_uuid=name, filename=name, mime_type="application/zip",
                                                size_bytes=announced, part_count=2)))
            for i, part in enumerate((content[: len(content) // 2], content[len(content) // 2:])):
                ws.send(msgspec.msgpack.encode(dict(type="FileTransferPart", source_component_uuid=button,
                                                    transfer_uuid=name, part_index=i, content=part)))

        upload("big.zip", b"x" * 1200, 1200)
        assert "more than the 0 GiB limit" in wait_for("Upload refused")
        assert "big.zip" not in in_flight
        upload("small.zip", b"x" * 600, 600)
        assert "not a .zip" in wait_for("open upload failed")
    assert not in_flight
    assert studio.exports.upload.value.name == "small.zip" and studio.exports.upload.value.content == b""  # freed


def test_uploads_that_are_not_sessions_are_refused(tmp_path):
    with pytest.raises(SessionError, match="not a .zip"):
        unzip_session(b"hello", tmp_path / "a")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../evil.txt", "x")
    with pytest.raises(SessionError, match="outside"):
        unzip_session(buf.getvalue(), tmp_path / "b")
    assert not (tmp_path / "evil.txt").exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "x")
    with pytest.raises(SessionError, match="no session.json"):
        unzip_session(buf.getvalue(), tmp_path / "c")
    from studio import export_panel

    huge = export_panel.MAX_UPLOAD_BYTES
    export_panel.MAX_UPLOAD_BYTES = 10
    try:
        with pytest.raises(SessionError, match="limit"):
            unzip_session(b"x" * 11, tmp_path / "d")
    finally:
        export_panel.MAX_UPLOAD_BYTES = huge


def test_open_world_from_the_ui_and_bad_spec_keeps_the_scene(studio):
    studio.exports.world.value, studio.exports.seed.value = "procedural:fly", 3
    studio.exports._new_world(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    scene = studio.worker.scene
    assert scene.model.config.fly and scene.seed == 3 and scene.length == 1
    studio.exports.world.value = "minecraft"
    studio.exports._new_world(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    assert studio.worker.scene is scene


def test_apply_voxel_size_rescales_cameras_trail_and_points(studio):
    """Regression: after *Apply voxel size* the frustums, trail thumbnails and point size kept the old scale."""
    for a in parse_actions("(FN)(FN)"):
        studio.submit_step(a, None)
    assert studio.worker.wait_idle(30)
    view, old_size = studio.view, studio.view.size
    assert view._thumbs[0].scale == pytest.approx(0.6 * old_size)
    studio.inspect.voxel.value = 0.05
    studio.inspect._voxel_changed(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    scene = studio.worker.scene
    assert scene.config.voxel_size == 0.05 and view.size == pytest.approx(6 * 0.05) != old_size
    assert view._thumbs[0].scale == pytest.approx(0.6 * view.size)  # the trail was redrawn at the new scale
    assert studio.inspect.point_size.value == pytest.approx(0.045)
    assert view.sink.handles and all(h.point_size == pytest.approx(0.045) for h in view.sink.handles.values())
    assert view.sink.points_shown == len(scene.map_points()[0])


def test_panels_get_narrow_interfaces_not_the_studio():
    import ast
    from pathlib import Path

    for name in ("controls", "export_panel", "inspect_panel", "live_panel", "view3d"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / "studio" / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "studio.app" not in imported, name


def test_a_step_shows_memory_and_cache_without_reading_them_back_from_the_store():
    from scenes.factory import make_scene
    from scenes.scene import SceneConfig

    scene = make_scene("procedural", 0, size=(96, 72), config=SceneConfig(voxel_size=0.2, memory_k=3))
    scene.run(parse_actions("(FN)(FN)(FN)(SL)" * 3))  # enough keyframes for retrieval
    app = Studio(scene, port=free_port())
    try:
        assert app.worker.wait_idle(30)
        app.live.show_cache.value = True
        step = scene.step(parse_actions("(SR)")[0])
        assert step.memory_fids and step.cache is not None and step.agreement is not None
        assert len(step.memory_poses) == len(step.memory_indices) == len(step.memory_scores)
        reads = []
        real_get = scene.store.get
        scene.store.get = lambda fid: reads.append(fid) or real_get(fid)
        app._after(Command("step", lambda s: None), step)
        assert set(reads) <= {step.fid}  # only the current frame; keyframes and cache come with the step
        assert f"| 1 | {step.memory_indices[0]} |" in app.live.memory_md.content
        assert "PSNR" in app.live.memory_md.content and len(app.view._memory_nodes) == len(step.memory_fids)
        # the next step moves the same viser nodes (no re-adding), to the poses of its own keyframes
        nodes, current = list(app.view._memory_nodes), app.view._current
        step2 = scene.step(parse_actions("(FR)")[0])
        app._after(Command("step", lambda s: None), step2)
        kept = app.view._memory_nodes
        assert len(kept) == len(step2.memory_fids) and kept == nodes[:len(kept)] and app.view._current is current
        for (frustum, label), c2w, index in zip(kept, step2.memory_poses, step2.memory_indices):
            assert np.allclose(frustum.position, c2w[:3, 3]) and f"frame {index}:" in label.text
        assert np.allclose(current.position, step2.frame.c2w[:3, 3])
    finally:
        app.close()


@pytest.mark.parametrize("cores_for_the_page", [0, 1])
def test_the_worker_thread_owns_torchs_threads_after_the_hand_off(cores_for_the_page):
    """launch.py view hands torch's intra-op threads to the worker (one OpenMP team: see
    studio.worker.hand_compute_threads_to_worker), less a core for a page drawn on this machine (never fewer
    than 1); checked in a fresh process, as the studio starts."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch\n"
        "from studio.worker import Command, SceneWorker, hand_compute_threads_to_worker\n"
        "before = torch.get_num_threads()\n"
        f"hand_compute_threads_to_worker(cores_for_the_page={cores_for_the_page})\n"
        "seen = []\n"
        "w = SceneWorker(None, after=lambda c, r: None, on_error=lambda label, msg: None)\n"
        "w.start()\n"
        "w.submit(Command('probe', lambda scene: seen.append(torch.get_num_threads())))\n"
        "assert w.wait_idle(10)\n"
        "w.stop()\n"
        "print(before, torch.get_num_threads(), seen[0])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    before, main_after, on_worker = map(int, out.stdout.split())
    assert (main_after, on_worker) == (1, max(1, before - cores_for_the_page))


def test_the_live_panel_says_when_the_world_refused_a_move():
    """Procedural seed 1's random walk: its 29th step (fLL) walks into an obstacle, and the simulator only turns
    (ground truth: the camera stays where it stood). The step says so and the live panel shows it; a step that
    moves, or stays by command (S), does not."""
    from scenes.factory import make_scene
    from worldmodel.actions import generated_walk

    walk = generated_walk("random", 29, 1)
    scene = make_scene("procedural", 1, size=(64, 48), config=SceneConfig(voxel_size=0.2, memory_k=0))
    scene.run(walk[:27])
    app = Studio(scene, port=free_port())
    try:
        assert app.worker.wait_idle(30)
        notes = []
        for action in [walk[27], walk[28], *parse_actions("(SR)")]:
            start = app.worker.scene.current.c2w[:3, 3].copy()
            app.submit_step(action, None)
            assert app.worker.wait_idle(30)
            moved = np.linalg.norm(app.worker.scene.current.c2w[:3, 3] - start) > 1e-6
            notes.append((str(action), moved, app.worker.scene.last_step.move_refused,
                          "did not move" in app.live.status.content))
        assert notes == [(str(walk[27]), True, False, False), ("(fLL)", False, True, True),
                         ("(SR)", False, False, False)], notes
        # the frames/s readout is the rate of the current run of steps: a pause is idle, not a slow step
        import studio.live_panel as live_panel

        assert "frames/s" in app.live.status.content, app.live.status.content
        later = time.monotonic() + 3 * live_panel.IDLE_AFTER_S
        with mock.patch.object(live_panel.time, "monotonic", lambda: later):
            app.live.refresh_rate()  # (the studio's main loop, each second: no command needed)
            assert "idle" in app.live.status.content and "frames/s" not in app.live.status.content
            assert "World **procedural**" in app.live.status.content
            app.live.update(app.worker.scene, None, 0.0, 0, 0, None)
            assert "idle" in app.live.status.content and "frames/s" not in app.live.status.content
            app.submit_step(parse_actions("(SL)")[0], None)
            assert app.worker.wait_idle(30)
            assert "one step at a time" in app.live.status.content, app.live.status.content
    finally:
        app.close()


def test_a_world_switch_clears_the_old_memory_and_moves_a_steering_view_to_the_new_camera():
    """Another world (or a seek) while steering by the viewer camera puts the views at the new current camera,
    so the next small move of the view asks for a frame near it, not at the old world's pose; the old world's
    retrieved keyframes and agreement leave the view and the Memory tab."""
    from scenes.factory import make_scene

    scene = make_scene("procedural", 0, size=(96, 72), config=SceneConfig(voxel_size=0.2, memory_k=3))
    scene.run(parse_actions("(FN)(FN)(FN)(SL)" * 3))  # enough keyframes for retrieval
    studio = Studio(scene, port=free_port())
    try:
        steer_after_a_world_switch(studio)
    finally:
        studio.close()


def steer_after_a_world_switch(studio: Studio) -> None:
    from studio.live_panel import NO_MEMORY_YET

    assert studio.worker.wait_idle(30)
    scene = studio.worker.scene
    for a in parse_actions("(SR)(FN)"):
        studio.submit_step(a, None)
    assert studio.worker.wait_idle(30)
    assert studio.view._memory_nodes and studio.live.memory_md.content != NO_MEMORY_YET
    studio.controls.steer_by_camera.value = "exact pose"
    assert studio.worker.wait_idle(30)
    studio.exports.world.value, studio.exports.seed.value = "procedural", 7
    studio.exports._new_world(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    opened = studio.worker.scene
    assert opened is not scene and opened.length == 1
    assert not studio.view._memory_nodes and studio.live.memory_md.content == NO_MEMORY_YET
    assert studio.last_agreement is None
    assert np.allclose(studio.controls._last_camera_target, opened.current.c2w)
    # the view arriving where it was put asks for nothing; a small move steps from the new world's camera
    c2w = opened.current.c2w.copy()
    x, y, z, w = Rotation.from_matrix(c2w[:3, :3]).as_quat()
    studio.controls.camera_moved(SimpleNamespace(wxyz=np.array([w, x, y, z]), position=c2w[:3, 3], client=None))
    assert studio.worker.wait_idle(30) and opened.length == 1
    c2w[:3, 3] += 0.3 * c2w[:3, 2]
    studio.controls.camera_moved(SimpleNamespace(wxyz=np.array([w, x, y, z]), position=c2w[:3, 3], client=None))
    assert studio.worker.wait_idle(30) and opened.length == 2
    assert np.linalg.norm(opened.current.c2w[[0, 2], 3] - c2w[[0, 2], 3]) < 0.05
    # a seek back moves the views too
    studio.submit("seek", lambda s: s.seek(0), None)
    assert studio.worker.wait_idle(30)
    assert np.allclose(studio.controls._last_camera_target, opened.frame_at(0).c2w)


def test_a_scene_refuses_a_world_that_lacks_part_of_the_contract():
    class Partial:
        name, exact_depth = "partial", True

        def reset(self, seed, start=None):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="lacks kinematics, step, predict_c2w, describe \\(see"):
        Scene(Partial())  # a SceneError: one line where worlds are opened (reference_view is optional)

    class WithoutReference(Partial):  # the contract as plugins were written to it before the check
        from worldmodel.actions import Kinematics
        kinematics = Kinematics()

        def step(self, action, context): ...

        def predict_c2w(self, last, action): ...

        def describe(self): return {"kind": "partial"}

    from worldmodel.frame import ComparableWorld

    assert not isinstance(WithoutReference(), ComparableWorld)
    Scene(WithoutReference()).close()


def test_the_studio_stops_cleanly_on_ctrl_c_and_on_sigterm():
    """`launch.py view` stopped by Ctrl-C, or by SIGTERM / SIGHUP (a service stopped, a terminal closed), stops
    as Ctrl-C does: the server and the scene closed, exit status 0 (SIGTERM used to kill it under a running
    export or save)."""
    import signal
    import subprocess

    for sig in (signal.SIGINT, signal.SIGTERM):  # (SIGHUP takes the same handler as SIGTERM)
        studio = subprocess.Popen(
            [sys.executable, "launch.py", "view", "--world", "procedural", "--size", "64", "48", "--port",
             str(free_port())], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for line in studio.stdout:
                if "WorldStudio is running" in line:
                    break
            studio.send_signal(sig)
            out = studio.communicate(timeout=60)[0]
        finally:
            studio.kill()
        assert studio.returncode == 0 and "Server stopped" in out, (sig, studio.returncode, out[-400:])


_STARTING_STUDIO = """
import sys, time
import launch, studio.app
from worldmodel.registry import create_world, register

def slow_world(arg, seed, width, height, kinematics):
    print("opening", flush=True)
    time.sleep(float(arg))
    return create_world("procedural", seed, width, height, kinematics)

built = studio.app.Studio.__init__
def slow_build(self, *args, **kwargs):
    print("building", flush=True)
    time.sleep(2.0)
    built(self, *args, **kwargs)

register("slow", slow_world)
studio.app.Studio.__init__ = slow_build
sys.exit(launch.main(["view", "--world", sys.argv[1], "--size", "64", "48", "--port", sys.argv[2]]))
"""


def test_ctrl_c_while_the_studio_starts_stops_it_in_one_line():
    """Ctrl-C while the world opens stops with one line (no traceback); while the server is being built, the
    server is built whole and then stopped as a running studio is (a half-built one kept the process alive)."""
    import signal
    import subprocess

    for world, wait_for, said, status in (("slow:30", "opening", "stopped while opening the world", 130),
                                          ("slow:0", "building", "Server stopped", 0)):
        studio = subprocess.Popen([sys.executable, "-c", _STARTING_STUDIO, world, str(free_port())],
                                  cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for line in studio.stdout:
                if wait_for in line:
                    break
            studio.send_signal(signal.SIGINT)
            out = studio.communicate(timeout=60)[0]
        finally:
            studio.kill()
        assert studio.returncode == status and said in out and "Traceback" not in out, (world, out[-600:])
        assert "WorldStudio is running" not in out


def test_stopping_waits_for_the_running_export_and_its_download(studio, capsys):
    """The studio's stop (Ctrl-C, SIGTERM) waits for the command running (here an export of 0.6 s), names the
    queued export it will not do, then gives the download it sent time to reach the browser before the server
    stops; the scene is closed after."""
    from studio.app import _stop
    from studio.worker import Command

    started = threading.Event()

    def export(scene):
        started.set()
        time.sleep(0.6)
        studio.exports._sending_until = time.monotonic() + 0.8  # as its download was sent (see _export_clicked)

    studio.worker.submit(Command("export MP4 (RGB | depth)", export))
    studio.worker.submit(Command("export PLY point cloud", lambda scene: None))
    assert started.wait(5)
    t0 = time.monotonic()
    assert _stop(studio) == 0
    waited = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "waiting for 'export MP4 (RGB | depth)' to finish" in err and "for the last download" in err
    assert "'export PLY point cloud' was queued and not done" in err
    assert waited >= 1.2 and not studio.worker._thread.is_alive()


def test_the_trail_is_one_unbroken_path_across_blocks_and_follows_a_branch_switch():
    """Each step redraws only the trail's last block, yet the drawn segments are always exactly the path's
    (none missing where two blocks meet); another branch redraws it whole; hiding it removes every node."""
    from studio.view3d import TRAIL_BLOCK, SceneView

    frame = small_scene().current
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        view = SceneView(server)
        view.settings.thumbnail_every = 10**6  # one thumbnail (frame 0)

        def walk(branch: str, height: float, length: int):
            return SimpleNamespace(branch_name=branch, length=length, frame_at=lambda i: frame,
                                   position_at=lambda i: np.array([float(i), height, 0.0]))

        def drawn() -> set[tuple[float, float, float]]:
            segments = np.concatenate([h.points for h in view._trail_blocks.values()])
            return {(a[0], b[0], a[1]) for a, b in segments.tolist()}

        for n in (2, 3, 40, TRAIL_BLOCK, TRAIL_BLOCK + 1, TRAIL_BLOCK + 2, TRAIL_BLOCK + 3, 2 * TRAIL_BLOCK + 1,
                  2 * TRAIL_BLOCK + 2, 2 * TRAIL_BLOCK + 3):  # steps across the blocks' ends
            view._sync_trail(walk("main", 0.0, n))
            assert drawn() == {(i, i + 1, 0.0) for i in range(n - 1)}, n
        view._sync_trail(walk("b1", 1.0, 2 * TRAIL_BLOCK + 5))
        assert drawn() == {(i, i + 1, 1.0) for i in range(2 * TRAIL_BLOCK + 4)}
        view.set_trail_visible(walk("b1", 1.0, 2 * TRAIL_BLOCK + 5), False)
        assert not view._trail_blocks and not view._thumbs
    finally:
        server.stop()


def test_steps_stream_only_what_they_add_and_the_inspect_panel_restyles_every_node(studio):
    """At the newest frame a step sends one delta node (not the whole map again); the timeline's last position is
    the newest frame and the live panel says when the past is shown; a new colour mode re-sends every node in it,
    a point size reaches every node, and hiding the trail removes it."""
    scene = studio.worker.scene
    for a in parse_actions("(FN)(FN)(FL)"):
        studio.submit_step(a, None)
        assert studio.worker.wait_idle(30)
        assert studio.view.streamer.last_nodes == 1 and "viewing the past" not in studio.live.status.content
    assert studio.controls.timeline.max == 3 == scene.length - 1
    studio.submit("seek", lambda s: s.seek(1), None)
    assert studio.worker.wait_idle(30) and "(of 3, viewing the past)" in studio.live.status.content
    studio.submit("seek", lambda s: s.seek(3), None)
    assert studio.worker.wait_idle(30)
    studio.inspect.point_size.value = 0.2
    assert studio.worker.wait_idle(30)
    handles = studio.view.sink.handles
    assert handles and all(h.point_size == pytest.approx(0.2) for h in handles.values())
    before = {name: h.colors.copy() for name, h in handles.items()}
    studio.inspect.colour.value = "depth"  # from the camera where it was picked
    studio.inspect.trail.value = False
    assert studio.worker.wait_idle(30)
    assert handles.keys() == before.keys()
    assert all(not np.array_equal(h.colors, before[name]) for name, h in handles.items())
    assert np.array_equal(studio.view.colour.camera_position, scene.current.position)
    assert not studio.view._trail_blocks and not studio.view._thumbs


def test_the_live_panel_rate_is_that_of_the_current_run_even_a_slow_one():
    """Steps 2 s apart (autoplay at its slowest) read 0.5 frames/s, and still do 5.5 s after the last one (a pause
    is 3 gaps, at least IDLE_AFTER_S); depth is coloured over the valid depth only (0 = invalid)."""
    import studio.live_panel as live_panel

    assert live_panel.depth_range(np.array([[0.0, 0.0, 2.0, 3.0, 4.0]] * 4, np.float32))[0] >= 2.0
    app = Studio(small_scene(), port=free_port())
    try:
        assert app.worker.wait_idle(30)
        scene, step = app.worker.scene, app.worker.scene.step(parse_actions("(FN)")[0])
        for t in (100.0, 102.0, 104.0):
            with mock.patch.object(live_panel.time, "monotonic", lambda: t):
                app.live.update(scene, step, 0.0, 0, 0, None)
        assert "0.5 frames/s" in app.live.status.content, app.live.status.content
        with mock.patch.object(live_panel.time, "monotonic", lambda: 109.5):
            app.live.refresh_rate()
        assert "0.5 frames/s" in app.live.status.content, app.live.status.content
    finally:
        app.close()


def test_an_export_reaches_the_tab_that_asked_with_its_outcome(studio, tmp_path, monkeypatch):
    """The export buttons' path: the file is sent to the tab that clicked (the studio's stop then gives it time to
    arrive, at most DOWNLOAD_WAIT_MAX_S), its note says what was exported and closes; a failed export's note stays,
    in red. The GLB + mesh button's file holds the TSDF mesh."""
    import trimesh

    from studio import export_panel

    sent, notes = [], []

    def note(title, body, **kw):
        notes.append(SimpleNamespace(title=title, body=body, color=None, auto_close_seconds=None, **kw))
        return notes[-1]

    tab = SimpleNamespace(add_notification=note, send_file_download=lambda name, data, **kw: sent.append((name, data)))
    studio.worker.scene.run(parse_actions("(FN)(FN)"))
    studio.exports._export_clicked("PLY point cloud", ExportPanel._ply)(SimpleNamespace(client=tab))
    assert studio.worker.wait_idle(30)
    assert [name for name, _ in sent] == ["scene.ply"] and sent[0][1].startswith(b"ply\n")
    assert notes[0].title == "Exported PLY point cloud" and notes[0].auto_close_seconds == 5.0 and not notes[0].color
    assert studio.exports.download_seconds_left() > 1.0  # (DOWNLOAD_GRACE_S: 2 s for a small file)
    studio.exports._sending_until = export_panel.time.monotonic() + 1e6
    assert studio.exports.download_seconds_left() == export_panel.DOWNLOAD_WAIT_MAX_S

    def broken(scene, tmp):
        raise OSError("disk full")

    studio.exports._export_clicked("MP4 (RGB | depth)", broken)(SimpleNamespace(client=tab))
    assert studio.worker.wait_idle(30) and len(sent) == 1
    assert (notes[1].title, notes[1].body, notes[1].color) == ("Export failed: MP4 (RGB | depth)", "disk full", "red")
    glb = ExportPanel._glb(True)(studio.worker.scene, tmp_path)
    meshes = [g for g in trimesh.load(glb).geometry.values() if isinstance(g, trimesh.Trimesh)]
    assert glb.name == "scene_mesh.glb" and meshes and len(meshes[0].faces) > 0


def test_an_upload_of_exactly_the_limit_is_taken_and_a_zip_bomb_is_not(tmp_path, monkeypatch):
    from studio import export_panel

    assert export_panel.upload_too_large(export_panel.MAX_UPLOAD_BYTES) is None
    assert "limit" in export_panel.upload_too_large(export_panel.MAX_UPLOAD_BYTES + 1)
    monkeypatch.setattr(export_panel, "MAX_UPLOAD_BYTES", 1000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("s/session.json", "{}")
        z.writestr("s/frames/0.bin", bytes(5000))  # 5 kB unpacked from a few bytes
    assert len(buf.getvalue()) < 1000
    with pytest.raises(SessionError, match="unpacks to more than"):
        unzip_session(buf.getvalue(), tmp_path / "bomb")
    assert not (tmp_path / "bomb").exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # the outermost session.json is the session (a saved one may hold more)
        z.writestr("s/session.json", "{}")
        z.writestr("s/exports/old/session.json", "{}")
    assert unzip_session(buf.getvalue(), tmp_path / "two") == tmp_path / "two" / "s"


def test_the_learned_model_from_frame_0_of_a_folder_starts_at_frame_0(studio, tmp_path, monkeypatch):
    """*Learned model from that frame*: frame 0 typed is frame 0 (-1 is the session's cursor or the recording's
    last), and the note says it went on from that frame alone (no frames before it). The learned world itself is
    stood in for: tests/test_neural.py opens it."""
    from studio import export_panel

    asked = []

    def start_learned_from(source, frame, **kwargs):
        asked.append(frame)
        return small_scene()

    monkeypatch.setattr(export_panel, "start_learned_from", start_learned_from)
    studio.exports.root = tmp_path
    (tmp_path / "recording").mkdir()
    notes = []

    def note(title, body, **kw):
        notes.append(SimpleNamespace(title=title, body=body, color=None))
        return notes[-1]

    tab = SimpleNamespace(client=SimpleNamespace(add_notification=note))
    for typed in (0, -1):
        studio.exports.start_from.value, studio.exports.start_frame.value = "recording", typed
        studio.exports._learned_from_folder(tab)
        assert studio.worker.wait_idle(30)
    assert asked == [0, None]
    assert notes[0].body == "from that frame alone" and notes[0].color is None
