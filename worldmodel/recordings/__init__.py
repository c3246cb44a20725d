"""Read recorded RGB-D sequences and world-model outputs as lazy sequences of :class:`Frame`.

Every reader converts to the project's conventions at the edge: metres, right-handed **+Y-up** world,
OpenCV cameras (x right, y down, z forward), ``c2w`` float64 (4, 4), float32 z-depth with 0 = invalid,
uint8 (H, W, 3) RGB. Formats (see docs/real-data.md):

- ``tum``: TUM RGB-D (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``). Colour and depth are associated by
  nearest timestamp (at most 0.02 s apart, one-to-one), or by associate.py's ``associations.txt`` when there is
  no rgb.txt (ORB-SLAM's and ICL-NUIM's folders; a lone ``*.gt.freiburg`` stands in for groundtruth.txt). The
  ground-truth pose is interpolated at the colour timestamp (linear translation, slerp rotation) between samples
  at most 0.1 s apart, or taken from a sample within 0.02 s (ground truth written once per image). Depth = value
  / 5000; K from ``calibration.txt`` (``fx fy cx cy``, ETH3D's SLAM benchmark) or TUM's default (525, 525,
  319.5, 239.5). TUM's motion-capture world is z-up; another's (a ``calibration.txt``, a ground truth naming no
  freiburg bag) has the one of y and z nearer the cameras' mean up (said in a note). ICL-NUIM's release
  (``*.gt.freiburg``, or frame numbers for times throughout) has its own K and a left-handed y-up world: its
  poses are reflected to a right-handed y-down one.
- ``7scenes``: 7-Scenes / 3DMatch (``frame-XXXXXX.color.png|jpg``, ``.depth.png``, ``.pose.txt``,
  ``camera-intrinsics.txt`` here or in the parent folder), depth = value / 1000, 65535 = invalid. 12-Scenes and
  other BundleFusion exports name their frames so and hold the cameras in ``info.txt`` (here or in the parent
  folder): the depth camera's K and depth shift, and a colour image of another size is resized to the depth's.
  The world is the recording's first (roughly level) camera frame, y down (``world_up="-y"``).
- ``scannet``: ScanNet's ``.sens`` file itself (read as its SensorData.py does), or its SensReader export
  (``color/N.jpg``, ``depth/N.png`` in mm, ``pose/N.txt`` c2w with -inf where tracking was lost,
  ``intrinsic/intrinsic_depth.txt``): colour resized to the depth camera's size, world z-up.
- ``scannetpp``: a ScanNet++ iPhone capture (``iphone/``: ``pose_intrinsic_imu.json`` with each frame's
  ``aligned_pose``, OpenCV c2w in the scan's z-up world, and colour camera K; ``rgb/frame_NNNNNN.jpg`` or the video
  ``rgb.mkv``/``rgb.mp4``; ``depth/frame_NNNNNN.png`` in mm or ``depth.bin`` itself): colour resized to the depth's
  size, world z-up; or its undistorted DSLR photos (``dslr/``: ``nerfstudio/transforms_undistorted.json``,
  ``undistorted_images/``, rendered ``undistorted_depths/`` in mm), as SplaTAM reads them, up from the cameras.
- ``replica``: Replica as NICE-SLAM and SplaTAM ship it (``results/frame*.jpg``, ``results/depth*.png`` / 6553.5,
  ``traj.txt`` OpenCV c2w per line, ``cam_params.json`` here or in the parent folder), or as Semantic-NeRF and vMAP
  render it (``rgb/rgb_N.png``, ``depth/depth_N.png`` mm, ``traj_w_c.txt``; Habitat's 90° camera), world z-up.
- ``stray``: Stray Scanner's export (``rgb.mp4``, ``depth/*.png`` mm, ``confidence/``, ``odometry.csv`` OpenCV c2w,
  ``camera_matrix.csv``): colour from the video resized to the depth's size, ARKit's y-up world.
- ``record3d``: Record3D's ``.r3d`` file (a zip) or the folder it unzips to (``metadata`` JSON, ``rgbd/N.jpg``,
  ``rgbd/N.depth`` LZFSE float32 metres, ``rgbd/N.conf``): OpenGL c2w poses, colour resized to the depth's size
  with its K, confidence below 1 dropped, ARKit's y-up world.
- ``arkitscenes``: an ARKitScenes video (``lowres_wide/``, ``lowres_depth/`` mm, ``lowres_wide_intrinsics/*.pincam``,
  ``lowres_wide.traj`` world-to-camera axis-angle poses interpolated at the frames' times), world z-up.
- ``3dscannerapp``: 3D Scanner App's "All Data" export (``frame_NNNNN.json`` with ``cameraPoseARFrame``, a row-major
  OpenGL c2w, and the .jpg's ``intrinsics``; ``frame_NNNNN.jpg``, for fewer frames than the depth's;
  ``depth_NNNNN.png`` mm; ``conf_NNNNN.png``), ARKit's y-up world.
- ``polycam``: Polycam's raw-data export (``keyframes/corrected_images|images/<id>.jpg``, ``corrected_cameras|cameras/
  <id>.json`` with ``fx fy cx cy`` and ``t_00``..``t_23``, a row-major 3x4 OpenGL c2w; ``depth/<id>.png`` mm;
  ``confidence/``), ARKit's y-up world.
- ``tartanair``: a TartanAir trajectory (``image_left/``, ``depth_left/*_depth.npy`` planar metres, the sky's ~1e4 m
  dropped, ``pose_left.txt`` NED camera-to-world turned to OpenCV axes; V2's ``*_lcam_front`` with RGBA-packed
  float depth), world y-down.
- ``sun3d``: a SUN3D sequence (``intrinsics.txt`` 3x3, ``image/*.jpg`` and ``depth/*.png`` named ``frame-timestamp``
  in µs, ``extrinsics/*.txt``: the newest by name, one row-major 3x4 OpenCV c2w per image in name order): each image
  takes the depth nearest in time (as SUN3D's toolbox pairs them), depth's 16 bits rotated right by 3, then mm; up y
  or z from the cameras, said (SUN3Dsfm's rectified worlds are y-up).
- ``hypersim``: a Hypersim scene ``ai_VVV_NNN/`` (``_detail/metadata_scene.csv``'s ``meters_per_asset_unit``,
  ``_detail/cam_XX/camera_keyframe_positions|orientations.hdf5`` OpenGL c2w in asset units, ``images/scene_cam_XX_
  geometry_hdf5/frame.IIII.depth_meters.hdf5`` distances in metres turned to z-depth, ``_final_preview/
  frame.IIII.tonemap.jpg`` or the HDR ``_final_hdf5/frame.IIII.color.hdf5`` tone-mapped); cam_00 unless
  ``hypersim_camera`` says; the camera from ml-hypersim's ``metadata_camera_parameters.csv`` beside the scene or in
  its parent, else the standard 60° one (said); world z-up.
- ``matterport``: a Matterport3D house ``<house_id>/`` (``undistorted_camera_parameters/<house_id>.conf``: each
  ``intrinsics_matrix`` holds for the ``scan <depth> <colour> m00..m33`` lines after it, a row-major OpenGL c2w;
  ``undistorted_color_images/*.jpg``, ``undistorted_depth_images/*.png`` / 4000); the conf counts rows from the
  image's bottom (cy' = H - 1 - cy); the views play in the conf's order, not a walk in time (said); world z-up.
- ``neuralrgbd``: Neural RGB-D's scenes (``images/``, ``depth_filtered/`` or ``depth/`` mm, ``poses.txt`` or
  ``trainval_poses.txt`` of OpenGL c2w in four lines each, ``focal.txt``: the depth camera's focal length, its
  principal point at the centre); up y or z from the cameras, said.
- ``nerfstudio``: a ``transforms.json`` whose frames carry ``depth_file_path`` (nerfstudio's Polycam export, this
  tool's own) or ``depth_path`` (NeRFCapture's): OpenGL poses, nerfstudio's intrinsics (pixel centres at +0.5),
  depth times ``depth_unit_scale_factor`` or ``integer_depth_scale`` (mm by default); up z when the file says it
  was oriented, else y or z, whichever the cameras' mean up is nearer, said in a note (this tool's export writes
  ``"world_up": "+y"`` into it).
- ``open3d``: Open3D's reconstruction-system and Redwood layout (``image/`` or ``color/``, ``depth/`` mm, a ``.log``
  trajectory of c2w matrices, ``camera_intrinsic.json`` column-major); up y or z from the cameras, said.
- ``generic``: ``rgb/*.png|jpg``, ``depth/*.npy|png`` (same file stems), ``poses.txt`` (one pose per image in
  natural file-name order; an inf/NaN pose, ScanNet's mark of lost tracking, skips its frame), ``intrinsics.txt``
  (a 3x3 or 4x4 matrix, or ``fx fy cx cy``) or ``worldstudio.json`` (``world_up="+y"``: poses already in our
  convention unless told otherwise).
- ``ply``: a folder of per-frame PLY point clouds in world coordinates (DeepVerse ``run.py --add_ply`` writes
  ``<video>_frame<i>.ply``; Aether similar), optionally with the video and a ``poses.txt``. Frames carry
  ``world_points``/``world_colors``; depth is all zeros. DeepVerse's world is its first camera's OpenCV
  frame (y down), so the default is ``world_up="-y"``.

In ScanNet (export and .sens), 12-Scenes, Stray Scanner, Record3D, ARKitScenes, nerfstudio and generic folders the
depth may be smaller than its colour image (one viewpoint, two resolutions, as phones and ScanNet record): the
colour is resized to the depth's size, and a colour camera's K with it.

An optional ``worldstudio.json`` in any sequence folder (for a .r3d or .sens file, in the folder holding it)
overrides settings: ``world_up`` ("+x".."-z"), ``depth_scale`` (metres per unit of integer depth: PNG, integer
.npy, .sens), ``K`` (3x3) or ``fx fy cx cy`` (of the colour images as stored), ``camera`` ("opencv" | "opengl",
generic poses only), ``video_panels`` (ply folders: how many side-by-side panels the video has),
``min_confidence`` (ARKit phone captures: 0..2), ``icl_nuim`` (TUM-format folders: whether
ICL-NUIM's poses are reflected; guessed otherwise), ``hypersim_camera`` (Hypersim: the trajectory, "cam_01" or 1),
``level`` (true: turn the world so the floor found in its depth is level, :func:`level_world`); any other key is
refused (``base.CONFIG_KEYS``).
Keyword arguments of :func:`open_sequence` override both.

Frames are read lazily (PIL; 16-bit depth PNGs via mode ``I;16``); index files are parsed and every referenced
file is checked to exist when the sequence is opened, and frame 0 is decoded then, so a partial folder fails
at once with a :class:`SequenceError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldmodel.recordings.base import Sequence, SequenceError, _load_config, _visible, read_poses_file, up_rotation
from worldmodel.recordings.tum import _open_tum, associate, interpolate_poses
from worldmodel.recordings.scanners import (OPEN3D_COLOUR_DIRS, REPLICA_HABITAT_POSES, _is_neural_rgbd,
                                            _open3d_trajectory, _open_7scenes, _open_generic, _open_neural_rgbd,
                                            _open_open3d, _open_replica, _open_scannet, _replica_frames,
                                            _seven_scenes_frames)
from worldmodel.recordings.phones import (ARKITSCENES_ASSETS, ARKITSCENES_TRAJECTORY, _is_3d_scanner_app,
                                          _is_record3d_metadata, _open_3d_scanner_app, _open_arkitscenes,
                                          _open_polycam, _open_record3d, _open_stray, polycam_keyframes)
from worldmodel.recordings.tartanair import _open_tartanair, tartanair_camera
from worldmodel.recordings.sun3d import _open_sun3d, is_sun3d
from worldmodel.recordings.scannetpp import _open_scannetpp, is_scannetpp
from worldmodel.recordings.nerfstudio import _open_nerfstudio
from worldmodel.recordings.hypersim import _open_hypersim, is_hypersim
from worldmodel.recordings.matterport import _open_matterport, is_matterport
from worldmodel.recordings.pointclouds import _open_ply
# public names of the single-module reader this package replaced, so scripts importing them keep working
from worldmodel.recordings.base import CONFIG_FILE, MAX_PIXELS
from worldmodel.recordings.tum import ICL_NUIM_K, TUM_DEPTH_SCALE, TUM_K
from worldmodel.recordings.scanners import REPLICA_CAMERA, SEVEN_SCENES_K, read_log_trajectory
from worldmodel.recordings.pointclouds import read_ply_points


FORMATS = ("tum", "7scenes", "scannet", "scannetpp", "replica", "stray", "record3d", "arkitscenes", "3dscannerapp",
           "polycam", "tartanair", "sun3d", "hypersim", "matterport", "neuralrgbd", "nerfstudio", "open3d", "generic",
           "ply")
DEFAULT_UP = {"tum": "auto", "7scenes": "-y", "scannet": "+z", "scannetpp": "auto", "replica": "+z", "stray": "+y",
              "record3d": "+y", "arkitscenes": "+z", "3dscannerapp": "+y", "polycam": "+y", "tartanair": "-y",
              "sun3d": "auto", "hypersim": "+z", "matterport": "+z", "neuralrgbd": "auto", "nerfstudio": "auto",
              "open3d": "auto", "generic": "+y", "ply": "-y"}
# the formats for help texts (FORMAT_NAMES) and each one's layout (_FORMATS_HELP)
FORMAT_NAMES = ("TUM RGB-D (ICL-NUIM, ETH3D), 7-Scenes/3DMatch, ScanNet (.sens), ScanNet++ (iPhone, DSLR), Replica, "
                "Stray Scanner, Record3D (.r3d), ARKitScenes, 3D Scanner App, Polycam, TartanAir, SUN3D, Hypersim, "
                "Matterport3D, Neural RGB-D, nerfstudio (with depth), Open3D/Redwood, generic or per-frame PLY")
_FORMATS_HELP = ("expected rgb.txt + depth.txt + groundtruth.txt (TUM), frame-*.color.png (7-Scenes/3DMatch), "
                 "a .sens file or color/ + depth/ + pose/ (ScanNet), pose_intrinsic_imu.json + rgb/ or rgb.mkv + "
                 "depth/ or depth.bin (ScanNet++ iphone/), nerfstudio/transforms_undistorted.json + "
                 "undistorted_images/ + undistorted_depths/ (ScanNet++ dslr/), results/ + traj.txt or rgb/ + "
                 "traj_w_c.txt (Replica), rgb.mp4 + odometry.csv (Stray Scanner), a .r3d file, or metadata.json + "
                 "rgb/ + depth/ (Record3D), "
                 "lowres_wide/ + lowres_depth/ + lowres_wide.traj (ARKitScenes), frame_*.json + frame_*.jpg + "
                 "depth_*.png (3D Scanner App), keyframes/ with images/ + cameras/ + depth/ (Polycam raw data), "
                 "image_left/ + depth_left/ + pose_left.txt (TartanAir), intrinsics.txt + image/ + depth/ + "
                 "extrinsics/ (SUN3D), _detail/ + images/ (a Hypersim ai_VVV_NNN scene), "
                 "undistorted_camera_parameters/ + undistorted_color_images/ + undistorted_depth_images/ "
                 "(a Matterport3D house), "
                 "images/ + depth/ + poses.txt + focal.txt "
                 "(Neural RGB-D), transforms.json with depth "
                 "(nerfstudio), image/ + depth/ + trajectory.log (Open3D/Redwood), rgb/ + depth/ + poses.txt (generic) "
                 "or *.ply files (per-frame point clouds)")


def _detect(folder: Path) -> str | None:
    if folder.is_file():
        return {".r3d": "record3d", ".sens": "scannet"}.get(folder.suffix.lower())
    if any((folder / n).is_file() for n in ("rgb.txt", "depth.txt", "groundtruth.txt", "associations.txt")):
        return "tum"
    if _seven_scenes_frames(folder):
        return "7scenes"
    if (folder / "color").is_dir() and (folder / "pose").is_dir():
        return "scannet"
    if is_scannetpp(folder):
        return "scannetpp"
    if ((folder / "traj.txt").is_file() and _replica_frames(folder)) or (
            (folder / REPLICA_HABITAT_POSES).is_file() and (folder / "rgb").is_dir()):
        return "replica"
    if (folder / "odometry.csv").is_file() and (folder / "rgb.mp4").is_file():
        return "stray"
    if (folder / ARKITSCENES_TRAJECTORY).is_file() and any((folder / c).is_dir() for c, _ in ARKITSCENES_ASSETS):
        return "arkitscenes"
    if _is_3d_scanner_app(folder):
        return "3dscannerapp"
    if polycam_keyframes(folder) is not None:
        return "polycam"
    if tartanair_camera(folder):
        return "tartanair"
    if is_sun3d(folder):
        return "sun3d"
    if is_hypersim(folder):
        return "hypersim"
    if is_matterport(folder):
        return "matterport"
    if _is_neural_rgbd(folder):
        return "neuralrgbd"
    if ((folder / "metadata").is_file() and (folder / "rgbd").is_dir()) or (
            (folder / "rgb").is_dir() and _is_record3d_metadata(folder / "metadata.json")):
        return "record3d"  # a .r3d file unzipped, or the app's EXR + JPG export
    if (not (folder / "poses.txt").is_file() and (folder / "depth").is_dir() and _open3d_trajectory(folder)
            and any((folder / d).is_dir() for d in OPEN3D_COLOUR_DIRS)):
        return "open3d"
    if (folder / "rgb").is_dir() and (folder / "poses.txt").is_file():
        return "generic"  # (before nerfstudio: a generic folder may also hold a transforms.json made from it)
    if (folder / "transforms.json").is_file():
        return "nerfstudio"  # (before rgb/ + depth/ alone: NeRFCapture's folders, as SplaTAM writes them)
    if (folder / "rgb").is_dir() and (folder / "depth").is_dir():
        return "generic"  # (without poses.txt: its reader says what the folder lacks)
    if _visible(folder.glob("*.ply")):
        return "ply"
    return None


def _recording_in_scene_folder(folder: Path) -> Path | None:
    """The one recording a dataset's scene folder holds beside its meshes (which are not per-frame point clouds):
    ScanNet's ``sceneXXXX_XX.sens``, ARKitScenes' ``<video>_frames/``, ScanNet++'s ``iphone/`` or ``dslr/``, a
    Record3D ``.r3d``; None when the folder is a recording itself, or holds none or several."""
    if not folder.is_dir() or _detect(folder) not in (None, "ply"):
        return None
    recordings = [p for p in _visible(folder.iterdir()) if (p.is_file() and p.suffix.lower() in (".sens", ".r3d"))
                  or (p.is_dir() and p.name.endswith("_frames") and _detect(p))
                  or (p.is_dir() and p.name in ("iphone", "dslr") and _detect(p) == "scannetpp")]
    if len(recordings) != 1 or folder.resolve() not in recordings[0].resolve().parents:
        return None  # (a link out of the folder is not followed: nothing outside what was named is read)
    return recordings[0]


def _sequence_path(path) -> tuple[Path, str | None]:
    """The recording ``path`` names (:func:`_recording_in_scene_folder` followed) and a note when it was followed."""
    folder = Path(path).expanduser()
    inside = _recording_in_scene_folder(folder)
    if inside is None:
        return folder, None
    return inside, f"{folder.name} holds one recording: {inside.name} is read"


def detect_format(path) -> str:
    """Which reader a folder (or a Record3D .r3d, ScanNet .sens file) needs, one of FORMATS (SequenceError when
    none fits). A dataset's scene folder holding one recording beside its meshes is read as that recording."""
    return _format_of(_sequence_path(path)[0])


def _format_of(folder: Path) -> str:
    """:func:`detect_format` of a path already followed (:func:`_sequence_path`)."""
    if not folder.exists():
        raise SequenceError(f"{folder}: no such folder or file; pass a recorded sequence folder ({_FORMATS_HELP})")
    fmt = _detect(folder)
    if fmt is not None:
        return fmt
    if not folder.is_dir():
        if folder.name.lower().endswith((".zip", ".tgz", ".tar", ".tar.gz", ".tar.bz2", ".7z")):
            raise SequenceError(f"{folder} is an archive; extract it and pass the sequence folder inside")
        raise SequenceError(f"{folder} is a file; pass the folder that contains it (or a Record3D .r3d or ScanNet "
                            ".sens file)")
    subs = sorted(p.name for p in _visible(folder.iterdir())
                  if (p.is_dir() or p.suffix.lower() in (".r3d", ".sens")) and _detect(p))
    if subs:
        listed = ", ".join(subs[:6]) + ("..." if len(subs) > 6 else "")
        raise SequenceError(f"{folder} holds {len(subs)} sequences ({listed}); pass one of them"
                            if len(subs) > 1 else f"{folder} holds a sequence in {listed}; pass that")
    raise SequenceError(f"{folder} is not a recognised sequence folder: {_FORMATS_HELP}")


_OPENERS = {"tum": _open_tum, "7scenes": _open_7scenes, "scannet": _open_scannet, "scannetpp": _open_scannetpp,
            "replica": _open_replica, "stray": _open_stray, "record3d": _open_record3d,
            "arkitscenes": _open_arkitscenes, "3dscannerapp": _open_3d_scanner_app, "polycam": _open_polycam,
            "tartanair": _open_tartanair, "sun3d": _open_sun3d, "hypersim": _open_hypersim,
            "matterport": _open_matterport, "neuralrgbd": _open_neural_rgbd, "nerfstudio": _open_nerfstudio,
            "open3d": _open_open3d, "generic": _open_generic, "ply": _open_ply}


def open_sequence(path, max_frames: int | None = None, stride: int = 1, world_up: str | None = None,
                  format: str | None = None, check_first: bool = True, level: bool | None = None) -> Sequence:
    """Open a recording lazily: a folder, a .r3d or .sens file, or (no ``format`` given) a dataset's scene folder
    holding one recording beside its meshes (:func:`_recording_in_scene_folder`). The format is detected unless
    given.

    max_frames: keep only the first N frames (after ``stride``).  stride: keep every k-th frame.
    world_up: the source world's up axis ("+x".."-z"); default per format (or ``worldstudio.json``).
    level: turn the world so the floor found in its depth is level (:func:`level_world`; for a world that is a
    camera's frame, as 7-Scenes' and the Open3D system's are); default ``worldstudio.json``'s "level", else off.
    check_first: decode frame 0 now, so a corrupt folder fails at open. Raises SequenceError.
    """
    named = Path(path).expanduser().resolve()
    folder, followed = (named, None) if format else _sequence_path(named)
    fmt = format or _format_of(folder)
    if fmt not in _OPENERS:
        raise SequenceError(f"unknown sequence format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if int(stride) < 1:
        raise SequenceError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 1:
        raise SequenceError(f"max_frames must be >= 1, got {max_frames}")
    cfg = _load_config(folder) or (_load_config(named) if followed else {})  # (the named folder's settings)
    up = str(world_up or cfg.get("world_up") or DEFAULT_UP[fmt])
    if not (up == "auto" and DEFAULT_UP[fmt] == "auto"):  # "auto": that reader picks the axis
        up_rotation(up)  # validate early
    seq = _OPENERS[fmt](folder, cfg, up)
    if followed:
        seq.notes.insert(0, followed)
        seq.named_path = named  # a session names what the user named (reopened, it follows again)
    if level is None:
        level = cfg.get("level", False)
    if not isinstance(level, bool):
        raise SequenceError(f'"level" must be true or false, got {level!r}; fix {folder / CONFIG_FILE}')
    if level:  # (before the subset: one recording is one world, whatever stride and max_frames play of it)
        level_world(seq)
    if stride > 1 or max_frames is not None:
        keep = np.arange(0, len(seq), int(stride))
        if max_frames is not None:
            keep = keep[: int(max_frames)]
        seq.subset(keep)
    seq.options.update({"stride": int(stride), "max_frames": None if max_frames is None else int(max_frames)})
    if check_first and len(seq):
        seq[0]
    return seq


def level_world(seq: Sequence) -> None:
    """Turn ``seq``'s world in place so that the floor (or table top) :func:`checks.floor_plane` finds in its
    depth is level: its poses, and ``source_to_world`` with them; said in a note, as are finding none and finding
    one more than :data:`checks.LEVEL_MAX_DEG` from level (a wall, or a wrong up axis: not turned). Raises
    SequenceError for a sequence without depth (a point-cloud one)."""
    from worldmodel.recordings.checks import LEVEL_MAX_DEG, floor_plane, levelling_rotation

    if not seq.has_depth:
        raise SequenceError(f"{seq.path}: level needs depth, and this {seq.format} sequence has none; "
                            "open it without level")
    floor = floor_plane(seq)
    if floor is None:
        seq.options["level_turn"] = np.eye(3).tolist()
        seq.notes.append("level: no floor or table top was found in the depth; the world is left as read")
        return
    if floor["tilt_deg"] > LEVEL_MAX_DEG:
        seq.options["level_turn"] = np.eye(3).tolist()
        seq.notes.append(f"level: the plane found ({floor['share']:.0%} of the depth sampled) is "
                         f"{floor['tilt_deg']:.0f}° from level, more than a tilted floor ({LEVEL_MAX_DEG:g}°): the "
                         "world is left as read (pass up=... if its up axis is wrong)")
        return
    turn = levelling_rotation(floor["normal"])
    seq.turn_world(turn)
    seq.options["level_turn"] = turn.tolist()  # (a session keeps the turn: RANSAC need not find it again alike)
    seq.notes.append(f"level: the world is turned {floor['tilt_deg']:.1f}° so that the plane {floor['below_m']:.2f} m "
                     f"from the cameras ({floor['share']:.0%} of the depth sampled) is level")


def nearest_pose_index(c2ws: np.ndarray, c2w: np.ndarray, metres_per_radian: float = 0.5) -> int:
    """Index of the pose in ``c2ws`` (N, 4, 4) closest to ``c2w``: camera distance (m) plus
    ``metres_per_radian`` x the angle between the rotations."""
    d = np.linalg.norm(c2ws[:, :3, 3] - c2w[:3, 3], axis=1)
    tr = np.einsum("nij,ij->n", c2ws[:, :3, :3], c2w[:3, :3])  # trace(R_i^T R)
    ang = np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))
    return int(np.argmin(d + metres_per_radian * ang))


__all__ = ["CONFIG_FILE", "FORMAT_NAMES", "FORMATS", "ICL_NUIM_K", "MAX_PIXELS", "REPLICA_CAMERA", "SEVEN_SCENES_K",
           "Sequence", "SequenceError", "TUM_DEPTH_SCALE", "TUM_K", "associate", "detect_format", "interpolate_poses",
           "nearest_pose_index", "open_sequence", "read_log_trajectory", "read_ply_points", "read_poses_file",
           "up_rotation"]
