"""Value checks at the edges (CLI arguments, session.json, recordings): one clear line per bad value.

Every check rejects what Python would otherwise accept by accident: booleans as numbers, NaN/inf, floats where
a count is meant, huge values that hang or exhaust memory later.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


class CheckError(ValueError):
    """A value is out of range or of the wrong type; the message names it and the range."""


def number(value, name: str, lo: float, hi: float, integer: bool = False) -> float | int:
    """``value`` as a finite number in [lo, hi] (an int when ``integer``) or CheckError."""
    kind = "a whole number" if integer else "a number"
    bounds = f"{int(lo)} and {int(hi)}" if integer else f"{lo:g} and {hi:g}"  # 2**63 - 1, not 9.22337e+18
    if isinstance(value, bool) or not isinstance(value, (Integral, Real) if not integer else Integral):
        if integer and isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        else:
            raise CheckError(f"{name} must be {kind} between {bounds}, got {short(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise CheckError(f"{name} must be {kind} between {bounds}, got {short(value)}")
    return int(value) if integer else float(value)


def boolean(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise CheckError(f"{name} must be true or false, got {short(value)}")
    return value


def text(value, name: str, max_len: int = 1000) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise CheckError(f"{name} must be a text of at most {max_len} characters, got {short(value)}")
    return value


def short(value) -> str:
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."
