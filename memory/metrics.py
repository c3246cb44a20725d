"""Agreement between a generated frame and the cache render of the fused map into the same view.

Shown live in the studio: a learned model that stays consistent with what was seen before reproduces the
cache wherever the cache has content.
"""

from __future__ import annotations

import math

import numpy as np

from worldmodel.frame import CacheView


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 images (H, W, 3) over ``mask`` (H, W) bool (all pixels when None): nan for an
    empty mask, capped at 100 dB for identical pixels (a finite number, for tables and JSON)."""
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    d2 = (d * d).mean(-1)
    if mask is not None:
        if not mask.any():
            return math.nan
        d2 = d2[mask]
    return float(-10.0 * math.log10(max(float(d2.mean()), 1e-10)))


def agreement(frame_rgb: np.ndarray, frame_depth: np.ndarray, cache: CacheView) -> dict[str, float]:
    """Compare a frame with a cache render of the same camera.

    frame_rgb (H, W, 3) uint8, frame_depth (H, W) float32 z-depth (0 = invalid), ``cache`` a render of the same view
    (:func:`memory.cache.render_cache`; it may be smaller, then the frame is sampled at the
    cache's pixel centres). Returns
    psnr_db: :func:`psnr` of the frame's colours over the cache's valid pixels (nan if none),
    depth_abs_err_m: median |depth difference| over pixels valid in both (nan if none),
    coverage: share of the image where the cache has content.
    """
    valid = np.asarray(cache.valid, bool)
    if frame_rgb.shape[:2] != frame_depth.shape:
        raise ValueError(f"frame rgb {frame_rgb.shape[:2]} and depth {frame_depth.shape} have different sizes")
    if frame_depth.shape != valid.shape:  # a smaller cache: compare at its pixel centres (nearest frame pixel)
        (h, w), (ch, cw) = frame_depth.shape, valid.shape
        rows = np.minimum(np.round((np.arange(ch) + 0.5) * h / ch - 0.5).astype(int), h - 1)
        cols = np.minimum(np.round((np.arange(cw) + 0.5) * w / cw - 0.5).astype(int), w - 1)
        frame_rgb, frame_depth = frame_rgb[rows][:, cols], frame_depth[rows][:, cols]
    n = int(valid.sum())
    with np.errstate(invalid="ignore"):
        both = valid & np.isfinite(frame_depth) & (frame_depth > 0)
    err = np.abs(frame_depth[both].astype(np.float64) - cache.depth[both])
    return {"psnr_db": psnr(frame_rgb, cache.rgb, valid),
            "depth_abs_err_m": float(np.median(err)) if len(err) else math.nan,
            "coverage": n / valid.size if valid.size else 0.0}
