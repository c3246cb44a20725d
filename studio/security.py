"""Who may drive the studio, and which server paths the browser may name.

* Websocket upgrades are refused unless their ``Origin`` is the studio's own page (scheme http(s), same
  host:port as the request's ``Host``). On a loopback address the ``Host`` must also be a loopback name,
  so a DNS-rebinding page cannot pass as the studio's own.
* Off loopback, every request needs the access token: ``?token=...`` in the URL printed at start (the page
  then gets an HttpOnly, SameSite=Strict cookie that its websocket sends back), like Jupyter.
* Paths typed in the browser (open folder, replay path, save folder) must resolve inside the workspace root.

viser 1.1 has no hook for the handshake; :func:`guarded_viser_server` wraps
``websockets.asyncio.server.serve`` only while it constructs a ViserServer, and adds the checks in front
of viser's own ``process_request``. Nothing of viser is copied or changed.
"""

from __future__ import annotations

import hmac
import http
import ipaddress
import secrets
import threading
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """``host`` names this machine's loopback: a loopback name, or an address in 127/8 or ::1. A DNS name is not,
    even one spelled like an address ('127.0.0.1.evil.example' may resolve to 127.0.0.1: DNS rebinding)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return False


class PathOutsideRoot(ValueError):
    """A path typed in the browser points outside the workspace root."""


def path_in_root(root: str | Path, text: str) -> Path:
    """The path ``text`` (relative paths are taken from ``root``) resolved; PathOutsideRoot when it is not
    inside ``root`` (symlinks and ``..`` are resolved first). The message never reads the path's contents."""
    root = Path(root).resolve()
    text = str(text).strip()
    if not text:
        raise PathOutsideRoot("type a folder path (relative to the workspace root)")
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideRoot(f"{text} is outside the workspace root {root}; use a path inside it, or restart "
                              "the studio with --root pointing at a folder that holds it")
    return resolved


def _hostname(netloc: str) -> str:
    """'Host' header or URL netloc -> lower-case host name without port ('[::1]' keeps its brackets)."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


@dataclass
class AccessPolicy:
    """What a request must show. ``token`` None = no token needed; ``loopback`` = listening on loopback."""

    loopback: bool = True
    token: str | None = None
    port: int = 0  # set once bound; names the cookie so two studios on one host keep theirs apart

    @classmethod
    def for_host(cls, host: str, no_token: bool = False) -> "AccessPolicy":
        loopback = is_loopback(host)
        return cls(loopback=loopback, token=None if loopback or no_token else secrets.token_urlsafe(24))

    @property
    def cookie_name(self) -> str:
        return f"worldstudio-token-{self.port}"

    def origin_ok(self, headers) -> bool:
        """The upgrade comes from the studio's own page (see the module docstring)."""
        host, origin = headers.get("Host", ""), headers.get("Origin")
        if not host or not origin:
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.strip().lower():
            return False
        return not self.loopback or is_loopback(_hostname(host))

    def token_ok(self, path: str, headers) -> tuple[bool, bool]:
        """-> (allowed, token came in the URL). Always allowed when no token is needed."""
        if self.token is None:
            return True, False
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        if given and hmac.compare_digest(given, self.token):
            return True, True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a garbled cookie is no token
            return False, False
        morsel = cookie.get(self.cookie_name)
        return bool(morsel and hmac.compare_digest(morsel.value, self.token)), False

    def check(self, connection, request):
        """process_request hook: a refusal Response, or None to let viser handle the request."""
        try:
            allowed, _ = self.token_ok(request.path, request.headers)
            upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
            origin_ok = not upgrade or self.origin_ok(request.headers)
        except Exception:  # noqa: BLE001 - e.g. a header given twice: refuse rather than guess
            allowed = origin_ok = False
        if not origin_ok:
            return connection.respond(http.HTTPStatus.FORBIDDEN,
                                      "WorldStudio only accepts connections from its own page.\n")
        if not allowed:
            return connection.respond(http.HTTPStatus.FORBIDDEN,
                                      "WorldStudio needs its access token: open the URL it printed at start "
                                      "(…/?token=...).\n")
        return None

    def set_cookie(self, request, response):
        """Give the page the token cookie when it was opened with ?token=..., so its websocket sends it back."""
        if self.token is not None and response is not None and response.status_code == 200:
            if self.token_ok(request.path, {})[1]:
                response.headers["Set-Cookie"] = (f"{self.cookie_name}={self.token}; Path=/; HttpOnly; "
                                                  "SameSite=Strict")
        return response


_lock = threading.Lock()
_pending: list[AccessPolicy] = []  # the policy of the ViserServer being constructed (under _lock)
_installed = False


def _install_serve_wrapper() -> None:
    """Wrap websockets' serve once: while a guarded ViserServer is being built, its server gets our checks."""
    global _installed
    if _installed:
        return
    import websockets.asyncio.server as ws_server

    original = ws_server.serve

    def serve(*args, **kwargs):
        if not _pending:
            return original(*args, **kwargs)
        policy = _pending[-1]
        inner = kwargs.get("process_request")

        def process_request(connection, request):
            refused = policy.check(connection, request)
            if refused is not None:
                return refused
            response = inner(connection, request) if inner is not None else None
            return policy.set_cookie(request, response)

        kwargs["process_request"] = process_request
        return original(*args, **kwargs)

    ws_server.serve = serve  # type: ignore[assignment]
    _installed = True


def guarded_viser_server(policy: AccessPolicy, **kwargs):
    """A ``viser.ViserServer(**kwargs)`` whose websocket and page apply ``policy``."""
    import viser

    with _lock:
        _install_serve_wrapper()
        _pending.append(policy)
        try:
            server = viser.ViserServer(**kwargs)  # returns once the server listens (serve was called)
        finally:
            _pending.pop()
    policy.port = server.get_port()
    return server


def world_spec_in_root(root: str | Path, spec: str) -> str:
    """A world spec typed in the browser, with the path of ``replay:PATH`` or ``neural:WEIGHTS`` resolved inside
    the workspace root (so a learned model's weights typed in the page are a folder in it: never a hub download,
    never a probe of folders outside it)."""
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "neural" and sep:
        return f"neural:{path_in_root(root, arg)}"
    if kind != "replay" or not sep:
        return spec
    from worldmodel.replay import parse_replay_arg

    path, _ = parse_replay_arg(arg, look_at_folders=False)  # nothing outside the root is looked at
    query = arg[len(path):]  # '?up=+z...' when the options parsed, else ''
    return f"replay:{path_in_root(root, path)}{query}"


def session_world_in_root(root: str | Path, desc):
    """A session's world description (``session.json``'s "world") from the browser (opened by path or
    uploaded), with the paths it names resolved inside the workspace root: a replay's recording and a learned
    world's weights folder ("" = the shipped weights). As for a world typed in the page: never a folder outside
    the root, never a hub download, never a probe of what exists outside it. Anything else is returned as is
    (the session's own checks judge it); PathOutsideRoot when a path is outside."""
    if not isinstance(desc, dict):
        return desc
    desc = dict(desc)
    kind = str(desc.get("kind", "")).strip().lower()  # as the registry reads it ("Replay", " neural")
    if kind == "replay" and isinstance(desc.get("path"), str):
        desc["path"] = str(path_in_root(root, desc["path"]))
    elif kind == "neural" and isinstance(desc.get("weights"), str) and desc["weights"].strip():
        desc["weights"] = str(path_in_root(root, desc["weights"]))
    return desc
