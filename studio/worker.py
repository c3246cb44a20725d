"""The studio's worker thread: the only thread that touches the Scene.

GUI callbacks (from any browser tab) only ``submit`` commands; the worker runs them in order, then calls
``after`` so the view is synced from the same thread — nothing races the map. Camera-steering targets
are coalesced (only the newest pending one runs). Autoplay steps when the queue is idle.

The worker is also the thread that runs the model: :func:`hand_compute_threads_to_worker` (called by the
studio before it loads a world) leaves torch's thread pool to it alone, less a core for a page drawn on this
machine.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from scenes.scene import Scene

_worker_compute_threads: int | None = None  # set by hand_compute_threads_to_worker


def hand_compute_threads_to_worker(cores_for_the_page: int = 0) -> None:
    """Call on the main thread before any model is loaded: from then on torch runs single-threaded there,
    and each SceneWorker takes torch's intra-op threads (the count torch had, less ``cores_for_the_page``, at
    least 1) for its own thread when it starts.

    Why one team: torch's OpenMP runtime (libgomp) gives every thread that runs a parallel kernel its own team
    of helper threads. With two teams alive (model loading on the main thread, steps on the worker) and more
    helper threads than cores, libgomp stops spin-waiting between kernels, so each of the ~400 kernels of a model
    step pays a sleep and wake-up: the learned model's step took 75 ms on the worker instead of 47 ms (measured
    on 2 cores).

    Why a core for the page: a browser on this machine draws every frame (WebGL) while the worker steps, and
    OpenMP threads on every core fight it for them: 20 queued steps of the learned world took 17.9 s with 2
    threads on 2 cores and 2.6 s with 1 (headless chromium drawing the page; model 820 vs 58 ms a step).
    ``OMP_NUM_THREADS``, when the user set it, is kept as it is."""
    global _worker_compute_threads
    if _worker_compute_threads is None:
        threads = torch.get_num_threads()
        if "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, threads - cores_for_the_page)
        _worker_compute_threads = threads
        torch.set_num_threads(1)  # this thread's OpenMP setting only; the worker sets its own


@dataclass
class Command:
    label: str
    run: Callable[[Scene], Any]
    coalesce_key: str | None = None        # pending commands with the same key are replaced by the newest
    on_error: Callable[[str], None] | None = None
    on_done: Callable[[Any], None] | None = None
    droppable: bool = False                # a step: Stop drops it (exports, saves, world switches stay queued)
    seq: int = field(default=0)


class SceneWorker:
    """Runs commands against ``scene`` on one thread. ``after(command, result)`` runs after each command."""

    def __init__(self, scene: Scene, after: Callable[[Command, Any], None],
                 on_error: Callable[[str, str], None]):
        self.scene = scene
        self._after = after
        self._on_error = on_error
        self._queue: queue.Queue[Command | None] = queue.Queue()
        self._latest: dict[str, int] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self.autoplay: Callable[[], Command | None] | None = None  # returns the next autoplay command or None
        self.autoplay_hz = 0.0
        self._last_autoplay = 0.0
        self.running: str | None = None  # the label of the command running now
        self._thread = threading.Thread(target=self._loop, name="scene-worker", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float | None = 60.0) -> list[str]:
        """Stop once the running command (:attr:`running`) is done: the queued ones are dropped, and any submitted
        from now on refused. Waits for it up to ``wait_s`` seconds (None: as long as it takes; Ctrl-C ends the
        wait) -> the labels of the dropped commands that were not steps (an export, a save), to say they were not
        done."""
        with self._lock:  # (a submit either queues before this, and is drained, or sees the stop)
            self._stopped = True
        not_done = [c.label for c in self._drain() if c is not None and c.run is not None and not c.droppable]
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=wait_s)
        return not_done

    def submit(self, command: Command) -> None:
        """Queue ``command``; once the worker is stopping it is refused (its on_error, or the studio's, says so)."""
        with self._lock:
            refused = self._stopped
            if not refused:
                self._seq += 1
                command.seq = self._seq
                if command.coalesce_key is not None:
                    self._latest[command.coalesce_key] = command.seq
                self._queue.put(command)
        if refused:
            (command.on_error or (lambda m: self._on_error(command.label, m)))(
                "the studio is stopping; start it again and retry")

    def wake(self) -> None:
        """Make the loop re-read the autoplay settings now."""
        self._queue.put(Command("wake", run=None))  # type: ignore[arg-type]

    def clear(self) -> int:
        """Drop every queued droppable command (steps; the one running finishes) and stop autoplay -> how many
        were dropped. The rest (an export, a save, opening a world) stay queued, in order."""
        self.autoplay, self.autoplay_hz = None, 0.0
        dropped, kept = 0, []
        for command in self._drain():
            if command is None:  # keep a stop request (last: nothing after it runs)
                kept.append(None)
                break
            if command.droppable:
                dropped += 1
            elif command.run is not None:
                kept.append(command)
        for command in kept:
            self._queue.put(command)
        return dropped

    def _drain(self) -> list[Command | None]:
        """Take every queued command off the queue (each counted done), in order."""
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken
            self._queue.task_done()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every submitted command has finished (tests, scripts); False on timeout."""
        done = self._queue.all_tasks_done  # the condition Queue.join waits on, here with a timeout
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def _next_autoplay_timeout(self) -> float | None:
        if self.autoplay is None or self.autoplay_hz <= 0:
            return None
        return max(0.0, self._last_autoplay + 1.0 / self.autoplay_hz - time.monotonic())

    def _loop(self) -> None:
        if _worker_compute_threads is not None:
            torch.set_num_threads(_worker_compute_threads)
        while not self._stopped:
            timeout = self._next_autoplay_timeout()
            try:
                command = self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()
                from_queue = True
            except queue.Empty:
                next_autoplay = self.autoplay  # read once: the GUI thread may switch autoplay off meanwhile
                self._last_autoplay = time.monotonic()
                command, from_queue = (next_autoplay() if next_autoplay is not None else None), False
                if command is None:
                    continue
            try:
                if command is None:
                    break
                if command.run is not None and not self._superseded(command):
                    self._execute(command)
            finally:
                if from_queue:
                    self._queue.task_done()

    def _superseded(self, command: Command) -> bool:
        """A newer target of the same kind is queued (camera steering, scrubbing)."""
        return command.coalesce_key is not None and self._latest.get(command.coalesce_key) != command.seq

    def _execute(self, command: Command) -> None:
        self.running = command.label
        try:
            result = command.run(self.scene)
            if command.on_done is not None:
                command.on_done(result)
            self._after(command, result)
        except Exception as e:  # noqa: BLE001 - a failed command must not kill the studio
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            if command.on_error is not None:
                command.on_error(message)
            else:
                self._on_error(command.label, message)
            if not isinstance(e, (ValueError, OSError, RuntimeError)):
                traceback.print_exc()
        finally:
            self.running = None
