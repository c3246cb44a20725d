"""The studio is a server: only its own page may drive it, off loopback it needs its token, and paths typed
in the browser stay inside the workspace root."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import viser
import websockets.asyncio.client
import websockets.exceptions

from scenes.scene import Scene, SceneConfig
from studio.app import Studio
from studio.bench_util import free_port
from studio.security import AccessPolicy, PathOutsideRoot, path_in_root, world_spec_in_root
from worldmodel.registry import create_world


def small_scene() -> Scene:
    scene = Scene(create_world("procedural", width=64, height=48), SceneConfig(voxel_size=0.3))
    scene.reset(0)
    return scene


def connect(port: int, origin: str | None, host: str | None = None, cookie: str | None = None) -> str:
    """A browser's websocket upgrade to the studio -> 'open' (101 Switching Protocols) or 'refused <status>'."""
    lines = ["GET / HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: viser-v{viser.__version__}"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if cookie:
        lines.append(f"Cookie: {cookie}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = int(s.recv(4096).split(b" ", 2)[1])
    return "open" if status == 101 else f"refused {status}"


def test_a_real_websocket_client_from_the_page_gets_the_studio(studio):
    port = studio.server.get_port()

    async def go(origin: str) -> str:
        try:
            async with websockets.asyncio.client.connect(
                    f"ws://127.0.0.1:{port}", origin=origin, subprotocols=[f"viser-v{viser.__version__}"],
                    open_timeout=10) as ws:
                await asyncio.wait_for(ws.recv(), 10)
                return "open"
        except websockets.exceptions.InvalidStatus as e:
            return f"refused {e.response.status_code}"

    assert asyncio.run(go(f"http://127.0.0.1:{port}")) == "open"
    assert asyncio.run(go("https://evil.example")) == "refused 403"


@pytest.fixture()
def studio(tmp_path):
    app = Studio(small_scene(), port=free_port(), root=tmp_path)
    assert app.worker.wait_idle(30)
    yield app
    app.close()


def test_websocket_from_another_origin_is_refused(studio):
    port = studio.server.get_port()
    assert connect(port, f"http://127.0.0.1:{port}") == "open"
    assert connect(port, f"http://localhost:{port}", host=f"localhost:{port}") == "open"
    assert connect(port, "http://evil.example") == "refused 403"
    assert connect(port, f"http://127.0.0.1:{port + 1}") == "refused 403"
    assert connect(port, "null") == "refused 403"
    assert connect(port, None) == "refused 403"
    # DNS rebinding: a foreign name resolving to 127.0.0.1 is same-origin to the browser, not to the studio
    assert connect(port, f"http://evil.example:{port}", host=f"evil.example:{port}") == "refused 403"
    # ... also a name spelled like a loopback address (it passed as one: the check read any '127.' prefix)
    rebound = f"127.0.0.1.evil.example:{port}"
    assert connect(port, f"http://{rebound}", host=rebound) == "refused 403"


def test_loopback_is_an_address_in_127_8_or_a_loopback_name_never_a_dns_name():
    from studio.security import is_loopback

    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "127.255.0.9", "localhost", "::1", "[::1]")))
    assert not any(map(is_loopback, ("127.0.0.1.evil.example", "127.evil.example", "128.0.0.1", "0.0.0.0", "")))


def test_token_is_needed_off_loopback():
    policy = AccessPolicy(loopback=False, token="s3cret")
    app = Studio(small_scene(), port=free_port(), policy=policy)
    try:
        port = app.server.get_port()
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base, timeout=10)
        assert e.value.code == 403
        with urllib.request.urlopen(base + "?token=s3cret", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert cookie.startswith(f"worldstudio-token-{port}=")  # two studios on one host keep their cookies apart
        own = f"http://127.0.0.1:{port}"
        assert connect(port, own) == "refused 403"
        assert connect(port, own, cookie=f"worldstudio-token-{port}=wrong") == "refused 403"
        assert connect(port, own, cookie=cookie.split(";")[0]) == "open"
        assert connect(port, "http://evil.example", cookie=cookie.split(";")[0]) == "refused 403"
    finally:
        app.close()
    assert AccessPolicy.for_host("0.0.0.0").token and AccessPolicy.for_host("0.0.0.0", no_token=True).token is None
    assert AccessPolicy.for_host("127.0.0.1").token is None


def test_the_access_policy_reads_the_handshake_as_browsers_send_it():
    """The rules without a server: the studio's own page on any loopback address (IPv6 in brackets, a Host in
    capitals, https behind a proxy) passes; an upgrade spelled 'WebSocket' is checked all the same; a wrong token
    in the URL is no token; the cookie of another studio on this host (another port) is not this one's."""
    own = AccessPolicy(loopback=True)

    def ok(host: str, origin: str) -> bool:
        return own.origin_ok({"Host": host, "Origin": origin})

    assert ok("127.0.0.2:8080", "http://127.0.0.2:8080") and ok("[::1]:8080", "http://[::1]:8080")
    assert ok("LOCALHOST:8080", "http://localhost:8080") and ok("127.0.0.1:8080", "https://127.0.0.1:8080")
    assert not ok("127.0.0.1:8080", "ftp://127.0.0.1:8080") and not ok("[::1]:8080", "http://[::1]:8081")
    connection = SimpleNamespace(respond=lambda status, text: int(status))
    upgrade = {"Host": "127.0.0.1:8080", "Origin": "http://evil.example", "Upgrade": "WebSocket"}
    assert own.check(connection, SimpleNamespace(path="/", headers=upgrade)) == 403
    upgrade["Origin"] = "http://127.0.0.1:8080"
    assert own.check(connection, SimpleNamespace(path="/", headers=upgrade)) is None
    remote = AccessPolicy(loopback=False, token="s3cret", port=8080)
    assert remote.token_ok("/?token=wrong", {}) == (False, False)
    assert remote.token_ok("/?token=s3cret", {}) == (True, True)
    assert remote.token_ok("/", {"Cookie": "worldstudio-token-8080=s3cret"}) == (True, False)
    assert remote.token_ok("/", {"Cookie": "worldstudio-token-8081=s3cret"}) == (False, False)


def test_browser_paths_stay_inside_the_workspace_root(studio, tmp_path):
    (tmp_path / "inside").mkdir()
    assert path_in_root(tmp_path, "inside") == (tmp_path / "inside").resolve()
    # the root itself is inside (a session saved at the root is opened with "."); an empty box names nothing
    assert path_in_root(tmp_path, ".") == path_in_root(tmp_path, str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(PathOutsideRoot, match="type a folder path"):
        path_in_root(tmp_path, "  ")
    for bad in ("/etc", "../", "inside/../../etc", str(tmp_path.parent)):
        with pytest.raises(PathOutsideRoot, match="outside the workspace root"):
            path_in_root(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(PathOutsideRoot):
        path_in_root(tmp_path, "link")
    with pytest.raises(PathOutsideRoot):
        world_spec_in_root(tmp_path, "replay:/etc?stride=2")
    assert world_spec_in_root(tmp_path, "replay:inside?stride=2") == f"replay:{tmp_path.resolve()}/inside?stride=2"
    with pytest.raises(PathOutsideRoot):
        world_spec_in_root(tmp_path, "neural:/etc")
    for typed in ("Replay:/etc", " NEURAL:/etc"):  # the registry reads world names in any case
        with pytest.raises(PathOutsideRoot):
            world_spec_in_root(tmp_path, typed)
    # a hub id typed in the page is a folder under the root, never a download
    assert world_spec_in_root(tmp_path, "neural:owner/name") == f"neural:{tmp_path.resolve()}/owner/name"
    assert world_spec_in_root(tmp_path, "neural") == "neural"
    assert world_spec_in_root(tmp_path, "procedural:fly") == "procedural:fly"  # no path in it: as typed
    # through the studio's own handlers: each refusal is reported, nothing is written or opened
    errors = []
    studio.notify = lambda client, title, body, error=False: errors.append(body) if error else None
    scene = studio.worker.scene
    studio.exports.save_path.value = str(tmp_path.parent / "stolen")
    studio.exports._save_clicked(SimpleNamespace(client=None))
    studio.exports.open_path.value = "/etc"
    studio.exports._open_clicked(SimpleNamespace(client=None))
    studio.exports.world.value = "replay:/etc"
    studio.exports._new_world(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    assert len(errors) == 3 and all("outside the workspace root" in m for m in errors), errors
    assert "X11" not in " ".join(errors)
    assert not (tmp_path.parent / "stolen").exists() and studio.worker.scene is scene
    studio.exports.save_path.value = "sessions/mine"
    studio.exports._save_clicked(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    assert (tmp_path / "sessions" / "mine" / "session.json").is_file()


def test_a_session_from_the_browser_names_no_world_path_outside_the_root(studio, tmp_path):
    """A session opened by path or uploaded may name a recording or learned weights in its world description:
    those must be inside the workspace root too (else a crafted session.json would stream a recording from
    anywhere, load weights from anywhere, probe which folders exist, or start a hub download)."""
    import json

    from studio.export_panel import zip_folder
    from studio.security import session_world_in_root

    studio.exports.save_path.value = "sessions/mine"
    studio.exports._save_clicked(SimpleNamespace(client=None))
    assert studio.worker.wait_idle(30)
    folder = tmp_path / "sessions" / "mine"
    meta = json.loads((folder / "session.json").read_text())
    errors = []
    studio.notify = lambda client, title, body, error=False: errors.append(body) if error else None
    scene = studio.worker.scene
    worlds = [{"kind": "Replay", "path": "/work", "frames": 3}, {"kind": " neural", "weights": "/etc", "seed": 0},
              {"kind": "neural", "weights": "owner/name", "seed": 0}, {"kind": "NEURAL", "weights": "../..", "seed": 0}]
    for world in worlds:
        (folder / "session.json").write_text(json.dumps({**meta, "world": world}))
        studio.exports.open_path.value = "sessions/mine"
        studio.exports._open_clicked(SimpleNamespace(client=None))
        button = studio.exports.upload
        zipped = zip_folder(folder, tmp_path / "s.zip").read_bytes()
        button._impl.value = viser.UploadedFile(name="s.zip", content=zipped)
        studio.exports._uploaded(SimpleNamespace(target=button, client=None))
        assert studio.worker.wait_idle(30)
    assert studio.worker.scene is scene
    # the hub id is a folder under the root (not there), the others are outside it
    assert len(errors) == 8 and sum("outside the workspace root" in m for m in errors) == 6, errors
    assert sum(f"{tmp_path.resolve()}/owner/name" in m for m in errors) == 2, errors
    assert session_world_in_root(tmp_path, {"kind": "neural", "weights": ""})["weights"] == ""  # the shipped
    assert session_world_in_root(tmp_path, {"kind": "procedural", "seed": 1}) == {"kind": "procedural", "seed": 1}
