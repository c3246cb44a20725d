"""JSON records of training and evaluation runs (JSON has no NaN: a metric that could not be measured, e.g.
PSNR over an empty region, is written as null)."""

from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """``value`` (nested dicts / lists / tuples / arrays of numbers and strings, numpy scalars too) with every
    non-finite float as None."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
