"""Spill folders: where a frame store puts the frames that left RAM. They never outlive their process.

A spill folder is named ``worldstudio-frames-<pid>-<random>`` (hidden with a leading dot when it sits next to
a session or output folder). It is removed by ``FrameStore.close()``, at interpreter exit, and on SIGTERM
(:func:`install_signal_handlers`); after a kill -9, the next store made in the same parent folder removes
the folders of processes that are no longer alive.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import uuid
from pathlib import Path

PREFIX = "worldstudio-frames-"
_PATTERN = re.compile(r"^\.?" + re.escape(PREFIX) + r"(\d+)-[0-9a-f]+$")
_live: set[Path] = set()
_swept: set[Path] = set()
# re-entrant: a FrameStore collected while this thread holds it (its __del__ releases its folder, run by the
# garbage collector inside make_spill_dir) took it again and hung the process for good
_lock = threading.RLock()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may be running (this one is; another user's is, as far as we can
    tell; a number no process can have is not ours to judge: True)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's live process; no such pid number
        return True
    return True


def this_host() -> str:
    """8 hex digits naming this machine: a PID means something only on the machine that gave it (a folder on a
    network disk may be written from several)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def remove_stale(parent: Path) -> list[Path]:
    """Remove spill folders in ``parent`` whose process is gone -> the folders removed."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _PATTERN.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and not process_alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_spill_dir(parent: str | Path | None = None) -> Path:
    """A new spill folder in ``parent`` (default: the system temporary folder), registered for cleanup."""
    hidden = parent is not None
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    with _lock:
        if parent not in _swept:
            _swept.add(parent)
            remove_stale(parent)
    path = parent / f"{'.' if hidden else ''}{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True)
    except OSError:
        if not hidden:
            raise
        return make_spill_dir(None)  # a read-only folder beside the session: spill to the temporary folder
    with _lock:
        _live.add(path)
    return path


def release(path: Path) -> None:
    """Remove a spill folder made by :func:`make_spill_dir`."""
    with _lock:
        _live.discard(path)
    shutil.rmtree(path, ignore_errors=True)


def release_all() -> None:
    for path in list(_live):
        release(path)


atexit.register(release_all)


def install_signal_handlers() -> None:
    """On SIGTERM (and SIGHUP), exit through SystemExit so ``finally`` blocks and atexit clean up.

    Call from the main thread of a program (studio, headless run); a handler someone else set is kept."""
    def on_signal(signum, frame):  # noqa: ARG001 - what is open is saved/closed on the way out, then atexit
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, on_signal)
