"""TUM RGB-D and the TUM-format releases of others (ICL-NUIM, ETH3D, ORB-SLAM's associations.txt): lists
paired by timestamp, ground truth interpolated at the colour times (also used by ARKitScenes).

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.tum import read_tum_rows, valid_tum_rows
from worldmodel.recordings.base import (CONFIG_FILE, SequenceError, _ImageSequence, _K_from_config, _depth_scale,
                                        _open_image, _read_intrinsics, _up_from_cameras, _visible, up_rotation)


TUM_K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
# ICL-NUIM's TUM-format release: its renderer's camera with a positive fy (the dataset page's -480 is for the
# POV-Ray-format files; ETH3D/badslam#59, cuVSLAM#135)
ICL_NUIM_K = np.array([[481.20, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]])
TUM_DEPTH_SCALE = 1.0 / 5000.0
TUM_MAX_DT = 0.02          # s, colour/depth association (TUM's associate.py default)
TUM_MAX_GT_GAP = 0.1       # s, a colour frame is dropped when its bracketing ground-truth samples are farther apart


def _time_file_rows(path: Path, pairs: int, expected: str) -> list[list[tuple[float, str]]]:
    """Non-comment lines of a TUM-style list, each ``pairs`` times ``timestamp filename`` -> per line
    [(time, file name)]; SequenceError naming the line that is not (``expected`` says the layout)."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        try:
            if len(parts) < 2 * pairs:
                raise ValueError
            rows.append([(float(parts[2 * k]), parts[2 * k + 1]) for k in range(pairs)])
        except ValueError:
            raise SequenceError(f"{path}:{n}: expected '{expected}', got {s[:60]!r}") from None
    if not rows:
        raise SequenceError(f"{path} lists no images; is the download complete?")
    return rows


def _read_tum_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    if not path.is_file():
        raise SequenceError(f"{path} is missing; a TUM folder needs rgb.txt, depth.txt and groundtruth.txt")
    rows = _time_file_rows(path, 1, "timestamp filename")
    return np.array([t for (t, _), in rows], np.float64), [path.parent / f for (_, f), in rows]


def associate(t_a: np.ndarray, t_b: np.ndarray, max_dt: float = TUM_MAX_DT) -> list[tuple[int, int]]:
    """One-to-one nearest-timestamp matching as TUM's associate.py: candidate pairs closer than ``max_dt``,
    taken greedily by increasing time difference. Returns (i, j) pairs sorted by i."""
    order = np.argsort(t_b)
    tb = t_b[order]
    cand = []
    for i, t in enumerate(t_a):
        lo, hi = np.searchsorted(tb, [t - max_dt, t + max_dt])
        for k in range(lo, hi):
            d = abs(tb[k] - t)
            if d <= max_dt:
                cand.append((d, i, int(order[k])))
    cand.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def interpolate_poses(gt: np.ndarray, t: np.ndarray, max_gap: float = TUM_MAX_GT_GAP,
                      max_dt: float = TUM_MAX_DT) -> tuple[np.ndarray, np.ndarray]:
    """TUM ground truth (M, 8) ``t tx ty tz qx qy qz qw`` -> poses (N, 4, 4) at times ``t`` (N,)
    (linear translation, slerp rotation) and a (N,) bool mask of the times it knows: inside the ground truth
    with bracketing samples at most ``max_gap`` seconds apart (no interpolation across a motion-capture
    dropout), or within ``max_dt`` of a sample (ground truth written once per image, at any rate, as TUM's
    associate.py matches it)."""
    from scipy.spatial.transform import Rotation, Slerp

    order = np.argsort(gt[:, 0], kind="stable")
    gt = gt[order]
    keep = np.concatenate([[True], np.diff(gt[:, 0]) > 0])
    gt = gt[keep]
    ts = gt[:, 0]
    inside = (t >= ts[0]) & (t <= ts[-1])
    k = np.clip(np.searchsorted(ts, t), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(t), np.int64)
    nearest = np.minimum(np.abs(ts[k] - t), np.abs(ts[k - 1] - t)) if len(ts) > 1 else np.abs(ts[0] - t)
    ok = nearest <= max_dt
    if len(ts) > 1:
        ok |= inside & (ts[k] - ts[k - 1] <= max_gap)
    poses = np.tile(np.eye(4), (len(t), 1, 1))
    if ok.any():
        tq = np.clip(t[ok], ts[0], ts[-1])  # a time just outside the ends takes the end's pose
        if len(ts) == 1:
            poses[ok, :3, :3] = Rotation.from_quat(gt[0, 4:8]).as_matrix()
            poses[ok, :3, 3] = gt[0, 1:4]
        else:
            poses[ok, :3, :3] = Slerp(ts, Rotation.from_quat(gt[:, 4:8]))(tq).as_matrix()
            poses[ok, :3, 3] = np.stack([np.interp(tq, ts, gt[:, c]) for c in (1, 2, 3)], axis=1)
    return poses, ok


def _read_associations(path: Path) -> tuple[np.ndarray, list[Path], np.ndarray, list[Path]]:
    """associate.py's output ``t1 file1 t2 file2`` per line (ORB-SLAM's and ICL-NUIM's TUM-format folders)
    -> (colour times, colour files, depth times, depth files), one pair per line. The depth column is the one
    whose path names depth (ICL-NUIM writes depth first); with neither, the first is colour, as associate.py
    writes ``rgb.txt depth.txt``."""
    rgb, depth = [], []
    for a, b in _time_file_rows(path, 2, "time colour-file time depth-file"):
        if "depth" in a[1].lower() and "depth" not in b[1].lower():
            a, b = b, a
        rgb.append(a)
        depth.append(b)
    return (np.array([t for t, _ in rgb], np.float64), [path.parent / f for _, f in rgb],
            np.array([t for t, _ in depth], np.float64), [path.parent / f for _, f in depth])


def _tum_groundtruth(folder: Path) -> Path:
    """groundtruth.txt, else the one ``*.gt.freiburg`` (ICL-NUIM's TUM-format trajectory)."""
    gt_path = folder / "groundtruth.txt"
    if not gt_path.is_file():
        freiburg = _visible(folder.glob("*.gt.freiburg"))
        if len(freiburg) == 1:
            return freiburg[0]
        raise SequenceError(f"{gt_path} is missing; a TUM folder needs it for the camera poses "
                            "(download the sequence's groundtruth.txt)")
    return gt_path


def _tum_intrinsics(folder: Path, cfg: dict, icl_nuim: bool) -> tuple[np.ndarray | None, str | None]:
    """(K, note): worldstudio.json's, else ``calibration.txt`` (``fx fy cx cy``, as ETH3D's SLAM benchmark ships
    beside its TUM-format lists), else None with a note that the default (TUM's, or ICL-NUIM's) is used."""
    K = _K_from_config(cfg, folder)
    if K is None and (folder / "calibration.txt").is_file():
        K = _read_intrinsics(folder / "calibration.txt")
    if K is not None:
        return K, None
    if icl_nuim:
        return None, "no calibration.txt: using ICL-NUIM's camera fx=481.2, fy=480, cx=319.5, cy=239.5"
    return None, ("no calibration.txt: using TUM's default fx=fy=525, cx=319.5, cy=239.5 (its advice for every "
                  f"sequence); put 'fx fy cx cy' in calibration.txt or K in {CONFIG_FILE} for another camera")


def _is_icl_nuim(gt_path: Path, gt_times: np.ndarray, image_times: np.ndarray, first_image: Path,
                 cfg: dict) -> bool:
    """ICL-NUIM's TUM-format release: ``icl_nuim`` in worldstudio.json when given; else its ``*.gt.freiburg``, or
    (renamed groundtruth.txt, as SLAM repositories' download scripts do) frame numbers for times throughout (TUM's
    are Unix times, ETH3D's fractional seconds) with its 640x480 images."""
    if "icl_nuim" in cfg:
        if not isinstance(cfg["icl_nuim"], bool):
            raise SequenceError(f"{gt_path.parent / CONFIG_FILE}: icl_nuim must be true or false, got "
                                f"{cfg['icl_nuim']!r}")
        return cfg["icl_nuim"]
    if gt_path.name.endswith(".gt.freiburg"):
        return True
    times = np.concatenate([gt_times, image_times])
    if not (len(gt_times) and np.isfinite(times).all() and (times == np.round(times)).all() and times.min() >= 0
            and times.max() < 1e5):
        return False
    try:
        with _open_image(first_image) as im:
            return im.size == (640, 480)
    except (OSError, ValueError):
        return False  # (the frame's own reading says what is wrong with it)


def _tum_recorded_by_tum(gt_path: Path) -> bool:
    """A sequence of TUM's own benchmark (its ground truth names the freiburg bag it came from)."""
    try:
        with gt_path.open("rb") as f:
            head = f.read(400)
    except OSError:
        return False
    return b"rgbd_dataset_freiburg" in head or gt_path.parent.name.startswith("rgbd_dataset_freiburg")


def _icl_nuim_to_right_handed(c2ws: np.ndarray) -> np.ndarray:
    """ICL-NUIM's ``*.gt.freiburg`` poses (N, 4, 4) -> OpenCV c2w in a right-handed world: its renderer's world is
    left-handed and y-up, its images top-down, so every pose is reflected in the xz plane (S T S, S = diag(1, -1,
    1, 1); di-fusion's and cuVSLAM's loaders do the same: unreflected poses fuse into a scrambled map). The
    world is then y-down (up is -y)."""
    S = np.diag([1.0, -1.0, 1.0, 1.0])
    return S @ c2ws @ S


def _open_tum(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    notes = []
    lists = ("rgb.txt", "depth.txt")
    if not (folder / "rgb.txt").is_file() and (folder / "associations.txt").is_file():
        rgb_t, rgb_f, dep_t, dep_f = _read_associations(folder / "associations.txt")
        pairs = [(i, i) for i in range(len(rgb_t))]  # associated already
        lists = ("associations.txt", "associations.txt")
    else:
        rgb_t, rgb_f = _read_tum_list(folder / "rgb.txt")
        dep_t, dep_f = _read_tum_list(folder / "depth.txt")
        pairs = associate(rgb_t, dep_t)
    gt_path = _tum_groundtruth(folder)
    try:
        gt = read_tum_rows(gt_path, check=False)  # (M, 8) t tx ty tz qx qy qz qw
    except ValueError as e:
        raise SequenceError(str(e)) from None
    icl_nuim = _is_icl_nuim(gt_path, gt[:, 0], rgb_t, rgb_f[0], cfg)
    valid = valid_tum_rows(gt)
    if len(gt) and not valid.any():
        raise SequenceError(f"{gt_path}: every pose holds NaN/inf or a zero quaternion; pass a trajectory with poses")
    if not valid.all():
        notes.append(f"{int((~valid).sum())} lines of {gt_path.name} hold NaN/inf or a zero quaternion (tracking "
                     "lost?): no pose is taken from them")
        gt = gt[valid]
    if not len(gt):
        raise SequenceError(f"{gt_path} holds no poses; download the complete file")
    if len(pairs) < len(rgb_t):
        notes.append(f"{len(rgb_t) - len(pairs)} colour images have no depth within {TUM_MAX_DT} s (skipped)")
    if not pairs:
        raise SequenceError(f"{folder}: no colour image has a depth image within {TUM_MAX_DT} s; "
                            "rgb.txt and depth.txt do not belong together")
    ri = np.array([p[0] for p in pairs])
    di = np.array([p[1] for p in pairs])
    in_time = np.argsort(rgb_t[ri], kind="stable")  # played in time order, however rgb.txt is sorted
    ri, di = ri[in_time], di[in_time]
    poses, ok = interpolate_poses(gt, rgb_t[ri])
    if not ok.all():
        notes.append(f"{int((~ok).sum())} frames lie outside the ground truth or in a gap (skipped)")
    if not ok.any():
        t0, t1, g0, g1 = rgb_t[ri].min(), rgb_t[ri].max(), gt[:, 0].min(), gt[:, 0].max()
        if t1 < g0 or t0 > g1:
            raise SequenceError(f"{gt_path} ({g0:.2f}..{g1:.2f}) does not cover the image timestamps "
                                f"({t0:.2f}..{t1:.2f}); is it from another sequence?")
        raise SequenceError(f"{gt_path} has no pose within {TUM_MAX_DT} s of any image and its poses are more "
                            f"than {TUM_MAX_GT_GAP} s apart around each; write a pose at each image's timestamp")
    ri, di, poses = ri[ok], di[ok], poses[ok]
    rgb_files = [rgb_f[i] for i in ri]
    depth_files = [dep_f[j] for j in di]
    for listed, files in zip(lists, (rgb_files, depth_files)):
        missing = next((p for p in files if not p.is_file()), None)
        if missing is not None:
            raise SequenceError(f"{missing} is missing (listed in {listed}); copy it again or remove its line "
                                f"from {listed}")
    K, k_note = _tum_intrinsics(folder, cfg, icl_nuim)
    notes += [k_note] if k_note else []
    if icl_nuim:
        poses = _icl_nuim_to_right_handed(poses)
        notes.append(f"ICL-NUIM ({gt_path.name}, frame numbers as times): its left-handed y-up poses are reflected "
                     f"to a right-handed world (\"icl_nuim\": false in {CONFIG_FILE} if it is another dataset)")
    if up == "auto":
        up = _tum_up(poses, icl_nuim, tum_own=K is None or _tum_recorded_by_tum(gt_path), notes=notes)
    return _ImageSequence(
        path=folder, format="tum", c2ws=up_rotation(up) @ poses, timestamps=rgb_t[ri], world_up=up, notes=notes,
        rgb_files=rgb_files, depth_files=depth_files,
        Ks=(ICL_NUIM_K if icl_nuim else TUM_K).copy() if K is None else K,
        default_K_for=(640, 480) if K is None else None, depth_scale=_depth_scale(cfg, folder, TUM_DEPTH_SCALE),
        source_to_world=up_rotation(up)[:3, :3] @ np.diag([1.0, -1.0, 1.0]) if icl_nuim else None)


def _tum_up(c2ws: np.ndarray, icl_nuim: bool, tum_own: bool, notes: list[str]) -> str:
    """The up axis of a TUM-format world: ICL-NUIM's (reflected) is y-down, TUM's own motion-capture world is
    z-up (``tum_own``: TUM's default camera, or a ground truth that names its freiburg bag); another's (a
    ``calibration.txt``: ETH3D, a SLAM system's output) has no documented axis, so the one of y and z nearer the
    cameras' mean up is taken, said in a note."""
    if icl_nuim:
        return "-y"
    return "+z" if tum_own else _up_from_cameras(c2ws, notes)
