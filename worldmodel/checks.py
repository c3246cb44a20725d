"""Value checks at the edges (CLI arguments, session.json, recordings): one clear line per bad value.

Every check rejects what Python would otherwise accept by accident: booleans as numbers, NaN/inf, floats where
a count is meant, huge values that hang or exhaust memory later.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


MAX_SEED = 2**63 - 1  # seeds are whole numbers in [0, MAX_SEED] (numpy's generators take them)


class CheckError(ValueError):
    """A value is out of range or of the wrong type; the message names it and the range."""


def number(value, name: str, lo: float, hi: float, integer: bool = False) -> float | int:
    """``value`` as a finite number in [lo, hi] (an int when ``integer``) or CheckError."""
    kind = "a whole number" if integer else "a number"
    bounds = f"{int(lo)} and {int(hi)}" if integer else f"{lo:g} and {hi:g}"  # 2**63 - 1, not 9.22337e+18
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, Real) if not integer else Integral):
        if integer and isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value) \
                and value == int(value):  # (a whole float: 8.0, numpy's float32(8))
            value = int(value)
        else:
            raise CheckError(f"{name} must be {kind} between {bounds}, got {short(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise CheckError(f"{name} must be {kind} between {bounds}, got {short(value)}")
    return int(value) if integer else float(value)


def boolean(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise CheckError(f"{name} must be true or false, got {short(value)}")
    return bool(value)


def text(value, name: str, max_len: int = 1000) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise CheckError(f"{name} must be a text of at most {max_len} characters, got {short(value)}")
    return value


def short(value) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


ROTATION_TOLERANCE = 1e-3  # largest |R R^T - I| of a pose's rotation
LAST_ROW_TOLERANCE = 1e-6  # largest |last row - (0 0 0 1)|


def pose_problem(c2w) -> str | None:
    """What is wrong with a camera-to-world pose, or None: a finite (4, 4) whose rotation is orthonormal (within
    ROTATION_TOLERANCE) and proper (det > 0, not a mirror), last row 0 0 0 1 (within LAST_ROW_TOLERANCE). The one
    rule for recordings' poses, frames entering a scene and frames of a saved session."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        return "not a finite 4x4 matrix"
    R = c2w[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(R) < 0:
        return f"a rotation that is not orthonormal (det {np.linalg.det(R):.3f})"
    if np.abs(c2w[3] - [0, 0, 0, 1]).max() > LAST_ROW_TOLERANCE:
        return "a last row other than 0 0 0 1"
    return None


def camera_problem(c2w, K) -> str | None:
    """What is wrong with a frame's camera, as "a camera pose that ..." / "intrinsics K that ...", or None: the pose
    passes :func:`pose_problem`, K is a finite (3, 3) with positive focal lengths. The one rule for frames entering
    a scene and frames read from a saved session."""
    why = pose_problem(c2w)
    if why is not None:
        return f"a camera pose that is not a finite rigid transform ({why})"
    K = np.asarray(K, dtype=np.float64)
    if not (K.shape == (3, 3) and np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        return "intrinsics K that are not finite with positive focal lengths"
    return None
