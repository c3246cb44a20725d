"""A tiny third-party world for the plugin test: a camera in front of a flat wall whose colour is the ARG.

Exposed by tests/test_plugins.py through a real ``worldstudio.worlds`` entry point (a dist-info folder)."""

from __future__ import annotations

import dataclasses

import numpy as np

from worldmodel.actions import Kinematics
from worldmodel.camera import intrinsics_from_fov
from worldmodel.frame import BaseWorldModel, Context, Frame
from worldmodel.registry import WorldPlugin

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "": (128, 128, 128)}


class WallWorld(BaseWorldModel):
    name = "wall"
    exact_depth = True

    def __init__(self, colour: str, width: int, height: int, kinematics: Kinematics):
        self.rgb = np.array(COLOURS[colour], np.uint8)
        self.K, self.size, self.kinematics = intrinsics_from_fov(width, height, 60.0), (width, height), kinematics

    def _frame(self, index: int, c2w: np.ndarray, action=None) -> Frame:
        w, h = self.size
        depth = np.full((h, w), 3.0, np.float32)  # the wall is always 3 m ahead
        return Frame(index, np.broadcast_to(self.rgb, (h, w, 3)).copy(), depth, self.K, c2w, action)

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        return self._frame(0, np.eye(4) if start is None else np.asarray(start, np.float64))

    def step(self, action, context: Context) -> Frame:
        return self._frame(context.last.index + 1, self.target_c2w(action, context), action)


def make_wall_world(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WallWorld:
    """A flat wall 3 m ahead, coloured by ARG (red | green)."""
    if arg not in COLOURS:
        from worldmodel.registry import WorldSpecError

        raise WorldSpecError(f"wall colour must be red or green, got {arg!r}")
    return WallWorld(arg, width, height, kinematics)


class TintedWall(WallWorld):
    """A wall whose colour is chosen after it is made, which no spec says: it describes itself, and its plugin
    rebuilds it from that description (a :class:`~worldmodel.registry.WorldPlugin`)."""

    name = "tinted"

    def describe(self) -> dict:
        return {"kind": "tinted", "rgb": self.rgb.tolist(), "size": list(self.size),
                "kinematics": dataclasses.asdict(self.kinematics)}


def make_tinted_wall(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> TintedWall:
    """A grey wall 3 m ahead; tint it with its rgb attribute."""
    return TintedWall("", width or 32, height or 24, kinematics)


def tinted_wall_from(desc: dict) -> TintedWall:
    wall = TintedWall("", *desc["size"], Kinematics(**desc["kinematics"]))
    wall.rgb = np.array(desc["rgb"], np.uint8)
    return wall


TINTED_WALL = WorldPlugin(make_tinted_wall, tinted_wall_from)


def make_long_step_wall(arg: str, seed: int, width: int, height: int, kinematics: Kinematics | None) -> WallWorld:
    """A grey wall 3 m ahead, walked in 2 m / 45 degree steps unless others are asked for."""
    return WallWorld("", width or 32, height or 24, kinematics or Kinematics(step_m=2.0, yaw_deg=45.0))


LONG_STEP_WALL = WorldPlugin(make_long_step_wall, own_kinematics=True)  # (None: the world's own steps)
