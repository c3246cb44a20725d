"""Writes that never leave a broken file: write to a temporary file in the target folder, check it, rename it
over the old one. On any failure the old file stays and the temporary is removed.

A failed write is one :class:`WriteError` line that says what to do ("disk full: free space in DIR").
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from safetensors import SafetensorError


class WriteError(OSError):
    """A file could not be written (disk full, no permission); the message says what to do."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


class SwapNotUndone(WriteError):
    """:func:`swap_in` failed and so did its undoing: the target folder is half old, half new, and the message
    names the folder holding the old entries that are not back."""


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when safetensors or ffmpeg only report it in their message."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left" in text or "StorageFull" in text or "os error 28" in text


def write_error(e: BaseException, path: Path) -> WriteError:
    """The one-line error for a failed write of ``path`` (a full disk: named by ``path``'s folder, also when a
    write inside, to a work folder since removed, said it)."""
    folder = Path(path).parent
    if isinstance(e, SwapNotUndone):  # (its own line says what to move back by hand)
        return e
    if is_disk_full(e):
        return WriteError(f"disk full: free space in {folder} (or choose a folder on another disk); "
                          "nothing already made was lost", errno.ENOSPC)
    if isinstance(e, WriteError):
        return e
    reason = getattr(e, "strerror", None) or (str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
    code = getattr(e, "errno", None)
    todo = {errno.EEXIST: "a file stands where a folder is needed: choose another folder",
            errno.ENOTDIR: "a file stands where a folder is needed: choose another folder",
            errno.EISDIR: "a folder stands where a file is needed: choose another name",
            errno.EACCES: "choose a folder you may write to", errno.EPERM: "choose a folder you may write to",
            errno.EROFS: "choose a folder on a writable disk"}.get(code, "choose another folder or free disk space")
    return WriteError(f"cannot write {path}: {reason}; {todo}", code)


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (hidden; same folder, so the rename is atomic)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"


@contextmanager
def replacing(path: str | os.PathLike, check: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary file (created empty) beside ``path``; when the block succeeds (and ``check(tmp)``
    passes) it is renamed over ``path``. Otherwise it is removed and ``path`` is untouched. A symbolic link is
    written through (its target is replaced, as a shell's ``>`` would write it), not replaced by a file.
    OSError/SafetensorError become WriteError."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    tmp = temp_path(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # usual permissions; fails early
        mode = os.stat(tmp).st_mode & 0o777  # 0o666 less the umask
    except OSError as e:
        raise write_error(e, path) from None
    try:
        yield tmp
        if check is not None:
            check(tmp)
        os.chmod(tmp, mode)  # safetensors writes its files 0o600: a shared session must stay readable
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        remove_quietly(tmp)
        raise write_error(e, path) from None
    except BaseException:
        remove_quietly(tmp)
        raise


def writable_folder(path: str | os.PathLike) -> Path:
    """Make folder ``path`` (and its parents) and check a file can be written in it, before long work that
    will write there; WriteError (one line) when not (a file in the way, no permission, disk full)."""
    path = Path(path)
    probe = path / f".write-check-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
    except OSError as e:
        raise write_error(e, path) from None
    finally:
        remove_quietly(probe)
    return path


def writable_file(path: str | os.PathLike, what: str) -> Path:
    """Check before long work that the file ``path`` (given as ``what``, e.g. "--json") can be written at the
    end: not a folder, in a folder that can be written (made if missing); WriteError (one line) otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder; name a file")
    writable_folder(path.parent)
    return path


def json_safe(value):
    """``value`` (nested dicts / lists / tuples / arrays of numbers and strings, numpy scalars too) with every
    non-finite float as None: JSON has no NaN, and a metric that could not be measured (PSNR over an empty
    region, the accuracy of an empty map) is written as null."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_or_print(path: str | os.PathLike, record: dict) -> bool:
    """Write ``record`` as JSON (:func:`json_safe`, indented) to ``path`` atomically -> True. When it cannot be
    written, print it to stdout instead, so the results of a long run are not lost, say why on stderr (one
    line) -> False."""
    text = json.dumps(json_safe(record), indent=1, allow_nan=False, default=str) + "\n"  # a Path as its text
    try:
        with replacing(Path(path).expanduser()) as tmp:
            tmp.write_text(text)
    except WriteError as e:
        print(text)
        print(f"error: {e} (the JSON is printed above)", file=sys.stderr)
        return False
    return True


def remove_empty_folder(folder: Path) -> None:
    """Remove ``folder`` when it is empty; leave it (and say nothing) otherwise."""
    try:
        folder.rmdir()
    except OSError:
        pass


def remove_quietly(path: Path) -> None:
    """Remove a file or folder if it is there (cleanup after a failure must not raise)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def check_mp4(path: Path) -> None:
    """An MP4 is complete when its top-level boxes tile the file and it has ftyp, moov and mdat.

    A write that ran out of space leaves a file whose last box is cut short, or that has no moov (the index
    ffmpeg writes last). Raises WriteError naming the file."""
    size = path.stat().st_size
    seen: set[bytes] = set()
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                break
            box, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if box == 1 and len(head) == 16:
                box = int.from_bytes(head[8:16], "big")
            elif box == 0:
                box = size - pos
            if box < 8 or pos + box > size:
                break
            seen.add(kind)
            pos += box
    if pos != size or not {b"ftyp", b"moov", b"mdat"} <= seen:
        raise WriteError(f"cannot write {path.name}: the video came out incomplete (disk full?); "
                         f"free space in {path.parent} and export again", errno.EIO)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """On the main thread, hold SIGINT, SIGTERM and SIGHUP (their Python handlers) until the block ends, then
    deliver them: a step's fusion is never cut half-way (a row's position summed but not its weight), nor a
    save's swap (:func:`swap_in`). Elsewhere (the studio's worker) signals never interrupt the thread, and nothing
    is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
        if callable(signal.getsignal(sig)):  # a Python handler that would raise in the middle of the block
            previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in held:
            signal.raise_signal(sig)


def swap_in(staging: Path, target: Path, entries: list[str], retired: Path) -> None:
    """Put ``entries`` (paths relative to both folders: files, or whole folders) of ``staging`` in ``target``: the
    old ones are moved to ``retired`` first (in reverse order: the last entry, the one that makes the whole valid,
    leaves first), then the new ones in (in order: it arrives last); anything else in ``target`` stays. A failed
    move puts every moved entry back where it was, then raises. Ctrl-C, SIGTERM and SIGHUP wait until the swap (or
    its undoing) is done; ``retired`` is removed after it. ``staging`` and ``retired`` should be on ``target``'s
    file system (then every move is a rename); an entry under a link to another disk is copied across
    (:func:`move_entry`). When undoing fails too, it stops there (what makes the whole valid stays out) and the
    SwapNotUndone line names the new entries left in ``target`` and ``retired``, which holds the old ones not back."""
    with signals_deferred():
        retired.mkdir(parents=True)
        moved: list[tuple[Path, Path]] = []  # (from, to), undone in reverse
        made: list[Path] = []  # folders the moves created, removed again if undone

        def move(source: Path, dest: Path) -> None:
            made.extend(p for p in reversed(dest.parents) if not p.exists())
            dest.parent.mkdir(parents=True, exist_ok=True)
            move_entry(source, dest)
            moved.append((source, dest))

        try:
            for rel in reversed(entries):
                if (target / rel).exists() or (target / rel).is_symlink():
                    move(target / rel, retired / rel)
            for rel in entries:
                if (staging / rel).exists():
                    move(staging / rel, target / rel)
        except BaseException as e:  # (a full disk; anything else that stops it part-way)
            while moved:
                source, dest = moved[-1]
                try:
                    move_entry(dest, source)
                except OSError:  # stop: the entries not yet back (the one that makes the whole valid among them,
                    break  # as it left first) stay in staging or retired, whole, for recovery by hand
                moved.pop()
            if moved:
                reason = getattr(e, "strerror", None) or str(e).split("\n")[0] or type(e).__name__
                new_in = [str(dest.relative_to(target)) for source, dest in moved if source.is_relative_to(staging)]
                named = ", ".join(new_in[:3]) + (f" and {len(new_in) - 3} more" if len(new_in) > 3 else "")
                first = f"remove the new {named} from {target}, then " if new_in else ""
                raise SwapNotUndone(f"the swap into {target} stopped half-way ({reason}) and could not be undone: "
                                    f"{first}move the entries of {retired} back into {target} by hand",
                                    getattr(e, "errno", None)) from e
            shutil.rmtree(retired, ignore_errors=True)
            for folder in reversed(made):  # (left only when something else was put there meanwhile)
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        shutil.rmtree(retired, ignore_errors=True)


def move_entry(source: Path, dest: Path) -> None:
    """Move file or folder ``source`` to ``dest`` (absent; its folder exists): a rename, or across file systems
    (a folder that is a link to another disk) a copy beside ``dest`` renamed into place, then ``source``
    removed. Either way ``dest`` appears whole or not at all, and ``source`` is gone only once it is there."""
    try:
        os.replace(source, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    copy = temp_path(dest)
    try:
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, copy, symlinks=True)
        else:
            shutil.copy2(source, copy, follow_symlinks=False)
        os.replace(copy, dest)
    except BaseException:
        remove_quietly(copy)
        raise
    remove_quietly(source)
