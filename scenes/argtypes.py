"""argparse types with ranges: a bad command-line value is one usage line, never a traceback."""

from __future__ import annotations

import argparse
from typing import Callable

from worldmodel.checks import CheckError, number

SIZE = (16, 4096)          # frame width/height in pixels
VOXEL = (0.005, 5.0)       # metres (the studio's voxel control uses the same range)
STEP_M = (0.0, 100.0)      # metres per translation step
YAW_DEG = (0.0, 180.0)     # degrees per steering step
SEED = (0, 2**32 - 1)
STEPS = (1, 10_000_000)


def ranged(lo: float, hi: float, integer: bool = False) -> Callable[[str], float | int]:
    """An argparse ``type`` accepting a finite number in [lo, hi] (a whole number when ``integer``)."""
    span = f"{lo:d}..{hi:d}" if integer else f"{lo:g}..{hi:g}"

    def parse(text: str) -> float | int:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind} (in {span})") from None
        try:
            return number(value, "value", lo, hi, integer)
        except CheckError:
            raise argparse.ArgumentTypeError(f"{text} is outside {span}") from None
    parse.__name__ = "whole number" if integer else "number"
    return parse


def folder_path(text: str) -> str:
    """An argparse ``type`` for an output folder: "" (which Path reads as the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not a folder; name the output folder")
    return text
