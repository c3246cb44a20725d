"""Matterport3D (niessner/Matterport): the undistorted RGB-D views of one house ``<house_id>/``, as the download
script's zips extract (``undistorted_color_images.zip`` -> ``<house_id>/undistorted_color_images/``). Sources: the
dataset's ``data_organization.md``, and the GAPS library its tools read the files with (tomfunkhouser/gaps:
``pkgs/RGBD/RGBDConfiguration.cpp`` parses the conf, ``RGBDImage.cpp`` unprojects, ``R2Shapes/R2Grid.cpp`` reads
PNGs bottom row first).

- ``undistorted_camera_parameters/<house_id>.conf``: one command a line. ``intrinsics_matrix fx 0 cx 0 fy cy 0 0 1``
  holds for the ``scan <depth>.png <colour>.jpg m00 .. m33`` lines after it (one block per camera of a panorama, its
  6 yaws); the 16 numbers are a row-major camera-to-world, metres, of a camera looking down -z with y up (OpenGL's),
  in a z-up world.
- ``undistorted_color_images/<pano>_i<cam>_<yaw>.jpg`` and ``undistorted_depth_images/<pano>_d<cam>_<yaw>.png``
  (16-bit z-depth in 0.25 mm, 0 = no reading): one camera, registered pixel for pixel, 1280x1024.

The conf counts image rows from the bottom (GAPS's origin): for the image as stored, cy' = H - 1 - cy (Matterport's
own top-left ``matterport_camera_intrinsics`` hold exactly that). The views are no walk in time: they play in the
conf's order, panorama by panorama, camera 0-2, yaw 0-5 (said in a note).

Conventions and formats: see the package docstring (:mod:`worldmodel.recordings`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.camera import flip_cv_gl
from worldmodel.recordings.base import (SequenceError, _ImageSequence, _K_from_config, _check_K, _check_pose,
                                        _decoding, _depth_scale, _visible, up_rotation)

MATTERPORT_CAMERAS = "undistorted_camera_parameters"
MATTERPORT_COLOUR = "undistorted_color_images"
MATTERPORT_DEPTH = "undistorted_depth_images"
MATTERPORT_PARTS = (MATTERPORT_CAMERAS, MATTERPORT_COLOUR, MATTERPORT_DEPTH)
MATTERPORT_DEPTH_SCALE = 0.00025  # metres per unit of an undistorted depth PNG (0.25 mm; / 4000)


def is_matterport(folder: Path) -> bool:
    """A Matterport3D house folder: one of the undistorted parts here, extracted or still a zip."""
    return any((folder / p).is_dir() or (folder / f"{p}.zip").is_file() for p in MATTERPORT_PARTS)


def matterport_K(K_conf: np.ndarray, height: int) -> np.ndarray:
    """A conf's intrinsics (3, 3), rows counted from the image's bottom, -> K (3, 3) of the image as stored (rows
    from the top, pixel centres at integers): cy' = height - 1 - cy."""
    K = np.array(K_conf, dtype=np.float64)
    K[1, 2] = height - 1 - K[1, 2]
    return K


def _house_root(folder: Path, notes: list[str]) -> Path:
    """Where the house's undistorted folders are: ``folder``, or ``folder/<folder name>/`` (its zips extracted in
    place, said); SequenceError when the camera parameters are neither there nor extracted."""
    if (folder / MATTERPORT_CAMERAS).is_dir():
        return folder
    inner = folder / folder.name
    if (inner / MATTERPORT_CAMERAS).is_dir():
        notes.append(f"the zips are extracted into {folder.name}/{folder.name}/: read from there")
        return inner
    packed = folder / f"{MATTERPORT_CAMERAS}.zip"
    if packed.is_file():
        raise SequenceError(f"{packed} is not extracted; unzip it and the undistorted image zips in {folder.parent} "
                            f"(their entries are {folder.name}/{MATTERPORT_CAMERAS}/...)")
    raise SequenceError(f"{folder / MATTERPORT_CAMERAS} is missing; a Matterport3D house needs it, "
                        f"{MATTERPORT_COLOUR}/ and {MATTERPORT_DEPTH}/ (download and extract those three zips)")


def _conf_file(root: Path) -> Path:
    """The house's ``.conf``: ``<house_id>.conf``, else the only one."""
    confs = sorted(p for p in _visible((root / MATTERPORT_CAMERAS).glob("*.conf")) if p.is_file())
    named = root / MATTERPORT_CAMERAS / f"{root.name}.conf"
    if named in confs:
        return named
    if len(confs) == 1:
        return confs[0]
    if not confs:
        raise SequenceError(f"{root / MATTERPORT_CAMERAS} holds no .conf file; extract {MATTERPORT_CAMERAS}.zip "
                            "again")
    raise SequenceError(f"{root / MATTERPORT_CAMERAS} holds {len(confs)} .conf files and none is {named.name}; "
                        "keep the house's own one")


def _numbers_of(fields: list[str], where: str, what: str, fix: str) -> np.ndarray:
    try:
        return np.asarray([float(v) for v in fields], dtype=np.float64)
    except ValueError:
        raise SequenceError(f"{where}: {what} holds something other than numbers; {fix}") from None


def read_matterport_conf(path: Path) -> tuple[list[tuple[int, str, str]], np.ndarray, np.ndarray, int | None]:
    """A Matterport ``.conf`` -> (per scan line: (line number, depth file, colour file); Ks (N, 3, 3) as written,
    rows from the bottom; c2ws (N, 4, 4) as written, OpenGL cameras in the z-up world; ``n_images`` or None).
    Commands other than intrinsics_matrix, scan and n_images are skipped (GAPS's directories and dataset lines)."""
    fix = f"download {MATTERPORT_CAMERAS}.zip again"
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise SequenceError(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    scans, Ks, c2ws, K, n_images = [], [], [], None, None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if fields[0] == "intrinsics_matrix":
            if len(fields) != 10:
                raise SequenceError(f"{where}: intrinsics_matrix needs 9 numbers 'fx 0 cx 0 fy cy 0 0 1', got "
                                    f"{len(fields) - 1}; {fix}")
            K = _check_K(_numbers_of(fields[1:], where, "intrinsics_matrix", fix).reshape(3, 3), where)
        elif fields[0] == "scan":
            if len(fields) != 19:
                raise SequenceError(f"{where}: a scan line is 'scan <depth>.png <colour>.jpg' and 16 numbers (a "
                                    f"row-major camera-to-world), got {len(fields) - 1} fields after scan; {fix}")
            if K is None:
                raise SequenceError(f"{where}: a scan line before any intrinsics_matrix (each camera's intrinsics "
                                    f"come before its scans); {fix}")
            M = _numbers_of(fields[3:], where, "the scan's camera-to-world", fix).reshape(4, 4)
            try:
                c2ws.append(_check_pose(M, where))
            except SequenceError as e:
                raise SequenceError(f"{str(e).split('; ')[0]}; {fix}") from None
            scans.append((n, fields[1], fields[2]))
            Ks.append(K)
        elif fields[0] == "n_images" and len(fields) == 2 and fields[1].isdigit():
            n_images = int(fields[1])
    if not scans:
        raise SequenceError(f"{path} holds no scan lines (the views' images and poses); {fix}")
    return scans, np.stack(Ks), np.stack(c2ws), n_images


def _open_matterport(folder: Path, cfg: dict, up: str) -> _ImageSequence:
    """A Matterport3D house (see the module docstring): every view of its conf, in the conf's order, OpenCV c2w in
    metres in the house's z-up world (``up``: +z unless the user names another), depth / 4000, each camera's K with
    its rows from the top. Every image the conf names is checked to exist here."""
    notes: list[str] = []
    root = _house_root(folder, notes)
    conf = _conf_file(root)
    scans, Ks_conf, c2ws_gl, n_images = read_matterport_conf(conf)
    files: dict[str, list[Path]] = {MATTERPORT_COLOUR: [], MATTERPORT_DEPTH: []}
    # each part where it was extracted: beside the camera parameters, or (its zip unpacked in the house folder)
    # in <house>/<house>/
    part_dirs = {sub: next((d for d in (root / sub, folder / sub, folder / folder.name / sub) if d.is_dir()),
                           root / sub) for sub in files}
    for n, depth_name, colour_name in scans:
        for sub, name in ((MATTERPORT_COLOUR, colour_name), (MATTERPORT_DEPTH, depth_name)):
            p = part_dirs[sub] / name
            if Path(name).name != name or not p.is_file():
                raise SequenceError(f"{p} is missing ({conf.name} line {n} names it); extract {sub}.zip in "
                                    f"{folder.parent} (it unpacks into {folder.name}/{sub}/), or remove that scan "
                                    "line")
            files[sub].append(p)
    rgb_files, depth_files = files[MATTERPORT_COLOUR], files[MATTERPORT_DEPTH]
    if n_images is not None and n_images != len(scans):
        notes.append(f"{conf.name} says n_images {n_images} but holds {len(scans)} scan lines: those are played")
    notes.append(f"{len(scans)} views in {conf.name}'s order (panorama by panorama, camera 0-2, yaw 0-5): "
                 "not a walk in time, replay steps from view to view")
    K = _K_from_config(cfg, folder)
    if K is None:
        with _decoding(rgb_files[0], "image", f"extract {MATTERPORT_COLOUR}.zip again") as im:
            height = im.height  # (the header only: the conf's rows count from the bottom of it)
        Ks = [matterport_K(k, height) for k in Ks_conf]
    else:
        Ks = [K] * len(scans)  # (worldstudio.json's K is of the images as stored)
    return _ImageSequence(
        path=folder, format="matterport", c2ws=up_rotation(up) @ flip_cv_gl(c2ws_gl),
        timestamps=np.arange(len(scans), dtype=float), world_up=up, notes=notes, rgb_files=rgb_files,
        depth_files=depth_files, Ks=Ks, depth_scale=_depth_scale(cfg, folder, MATTERPORT_DEPTH_SCALE))
