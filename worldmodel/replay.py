"""Replay backend: a recorded sequence (any format worldmodel.recordings reads) as a WorldModel.

``create_world("replay:/path/to/seq")`` opens the folder with :func:`worldmodel.recordings.open_sequence`;
options follow a ``?``: ``replay:/data/seq?up=+z&stride=2&max_frames=300&level=1`` (``level``: turn the world so
the floor in its depth is level).

Stepping plays the recording: a discrete :class:`Action` returns the recorded frame after the one the
context ends on (the action itself is ignored: the recording decides where the camera goes); a
:class:`TargetPose` jumps to the recorded frame whose pose is nearest (camera distance + 0.5 m per radian
of rotation). At the end the last frame is returned again and :attr:`ReplayWorld.finished` is True.

The readers live in :mod:`worldmodel.recordings`; a ready :class:`~worldmodel.recordings.Sequence` can be
passed in directly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from worldmodel.actions import Action, TargetPose
from worldmodel.frame import BaseWorldModel, Context, Frame

_OPTION_KEYS = {"up": "world_up", "world_up": "world_up", "stride": "stride", "max_frames": "max_frames",
                "level": "level"}
_YES_NO = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_replay_arg(arg: str, look_at_folders: bool = True) -> tuple[str, dict]:
    """``"/data/seq?up=+z&stride=2&level=1"`` -> ("/data/seq", {"world_up": "+z", "stride": 2, "level": True}).

    The part after the last ``?`` is read as options only when every item is a known ``key=value``;
    otherwise the whole string is the path (a folder may have a ``?`` in its name). ValueError (one line) when
    ``stride`` or ``max_frames`` is not a whole number, an option is given twice, or (``look_at_folders``; off
    where a path is not checked yet, as the studio's page gives them) the part before the ``?`` is a folder,
    the whole is not, and an option is unknown or has no value."""
    path, sep, query = arg.rpartition("?")
    if not sep:
        return arg, {}
    opts: dict = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _OPTION_KEYS:
            if look_at_folders and Path(path).expanduser().exists() and not Path(arg).expanduser().exists():
                raise ValueError(f"bad replay option {item!r} in {arg!r}: the options are up=, stride=, "
                                 "max_frames= and level=, e.g. PATH?up=+z&stride=2&max_frames=100&level=1")
            return arg, {}
        name = _OPTION_KEYS[key]
        if name in opts:
            raise ValueError(f"replay option {key} is given twice in {arg!r}; give it once")
        if name == "level":
            if value.strip().lower() not in _YES_NO:
                raise ValueError(f"bad replay options in {arg!r}: level must be 1 or 0 (turn the floor level, or "
                                 "not)")
            opts[name] = _YES_NO[value.strip().lower()]
            continue
        try:
            opts[name] = value.strip() if name == "world_up" else int(value)
        except ValueError:
            raise ValueError(f"bad replay options in {arg!r}: {key} must be a whole number; use e.g. "
                             "PATH?up=+z&stride=2&max_frames=100") from None
    return path, opts


def open_recording(spec: str, **overrides):
    """The recording ``spec`` names as ``--world replay:`` takes it (``PATH?up=+z&stride=2&max_frames=N``), opened
    with :func:`worldmodel.recordings.open_sequence`; ``overrides`` (its keyword arguments) win over the spec's
    options. Raises SequenceError (one line) for bad options as for an unreadable recording."""
    from worldmodel.recordings import SequenceError, open_sequence

    try:
        path, options = parse_replay_arg(spec)
    except ValueError as e:
        raise SequenceError(str(e)) from None
    return open_sequence(path, **{**options, **overrides})


class ReplayWorld(BaseWorldModel):
    """A WorldModel that plays back a recorded sequence. Frames keep the recording's size and intrinsics.

    sequence: an opened ``worldmodel.recordings.Sequence`` (lazy, indexable, with ``c2ws`` (N, 4, 4)).
    ``position`` is the index in the recording of the frame returned last (-1 before ``reset``).
    """

    _last: tuple[int, int] | None = None  # (frame index along its branch, recording index) of the last frame made

    name = "replay"

    def __init__(self, sequence) -> None:
        if len(sequence) == 0:
            raise ValueError(f"{sequence.path}: the sequence has no frames")
        self.sequence = sequence
        self.position = -1

    @classmethod
    def open(cls, path: str | Path, world_up: str | None = None, stride: int = 1,
             max_frames: int | None = None, level: bool | None = None) -> "ReplayWorld":
        """Open a sequence folder (format detected; the options of :func:`worldmodel.recordings.open_sequence`).
        Raises worldmodel.recordings.SequenceError (a ValueError)."""
        from worldmodel.recordings import open_sequence

        return cls(open_sequence(path, max_frames=max_frames, stride=stride, world_up=world_up, level=level))

    # ---- WorldModel --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def finished(self) -> bool:
        """True once the last recorded frame has been returned (further steps repeat it)."""
        return self.position >= len(self.sequence) - 1

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        """Frame 0 of the recording (``seed`` is ignored); with ``start`` (c2w), the recorded frame nearest to it."""
        self.position = 0 if start is None else self._nearest(np.asarray(start, dtype=np.float64))
        self._last = (0, self.position)
        return replace(self.sequence[self.position], index=0, action=None)

    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        """The next recorded frame after ``context.last`` (Action), or the one nearest a TargetPose."""
        at_end = False
        if isinstance(action, TargetPose):
            self.position = self._nearest(np.asarray(action.c2w, dtype=np.float64))
        elif isinstance(action, Action):
            here = self._locate(context.last)
            self.position = min(here + 1, len(self.sequence) - 1)
            at_end = self.position == here
        else:
            raise TypeError(f"ReplayWorld.step expects an Action or TargetPose, got {type(action).__name__}")
        if not at_end:  # a step past the end repeats the last frame: frame i is then no longer recorded frame i
            self._last = (context.last.index + 1, self.position)
        return replace(self.sequence[self.position], index=context.last.index + 1, action=action)

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        """(4, 4) c2w of the frame :meth:`step` would return (for memory retrieval before the step)."""
        if isinstance(action, TargetPose):
            return self.sequence.c2ws[self._nearest(np.asarray(action.c2w, dtype=np.float64))].copy()
        return self.sequence.c2ws[min(self._locate(last) + 1, len(self.sequence) - 1)].copy()

    def close(self) -> None:
        """Release what the recording holds open (a PLY folder's video decoder); the Scene calls it on close."""
        self.sequence.close()

    # ---- where are we in the recording -------------------------------------------------------------
    def _nearest(self, c2w: np.ndarray) -> int:
        from worldmodel.recordings import nearest_pose_index

        return nearest_pose_index(self.sequence.c2ws, c2w)

    def _locate(self, frame: Frame) -> int:
        """Recording index of ``frame``, a frame this world made (now or in a saved session): among the recorded
        frames with its pose, the last one returned when ``frame`` is that frame (so static stretches
        advance); else (after a seek, a fork or a reopened session) the one its place along the branch points
        at: a replay plays one recorded frame a step, so frame i is recorded frame i (plus where ``reset``
        started). Many frames can share a pose: a fixed camera, or a PLY folder without poses. A pose no
        recorded frame has: the nearest one."""
        c2ws = self.sequence.c2ws
        same = np.nonzero(np.abs(c2ws - frame.c2w).reshape(len(c2ws), -1).max(axis=1) < 1e-9)[0]
        if not len(same):
            return self._nearest(np.asarray(frame.c2w, dtype=np.float64))
        if self._last is not None and frame.index == self._last[0] and self._last[1] in same:
            return self._last[1]
        guess = frame.index + (self._last[1] - self._last[0] if self._last is not None else 0)
        return int(same[np.argmin(np.abs(same - guess))])

    # ---- sessions ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        """JSON-able description; ``world_from_description`` reopens the same recording."""
        d = self.sequence.describe()
        return {"kind": "replay", "path": str(Path(d["path"]).resolve()), "format": d.get("format"),
                "world_up": d.get("world_up"), "stride": int(d.get("stride", 1)),
                "max_frames": d.get("max_frames"), "frames": len(self.sequence), "level_turn": d.get("level_turn")}

    @classmethod
    def from_description(cls, desc: dict) -> "ReplayWorld":
        path = desc.get("path")
        if not path:
            raise ValueError("replay description has no path")
        if isinstance(path, str) and not Path(path).expanduser().exists():
            raise ValueError(f"it was at {path}, and is not there now; put it back there (the session holds its "
                             "frames, not the recording)")
        world = cls.open(path, world_up=desc.get("world_up"), stride=int(desc.get("stride") or 1),
                         max_frames=desc.get("max_frames"), level=False)
        if desc.get("level_turn") is not None:  # the turn found when it was saved (not found again: RANSAC)
            try:
                turn = np.asarray(desc["level_turn"], dtype=np.float64)
            except (TypeError, ValueError):
                turn = np.zeros(0)
            if (turn.shape != (3, 3) or not np.allclose(turn @ turn.T, np.eye(3), atol=1e-6)
                    or np.linalg.det(turn) <= 0):  # (a reflection would mirror every pose)
                raise ValueError(f"its level_turn is not a 3x3 rotation ({desc['level_turn']!r:.80}); the session "
                                 "file is corrupt")
            world.sequence.turn_world(turn)
            world.sequence.options["level_turn"] = turn.tolist()
            world.sequence.notes.append("level: turned as when the session was saved")
        if desc.get("frames") is not None and int(desc["frames"]) != len(world):
            raise ValueError(f"{path} now has {len(world)} frames, the session recorded {desc['frames']}; "
                             "the recording changed since the session was saved")
        return world
