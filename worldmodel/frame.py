"""Core data types shared by every layer: Frame, CacheView, Context and the WorldModel contract.

Conventions (see DESIGN.md): metres, right-handed +Y-up world, OpenCV camera axes (x right, y down,
z forward), poses are camera-to-world 4x4 (``c2w``), depth is float32 z-depth with 0 = invalid,
images are uint8 HxWx3 RGB.
"""

from __future__ import annotations

import difflib
import json
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, get_type_hints, runtime_checkable

import numpy as np

from worldmodel.actions import Action, Kinematics, TargetPose


class _DepthImage:
    """Image size read from the (H, W) ``depth`` array of Frame and CacheView."""

    depth: np.ndarray

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])


@dataclass(frozen=True, eq=False)
class Frame(_DepthImage):
    """One generated (or recorded) view of the world.

    index: position of the frame along its branch (0 = first frame).
    rgb: (H, W, 3) uint8.  depth: (H, W) float32 z-depth in metres, 0 = invalid.
    K: (3, 3) pinhole intrinsics in pixels.  c2w: (4, 4) float64 OpenCV camera -> +Y-up world.
    action: the action that produced this frame from the previous one (None for the first frame).
    confidence: optional (H, W) float32 in [0, 1].
    world_points / world_colors: optional (N, 3) float32 world points and (N, 3) uint8 colours, for sources
        that deliver a point cloud per frame instead of depth (e.g. DeepVerse/Aether per-frame PLY files);
        when given, fusion uses them and ``depth`` may be all zeros.
    zero_depth_is_sky: what depth 0 means. False (the convention): no measurement, e.g. a depth sensor's
        dropouts. True: the ray meets no surface, e.g. the sky of a simulator or a generated frame; the memory
        then keeps those pixels in its far-field panorama as what lies in that direction.
    """

    index: int
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    action: Action | TargetPose | None = None
    confidence: np.ndarray | None = None
    world_points: np.ndarray | None = None
    world_colors: np.ndarray | None = None
    zero_depth_is_sky: bool = False

    def __post_init__(self) -> None:
        for key in ("rgb", "depth", "K", "c2w"):
            if not isinstance(getattr(self, key), np.ndarray):
                raise ValueError(f"Frame.{key} must be a numpy array, got {type(getattr(self, key)).__name__} "
                                 "(wrap it in np.asarray)")
        if self.depth.ndim != 2 or self.depth.dtype.kind != "f":
            raise ValueError(f"Frame.depth must be (H, W) float32 z-depth in metres, got {self.depth.shape} "
                             f"{self.depth.dtype}" + (" (millimetres? divide by 1000 and cast to float32)"
                                                      if self.depth.dtype.kind in "ui" else ""))
        h, w = self.depth.shape
        if self.rgb.shape != (h, w, 3) or self.rgb.dtype != np.uint8:
            raise ValueError(f"Frame.rgb must be ({h}, {w}, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.K.shape != (3, 3) or self.c2w.shape != (4, 4):
            raise ValueError("Frame.K must be 3x3 and Frame.c2w 4x4")
        if self.confidence is not None and np.shape(self.confidence) != (h, w):
            raise ValueError(f"Frame.confidence must be ({h}, {w}) like depth, got {np.shape(self.confidence)}")
        if self.world_points is not None:
            n = len(self.world_points)
            colors = self.world_colors
            if self.world_points.shape != (n, 3) or colors is None or colors.shape != (n, 3) or colors.dtype != np.uint8:
                raise ValueError("Frame.world_points must be (N, 3) with world_colors (N, 3) uint8")

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        return self.c2w[:3, 3]

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (camera +z) in world coordinates, (3,)."""
        return self.c2w[:3, 2]

    def with_index(self, index: int) -> "Frame":
        """This frame at position ``index`` of a branch (itself when it is there already: frames are frozen)."""
        return self if self.index == index else replace(self, index=index)


@dataclass(frozen=True, eq=False)
class CacheView(_DepthImage):
    """The fused map rendered into a target camera (GEN3C-style geometric conditioning; memory.cache).

    rgb: (h, w, 3) uint8.  depth: (h, w) float32 z-depth metres, 0 = nothing rendered.
    valid: (h, w) bool, where the map has content.  K: (3, 3) float64 intrinsics of *this* image (the cache
    may be rendered smaller than the frame: same field of view, see worldmodel.camera.resize_intrinsics).
    c2w: (4, 4) float64 OpenCV camera-to-world of the target camera.
    far_rgb / far_valid: optional (h, w, 3) uint8 / (h, w) bool, the far field seen from the target camera
        (what lies beyond the map's fuse range: distant buildings, hills, sky; memory.panorama), same pixels.
    observed: optional (h, w) bool, pixels whose surface comes from *observed* frames (no confidence: a
        camera's or the simulator's), which win over generated ones there; None when the memory does not
        tell them apart (e.g. every frame of the world is observed).
    """

    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    far_rgb: np.ndarray | None = None
    far_valid: np.ndarray | None = None
    observed: np.ndarray | None = None

    def __post_init__(self) -> None:
        h, w = self.depth.shape
        if self.observed is not None and (self.observed.shape != (h, w) or self.observed.dtype != bool):
            raise ValueError(f"CacheView.observed must be a ({h}, {w}) bool mask")
        if self.rgb.shape != (h, w, 3) or self.valid.shape != (h, w):
            raise ValueError(f"CacheView rgb {self.rgb.shape} / valid {self.valid.shape} do not match depth {(h, w)}")
        if self.rgb.dtype != np.uint8 or self.depth.dtype != np.float32 or self.valid.dtype != bool:
            raise ValueError(f"CacheView needs uint8 rgb, float32 depth and bool valid, got "
                             f"{self.rgb.dtype}, {self.depth.dtype}, {self.valid.dtype}")
        if self.K.shape != (3, 3) or self.c2w.shape != (4, 4):
            raise ValueError("CacheView.K must be 3x3 and CacheView.c2w 4x4")
        if (self.far_rgb is None) != (self.far_valid is None):
            raise ValueError("CacheView.far_rgb and far_valid come together")
        if self.far_rgb is not None and (self.far_rgb.shape != (h, w, 3) or self.far_rgb.dtype != np.uint8
                                         or self.far_valid.shape != (h, w) or self.far_valid.dtype != bool):
            raise ValueError(f"CacheView far field must be ({h}, {w}, 3) uint8 with a ({h}, {w}) bool mask")


@dataclass
class Context:
    """What a world model is conditioned on when it generates the next frame.

    recent: the last few frames of the current branch, oldest first (never empty during a step).
    memory: past keyframes retrieved for the target view (may be empty).
    memory_scores: one score per memory frame, same order.
    cache: the fused map rendered into the target view, or None (no memory, empty map).
    target: (4, 4) c2w the caller got from the model's ``predict_c2w`` for this step (the Scene always asks
    first, to render memory there), or None; worlds read it through ``BaseWorldModel.target_c2w``.
    """

    recent: list[Frame]
    memory: list[Frame] = field(default_factory=list)
    memory_scores: list[float] = field(default_factory=list)
    cache: CacheView | None = None
    target: np.ndarray | None = None

    @property
    def last(self) -> Frame:
        return self.recent[-1]


@runtime_checkable
class WorldModel(Protocol):
    """Everything the Scene, sessions and the studio ask of a source of frames.

    Backends: procedural (ray-cast), replay (recorded), learned models, plugins (entry-point group
    ``worldstudio.worlds``, see worldmodel.registry). Inherit :class:`BaseWorldModel` for the defaults.

    name: short kind name shown in the studio.  kinematics: how discrete actions move the camera (also used
    to turn a viewer-camera pose into the nearest action).  exact_depth: True when depth is exact (ray-cast),
    so the fused map needs no free-space carving.
    """

    name: str
    kinematics: Kinematics
    exact_depth: bool

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        """Start a new world; ``start`` is an optional c2w for the first camera."""
        ...

    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        """Generate the frame that follows ``context.last`` under ``action``."""
        ...

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        """(4, 4) c2w of the camera :meth:`step` will render (the Scene retrieves memory for it first)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON description with a ``"kind"`` key; ``registry.world_from_description`` rebuilds the world."""
        ...


@runtime_checkable
class ComparableWorld(Protocol):
    """A world that may have ground truth to compare its frames with (optional: the studio's *compare* view
    says there is none for a world without it; :class:`BaseWorldModel` has it, returning None)."""

    def reference_view(self, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Ground truth at a pose, (rgb (H, W, 3) uint8, z-depth (H, W) float32), for worlds that have one (a
        learned world started from its simulator); None otherwise."""
        ...


@runtime_checkable
class WalkingWorld(Protocol):
    """A world whose camera may be held a known height above its ground (optional). A learned world handed its
    frames (``scenes.factory.continue_with_learned_model``) rides the ground its map shows at that height."""

    @property
    def walker_eye_height(self) -> float | None:
        """Metres the camera is held above the ground; None when it is not held at one (a flying camera, a
        recording's hand-held one)."""
        ...


@runtime_checkable
class ClosableWorld(Protocol):
    """A world that holds something open (a recording's video decoder: an ffmpeg process); optional. The Scene
    calls :meth:`close` when it is closed."""

    def close(self) -> None:
        """Release it; the world may be used again after (it reopens what it needs)."""
        ...


def missing_world_members(model) -> list[str]:
    """The members of :class:`WorldModel` that ``model`` lacks (empty: it is one). ``isinstance`` with the
    protocol answers only yes or no; this names what a plugin author has to add."""
    wanted = [*WorldModel.__annotations__, *(name for name, value in vars(WorldModel).items()
                                             if callable(value) and not name.startswith("_"))]
    return [name for name in wanted if not hasattr(model, name)]


def mistyped_world_members(model) -> list[str]:
    """The members of :class:`WorldModel` that ``model`` has with another type than the protocol's (its
    annotations; its methods must be callable), each as "name (a dict, not Kinematics)"; empty when none."""
    wrong = [f"{name} (a {type(getattr(model, name)).__name__}, not {kind.__name__})"
             for name, kind in get_type_hints(WorldModel).items() if not isinstance(getattr(model, name), kind)]
    methods = (name for name, value in vars(WorldModel).items() if callable(value) and not name.startswith("_"))
    return wrong + [f"{name} (not callable)" for name in methods if not callable(getattr(model, name))]


def describe_problem(model) -> str | None:
    """What is wrong with ``model.describe()`` as a session stores it (JSON, an object with a string ``"kind"``), or
    None. A session whose world description cannot be written or read back is not made at all."""
    try:
        desc = model.describe()
    except Exception as e:  # noqa: BLE001 - a plugin's describe() may raise anything; say so in one line
        return f"describe() raised {type(e).__name__}: {e}"
    if not isinstance(desc, dict) or not isinstance(desc.get("kind"), str):
        return f"describe() must return a dict with a string 'kind' (the registered name), got {str(desc)[:80]}"
    try:
        json.dumps(desc, allow_nan=False)
    except (TypeError, ValueError) as e:
        return (f"describe() is not plain JSON ({e}): sessions store it; use str/int/float/bool/list/dict, "
                "e.g. float(x) and x.tolist() for numpy values")
    return None


class GroundProbe(Protocol):
    """The ground (and the obstacles on it) the map's *observed* frames show (a camera's real views; the Scene
    hands one to a :class:`GroundFollowingWorld`). Generated frames are left out: their depth can be off by a
    scale that shifts their ground by (scale - 1) x the camera's height, and a camera put on it makes its next
    frames from there (measured in docs/learned-model.md, item 1)."""

    def ground_height(self, x: float, z: float, bottom: float, top: float, radius: float) -> float | None:
        """Height (world +Y, metres) of the observed ground under (x, z), looked for between heights ``bottom``
        and ``top`` within ``radius`` horizontally; None where the observed frames show no ground there."""
        ...

    def surface_voxels(self, x: float, z: float, bottom: float, top: float, radius: float) -> int:
        """How many map voxels of the observed frames' surfaces lie within ``radius`` (a square) of the vertical
        column at (x, z), between heights ``bottom`` and ``top``: an obstacle a body standing there would touch
        (0 where they show none, or saw nothing there)."""
        ...


@runtime_checkable
class PixelSourceWorld(Protocol):
    """A world that says where each pixel of the frame its last step made came from (optional; the Scene hands
    it on in ``StepResult.pixel_sources`` and the studio's Memory tab shows it): generated (a learned world's
    network output, which sees the memory's render among its inputs), copied from the previous frame, or
    copied from the memory's map (a learned world's blend; what an observed frame's map showed counts as
    memory)."""

    def last_pixel_sources(self) -> np.ndarray | None:
        """(H, W, 3) float32 shares summing to 1 per pixel, in the order of :data:`PIXEL_SOURCES`, for the frame
        the last :meth:`WorldModel.step` returned; None when it made none (before a step, after a reset)."""
        ...


PIXEL_SOURCES = ("generated", "previous frame", "memory")  # the channels of PixelSourceWorld.last_pixel_sources


@runtime_checkable
class GroundFollowingWorld(Protocol):
    """A world whose walking camera rides the ground the map's observed frames show (a learned world has no
    terrain of its own). The Scene asks :meth:`predict_c2w_on_ground` instead of ``predict_c2w`` when it has a
    fused map, handing it the map's :class:`GroundProbe`."""

    def predict_c2w_on_ground(self, last: Frame, action: Action | TargetPose,
                              ground: GroundProbe | None) -> np.ndarray:
        """As ``WorldModel.predict_c2w``, with the camera height taken from ``ground`` where it knows it."""
        ...


CONTRACT_MEMBERS = sorted({name for protocol in (WorldModel, ComparableWorld, WalkingWorld, ClosableWorld,
                                                 PixelSourceWorld, GroundFollowingWorld)
                            for name in (*protocol.__annotations__, *vars(protocol)) if not name.startswith("_")})


class BaseWorldModel:
    """Defaults of the :class:`WorldModel` contract; subclasses set ``name`` and write reset and step.

    ``kinematics`` defaults to ``Kinematics()`` (0.5 m, 10 degrees per step), ``exact_depth`` to False,
    ``predict_c2w`` moves the last camera by the kinematics (or jumps to a TargetPose), ``describe`` returns
    the spec that ``worldmodel.registry.create_world`` built the world from.
    """

    name: str = "world"
    kinematics: Kinematics = Kinematics()
    exact_depth: bool = False
    created_with: dict[str, Any] | None = None  # set by registry.create_world: how to build this world again

    def __init_subclass__(cls, **kwargs) -> None:
        """Warn of a member named nearly as one of the contract's (``predict_c2W``, ``exact_depths``): the Scene
        would not call it, and the default would be used without a word."""
        super().__init_subclass__(**kwargs)
        for name in vars(cls):  # (case aside, at most about one letter in 12 differs: 'closed' is not 'close')
            near = difflib.get_close_matches(name.lower(), CONTRACT_MEMBERS, n=1, cutoff=0.92)
            if not name.startswith("_") and near and name not in CONTRACT_MEMBERS:
                warnings.warn(f"{cls.__name__}.{name} is named nearly as the contract's {near[0]}, which the Scene "
                              f"calls instead; rename it {near[0]} if it is meant to be that", stacklevel=2)

    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        raise NotImplementedError

    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        raise NotImplementedError

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        if isinstance(action, TargetPose):
            return np.asarray(action.c2w, dtype=np.float64)
        return self.kinematics.apply(last.c2w, action)

    def target_c2w(self, action: Action | TargetPose, context: Context) -> np.ndarray:
        """Where this step's frame is taken: ``context.target`` when the caller already asked
        :meth:`predict_c2w` (no second prediction), else :meth:`predict_c2w` of the last frame."""
        if context.target is not None:
            return np.asarray(context.target, dtype=np.float64)
        return self.predict_c2w(context.last, action)

    def describe(self) -> dict[str, Any]:
        """Default: the spec the registry built this world from (rebuilt by calling its factory again)."""
        return dict(self.created_with) if self.created_with else {"kind": self.name}

    def reference_view(self, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Default: no ground truth to compare with."""
        return None
