"""Autosave for long headless runs: the session is saved every N steps or T seconds, so a kill loses at most
one interval. Frames are flushed to disk as they go, so each save only links files and writes the map."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from scenes.scene import Scene

AUTOSAVE_FROM_STEPS = 300   # runs longer than this autosave by default
DEFAULT_EVERY_STEPS = 100
DEFAULT_EVERY_S = 120.0


def default_interval(total_steps: int) -> int:
    """Steps between autosaves when the user did not choose: on for runs longer than a few hundred steps."""
    return DEFAULT_EVERY_STEPS if total_steps > AUTOSAVE_FROM_STEPS else 0


@dataclass
class Autosaver:
    """Calls ``save_session(scene, folder)`` when ``every_steps`` steps or ``every_s`` seconds have passed."""

    scene: Scene
    folder: Path
    every_steps: int = DEFAULT_EVERY_STEPS
    every_s: float = DEFAULT_EVERY_S
    saves: int = 0
    _steps: int = 0
    _last: float = field(default_factory=time.monotonic)

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_s > 0

    def step_done(self) -> bool:
        """Count one step; save when due -> whether it saved."""
        self._steps += 1
        due = (self.every_steps > 0 and self._steps >= self.every_steps) or \
              (self.every_s > 0 and time.monotonic() - self._last >= self.every_s)
        if due:
            try:
                self.save()
            except BaseException:
                self._steps, self._last = 0, time.monotonic()  # a failed save is tried again an interval later
                raise
        return due

    def save(self) -> Path:
        from scenes.session import save_session

        self.scene.store.flush()  # write each frame once; the save then hard-links it
        path = save_session(self.scene, self.folder)
        self._steps, self._last, self.saves = 0, time.monotonic(), self.saves + 1
        return path
