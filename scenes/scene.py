"""Scene: the world being explored. The one place that orchestrates a step: model -> fuse -> remember.

A Scene owns the world model, the fused point map, the frame store and the branches. The studio and the
headless ``run`` both drive a Scene (built by :func:`scenes.factory.make_scene`), so what works headless works
in the browser. It asks of its model only the WorldModel contract (worldmodel.frame) and of its memory only
:class:`MemoryProvider`; sessions put a scene back with :meth:`Scene.restore`.

Branches and the cursor: a branch is a list of frame ids (position p = the p-th frame of that walk).
``seek(p)`` moves the cursor back (the map is shown 'as it was' by filtering on first-seen position);
stepping from a cursor that is not at the end of the branch forks a new branch that shares frames
0..p with its parent, and the map (and memory) are rebuilt from those frames. Old branches stay until
discarded and can be switched to and exported.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from memory.metrics import agreement as cache_agreement
from recon.pointmap import FuseStats, VoxelPointMap, fuse_frame
from scenes import export as ex
from scenes.atomic import signals_deferred
from scenes.framestore import FrameStore
from worldmodel.actions import Action, TargetPose
from worldmodel.checks import MAX_SEED, boolean, camera_problem, number
from worldmodel.frame import (CacheView, ClosableWorld, Context, Frame, GroundFollowingWorld, GroundProbe,
                              PixelSourceWorld, WorldModel, describe_problem, missing_world_members,
                              mistyped_world_members)


class SceneError(ValueError):
    """A request the scene cannot carry out (bad branch name, nothing to export...); says what to do."""


# SceneConfig's numbers: (lo, hi, integer); carve is true, false or None
SCENE_RANGES = {
    "voxel_size": (0.005, 5.0, False),
    "max_depth": (0.01, 10_000.0, False),
    "recent_frames": (1, 64, True),
    "ram_frames": (1, 1_000_000, True),
    "memory_k": (0, 64, True),
    "fuse_stride": (0, 64, True),
}


@dataclass
class SceneConfig:
    """How a scene fuses and remembers; every number in SCENE_RANGES, as a saved session's are checked (CheckError
    otherwise), so a scene never makes a session it cannot open again."""

    voxel_size: float = 0.1        # metres, edge of a fused-map voxel
    max_depth: float = 60.0        # pixels farther than this are not fused (metres, z-depth)
    recent_frames: int = 4         # how many of the latest frames the model is conditioned on
    ram_frames: int = 256          # full frames kept in RAM; older ones live on disk
    memory_k: int = 4              # how many past keyframes are retrieved for each step (0 = none)
    fuse_stride: int = 0           # pixel stride for fusion; 0 = auto (about 2 depth samples per voxel side)
    carve: bool | None = None      # free-space carving; None = on unless the model's depth is exact

    def __post_init__(self) -> None:
        for key, (lo, hi, integer) in SCENE_RANGES.items():
            setattr(self, key, number(getattr(self, key), key, lo, hi, integer))
        if self.carve is not None:
            self.carve = boolean(self.carve, "carve")


@dataclass
class Branch:
    name: str
    fids: list[int] = field(default_factory=list)
    parent: str | None = None
    fork_position: int | None = None  # last position shared with the parent
    handed: int = 0  # frames given before the one the world went on from (Scene.reset(prelude=)): no steps


@dataclass
class StepResult:
    """What one step did, and everything the studio shows about it (no frame needs to be read again).

    cache: the map rendered into the predicted camera, as handed to the model (None without memory).
    memory_fids / memory_indices / memory_scores / memory_poses: the retrieved keyframes (store ids, frame
    indices along their branch, scores, (k, 4, 4) c2w), best first.  agreement: see the property.
    """

    frame: Frame
    fid: int
    branch: str
    fused: FuseStats
    model_ms: float                  # the model: its pose prediction (with the map's ground) and its frame
    fuse_ms: float
    memory_ms: float                 # retrieval and cache render before the frame, observing it after
    forked_from: str | None = None   # parent branch name when this step started a new branch
    memory_fids: list[int] = field(default_factory=list)
    memory_scores: list[float] = field(default_factory=list)
    memory_indices: list[int] = field(default_factory=list)
    memory_poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    cache: CacheView | None = None
    move_refused: bool = False  # the action commanded a move and the camera did not move (Kinematics.move_refused)
    pixel_sources: np.ndarray | None = None  # (H, W, 3) where the frame's pixels came from (PixelSourceWorld)

    @cached_property
    def agreement(self) -> dict[str, float] | None:
        """The new frame against the cache (memory.metrics.agreement: psnr_db, depth_abs_err_m, coverage) or
        None without a cache; computed when first read (the studio shows it; headless runs do not pay for it)."""
        return None if self.cache is None else cache_agreement(self.frame.rgb, self.frame.depth, self.cache)


@runtime_checkable
class MemoryProvider(Protocol):
    """Geometry-aware memory (memory/): everything the Scene and sessions ask of it.
    See memory.bank.GeometricMemory."""

    def reset(self) -> None:
        """Forget everything (a new world, or before the map is rebuilt)."""
        ...

    def observe(self, frame: Frame, fid: int, fused: FuseStats, pointmap: VoxelPointMap) -> None:
        """``frame`` (store id ``fid``) was just fused into ``pointmap`` (``fused`` says where)."""
        ...

    def build_context(self, target_c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                      pointmap: VoxelPointMap, k: int) -> tuple[list[int], list[float], CacheView | None]:
        """-> (keyframe fids, scores, cache render or None) for the target view."""
        ...

    def ground(self, pointmap: VoxelPointMap) -> GroundProbe:
        """What ``pointmap`` knows of the ground, for a world that rides it (GroundFollowingWorld)."""
        ...

    def describe(self) -> dict:
        """JSON description of the retrieval settings (written into sessions)."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays (safetensors) from which :meth:`load_state_dict` restores the memory."""
        ...

    def load_state_dict(self, state: dict[str, np.ndarray], frames: Callable[[int], Frame] | None = None) -> None:
        """Restore :meth:`state_dict`; ValueError (one line) when it is corrupt. ``frames`` gives the frame of a
        store id: a state may name frames of the Scene's store instead of copying them, read when they are
        needed, not while restoring (a failed fork's undo must not depend on the store)."""
        ...


class Scene:
    """World model + fused map + frames + branches. Not thread-safe: one owner (the studio worker) drives it."""

    def __init__(self, model: WorldModel, config: SceneConfig | None = None, memory: MemoryProvider | None = None,
                 store: FrameStore | None = None):
        if isinstance(model, type):  # a class has every member as an attribute, but its reset() is not bound
            raise SceneError(f"the world is the class {model.__name__}, not an instance of it: hand "
                             f"{model.__name__}(...) (a plugin's factory returns the world it built)")
        missing = missing_world_members(model)  # the contract is checked once, here
        if missing:
            raise SceneError(f"{type(model).__name__} is not a WorldModel: it lacks {', '.join(missing)} (see "
                             "worldmodel/frame.py; inherit BaseWorldModel for the defaults)")
        wrong = mistyped_world_members(model)
        if wrong:
            raise SceneError(f"{type(model).__name__} is not a WorldModel: its {', '.join(wrong)} (see the types in "
                             "worldmodel/frame.py's WorldModel)")
        why = describe_problem(model)
        if why is not None:
            raise SceneError(f"the {model.name} world's {why}")
        self.model = model
        self.config = config or SceneConfig()
        self.memory = memory
        self.store = store if store is not None else FrameStore(ram_frames=self.config.ram_frames)  # empty = falsy
        self.map = self._new_map()
        self.branches: dict[str, Branch] = {}
        self.branch_name = "main"
        self.cursor = -1
        self.seed = 0
        self.last_step: StepResult | None = None
        self.retrievals: dict[int, tuple[list[int], list[float]]] = {}  # fid -> keyframes retrieved for it

    # ------------------------------------------------------------------ state
    def _new_map(self) -> VoxelPointMap:
        carve = self.config.carve
        if carve is None:  # recorded or generated depth is noisy; the procedural world's is exact
            carve = not self.model.exact_depth
        return VoxelPointMap(self.config.voxel_size, self.config.max_depth, carve=carve)

    @property
    def branch(self) -> Branch:
        return self.branches[self.branch_name]

    @property
    def length(self) -> int:
        """Frames in the current branch."""
        return len(self.branches[self.branch_name].fids) if self.branches else 0

    def frame_at(self, position: int, branch: str | None = None) -> Frame:
        fids = self.branches[branch or self.branch_name].fids
        return self.store.get(fids[position])

    @property
    def current(self) -> Frame:
        """The frame at the cursor."""
        if self.cursor < 0:
            raise SceneError("the scene has no frames yet; call reset() first")
        return self.frame_at(self.cursor)

    def iter_frames(self, branch: str | None = None, upto: int | None = None) -> Iterator[Frame]:
        """The branch's frames (up to position ``upto``), read one at a time as they are asked for. Which frames
        is fixed now: a reset or step meanwhile does not change them (a scene can be handed its own frames)."""
        fids = self._branch(branch).fids
        end = len(fids) if upto is None else upto + 1
        return (self.store.get(fid) for fid in fids[:end])

    def poses(self, branch: str | None = None) -> np.ndarray:
        """(M, 4, 4) c2w of the branch's frames (from the store's pose table: no frame is read)."""
        fids = self._branch(branch).fids
        return np.stack([self.store.pose(f) for f in fids]) if fids else np.zeros((0, 4, 4))

    def position_at(self, position: int) -> np.ndarray:
        """(3,) camera centre of the frame at ``position`` of the current branch (no frame is read)."""
        return self.store.pose(self.branch.fids[position])[:3, 3]

    def _branch(self, name: str | None) -> Branch:
        name = name or self.branch_name
        if name not in self.branches:
            raise SceneError(f"no branch named {name!r}; branches: {', '.join(self.branches) or 'none'}")
        return self.branches[name]

    # ------------------------------------------------------------------ stepping
    def reset(self, seed: int | None = None, start: np.ndarray | None = None,
              prelude: Iterable[Frame] = ()) -> Frame:
        """Start a new world (drops all branches); returns the model's first frame.

        ``prelude``: frames that come before it in the new branch, oldest first: given, not generated (the frames
        a user walked before handing over to a learned model, already at its frame size). Each is stored, fused
        and shown to the memory as the world's own would be, so the model remembers what they saw; the model's
        first frame follows them. SceneError when one differs in size from the model's frames; on that or any
        other error the scene is left empty (reset it again)."""
        if seed is not None:
            self.seed = number(seed, "seed", 0, MAX_SEED, integer=True)
        frame = self._checked(self.model.reset(self.seed, start), None)
        self.map = self._new_map()
        if self.memory is not None:
            self.memory.reset()
        self.retrievals, self.last_step = {}, None
        self.branches, self.branch_name, self.cursor = {}, "main", -1
        fids: list[int] = []
        try:
            for given in prelude:
                given = self._checked(given, None, "handed to")
                if (given.width, given.height) != (frame.width, frame.height):
                    raise SceneError(f"a frame handed to the {self.model.name} world is {given.width}x"
                                     f"{given.height}, its frames are {frame.width}x{frame.height}: resize the "
                                     "frames first")
                given = given.with_index(len(fids))
                fids.append(self.store.add(given))
                self._fuse(given, fids[-1])
            frame = frame.with_index(len(fids))
            fids.append(self.store.add(frame))
            fused, fuse_ms, observe_ms = self._fuse(frame, fids[-1])
        except BaseException:  # (a frame that cannot be read, a full disk): nothing half-made stays
            self.map = self._new_map()
            if self.memory is not None:
                self.memory.reset()
            raise
        self.branches = {"main": Branch("main", fids, handed=len(fids) - 1)}
        self.cursor = len(fids) - 1
        self.last_step = StepResult(frame, fids[-1], "main", fused, 0.0, fuse_ms, observe_ms)
        return frame

    def _checked(self, frame, previous: Frame | None, source: str = "returned by") -> Frame:
        """``frame`` when it can enter the scene (and a saved session of it opens again): a Frame whose camera passes
        :func:`worldmodel.checks.camera_problem`, of ``previous``'s size, with a confidence (if any) finite in [0, 1]
        and depth not negative for the most part (an OpenGL camera's -z); else SceneError, before anything is stored
        (the scene stays as it was). Its NaN, inf and negative depth pixels come back as 0 (no measurement)."""
        where = f"a frame {source} the {self.model.name} world"
        if not isinstance(frame, Frame):
            raise SceneError(f"{where} is a {type(frame).__name__}, not a Frame; nothing was stored")
        why = camera_problem(frame.c2w, frame.K)
        if why is not None:
            raise SceneError(f"{where} has {why}; nothing was stored")
        if previous is not None and (frame.width, frame.height) != (previous.width, previous.height):
            raise SceneError(f"{where} is {frame.width}x{frame.height}, the frames before it "
                             f"{previous.width}x{previous.height}; nothing was stored")
        if frame.confidence is not None and not (np.isfinite(frame.confidence).all()
                                                 and 0 <= frame.confidence.min() <= frame.confidence.max() <= 1):
            raise SceneError(f"{where} has a confidence that is not finite in [0, 1]; nothing was stored")
        negative = frame.depth < 0
        invalid = negative | ~np.isfinite(frame.depth)
        if invalid.any():
            if negative.sum() > (frame.depth > 0).sum():
                raise SceneError(f"{where} has mostly negative depth: z-depth is positive in front of an OpenCV camera "
                                 "(x right, y down, z forward; an OpenGL camera looks down -z); nothing was stored")
            frame = dataclasses.replace(frame, depth=np.where(invalid, 0, frame.depth).astype(frame.depth.dtype))
        return frame

    def _fuse(self, frame: Frame, fid: int, into: VoxelPointMap | None = None) -> tuple[FuseStats, float, float]:
        """Fuse ``frame`` into the map (or ``into``) and show it to the memory -> (stats, fuse ms, memory ms)."""
        pointmap = self.map if into is None else into
        t0 = time.perf_counter()
        fused = fuse_frame(pointmap, frame, self.config.fuse_stride)
        t1 = time.perf_counter()
        if self.memory is not None:
            self.memory.observe(frame, fid, fused, pointmap)
        return fused, 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1)

    def step(self, action: Action | TargetPose) -> StepResult:
        """Generate the next frame from the cursor, fuse it and remember it. Forks when the cursor is not last."""
        if not isinstance(action, (Action, TargetPose)):  # before the fork: a wrong call changes nothing
            hint = (" (text such as '(FN)(FL)' becomes actions with worldmodel.actions.parse_actions)"
                    if isinstance(action, str) else "")
            raise TypeError(f"Scene.step takes an Action or a TargetPose, got {type(action).__name__} "
                            f"{action!r:.40}{hint}")
        if self.cursor < 0:
            raise SceneError("the scene has no frames yet; call reset() first")
        forked_from, cursor_before, map_before, memory_before = None, self.cursor, self.map, None
        try:
            if self.cursor < self.length - 1:
                forked_from = self.branch_name
                memory_before = self._memory_state()
                self._fork()
            return self._step_branch(action, forked_from)
        except BaseException:
            if forked_from is not None:  # a failed step leaves the scene as it was: drop the new branch
                if self.branch_name != forked_from:
                    del self.branches[self.branch_name]
                self.branch_name, self.cursor, self.map = forked_from, cursor_before, map_before
                if memory_before is not None:
                    self.memory.load_state_dict(memory_before, frames=self.store.get)  # type: ignore[union-attr]
                elif self.memory is not None:
                    self._rebuild_map()
            raise

    def _memory_state(self) -> dict | None:
        """The memory bank's state to put back after a failed fork (None without memory)."""
        return None if self.memory is None else self.memory.state_dict()

    @property
    def _memory_on(self) -> bool:
        """The memory feeds the model (context and the map's ground); off without one or with memory_k = 0."""
        return self.memory is not None and self.config.memory_k > 0

    def _predict_target(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        """Where the model will take the next frame; a ground-following world gets the map's ground (with
        memory on: without it the map is not fed back to the model)."""
        if isinstance(self.model, GroundFollowingWorld) and self._memory_on:
            return self.model.predict_c2w_on_ground(last, action, self.memory.ground(self.map))
        return self.model.predict_c2w(last, action)

    def _step_branch(self, action: Action | TargetPose, forked_from: str | None) -> StepResult:
        """The step proper, at the end of the current branch; changes nothing until the frame is stored."""
        fids = self.branch.fids
        recent = [self.store.get(f) for f in fids[max(0, len(fids) - self.config.recent_frames):]]
        last = recent[-1]
        t0 = time.perf_counter()
        context = Context(recent=recent, target=self._predict_target(last, action))
        t_pose = time.perf_counter()  # the model's pose prediction counts as model time, not memory time
        mem_fids: list[int] = []
        if self._memory_on:
            mem_fids, scores, cache = self.memory.build_context(context.target, last.K, last.width, last.height,
                                                               self.map, self.config.memory_k)
            context.memory = [self.store.get(f) for f in mem_fids]
            context.memory_scores = [float(s) for s in scores]
            context.cache = cache
        t1 = time.perf_counter()
        frame = self._checked(self.model.step(action, context), last).with_index(len(fids))
        t2 = time.perf_counter()
        fid = self.store.add(frame)
        with signals_deferred():  # Ctrl-C / SIGTERM wait until the branch, map and memory hold the whole frame
            fids.append(fid)
            self.cursor = len(fids) - 1
            try:
                fused, fuse_ms, observe_ms = self._fuse(frame, fid)
            except Exception:  # nothing half-done: the frame leaves the branch, the map and memory are as before
                fids.pop()
                self.cursor = len(fids) - 1
                if forked_from is None:  # (a fork's caller puts back the map and memory it had)
                    self._rebuild_map()
                raise
        if mem_fids:
            self.retrievals[fid] = (list(mem_fids), list(context.memory_scores))
        self.last_step = StepResult(
            frame, fid, self.branch_name, fused, model_ms=1e3 * (t2 - t1 + t_pose - t0), fuse_ms=fuse_ms,
            memory_ms=1e3 * (t1 - t_pose) + observe_ms, forked_from=forked_from, memory_fids=list(mem_fids),
            memory_scores=list(context.memory_scores), memory_indices=[f.index for f in context.memory],
            memory_poses=(np.stack([f.c2w for f in context.memory]) if context.memory else np.zeros((0, 4, 4))),
            cache=context.cache, move_refused=self.model.kinematics.move_refused(last.c2w, frame.c2w, action),
            pixel_sources=self.model.last_pixel_sources() if isinstance(self.model, PixelSourceWorld) else None)
        return self.last_step

    def steps(self, actions: Iterable[Action | TargetPose], progress: bool = False) -> Iterator[StepResult]:
        """Step through ``actions``, yielding each result as it is made (nothing is collected: RAM stays
        bounded however long the walk)."""
        it: Iterable = actions
        if progress:
            from tqdm import tqdm

            it = tqdm(actions, total=len(actions) if hasattr(actions, "__len__") else None,  # type: ignore[arg-type]
                      desc="steps", unit="frame")
        for a in it:
            yield self.step(a)

    def run(self, actions: Iterable[Action | TargetPose], progress: bool = False) -> StepResult | None:
        """Step through ``actions``; returns the last result (use :meth:`steps` to see each one)."""
        last = None
        for last in self.steps(actions, progress):
            pass
        return last

    # ------------------------------------------------------------------ history and branches
    def seek(self, position: int) -> Frame:
        """Move the cursor to ``position`` of the current branch (the next step forks from there)."""
        if self.cursor < 0:
            raise SceneError("the scene has no frames yet; call reset() first")
        if not 0 <= position < self.length:
            raise SceneError(f"position {position} is outside the branch (0..{self.length - 1})")
        self.cursor = int(position)
        return self.current

    def _unique_branch_name(self) -> str:
        i = len(self.branches)
        while f"b{i}" in self.branches:
            i += 1
        return f"b{i}"

    def _fork(self) -> None:
        parent = self.branch
        name = self._unique_branch_name()
        self.branches[name] = Branch(name, parent.fids[: self.cursor + 1], parent.name, self.cursor,
                                     handed=min(parent.handed, self.cursor))
        self.branch_name = name
        self._rebuild_map()

    def _rebuild_map(self, progress: Callable[[int, int], None] | None = None, keep_map: bool = False) -> None:
        """The one rebuild path: fuse the current branch's frames into a fresh map and show them to a reset
        memory. ``keep_map``: the map stays (a loaded one); the frames are fused into a scratch map with the
        same settings and order (which assigns the same rows) only to rebuild the memory."""
        fresh = self._new_map()
        if not keep_map:
            self.map = fresh
        if self.memory is not None:
            self.memory.reset()
        elif keep_map:
            return
        fids = self.branch.fids
        # a ground-following world asked the memory for the ground before the first frame it made
        # (_predict_target): asked again here at that moment, the memory keeps what it kept then (after a long
        # handover, a copy of the map of observed frames: GeometricMemory.ground). Only then: a call after a
        # generated frame would fuse the observed layer now rather than when it is first used
        asks_ground = isinstance(self.model, GroundFollowingWorld) and self._memory_on
        for i, fid in enumerate(fids):
            if asks_ground and i == self.branch.handed + 1:
                self.memory.ground(fresh)  # type: ignore[union-attr]
            self._fuse(self.store.get(fid), fid, into=fresh)
            if progress is not None:
                progress(i + 1, len(fids))

    def restore(self, branches: dict[str, Branch], branch_name: str, cursor: int, seed: int = 0,
                map_state: dict[str, np.ndarray] | None = None, memory_state: dict[str, np.ndarray] | None = None,
                retrievals: dict[int, tuple[list[int], list[float]]] | None = None) -> None:
        """Put the scene back in a saved state (scenes.session): branches, current branch and cursor, seed,
        the fused map (``map_state`` from VoxelPointMap.state_dict; None: rebuilt from the frames) and the
        memory (``memory_state``; None or unloadable: rebuilt from the frames). Frames must be in the store.
        Raises SceneError when the branch or cursor is out of range, ValueError for a corrupt map state."""
        if branch_name not in branches or not 0 <= cursor < len(branches[branch_name].fids):
            raise SceneError("the current branch or cursor is out of range")
        self.branches, self.branch_name, self.cursor, self.seed = dict(branches), branch_name, int(cursor), int(seed)
        self.retrievals = dict(retrievals or {})
        self.last_step = None
        if map_state is None:
            self._rebuild_map()
            return
        self.map = VoxelPointMap.from_state_dict(map_state)
        if self.memory is not None and memory_state is not None:
            try:
                self.memory.load_state_dict(memory_state, frames=self.store.get)
                return
            except (ValueError, KeyError):
                pass
        self._rebuild_map(keep_map=True)

    def switch_branch(self, name: str, progress: Callable[[int, int], None] | None = None) -> None:
        """Make ``name`` the current branch (cursor at its end) and rebuild the map from its frames."""
        self._branch(name)
        self.branch_name = name
        self.cursor = self.length - 1
        self._rebuild_map(progress)

    def set_voxel_size(self, voxel_size: float, progress: Callable[[int, int], None] | None = None) -> None:
        """Re-fuse the current branch at another voxel size (metres)."""
        if not (isinstance(voxel_size, (int, float)) and 0.005 <= voxel_size <= 5.0):
            raise SceneError(f"voxel size must be between 0.005 and 5 metres, got {voxel_size!r}")
        self.config.voxel_size = float(voxel_size)
        self._rebuild_map(progress)

    def discard_branch(self, name: str) -> None:
        """Forget a branch that is not the current one (its frames stay in the store)."""
        self._branch(name)
        if name == self.branch_name:
            raise SceneError(f"branch {name!r} is the current one; switch to another branch before discarding it")
        del self.branches[name]

    def map_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Fused points (N, 3) float32 and colours (N, 3) uint8 'as they were' at the cursor."""
        upto = None if self.cursor >= self.length - 1 else self.cursor
        return self.map.points(upto_frame=upto)

    # ------------------------------------------------------------------ exports
    def export_ply(self, path: str | Path) -> Path:
        pts, cols = self.map_points()
        return ex.write_ply(path, pts, cols)

    def export_glb(self, path: str | Path, mesh: bool = False) -> Path:
        """The current branch as shown at the cursor: map points (:meth:`map_points`), the camera path with
        frustums up to the cursor; ``mesh=True`` adds an open3d TSDF mesh of those frames. (The map belongs to the
        current branch: switch branch to export another.)"""
        pts, cols = self.map_points()
        poses = self.poses()[: self.cursor + 1]
        f0 = self.frame_at(0)
        tsdf = None
        if mesh:
            from recon.tsdf import tsdf_mesh

            tsdf = tsdf_mesh(self.iter_frames(upto=self.cursor), voxel_size=max(self.config.voxel_size, 0.02),
                             depth_max=self.config.max_depth)
        return ex.write_glb(path, pts, cols, c2ws=poses, K=f0.K, image_size=(f0.width, f0.height), mesh=tsdf)

    def export_trajectory(self, path: str | Path, branch: str | None = None) -> Path:
        return ex.write_tum_trajectory(path, self.poses(branch))

    def export_transforms(self, folder: str | Path, branch: str | None = None) -> Path:
        return ex.write_transforms_json(folder, self.iter_frames(branch))  # streamed: one frame in RAM at a time

    def export_mp4(self, path: str | Path, branch: str | None = None, fps: int = 10, progress: bool = False) -> Path:
        return ex.write_mp4(path, self.iter_frames(branch), fps=fps, progress=progress)

    BUNDLE_NAMES = ("session", "scene.ply", "scene.glb", "frames.mp4", "trajectory.txt", *ex.TRANSFORMS_NAMES)

    def export_all(self, folder: str | Path, progress: bool = False, video: bool = True) -> dict[str, Path]:
        """The headless bundle: scene.ply, scene.glb, frames.mp4, trajectory.txt, transforms.json (with images/,
        depth/), session/ (``BUNDLE_NAMES``).

        Each file is written atomically; the session comes first, and one failed export does not stop the
        others. When any failed, ExportError names them after everything else was written."""
        from scenes.atomic import writable_folder
        from scenes.session import save_session

        out = writable_folder(folder)  # (WriteError, one line, when it cannot be written)
        jobs: dict[str, Callable[[], Path]] = {
            "session": lambda: save_session(self, out / "session", progress=progress),
            "ply": lambda: self.export_ply(out / "scene.ply"), "glb": lambda: self.export_glb(out / "scene.glb"),
            "mp4": lambda: self.export_mp4(out / "frames.mp4", progress=progress),
            "trajectory": lambda: self.export_trajectory(out / "trajectory.txt"),
            "transforms": lambda: self.export_transforms(out)}
        if not video:
            del jobs["mp4"]
        written: dict[str, Path] = {}
        failed: list[str] = []
        for kind, job in jobs.items():
            try:
                written[kind] = job()
            except (ex.ExportError, OSError, ValueError) as e:  # ValueError: SceneError, SessionError
                failed.append(f"{kind}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if failed:
            raise ex.ExportError(f"{'; '.join(failed)} (written: {', '.join(written) or 'nothing'} in {out})")
        return written

    def close(self) -> None:
        """Remove the frames spilled to disk and release what the world holds open (ClosableWorld)."""
        try:
            self.store.close()
        finally:
            if isinstance(self.model, ClosableWorld):
                self.model.close()


def scene_config_from_dict(d: dict) -> SceneConfig:
    known = {f.name for f in dataclasses.fields(SceneConfig)}
    return SceneConfig(**{k: v for k, v in d.items() if k in known})
