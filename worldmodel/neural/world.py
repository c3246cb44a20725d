"""NeuralWorld: the learned world model as a WorldModel backend.

Each step it (1) predicts where the camera ends up — the commanded kinematics, at eye height over the ground
the map's observed frames show under the new position (:func:`ride_ground`; the Scene hands it the map's
:class:`~worldmodel.frame.GroundProbe`; its own generated frames are not ridden), else with the pose head's
learned residual (which barely moves it), and no move into a surface its own last frame shows at body height
(:func:`blocked_by_own_view`) or the observed frames' map shows there (:func:`blocked_by_map`: obstacles beside
or behind the camera): it turns in place, as the simulator does — and
(2) generates the frame there: RGB, z-depth and a per-pixel confidence, from the last frame, that frame warped
into the target camera, the cache render of the fused map and the far-field panorama (``Context.cache``), and
the target's ray map. Where the cache shows a surface of an *observed* frame (``CacheView.observed``: the start
frame, not a generated one) the frame shows it as observed: the network's own output there tends to follow its
warped last frame and would paint over it (revisits +0.49 dB on the eval's 8 held-out loops, +0.38 dB on the 8
validation loops). The Scene asks :meth:`predict_c2w` first, renders the memory at that pose, then calls
:meth:`step`, which uses the same pose (the pose head is deterministic).

The first frame is the simulator's view for the seed (as DeepVerse starts from an input image), or any RGB-D
frame handed in as ``first_frame`` (a recording's or a saved session's frame), its centre cut to the model's
aspect ratio and resized to its size (:meth:`NeuralWorld.adopt`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from worldmodel.actions import Action, Kinematics, TargetPose
from worldmodel import checks
from worldmodel.frame import BaseWorldModel, Context, Frame, GroundProbe
from worldmodel.camera import depth_edge_mask, points_to_depth, resize_intrinsics, unproject_depth, valid_depth_mask
from worldmodel.neural.inputs import (build_inputs, compose, depth_to_tensor, heading_frame, image_to_tensor,
                                     output_depth, pose_head_input, relative_motion, tensor_to_image)
from worldmodel.neural.net import bf16_inference_copy, bf16_is_fast
from worldmodel.neural.weights import CARD_NAME, WEIGHTS_NAME, WeightsError, load_pretrained, resolve, save_pretrained

SHIPPED_WEIGHTS = Path(__file__).parent / "pretrained"
BODY_RADIUS = 0.35  # metres a walking camera keeps from obstacles (as in the procedural world it learned)
# Confidence is 0 where the output's log depth jumps by more than this to a neighbour: the blend of near and far
# sources leaves depth between the two surfaces there, which the map (fusion weights by confidence) then skips.
# On 8 held-out loops: rollout PSNR 17.76 -> 17.95 dB, revisits 17.22 -> 17.47, pose drift 3.3 -> 2.5 %.
DEPTH_EDGE_LOG_JUMP = 0.1
# Riding the ground (ride_ground): the steepest climb per metre walked (the procedural terrain stays below 0.35)
# and the change allowed on top of it (a turn in place may still settle the camera onto the ground it finds).
MAX_CLIMB, CLIMB_SLACK_M = 0.6, 0.1
HEAD_CLEARANCE_M = 0.3  # what is higher above the eye than this is not walked into (both obstacle checks)
MIN_OBSTACLE_VOXELS = 2  # map voxels at body height that stop a walking camera (one could be a stray sample)
LOOK_AHEAD_M = (1.0, 2.0, 3.0)  # where ride_ground looks for ground further along a move when none is underfoot


def blocked_by_own_view(last: Frame, eye: np.ndarray, radius: float = BODY_RADIUS, stride: int = 2) -> bool:
    """True when a camera at ``eye`` (3,) world would come within ``radius`` (horizontally, per world axis: the
    square the simulator keeps clear) of a surface the last frame shows at body height: from ``radius`` below
    the eye (lower things are stepped over, as the simulator does) to :data:`HEAD_CLEARANCE_M` above it (+Y
    up). The model's own depth is the only geometry it needs; obstacles beside or behind the camera are not in
    it."""
    points, _ = unproject_depth(last.depth, last.K, last.c2w, stride=stride)
    band = (points[:, 1] > eye[1] - radius) & (points[:, 1] < eye[1] + HEAD_CLEARANCE_M)
    near = (np.abs(points[band, 0] - eye[0]) < radius) & (np.abs(points[band, 2] - eye[2]) < radius)
    return bool(near.any())


def blocked_by_map(ground: GroundProbe, eye: np.ndarray, radius: float = BODY_RADIUS) -> bool:
    """True when the map's observed frames show a surface (:data:`MIN_OBSTACLE_VOXELS` voxels or more) within
    ``radius`` of a camera at ``eye`` (3,) in the band :func:`blocked_by_own_view` checks: obstacles beside the
    path that the last frame no longer shows (seed 3's eval loop walked into a trunk at the edge of its view)."""
    return ground.surface_voxels(float(eye[0]), float(eye[2]), float(eye[1]) - radius,
                                 float(eye[1]) + HEAD_CLEARANCE_M, radius) >= MIN_OBSTACLE_VOXELS


def ride_ground(ground: GroundProbe, last_eye: np.ndarray, eye: np.ndarray, eye_height: float) -> float:
    """Camera height (+Y) at ``eye`` (3,) for a walker ``eye_height`` above the ground observed frames show
    under it (within :data:`BODY_RADIUS`, looked for from 1.5 m below to 1 m above the ground under
    ``last_eye``, where the walker stood at eye height). Where they show none there (a camera sees the ground
    only from a few metres ahead of its feet), the slope to the nearest observed ground further along the move
    (:data:`LOOK_AHEAD_M`) carries the camera there gradually; ``eye``'s own height where there is none, or
    when the camera does not move. The change from ``last_eye`` is held to :data:`MAX_CLIMB` per metre walked
    plus :data:`CLIMB_SLACK_M`, so a noisy patch of map cannot throw the camera."""
    under_last = last_eye[1] - eye_height
    walked = float(np.linalg.norm(eye[[0, 2]] - last_eye[[0, 2]]))

    def ground_at(x: float, z: float) -> float | None:
        return ground.ground_height(x, z, under_last - 1.5, under_last + 1.0, BODY_RADIUS)

    height = ground_at(float(eye[0]), float(eye[2]))
    if height is None and walked > 1e-6:
        along = (eye[[0, 2]] - last_eye[[0, 2]]) / walked
        for ahead in LOOK_AHEAD_M:
            x, z = eye[[0, 2]] + ahead * along
            found = ground_at(float(x), float(z))
            if found is not None:  # the ground rises or falls evenly from the last camera's feet to there
                height = under_last + (found - under_last) * walked / (walked + ahead)
                break
    if height is None:
        return float(eye[1])
    limit = CLIMB_SLACK_M + MAX_CLIMB * walked
    return float(np.clip(height + eye_height, last_eye[1] - limit, last_eye[1] + limit))


def _user_frame_intrinsics(value) -> np.ndarray | None:
    """A session's ``user_frame_K`` (3x3 list, finite, positive focal lengths) as an array; None when absent."""
    if value is None:
        return None
    try:
        K = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise checks.CheckError("user_frame_K must be a 3x3 list of numbers") from None
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise checks.CheckError("user_frame_K must be a 3x3 intrinsics matrix with positive focal lengths")
    return K


def centre_crop(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred window of a ``width`` x ``height`` image with ``aspect`` (width / height):
    (x0, y0, window width, window height); the whole image when it is within a pixel of that already."""
    if width > height * aspect + 1:
        cut = max(1, round(height * aspect))
        return (width - cut) // 2, 0, cut, height
    if height > width / aspect + 1:
        cut = max(1, round(width / aspect))
        return 0, (height - cut) // 2, width, cut
    return 0, 0, width, height


def _resize(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, height, width), nearest pixel centre to centre (as resize_intrinsics scales K)."""
    return t if t.shape[-2:] == (height, width) else F.interpolate(t, size=(height, width), mode="nearest-exact")


def _shrink_image(rgb: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, h, w) colour -> (B, 3, height, width): when it shrinks, each new pixel the mean of those it covers
    (no aliasing; a 256x256 walk handed to the 128x128 model returns 1 dB closer to the simulator than with
    nearest pixels), else :func:`_resize`. Depth is never averaged (across an edge that makes a surface nobody saw)."""
    if rgb.shape[-2] >= height and rgb.shape[-1] >= width and rgb.shape[-2:] != (height, width):
        return F.interpolate(rgb, size=(height, width), mode="area")
    return _resize(rgb, height, width)


class NeuralWorld(BaseWorldModel):
    """Learned world model (see the module docstring). ``weights``: a folder or hub repo id."""

    name = "neural"
    exact_depth = False

    def __init__(self, weights: str | os.PathLike = SHIPPED_WEIGHTS, seed: int = 0, kinematics: Kinematics | None = None,
                 first_frame: Frame | None = None, bf16: bool | None = None, context_noise: float | None = None,
                 eye_height: float | None = None, handed_from: BaseWorldModel | None = None):
        folder = resolve(weights)
        # a local folder is kept absolute (a session reopens from anywhere); a hub id as given
        self.weights = str(folder.resolve()) if folder == Path(weights).expanduser() else str(weights)
        self.config, self.net = load_pretrained(folder)
        card = folder / CARD_NAME
        self.card = card.read_text() if card.is_file() else None  # kept for save_pretrained
        self.stored_half = _stored_as_fp16(folder / WEIGHTS_NAME)  # as is saved again by save_pretrained
        # which weights made a session's frames: a session reopened over other weights in the same folder (a model
        # retrained and saved over it, the shipped weights updated) would go on with another model unsaid
        self.weights_sha256 = _file_sha256(folder / WEIGHTS_NAME)
        self.width, self.height = (int(v) for v in self.config["size"])
        self.kinematics = kinematics or Kinematics(self.config["step_m"], self.config["yaw_deg"])
        self.seed = int(seed)
        self.first_frame = first_frame
        self.bf16 = bf16_is_fast("cpu") if bf16 is None else bool(bf16)  # None: where it is faster
        # the frame network as it runs: in bf16 its weights cast once (bf16_inference_copy), and channels-last
        # (oneDNN's convolutions run faster on it: fp32, 128^2, AVX2 CPU: 49 -> 38 ms a forward)
        self.frame_net = bf16_inference_copy(self.net.frame) if self.bf16 else self.net.frame
        self.frame_net.to(memory_format=torch.channels_last)
        # the context-noise level the model is told its last frame carries (trained on 0..0.12): a little
        # makes it lean less on its own previous output (config "context_noise", default 0)
        self.context_noise = float(self.config.get("context_noise", 0.0) if context_noise is None else context_noise)
        from worldmodel.procedural import ProceduralConfig, ProceduralWorld
        self.simulator = ProceduralWorld(ProceduralConfig(width=self.width, height=self.height,
                                                          fov_y_deg=float(self.config["fov_y_deg"]),
                                                          kinematics=self.kinematics), seed=self.seed)
        self.K = self.simulator.K.copy()
        # True for a world that starts (and, after a reset, started) from a user's first frame, or a session of
        # one: there is no simulator to compare with, and the camera rides the ground only at ``eye_height``,
        # the height that frame's camera was held at (a walker's, e.g. the simulator's), when it is known
        self.from_user_frame = first_frame is not None
        self.user_eye_height = None if eye_height is None else float(eye_height)
        # a user's first frame from the world this model's simulator renders (``handed_from``: the procedural
        # world of the same seed and terrain, or a learned world started from it): the simulator is still the
        # ground truth the compare view shows
        self.simulator_is_truth = first_frame is not None and _renders_like(handed_from, self.simulator)
        self._last_sources: np.ndarray | None = None  # see last_pixel_sources

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike = SHIPPED_WEIGHTS, **kwargs) -> "NeuralWorld":
        """Load ``config.json`` + ``model.safetensors`` from a folder or a hub repo (cached; offline once cached)."""
        return cls(path_or_repo_id, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike, card: str | None = None, half: bool | None = None) -> Path:
        """Write these weights as a model folder (config.json, model.safetensors, README.md): ``card``, else the
        card the weights came with (read when they were loaded), else a short one made from the config. ``half``:
        fp16 weights (the shipped format) or fp32; None: as the loaded file stored them, so the copy makes the same
        frames (an fp32 training checkpoint halved silently made frames up to 24/255 apart in 3 steps)."""
        return save_pretrained(folder, self.config, self.net, card=self.card if card is None else card,
                               half=self.stored_half if half is None else bool(half))

    @classmethod
    def from_description(cls, desc: dict) -> "NeuralWorld":
        """Rebuild from :meth:`describe` (a session's world); WeightsError when the weights are gone."""
        from worldmodel.actions import KINEMATICS_RANGES
        from worldmodel.procedural import PROCEDURAL_RANGES

        kin = desc.get("kinematics") or {}
        try:
            kinematics = Kinematics(*(checks.number(kin.get(key, default), f"the neural world's kinematics.{key}",
                                                    *KINEMATICS_RANGES[key])
                                      for key, default in (("step_m", 0.5), ("yaw_deg", 10.0))))
        except (checks.CheckError, AttributeError) as e:
            raise WeightsError(f"the session's neural world has malformed kinematics ({e})") from None
        try:
            noise = desc.get("context_noise")
            noise = None if noise is None else checks.number(noise, "the neural world's context_noise", 0.0, 1.0)
            K = _user_frame_intrinsics(desc.get("user_frame_K"))
            eye = desc.get("user_eye_height")
            eye = None if eye is None else checks.number(eye, "the neural world's user_eye_height",
                                                          *PROCEDURAL_RANGES["eye_height"])
            truth = checks.boolean(desc.get("simulator_is_truth", False), "the neural world's simulator_is_truth")
        except checks.CheckError as e:
            raise WeightsError(f"the session's neural world is malformed ({e})") from None
        made_with = desc.get("weights_sha256")
        if made_with is not None and not isinstance(made_with, str):
            raise WeightsError("the session's neural world is malformed (weights_sha256 must be a string)")
        try:
            world = cls(desc.get("weights") or SHIPPED_WEIGHTS, seed=int(desc.get("seed", 0)), kinematics=kinematics,
                        context_noise=noise)
        except WeightsError as e:  # a weights folder moved or removed since: say how to go on
            raise WeightsError(f"{e}; put the weights back there, or go on from the session with others "
                               "(launch.py run --start-from SESSION --world neural:FOLDER)") from None
        if made_with is not None and made_with != world.weights_sha256:
            shipped = not desc.get("weights")
            where = "the shipped weights" if shipped else world.weights
            raise WeightsError(
                f"{where} are not the weights the session was made with (sha256 {world.weights_sha256[:12]}, the "
                f"session's {made_with[:12]}): put those weights back, or go on from the session with these "
                f"(launch.py run --start-from SESSION --world neural{'' if shipped else ':' + world.weights})")
        if K is not None:  # its frames (in the session) came from a user's first frame, with these intrinsics
            world.from_user_frame, world.K, world.user_eye_height, world.simulator_is_truth = True, K, eye, truth
        return world

    def describe(self) -> dict:
        weights = "" if Path(self.weights).resolve() == SHIPPED_WEIGHTS.resolve() else self.weights
        desc = {"kind": "neural", "weights": weights, "weights_sha256": self.weights_sha256, "seed": self.seed,
                "context_noise": self.context_noise,
                "kinematics": {"step_m": self.kinematics.step_m, "yaw_deg": self.kinematics.yaw_deg}}
        if self.from_user_frame:
            desc["user_frame_K"] = self.K.tolist()
            if self.user_eye_height is not None:
                desc["user_eye_height"] = self.user_eye_height
            if self.simulator_is_truth:
                desc["simulator_is_truth"] = True
        return desc

    # ------------------------------------------------------------------ WorldModel
    def reset(self, seed: int, start: np.ndarray | None = None) -> Frame:
        """Frame 0: ``first_frame`` (resized to the model's size, :meth:`adopt`) when given, else the simulator's
        view. ValueError when the first frame has no valid depth (the model needs its geometry)."""
        self.seed = int(seed)
        self._last_sources = None
        self.from_user_frame = self.first_frame is not None
        if self.first_frame is None:
            self.K = self.simulator.K.copy()
            return self.simulator.reset(self.seed, start)
        first = self.adopt(self.first_frame)
        if not valid_depth_mask(first.depth).any():
            raise ValueError("the first frame has no valid depth (all 0, NaN or inf) and no points; the learned "
                             "model needs its geometry: pick a frame with depth")
        self.K = first.K.copy()
        c2w = np.asarray(start if start is not None else first.c2w, np.float64)
        return Frame(0, first.rgb, first.depth, self.K.copy(), c2w, None, zero_depth_is_sky=first.zero_depth_is_sky)

    def adopt(self, frame: Frame) -> Frame:
        """``frame`` (any world's or recording's) at the model's frame size: the centre cut to the model's aspect
        ratio (a 640x480 recording loses 80 columns each side rather than being squeezed: pixels stay as square
        as they were), then RGB resized (averaged when it shrinks), depth and confidence resized (nearest pixel),
        K shifted and scaled to match; pose, index, action and the meaning of depth 0 kept. A point-cloud frame's
        missing depth is rendered from its points (which are then dropped: the depth holds them). Used for the
        first frame and for the frames a learned world is handed before it (``Scene.reset(prelude=)``)."""
        depth = frame.depth
        if frame.world_points is not None and len(frame.world_points):  # a point-cloud frame: depth may be all 0
            depth = np.where(valid_depth_mask(depth), depth,
                             points_to_depth(frame.world_points, frame.K, frame.c2w, frame.width, frame.height))
        (x0, y0, width, height) = centre_crop(frame.width, frame.height, self.width / self.height)
        window = (slice(y0, y0 + height), slice(x0, x0 + width))
        rgb = tensor_to_image(_shrink_image(image_to_tensor(frame.rgb[window]), self.height, self.width)[0])
        depth = _resize(depth_to_tensor(depth[window]), self.height, self.width)[0, 0].numpy()
        confidence = (None if frame.confidence is None else
                      _resize(torch.from_numpy(np.asarray(frame.confidence, np.float32)[window])[None, None],
                              self.height, self.width)[0, 0].numpy())
        K = np.array(frame.K, np.float64)
        K[0, 2], K[1, 2] = K[0, 2] - x0, K[1, 2] - y0
        K = resize_intrinsics(K, width, height, self.width, self.height)
        return Frame(frame.index, rgb, depth, K, np.asarray(frame.c2w, np.float64).copy(), frame.action,
                     confidence=confidence, zero_depth_is_sky=frame.zero_depth_is_sky)

    @property
    def walker_eye_height(self) -> float | None:
        """Metres the camera rides above the ground (a WalkingWorld): the simulator's eye height when its view
        started the world; for a user's first frame the height its camera was held at, when known (a walker's:
        ``eye_height``), else None (a recording's camera is held at a height nobody told us)."""
        return self.user_eye_height if self.from_user_frame else float(self.simulator.config.eye_height)

    def predict_c2w(self, last: Frame, action: Action | TargetPose) -> np.ndarray:
        """:meth:`predict_c2w_on_ground` with no map to ride (the pose head's residual alone)."""
        return self.predict_c2w_on_ground(last, action, None)

    @torch.no_grad()
    def predict_c2w_on_ground(self, last: Frame, action: Action | TargetPose,
                              ground: GroundProbe | None) -> np.ndarray:
        """Target pose: a TargetPose as given; an action's kinematics riding the ground the map's observed
        frames show (:func:`ride_ground`, when the world knows its :attr:`walker_eye_height`; else the pose
        head's learned residual), staying in place when that would walk into a surface of the last frame
        (:func:`blocked_by_own_view`) or of the observed frames' map (:func:`blocked_by_map`)."""
        if isinstance(action, TargetPose):
            return np.asarray(action.c2w, np.float64).copy()
        if not isinstance(action, Action):
            raise TypeError(f"NeuralWorld expects an Action or TargetPose, got {type(action).__name__}")
        kin = self.kinematics.apply(last.c2w, action)
        c_last = torch.from_numpy(np.asarray(last.c2w, np.float64))[None]
        c_kin = torch.from_numpy(kin)[None]
        motion = torch.cat([relative_motion(c_last, c_kin, self.config["step_m"]).float(), torch.zeros(1, 1)], 1)
        depth = _resize(depth_to_tensor(last.depth), self.height, self.width)
        resid = self.net.pose(pose_head_input(depth), motion)[0].double()
        out = kin.copy()
        out[:3, 3] += (heading_frame(c_last)[0] @ resid).numpy()
        if ground is not None and self.walker_eye_height is not None:
            out[1, 3] = ride_ground(ground, last.c2w[:3, 3], out[:3, 3], self.walker_eye_height)
        if blocked_by_own_view(last, out[:3, 3]) or (ground is not None and blocked_by_map(ground, out[:3, 3])):
            out[:3, 3] = last.c2w[:3, 3]  # walking into what it sees or saw: turn in place, as the simulator
        return out

    @torch.no_grad()
    def step(self, action: Action | TargetPose, context: Context) -> Frame:
        last, cache = context.last, context.cache
        target = self.target_c2w(action, context)
        h, w = self.height, self.width
        if cache is not None:
            cache_rgb = _resize(image_to_tensor(cache.rgb), h, w)
            cache_depth = _resize(depth_to_tensor(np.where(cache.valid, cache.depth, 0)), h, w)
            far_rgb = _resize(image_to_tensor(cache.far_rgb), h, w) if cache.far_rgb is not None else torch.zeros(1, 3, h, w)
            far_valid = (_resize(torch.from_numpy(cache.far_valid.astype(np.float32))[None, None], h, w)
                         if cache.far_valid is not None else torch.zeros(1, 1, h, w))
        else:
            cache_rgb, cache_depth = torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w)
            far_rgb, far_valid = torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w)
        # the last frame's camera (the Scene rendered the cache with it): a fork from a frame handed to this world
        # (Scene.reset(prelude=)) goes on with that frame's intrinsics
        K_last = resize_intrinsics(last.K, last.width, last.height, w, h)
        K = torch.from_numpy(K_last.astype(np.float32))[None]
        x, motion, sources = build_inputs(
            _resize(image_to_tensor(last.rgb), h, w), _resize(depth_to_tensor(last.depth), h, w), K,
            torch.from_numpy(np.asarray(last.c2w, np.float64))[None], torch.from_numpy(target)[None],
            cache_rgb, cache_depth, far_rgb, far_valid, torch.full((1,), self.context_noise),
            step_scale=self.config["step_m"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            raw = self.frame_net(x.contiguous(memory_format=torch.channels_last), motion)
        out = compose(raw.float(), sources)
        rgb = tensor_to_image(out["rgb"][0])
        depth = output_depth(out)[0, 0].numpy().astype(np.float32)
        conf = out["conf"][0, 0].numpy().astype(np.float32)
        conf[depth_edge_mask(depth, DEPTH_EDGE_LOG_JUMP)] = 0.0
        sources = rearrange(out["weights"][0], "s h w -> h w s").numpy().astype(np.float32)
        if cache is not None and cache.observed is not None:  # what was observed is shown as observed
            observed = torch.from_numpy(cache.observed.astype(np.float32))[None, None]
            observed = _resize(observed, h, w)[0, 0].numpy() > 0.5
            rgb[observed] = tensor_to_image(cache_rgb[0])[observed]
            depth[observed] = cache_depth[0, 0].numpy()[observed]
            conf[observed] = 0.0  # already in the map, from the observed frame
            sources[observed] = (0.0, 0.0, 1.0)
        self._last_sources = sources
        return Frame(last.index + 1, rgb, depth, K_last, target, action, confidence=conf,
                     zero_depth_is_sky=True)  # depth 0 where the sky head says there is no surface

    def last_pixel_sources(self) -> np.ndarray | None:
        """(H, W, 3) shares of each pixel of the last frame made (a PixelSourceWorld): generated, the warped
        previous frame, the cache render of the map (the blend weights; observed surfaces: the map)."""
        return self._last_sources

    def reference_view(self, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The simulator's (rgb, depth) at ``c2w`` with this world's intrinsics, for side-by-side comparison;
        None when the simulator is not what the frames show (a user's first frame from a recording, a session
        or another world has no ground truth; one handed over from the simulator's own world has it)."""
        if (self.from_user_frame and not self.simulator_is_truth) or not np.isfinite(np.asarray(c2w)).all():
            return None
        return self.simulator.render(np.asarray(c2w, np.float64), self.K, self.width, self.height)


def _file_sha256(path: Path) -> str:
    """sha256 hex digest of a file (the weights: 12 MB, ~20 ms)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _stored_as_fp16(path: Path) -> bool:
    """Whether a weights file holds fp16 tensors (its header only; the loader checked the file already)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


def _renders_like(world: BaseWorldModel | None, simulator) -> bool:
    """True when ``world`` shows what ``simulator`` (a ProceduralWorld) renders: the procedural world of the
    same seed and terrain, or a learned world whose ground truth is such a simulator."""
    from worldmodel.procedural import ProceduralWorld

    if isinstance(world, NeuralWorld):
        has_truth = not world.from_user_frame or world.simulator_is_truth
        return has_truth and world.simulator.shows_the_same_world_as(simulator)
    return isinstance(world, ProceduralWorld) and world.shows_the_same_world_as(simulator)


def check_size(world: NeuralWorld, width: int, height: int) -> None:
    """Raise WeightsError when a requested frame size is not the one the model makes."""
    if (int(width), int(height)) != (world.width, world.height):
        raise WeightsError(f"the learned model makes {world.width}x{world.height} frames; use --size "
                           f"{world.width} {world.height} (or train a model at {width}x{height})")


__all__ = ["NeuralWorld", "SHIPPED_WEIGHTS", "WeightsError", "check_size"]
