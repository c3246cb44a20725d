"""One way to build a Scene, shared by the studio (start, *Open world*, *Open session*), the headless
``run`` and Python scripts::

    scene = make_scene("procedural:fly", seed=3)                 # reset, with geometry-aware memory
    scene = make_scene(MyWorld(), memory=False)                  # any WorldModel instance
    scene = make_scene(session="sessions/latest")                # a saved session, with its memory settings
    learned = continue_with_learned_model(scene)                 # the learned model goes on from its cursor
    learned = start_learned_from("sessions/latest", frame=40)    # ... or from a saved session's or a recording's
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from memory.bank import GeometricMemory, MemoryConfig
from scenes.framestore import FrameStore
from scenes.scene import MemoryProvider, Scene, SceneConfig
from worldmodel.actions import Kinematics
from worldmodel.frame import ClosableWorld, Frame, WalkingWorld, WorldModel
from worldmodel.registry import create_world


def make_memory(memory: bool | MemoryConfig | MemoryProvider | None, saved: dict | None = None
                ) -> MemoryProvider | None:
    """True -> GeometricMemory (with the ``saved`` settings of a session when given), a MemoryConfig ->
    GeometricMemory(config), a MemoryProvider as it is, False/None -> no memory."""
    if memory is None or memory is False:
        return None
    if memory is True:
        return GeometricMemory.from_description(saved) if saved else GeometricMemory()
    if isinstance(memory, MemoryConfig):
        return GeometricMemory(memory)
    return memory


def make_scene(world: str | WorldModel = "procedural", seed: int = 0, *, size: tuple[int, int] | None = None,
               kinematics: Kinematics | None = None, config: SceneConfig | None = None,
               memory: bool | MemoryConfig | MemoryProvider = True, session: str | Path | None = None,
               reset: bool = True, spill_near: str | Path | None = None, session_meta: dict | None = None,
               fit_voxel: bool | None = None) -> Scene:
    """A Scene over ``world`` (a spec for worldmodel.registry.create_world, e.g. ``"procedural:fly"``,
    ``"replay:PATH"`` or a plugin name, or a WorldModel instance), reset at ``seed`` unless ``reset=False``.

    size: (width, height) of generated frames (None: the world's own default); kinematics: metres/degrees per action step (spec worlds);
    memory: see :func:`make_memory` (default: GeometricMemory). session: open this saved session folder
    instead (world, seed, size and kinematics then come from it; ``config`` is ignored).
    spill_near: the folder beside which frames that leave RAM are written (default: the session's parent
    folder when opening one, else the temporary folder); see scenes.framestore.FrameStore. session_meta: the
    session's session.json as :func:`scenes.session.read_session_meta` returned it (read here when None).
    fit_voxel: fuse at the voxel size :func:`voxel_fitted_to` fits to the opened world (a recording's depth: a
    room at 2 cm) instead of ``config``'s; None (default): when no ``config`` is given, as ``--voxel`` left out.
    Raises WorldSpecError / SessionError / ValueError with a one-line message.
    """
    if session is not None:
        from scenes.session import load_session, read_session_meta, saved_memory_config

        meta = read_session_meta(session) if session_meta is None else session_meta  # read once: memory, session
        saved = saved_memory_config(meta) if memory is True else None
        return load_session(session, memory=make_memory(memory, saved), spill_near=spill_near, meta=meta)
    if isinstance(world, str):
        width, height = size if size is not None else (None, None)
        world = create_world(world, seed=seed, width=width, height=height, kinematics=kinematics)
    if _fits_voxel(fit_voxel, config):
        config = dataclasses.replace(config or SceneConfig(), voxel_size=voxel_fitted_to(world))
    config = config or SceneConfig()
    store = FrameStore(ram_frames=config.ram_frames, spill_near=spill_near)
    try:
        scene = Scene(world, config, memory=make_memory(memory), store=store)
    except BaseException:
        store.close()  # its spill folder goes with it
        raise
    if reset:
        try:
            scene.reset(seed)
        except BaseException:
            scene.close()  # its spill folder goes with it
            raise
    return scene


def continue_with_learned_model(scene: Scene, weights: str | os.PathLike | None = None,
                                memory: bool | MemoryConfig | MemoryProvider = True,
                                spill_near: str | os.PathLike | None = None, progress: bool = False) -> Scene:
    """A new Scene (reset) in which the learned world model goes on from the frame at ``scene``'s cursor, with
    the frames before it in the branch handed over as its own (``Scene.reset(prelude=)``, each cut and resized
    to the model's size by ``NeuralWorld.adopt``): its map and memory hold what they saw, so turning back shows
    it, and a walker's camera (a WalkingWorld's: the simulator's, not a recording's) rides the ground at its
    height. ``weights``: a folder or hub repo id; None: a learned world's own weights and settings, else the
    shipped ones. ``memory``, ``spill_near``: as for :func:`make_scene`; ``progress``: a progress bar while the
    frames are handed over. ``scene`` is left as it was (close it when done).
    ValueError when the cursor frame has no depth."""
    from worldmodel.neural.world import NeuralWorld

    current = scene.model
    same = ({"weights": current.weights, "bf16": current.bf16, "context_noise": current.context_noise}
            if isinstance(current, NeuralWorld) and weights is None else {"weights": weights})
    return hand_over_to_learned_model(
        scene.current, scene.iter_frames(upto=scene.cursor - 1), seed=scene.seed, kinematics=current.kinematics,
        eye_height=current.walker_eye_height if isinstance(current, WalkingWorld) else None,
        config=dataclasses.replace(scene.config), memory=memory, spill_near=spill_near,
        progress=scene.cursor if progress else None, handed_from=current, **same)


def hand_over_to_learned_model(first: Frame, before: Iterable[Frame] = (), *, seed: int = 0,
                               kinematics: Kinematics | None = None, eye_height: float | None = None,
                               config: SceneConfig | None = None, memory: bool | MemoryConfig | MemoryProvider = True,
                               weights: str | os.PathLike | None = None, progress: int | None = None,
                               spill_near: str | os.PathLike | None = None, **world_settings) -> Scene:
    """A new Scene in which the learned world model starts from ``first`` (any world's or recording's frame,
    with depth) with the frames ``before`` it (oldest first, read as they are needed) handed over as its own
    memory. ``eye_height``: metres above the ground the frames' camera was held at (a walker's), None when
    unknown; ``weights``: a folder or hub repo id (None: the shipped ones); ``world_settings``: more
    NeuralWorld arguments (bf16, context_noise, handed_from: the world the frames came from, whose ground
    truth the compare view then shows when it has one). ``progress``: how many frames ``before`` holds, to show a
    progress bar (None: none). ``spill_near``: as for :func:`make_scene`. ValueError when ``first`` has no
    depth; the frames' own errors as they are read."""
    from worldmodel.neural.world import SHIPPED_WEIGHTS, NeuralWorld

    model = NeuralWorld(weights=weights or SHIPPED_WEIGHTS, seed=seed, kinematics=kinematics, first_frame=first,
                        eye_height=eye_height, **world_settings)
    learned = make_scene(model, seed, config=config, memory=memory, reset=False, spill_near=spill_near)
    handed = (model.adopt(frame) for frame in before)
    bar = None
    try:
        if progress is not None:
            from tqdm import tqdm

            handed = bar = tqdm(handed, total=progress, desc="handing frames over", unit="frame")
        learned.reset(seed, prelude=handed)
    except BaseException:
        learned.close()
        raise
    finally:
        if bar is not None:  # ends its line: an error is printed below it, not on it
            bar.close()
    return learned


def start_learned_from(source: str | os.PathLike, frame: int | None = None, *,
                       weights: str | os.PathLike | None = None, seed: int = 0, kinematics: Kinematics | None = None,
                       config: SceneConfig | None = None, memory: bool | MemoryConfig | MemoryProvider = True,
                       spill_near: str | os.PathLike | None = None, progress: bool = False,
                       session_meta: dict | None = None, fit_voxel: bool | None = None,
                       notes: list[str] | None = None) -> Scene:
    """The learned world model going on from frame ``frame`` of ``source``, the frames before it handed over as
    its memory (:func:`hand_over_to_learned_model`; ``launch.py view/run --start-from``).

    source: a saved session folder (or a run's folder holding one in ``session/``, or its session.json; the frame
    is a position in its current branch; default: its cursor; its own seed, kinematics and scene settings are
    kept, and a learned world's weights unless ``weights`` is given) or
    a recording folder, with ``replay:`` options when wanted (``PATH?stride=2``; the frame is an index after the
    options: with stride 2, frame 3 is recorded frame 6; default: the last; ``seed``, ``kinematics`` and
    ``config`` apply). Negative frames count from the end. ``memory``, ``spill_near``: as for
    :func:`make_scene`; ``progress``: a progress bar while the frames are handed over (and a recording's notes
    printed); ``session_meta``: a session source's session.json as :func:`scenes.session.read_session_meta`
    returned it (e.g. with its paths checked); ``fit_voxel``: a recording's frames are fused at the voxel size
    :func:`voxel_fitted_to` fits to its depth (None: when no ``config`` is given; a session keeps its own);
    ``notes``: a list a recording's notes are added to (what its reader assumed, the voxel fitted: for a page to
    show). Raises SessionError / WorldSpecError / ValueError with a one-line message."""
    from scenes.session import is_session_folder, session_meant_by

    def say(*lines: str) -> None:  # a note for the user: on stderr with progress, and into ``notes``
        for line in lines:
            if progress:
                print(f"note: {line}", file=sys.stderr)
            if notes is not None:
                notes.append(line)

    meant = None if session_meta is not None else session_meant_by(source)
    if meant is not None:  # a run's folder: its session, not its exports read as a recording (lossy, no truth)
        say(f"{source} is {meant[1]}: the learned model goes on from that session")
        source = meant[0]
    if session_meta is not None or is_session_folder(source):
        from scenes.session import read_session_meta

        meta = read_session_meta(source) if session_meta is None else session_meta
        world = meta.get("world") if isinstance(meta, dict) else None
        if isinstance(world, dict) and world.get("kind") == "neural":
            # only the session's frames are read: its learned world goes on with ``weights`` when given, else
            # with what its weights folder holds now (a moved folder or changed weights do not block the frames)
            world = {k: v for k, v in world.items() if k != "weights_sha256"}
            if weights is not None:
                world["weights"] = str(weights)
            meta = {**meta, "world": world}
        saved = make_scene(session=source, memory=False, session_meta=meta)
        try:
            position = saved.cursor if frame is None else _frame_in(frame, saved.length, f"{source}'s branch")
            saved.seek(position)
            return continue_with_learned_model(saved, weights, memory=memory, spill_near=spill_near,
                                               progress=progress)
        finally:
            saved.close()
    from worldmodel.recordings import detect_format
    from worldmodel.replay import parse_replay_arg

    folder, _ = parse_replay_arg(str(source))  # (ValueError: an option that is not a number)
    options, run = str(source)[len(folder):], session_meant_by(folder)
    if is_session_folder(folder) or run is not None and not Path(folder).expanduser().is_dir():
        raise ValueError(f"{folder} is {'a saved session' if run is None else run[1]}: the options {options} are a "
                         "recording's; drop them to go on from the session (the frame given picks where)")
    if run is not None:  # with options the folder is read as a recording, as asked: said (it was without a word)
        say(f"{folder} is {run[1]}: with the options {options} its files are read as a recording (a run's "
            "exports: depth rounded to mm, no ground truth); drop them to go on from the session")
    try:
        detect_format(folder)
    except ValueError as e:  # neither a session nor a recording: say that both are taken
        raise ValueError(f"{e}; or a saved session folder (with session.json)") from None
    recording = create_world(f"replay:{source}")  # a ReplayWorld: its frames are read one at a time
    try:
        frames = recording.sequence
        position = len(frames) - 1 if frame is None else _frame_in(frame, len(frames), f"the recording {source}")
        if _fits_voxel(fit_voxel, config):
            config = dataclasses.replace(config or SceneConfig(), voxel_size=voxel_fitted_to(recording))
        say(*frames.notes)  # what the reader assumed
        return hand_over_to_learned_model(frames[position], (frames[i] for i in range(position)), seed=seed,
                                          kinematics=kinematics, config=config, memory=memory, weights=weights,
                                          spill_near=spill_near, progress=position if progress else None)
    finally:
        recording.close()


DEFAULT_VOXEL = SceneConfig.voxel_size  # metres: generated worlds (a walk outdoors)
VOXELS_PER_MEDIAN_DEPTH = 50  # a recording's voxel: its median depth / 50, rounded down to a size of ROOM_VOXELS
ROOM_VOXELS = (0.02, 0.05)  # (1 cm made a 90-frame room 1.9M points and a 186 ms studio step: --voxel asks for it)
VOXEL_FRAMES, VOXEL_FRAMES_WITHIN = 5, 30  # frames whose depth picks it, spread over the first (a video decodes to)


def voxel_for_depth(depth: np.ndarray) -> tuple[float, float | None]:
    """A voxel size (metres) for a scene seen at z-depth ``depth`` (any shape) -> (voxel, its median valid depth or
    None): 1/50 of the median depth rounded down to 2 or 5 cm (a room 1.2 m away: 2 cm, as eval-recon's default);
    :data:`DEFAULT_VOXEL` for scenes 5 m away or more, or without depth."""
    from worldmodel.camera import valid_depth_mask

    valid = depth[valid_depth_mask(depth)]
    if len(valid) == 0:
        return DEFAULT_VOXEL, None
    median = float(np.median(valid))
    wanted = median / VOXELS_PER_MEDIAN_DEPTH
    if wanted >= DEFAULT_VOXEL:
        return DEFAULT_VOXEL, median
    return max((v for v in ROOM_VOXELS if v <= wanted), default=ROOM_VOXELS[0]), median


def voxel_fitted_to(world: WorldModel) -> float:
    """The voxel size an opened world is fused at when none is asked for: a recording's (a ReplayWorld:
    :func:`voxel_for_recording`, its note, when it is not the default, added to the recording's notes: what its
    user is told of how it plays), else :data:`DEFAULT_VOXEL`."""
    from worldmodel.replay import ReplayWorld

    if not isinstance(world, ReplayWorld):
        return DEFAULT_VOXEL
    voxel, note = voxel_for_recording(world.sequence)
    if note is not None:
        world.sequence.notes.append(note)
    return voxel


def _fits_voxel(fit_voxel: bool | None, config: SceneConfig | None) -> bool:
    """Whether a new scene's voxel size is fitted to its world: asked for, or (None) no ``config`` given."""
    return bool(fit_voxel) or (fit_voxel is None and config is None)


def voxel_frames(sequence) -> list[int]:
    """The frames whose depth picks a recording's voxel: :data:`VOXEL_FRAMES` spread over its first
    :data:`VOXEL_FRAMES_WITHIN` (one frame may be a wall up close, or nearly empty), ascending."""
    from worldmodel.recordings.checks import spread_frames

    return spread_frames(len(sequence), VOXEL_FRAMES, VOXEL_FRAMES_WITHIN)


def voxel_for_recording(sequence, frames: dict[int, Frame] | None = None) -> tuple[float, str | None]:
    """The voxel size for an opened recording (a ``worldmodel.recordings`` sequence) -> (metres, a note saying
    why, or None): :func:`voxel_for_depth` of the z-depth (a point-cloud recording's: of its points in its
    cameras) of its :func:`voxel_frames`. ``frames``: those frames already read
    (:func:`worldmodel.recordings.checks.read_ascending`); else they are read in ascending order (a video is
    decoded once), and a frame that cannot be read leaves the frames before it to decide (playing it says what is
    wrong)."""
    from worldmodel.camera import invert_pose, world_to_camera

    depths = []
    for k in voxel_frames(sequence):
        try:
            frame = sequence[k] if frames is None else frames[k]
        except (ValueError, OSError, IndexError):
            break
        if frame.world_points is not None:  # a point-cloud frame (its depth image is empty): its points' z-depth
            depths.append(world_to_camera(frame.world_points[::16], invert_pose(frame.c2w))[:, 2])
        else:
            depths.append(frame.depth[::4, ::4].ravel())
    if not depths:
        return DEFAULT_VOXEL, None
    voxel, median = voxel_for_depth(np.concatenate(depths))
    if voxel == DEFAULT_VOXEL:
        return voxel, None
    return voxel, (f"the map's voxels are {100 * voxel:.0f} cm, for a recording {median:.1f} m from its camera "
                   "(--voxel sets another size)")


def recording_notes(scene: Scene) -> list[str]:
    """What the reader of the recording ``scene`` plays noticed and assumed (frames skipped, intrinsics, the
    voxel fitted to it...), for its user to read; [] for any other world."""
    from worldmodel.replay import ReplayWorld

    return list(scene.model.sequence.notes) if isinstance(scene.model, ReplayWorld) else []


def own_kinematics(world: str, start_from: str | None = None) -> Kinematics:
    """The kinematics a world walks when none are asked for: learned weights' (``neural[:FOLDER]``, or any
    ``--start-from``: the learned model goes on) as their config.json says they were trained; a plugin world with
    steps of its own (``WorldPlugin(own_kinematics=True)``) as it picks them (it is built to ask); else the default
    0.5 m / 10 degrees. What cannot be read or built gives the default (opening it says what is wrong)."""
    from worldmodel.registry import has_own_kinematics

    if start_from is None and world.partition(":")[0].strip().lower() != "neural":
        try:
            if not has_own_kinematics(world):
                return Kinematics()
            built = create_world(world, kinematics=None)
        except (ValueError, OSError):  # (WorldSpecError is a ValueError)
            return Kinematics()
        if isinstance(built, ClosableWorld):
            built.close()
        return built.kinematics
    from worldmodel.neural.weights import load_config
    from worldmodel.neural.world import SHIPPED_WEIGHTS

    try:
        config = load_config(learned_weights(world) or SHIPPED_WEIGHTS)
    except (ValueError, OSError):  # (WeightsError is a ValueError)
        return Kinematics()
    return Kinematics(step_m=config["step_m"], yaw_deg=config["yaw_deg"])


@dataclasses.dataclass(frozen=True)
class StepsAsked:
    """The step sizes a user asked for (``--step-m`` / ``--yaw-deg``), either or both None: not asked."""

    step_m: float | None = None
    yaw_deg: float | None = None

    def for_world(self, world: str, start_from: str | None = None) -> Kinematics | None:
        """The kinematics the world spec ``world`` (or the learned model going on from ``start_from``) walks: the
        one not asked at that world's own (:func:`own_kinematics`: learned weights' trained value); None when
        neither is asked: the world's own."""
        if self.step_m is None and self.yaw_deg is None:
            return None
        own = Kinematics() if None not in (self.step_m, self.yaw_deg) else own_kinematics(world, start_from)
        return Kinematics(step_m=own.step_m if self.step_m is None else self.step_m,
                          yaw_deg=own.yaw_deg if self.yaw_deg is None else self.yaw_deg)


def command_kinematics(args) -> Kinematics | None:
    """A command's ``--step-m`` / ``--yaw-deg`` as Kinematics for its ``--world`` (:meth:`StepsAsked.for_world`)."""
    return StepsAsked(args.step_m, args.yaw_deg).for_world(args.world, args.start_from)


def settings_not_kept(scene: Scene, size: tuple[int, int] | None, kinematics: Kinematics | None) -> str | None:
    """What a world made of the frame size and kinematics it was asked for, when it kept neither or one of them
    (a plugin's factory that ignores them), as a note; None when it kept what was asked (or nothing was)."""
    made = []
    if size is not None and (scene.current.width, scene.current.height) != tuple(size):
        made.append(f"{scene.current.width}x{scene.current.height} frames (not {size[0]}x{size[1]})")
    if kinematics is not None and scene.model.kinematics != kinematics:
        k = scene.model.kinematics
        made.append(f"steps of {k.step_m:g} m and {k.yaw_deg:g} degrees (not {kinematics.step_m:g} m and "
                    f"{kinematics.yaw_deg:g} degrees)")
    return f"the {scene.model.name} world makes {' and '.join(made)}" if made else None


START_FROM_A_SESSION_NOTE = "--start-from a session goes on with the session's own seed, voxel size and step settings"


def note_options_the_session_overrides(args, scene: Scene, why: str) -> None:
    """Say on stderr which options given on the command line (``args.options_given_with_session``: flags) the
    session that ``scene`` was opened from, or goes on from, overrides: those whose value differs from the scene's
    ("--seed 7 (the session's: 3)"; --start-from and --start-frame always, as the session's frames are used; --world
    built and its description compared). ``why``: the rest of the line."""
    def shown(value) -> str:
        return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    kin = scene.model.kinematics
    session = {"--seed": scene.seed, "--size": [scene.current.width, scene.current.height],
               "--voxel": scene.config.voxel_size, "--step-m": kin.step_m, "--yaw-deg": kin.yaw_deg,
               "--retrieval": None if scene.memory is None else scene.memory.describe().get("retrieval_rule")}
    differ = []
    for flag in args.options_given_with_session:
        if flag == "--world":
            if not _builds_the_same_world(args.world, scene):
                differ.append(f"--world {args.world}")
            continue
        given = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if flag not in session:
            differ.append(f"{flag} {shown(given)}")
        elif given != session[flag]:
            differ.append(f"{flag} {shown(given)} (the session's: {shown(session[flag])})")
    if differ:
        print(f"note: {', '.join(differ)} not used: {why}", file=sys.stderr)


def _builds_the_same_world(spec: str, scene: Scene) -> bool:
    """Whether the world spec ``spec``, built at the scene's seed and kinematics, and at its frame size or else at
    the world's own default size (as a world made without --size was, and its description says), describes itself
    as the scene's world does, in every key it describes (the scene's may say more: a learned world handed a
    frame records that frame's camera); False when it cannot be built."""
    described = scene.model.describe()
    for width, height in ((scene.current.width, scene.current.height), (None, None)):
        try:
            world = create_world(spec, scene.seed, width, height, scene.model.kinematics)
        except (ValueError, OSError):
            continue
        try:
            if all(key in described and described[key] == value for key, value in world.describe().items()):
                return True
        finally:
            if isinstance(world, ClosableWorld):
                world.close()
    return False


def learned_weights(world: str) -> str | None:
    """The weights a world spec names for the learned model: ``"neural:FOLDER"`` -> ``"FOLDER"``; None for
    ``"neural"`` and any other world (the shipped weights)."""
    kind, _, weights = world.partition(":")
    return (weights.strip() or None) if kind.strip().lower() == "neural" else None


def _frame_in(frame: int, count: int, what: str) -> int:
    """``frame`` checked against ``count`` frames (negative: from the end, -1 the last)."""
    if not -count <= frame < count:
        raise ValueError(f"frame {frame} is not in {what}, which has {count} frames (0..{count - 1}, or -1 for the "
                         "last)")
    return frame % count
