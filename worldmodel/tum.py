"""TUM RGB-D trajectories, read and written in one place: one ``timestamp tx ty tz qx qy qz qw`` line per
camera (metres; Hamilton quaternion, scalar last, as scipy), ``#`` comments. Poses are c2w (4, 4) float64.

Used by the exports (scenes.export), the recordings reader (groundtruth.txt, poses.txt) and the replay
world, so a trajectory WorldStudio writes is one it reads back exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TUM_FIELDS = "timestamp tx ty tz qx qy qz qw"


def number_rows(text: str, where: str | Path) -> list[tuple[int, list[float]]]:
    """Non-comment lines of ``text`` as (line number, floats); commas count as spaces.
    ValueError ``where:line: not numbers ...`` on a line that is not all numbers."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            rows.append((n, [float(v) for v in s.replace(",", " ").split()]))
        except ValueError:
            raise ValueError(f"{where}:{n}: not numbers: {s[:60]!r}; fix or remove that line") from None
    return rows


def valid_tum_rows(rows: np.ndarray) -> np.ndarray:
    """(M, 8) rows -> (M,) bool: every value finite and a non-zero quaternion (a SLAM system writes NaN where
    it lost tracking)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    with np.errstate(invalid="ignore"):
        return np.isfinite(rows).all(axis=1) & (np.linalg.norm(rows[:, 4:8], axis=1) >= 1e-9)


def check_tum_rows(rows: np.ndarray, where: str | Path = "trajectory") -> np.ndarray:
    """(M, 8) rows ``t tx ty tz qx qy qz qw`` as float64; ValueError when a row holds NaN/inf or a zero
    quaternion."""
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    if not valid_tum_rows(arr).all():
        raise ValueError(f"{where} contains NaN/inf or zero quaternions; fix or drop those lines")
    return arr


def tum_rows_to_c2ws(rows: np.ndarray, where: str | Path = "trajectory") -> tuple[np.ndarray, np.ndarray]:
    """(M, 8) rows ``t tx ty tz qx qy qz qw`` -> (timestamps (M,) float64, c2ws (M, 4, 4) float64).
    ValueError when a row holds NaN/inf or a zero quaternion."""
    from scipy.spatial.transform import Rotation

    arr = check_tum_rows(rows, where)
    c2ws = np.tile(np.eye(4), (len(arr), 1, 1))
    if len(arr):
        c2ws[:, :3, :3] = Rotation.from_quat(arr[:, 4:8]).as_matrix()
        c2ws[:, :3, 3] = arr[:, 1:4]
    return arr[:, 0].copy(), c2ws


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A TUM trajectory file -> (timestamps (M,), c2ws (M, 4, 4)); ValueError (one line) when unreadable."""
    return tum_rows_to_c2ws(read_tum_rows(path), path)


def read_tum_rows(path: str | Path, check: bool = True) -> np.ndarray:
    """A TUM trajectory file -> its (M, 8) float64 rows ``t tx ty tz qx qy qz qw``; ValueError (one line) when
    unreadable, when a line does not hold 8 numbers, or (``check``) a row NaN/inf or a zero quaternion
    (unchecked rows go through :func:`valid_tum_rows`)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}; check the path") from None
    rows = number_rows(text, path)
    bad = next(((n, r) for n, r in rows if len(r) != 8), None)
    if bad:
        raise ValueError(f"{path}:{bad[0]}: expected 8 numbers '{TUM_FIELDS}', got {len(bad[1])}; "
                         "pass a TUM trajectory file")
    arr = np.asarray([r for _, r in rows], dtype=np.float64).reshape(-1, 8)
    return check_tum_rows(arr, path) if check else arr


def format_tum(c2ws: np.ndarray, timestamps: np.ndarray, header: str = "") -> str:
    """(M, 4, 4) rigid c2w and (M,) seconds -> the file's text (``header`` as a leading comment line)."""
    from scipy.spatial.transform import Rotation

    c2ws = np.asarray(c2ws, dtype=np.float64).reshape(-1, 4, 4)
    q = Rotation.from_matrix(c2ws[:, :3, :3]).as_quat() if len(c2ws) else np.zeros((0, 4))  # x y z w
    t = c2ws[:, :3, 3]
    lines = ([f"# {header}"] if header else []) + [f"# {TUM_FIELDS}"]
    for i in range(len(c2ws)):
        lines.append(f"{timestamps[i]:.6f} " + " ".join(f"{v:.9f}" for v in t[i]) + " "
                     + " ".join(f"{v:.9f}" for v in q[i]))
    return "\n".join(lines) + "\n"
