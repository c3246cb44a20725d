"""DeepVerse action grammar and camera kinematics.

One step is written ``(`` translation steering ``)``, e.g. ``(FN)(fRL)(SN)``:

- translation: S (stay), F, B, L, R (forward, back, left, right), fL, fR (forward-left/right diagonals),
  rL, rR (rear-left/right diagonals);
- steering: N (none), L (turn left = counter-clockwise seen from above, i.e. +yaw about world +Y), R.

A step first translates in the horizontal plane along the current heading, then turns.
A continuous action (:class:`TargetPose`) asks for a view at an exact camera pose instead.
"""

from __future__ import annotations

import itertools
import math
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from worldmodel.checks import number

TRANSLATIONS = ("S", "F", "B", "L", "R", "fL", "fR", "rL", "rR")
STEERINGS = ("N", "L", "R")

# (forward, left) unit components of each translation in the camera's heading frame.
_D = 1.0 / math.sqrt(2.0)
TRANSLATION_VECTORS: dict[str, tuple[float, float]] = {
    "S": (0.0, 0.0), "F": (1.0, 0.0), "B": (-1.0, 0.0), "L": (0.0, 1.0), "R": (0.0, -1.0),
    "fL": (_D, _D), "fR": (_D, -_D), "rL": (-_D, _D), "rR": (-_D, -_D),
}
STEERING_SIGN = {"N": 0.0, "L": 1.0, "R": -1.0}


class ActionParseError(ValueError):
    """A malformed action string; ``position`` is the 0-based character offset of ``token``."""

    def __init__(self, text: str, position: int, token: str, expected: str):
        self.text, self.position, self.token, self.expected = text, position, token, expected
        shown = repr(token) if token else "end of text"
        super().__init__(
            f"bad action at position {position}: found {shown}, expected {expected} "
            f"(write steps like (FN)(fLR)(BN); translations {'/'.join(TRANSLATIONS)}, steerings N/L/R)"
        )


@dataclass(frozen=True)
class Action:
    """One discrete DeepVerse step: a translation token and a steering token."""

    translation: str
    steering: str

    def __post_init__(self) -> None:
        if self.translation not in TRANSLATIONS or self.steering not in STEERINGS:
            raise ValueError(f"invalid action ({self.translation}{self.steering})")

    def __str__(self) -> str:
        return f"({self.translation}{self.steering})"

    @classmethod
    def parse(cls, text: str) -> "Action":
        actions = parse_actions(text)
        if len(actions) != 1:
            raise ActionParseError(text, 0, text, "exactly one step")
        return actions[0]


@dataclass(frozen=True, eq=False)
class TargetPose:
    """A continuous action: generate the view at this camera-to-world pose, (4, 4) float64. A pose that is not
    4x4 and finite raises ValueError when the action is made, before any world sees it."""

    c2w: np.ndarray

    def __post_init__(self):
        c2w = np.asarray(self.c2w, dtype=np.float64)
        if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
            raise ValueError(f"a target pose must be a finite 4x4 camera-to-world matrix, got shape {c2w.shape}"
                             + ("" if c2w.shape != (4, 4) else " with NaN/inf") + "; nothing was generated")
        object.__setattr__(self, "c2w", c2w)

    def __str__(self) -> str:
        x, y, z = self.c2w[:3, 3]
        return f"(pose {x:.2f},{y:.2f},{z:.2f})"


def parse_actions(text: str) -> list[Action]:
    """Parse ``"(FN)(fLR)(BN)"`` into actions; whitespace between steps is ignored.

    Raises ActionParseError naming the 0-based position and the offending token.
    """
    actions: list[Action] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            break
        if text[i] != "(":
            raise ActionParseError(text, i, text[i], "'('")
        i += 1
        if text.startswith(("fL", "fR", "rL", "rR"), i):
            translation, i = text[i:i + 2], i + 2
        elif i < n and text[i] in "SFBLR":
            translation, i = text[i], i + 1
        elif i < n and text[i] in "fr":  # a diagonal's first letter: the second is the wrong one
            raise ActionParseError(text, i + 1, text[i + 1:i + 2], f"L or R after '{text[i]}' (diagonals "
                                                                  "fL/fR/rL/rR)")
        else:
            raise ActionParseError(text, i, text[i:i + 1], f"a translation ({'/'.join(TRANSLATIONS)})")
        if i < n and text[i] in "NLR":
            steering, i = text[i], i + 1
        else:
            raise ActionParseError(text, i, text[i:i + 1], "a steering (N/L/R)")
        if i >= n or text[i] != ")":
            raise ActionParseError(text, i, text[i:i + 1], "')'")
        i += 1
        actions.append(Action(translation, steering))
    if not actions:
        raise ActionParseError(text, 0, "", "at least one step such as (FN)")
    return actions


def format_actions(actions: list[Action]) -> str:
    return "".join(str(a) for a in actions)


ALL_ACTIONS = tuple(Action(t, s) for t in TRANSLATIONS for s in STEERINGS)


def yaw_rotation(angle_rad: float) -> np.ndarray:
    """(3, 3) rotation about world +Y; positive = counter-clockwise seen from above (turn left)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def heading_axes(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal unit (forward, left) vectors of a camera in the +Y-up world, each (3,)."""
    forward = c2w[:3, 2].astype(np.float64).copy()
    forward[1] = 0.0
    norm = np.linalg.norm(forward)
    if norm < 1e-9:  # looking straight up/down: use the camera's 'up' edge as heading
        forward = -c2w[:3, 1].astype(np.float64).copy()
        forward[1] = 0.0
        norm = max(np.linalg.norm(forward), 1e-12)
    forward /= norm
    left = np.cross(np.array([0.0, 1.0, 0.0]), forward)  # +Y x forward points left
    return forward, left


KINEMATICS_RANGES = {"step_m": (0.0, 100.0, False), "yaw_deg": (0.0, 180.0, False)}  # (lo, hi, integer)


@dataclass(frozen=True)
class Kinematics:
    """How a discrete action moves the camera: metres per step and degrees of yaw per step (each in
    KINEMATICS_RANGES, as a saved session's are checked: CheckError otherwise)."""

    step_m: float = 0.5
    yaw_deg: float = 10.0

    def __post_init__(self) -> None:
        for key, (lo, hi, integer) in KINEMATICS_RANGES.items():
            object.__setattr__(self, key, number(getattr(self, key), f"kinematics.{key}", lo, hi, integer))

    def apply(self, c2w: np.ndarray, action: Action) -> np.ndarray:
        """Return the (4, 4) c2w after ``action`` (translate along the heading, then yaw in place)."""
        forward, left = heading_axes(c2w)
        f, l = TRANSLATION_VECTORS[action.translation]
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[:3, 3] += self.step_m * (f * forward + l * left)
        yaw = math.radians(self.yaw_deg) * STEERING_SIGN[action.steering]
        out[:3, :3] = yaw_rotation(yaw) @ out[:3, :3]
        return out

    def move_refused(self, c2w_from: np.ndarray, c2w_to: np.ndarray, action: Action | TargetPose) -> bool:
        """True when ``action`` is a discrete action that moves the camera horizontally under these kinematics,
        but the camera went from ``c2w_from`` to ``c2w_to`` without moving horizontally: the world refused the
        move (an obstacle in the way) or did not go on (a recording at its end). A target pose is never refused."""
        if not isinstance(action, Action):
            return False
        start = np.asarray(c2w_from)[[0, 2], 3]  # horizontal position (x, z; +Y is up)
        commanded = self.apply(c2w_from, action)[[0, 2], 3] - start
        made = np.asarray(c2w_to)[[0, 2], 3] - start
        return bool(np.linalg.norm(commanded) > 1e-6 and np.linalg.norm(made) < 1e-6)

    def nearest_action(self, c2w_from: np.ndarray, c2w_to: np.ndarray) -> Action:
        """The discrete action whose result lies closest to ``c2w_to`` (position, then heading)."""
        best, best_cost = ALL_ACTIONS[0], math.inf
        target_fwd, _ = heading_axes(c2w_to)
        for action in ALL_ACTIONS:
            moved = self.apply(c2w_from, action)
            fwd, _ = heading_axes(moved)
            cost = np.linalg.norm(moved[:3, 3] - c2w_to[:3, 3]) / max(self.step_m, 1e-9)
            angle = math.acos(float(np.clip(np.dot(fwd, target_fwd), -1.0, 1.0)))
            cost += angle / max(math.radians(self.yaw_deg), 1e-9)
            if cost < best_cost:
                best, best_cost = action, cost
        return best


def action_to_text(action: Action | TargetPose | None) -> str:
    """Serialise an action for JSON/metadata: ``"(FN)"``, ``"pose:[16 numbers]"`` or ``""``."""
    if action is None:
        return ""
    if isinstance(action, TargetPose):
        return "pose:" + ",".join(repr(float(v)) for v in np.asarray(action.c2w, dtype=np.float64).reshape(-1))
    return str(action)


def action_from_text(text: str) -> Action | TargetPose | None:
    """Inverse of :func:`action_to_text`; raises ValueError (ActionParseError) on malformed text."""
    if not text:
        return None
    if text.startswith("pose:"):
        values = np.array([float(v) for v in text[5:].split(",")], dtype=np.float64)
        if values.shape != (16,) or not np.isfinite(values).all():
            raise ValueError(f"a pose action needs 16 finite numbers, got {values.size}")
        return TargetPose(values.reshape(4, 4))
    return Action.parse(text)


class GeneratedWalk(Sequence):
    """Actions ``start``..``stop`` of the endless walk ``kind`` ('forward', 'orbit': forward while turning left,
    'random': a seeded wander) of ``seed``, made on demand: a walk of millions of steps takes no memory and no time
    before its first step. Iterating, or indexing forward, makes each action once; indexing back starts the walk
    again (``walk[-1]`` makes them all); a slice is a walk too (a slice with a step is a list). Indexing is
    thread-safe; iterating makes its own walk."""

    def __init__(self, kind: str, seed: int, start: int, stop: int):
        self.kind, self.seed, self.start, self.stop = kind, seed, start, max(start, stop)
        self._made: tuple[int, Iterator[Action]] | None = None  # (index of the next action, the walk making it)
        self._lock = threading.Lock()  # (indexing moves the walk on: one thread at a time)

    def _walk(self) -> Iterator[Action]:
        if self.kind in ("forward", "orbit"):
            yield from itertools.repeat(Action("F", "N" if self.kind == "forward" else "L"))
        rng, turn = np.random.default_rng(self.seed), "N"
        while True:
            if rng.random() < 0.15:  # change the turn now and then, so the walk wanders instead of jittering
                turn = rng.choice(["N", "N", "L", "R"])
            yield Action(str(rng.choice(["F", "F", "F", "fL", "fR", "S"])), str(turn))

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[Action]:
        return itertools.islice(self._walk(), self.start, self.stop)

    def __getitem__(self, i):
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(lo, hi, step)]
            return GeneratedWalk(self.kind, self.seed, self.start + lo, self.start + hi)
        i = operator.index(i) + (len(self) if operator.index(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"step {i} is outside the walk of {len(self)} steps")
        k = self.start + i
        with self._lock:
            if self._made is None or self._made[0] > k:
                self._made = (0, self._walk())
            at, walk = self._made
            action = next(itertools.islice(walk, k - at, None))
            self._made = (k + 1, walk)
        return action


def generated_walk(kind: str, steps: int, seed: int) -> GeneratedWalk:
    """A walk of ``steps`` actions: 'forward', 'orbit' (forward while turning left) or 'random' (seeded wander),
    made on demand (:class:`GeneratedWalk`)."""
    return GeneratedWalk(kind, seed, 0, steps)
