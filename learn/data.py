"""Training data for the learned world model, made from the procedural world (exact RGB, depth and pose).

A *walk* is one seeded episode driven through the real engine (a :class:`scenes.scene.Scene` with the
geometric memory), so the cache renders the model learns from are exactly the ones it gets live. Walk kinds:

- ``loop``: out along a wandering path, turn round, and come back along it (A -> B -> A), looking the other
  way: the return half sees the far side of what the way out passed (it walks back over the wandering path's
  poses, not over the turn's: walks made before :data:`WALKS_VERSION` 2 spun in place for the turn's steps
  again, and came back a third of the way);
- ``retrace``: out along a wandering path (with turns), then back along the same poses with the same headings
  (stepping backwards, turns undone): every return frame revisits a view of the way out, its cache built from
  frames far older than any recent-frame context — where memory matters most;
- ``wander``: DeepVerse actions with persistent turns;
- ``continuous``: target poses (yaw, pitch, sideways and vertical moves), as when steering by the viewer camera.

Each walk is written as one safetensors shard (``walk-SEED.safetensors``), T = steps + 1 rows:
``rgb`` (T, H, W, 3) uint8, ``depth`` (T, H, W) float16 z-depth, ``c2w`` (T, 4, 4) float64 (true poses),
``kin_c2w`` (T, 4, 4) float64 (the commanded, kinematic pose of each step; row 0 = c2w[0]),
``is_action`` (T,) uint8 (1 where a discrete action made the step: only those have a pose-residual label),
``cache_rgb`` / ``cache_depth`` (T, H, W, ...) the fused map rendered at the true target pose before the frame
was fused (row 0 empty), ``far_rgb`` / ``far_valid`` the far-field panorama seen from there, ``K`` (3, 3).
Shards are written to a temporary name and renamed (:func:`scenes.atomic.replacing`), so an interrupted run
leaves only whole shards. Their metadata holds ``seed``, ``kind``, ``return_from`` and ``walks_version``
(:data:`WALKS_VERSION`; absent = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from scenes.atomic import replacing
from worldmodel.actions import Action, Kinematics, TargetPose, yaw_rotation

SHARD_KEYS = ("rgb", "depth", "c2w", "kin_c2w", "is_action", "cache_rgb", "cache_depth", "far_rgb", "far_valid", "K")
WALK_KINDS = ("loop", "retrace", "loop", "wander", "continuous", "retrace")
# How walks are made; a shard records the version that made it. Bumped when a kind's walks change: shards of that
# kind made before (STALE_BEFORE) are refused, not reused (2: a loop's return walks back over its way out).
WALKS_VERSION = 2
STALE_BEFORE = {"loop": 2}


@dataclass
class WalkSpec:
    seed: int
    kind: str
    steps: int = 80
    size: int = 128


def _wander_actions(rng: np.random.Generator, n: int, forward_share: float = 0.6) -> list[Action]:
    """Seeded DeepVerse actions; turns persist for a while so the path bends instead of jittering."""
    out, turn = [], "N"
    others = ["fL", "fR", "L", "R", "S", "B"]
    for _ in range(n):
        if rng.random() < 0.2:
            turn = str(rng.choice(["N", "N", "L", "R"]))
        move = "F" if rng.random() < forward_share else str(rng.choice(others))
        out.append(Action(move, turn))
    return out


def _pitched(c2w: np.ndarray, pitch_rad: float) -> np.ndarray:
    """c2w turned about its own x axis (positive = look up: the OpenCV camera's y axis points down)."""
    c, s = math.cos(pitch_rad), math.sin(pitch_rad)
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    out = c2w.copy()
    out[:3, :3] = c2w[:3, :3] @ rx
    return out


class Pilot:
    """Chooses each step's action for a walk of a given kind (stateful; needs the current pose)."""

    def __init__(self, spec: WalkSpec, kinematics: Kinematics):
        self.spec, self.kin = spec, kinematics
        self.rng = np.random.default_rng(spec.seed + 7919)
        steps = spec.steps
        if spec.kind == "loop":
            turn_steps = int(round(180.0 / kinematics.yaw_deg))
            out = max(4, (steps - turn_steps) // 2)
            self.plan: list = _wander_actions(self.rng, out, 0.8) + [Action("S", "L")] * turn_steps
            self.return_from = len(self.plan)
            # the return comes back over the wandering path's poses, not over the turn's (a turn in place again)
            self.outbound = out
        elif spec.kind == "retrace":
            self.plan = _wander_actions(self.rng, max(4, steps // 2), 0.8)
            self.return_from = self.outbound = len(self.plan)
        elif spec.kind == "wander":
            self.plan = _wander_actions(self.rng, steps)
            self.return_from = self.outbound = steps
        else:
            self.plan = []
            self.return_from = self.outbound = steps
        self.out_poses: list[np.ndarray] = []  # the poses of the way out the return aims at, in reverse order
        self.pitch = 0.0

    def next(self, t: int, c2w: np.ndarray) -> Action | TargetPose:
        """The action of step ``t`` (0-based) from the camera at ``c2w``."""
        if self.spec.kind == "continuous":
            return self._continuous(c2w)
        if t < len(self.plan):
            if t < self.outbound:
                self.out_poses.append(c2w.copy())
            return self.plan[t]
        # come back: aim at the outbound poses in reverse order (a loop turned round, a retrace as they were)
        k = len(self.out_poses) - 1 - (t - self.return_from)
        if k < 0:
            return Action("S", str(self.rng.choice(["L", "R"])))
        goal = self.out_poses[k].copy()
        if self.spec.kind == "loop":
            goal[:3, :3] = yaw_rotation(math.pi) @ goal[:3, :3]
        return self.kin.nearest_action(c2w, goal)

    def _continuous(self, c2w: np.ndarray) -> TargetPose:
        rng = self.rng
        out = c2w.copy()
        level = c2w.copy()
        level[:3, :3] = _pitched(c2w, -self.pitch)[:3, :3]  # undo pitch, move in the heading frame
        fwd, left = level[:3, 2].copy(), -level[:3, 0].copy()
        fwd[1] = 0
        fwd /= max(np.linalg.norm(fwd), 1e-9)
        move = rng.normal([0.35, 0.0, 0.0], [0.2, 0.05, 0.15])
        out[:3, 3] = c2w[:3, 3] + move[0] * fwd + move[1] * np.array([0, 1.0, 0]) + move[2] * left
        yaw = math.radians(rng.normal(0.0, 6.0))
        new_pitch = float(np.clip(self.pitch + math.radians(rng.normal(0.0, 3.0)), -0.35, 0.35))
        rot = yaw_rotation(yaw) @ level[:3, :3]
        out[:3, :3] = rot
        out = _pitched(out, new_pitch)
        self.pitch = new_pitch
        return TargetPose(out)


def walk_start(world, seed: int) -> np.ndarray:
    """(4, 4) c2w where walk ``seed`` starts: the world's spawn pose turned to a seeded random heading."""
    start = world.spawn_pose()
    start[:3, :3] = yaw_rotation(np.random.default_rng(seed).uniform(0, 2 * math.pi)) @ start[:3, :3]
    return start


def generate_walk(spec: WalkSpec, path: Path) -> Path:
    """Run one walk through a Scene with memory and write its shard to ``path`` (see the module docstring)."""
    from memory.bank import GeometricMemory, MemoryConfig
    from scenes.scene import Scene, SceneConfig
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    kin = Kinematics()
    world = ProceduralWorld(ProceduralConfig(width=spec.size, height=spec.size, kinematics=kin), seed=spec.seed)
    scene = Scene(world, SceneConfig(memory_k=4, carve=False), memory=GeometricMemory(MemoryConfig()))
    frame = scene.reset(spec.seed, walk_start(world, spec.seed))
    pilot = Pilot(spec, kin)
    n, s = spec.steps + 1, spec.size
    rows = {"rgb": np.zeros((n, s, s, 3), np.uint8), "depth": np.zeros((n, s, s), np.float16),
            "c2w": np.zeros((n, 4, 4)), "kin_c2w": np.zeros((n, 4, 4)), "is_action": np.zeros(n, np.uint8),
            "cache_rgb": np.zeros((n, s, s, 3), np.uint8), "cache_depth": np.zeros((n, s, s), np.float16),
            "far_rgb": np.zeros((n, s, s, 3), np.uint8), "far_valid": np.zeros((n, s, s), np.uint8)}

    def record(t: int, f) -> None:
        rows["rgb"][t], rows["depth"][t], rows["c2w"][t] = f.rgb, np.minimum(f.depth, 6e4), f.c2w

    record(0, frame)
    rows["kin_c2w"][0] = frame.c2w
    try:
        for t in range(1, n):
            last = scene.current
            action = pilot.next(t - 1, last.c2w)
            result = scene.step(action)
            cache = result.cache
            record(t, result.frame)
            is_action = isinstance(action, Action)
            rows["kin_c2w"][t] = kin.apply(last.c2w, action) if is_action else result.frame.c2w
            rows["is_action"][t] = is_action
            if cache is not None and (cache.width, cache.height) == (s, s):
                rows["cache_rgb"][t], rows["cache_depth"][t] = cache.rgb, cache.depth
                rows["far_rgb"][t], rows["far_valid"][t] = cache.far_rgb, cache.far_valid
    finally:
        scene.close()
    rows["K"] = frame.K.astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in rows.items()}, str(tmp),
                  metadata={"seed": str(spec.seed), "kind": spec.kind, "return_from": str(pilot.return_from),
                            "walks_version": str(WALKS_VERSION)})
    return path


def shard_path(folder: str | Path, seed: int) -> Path:
    """Where the shard of walk ``seed`` lives in ``folder``."""
    return Path(folder) / f"walk-{int(seed):06d}.safetensors"


def walk_specs(seeds: range | list[int], steps: int = 80, size: int = 128) -> list[WalkSpec]:
    """One walk per seed; the kind cycles through :data:`WALK_KINDS` (mostly loops)."""
    return [WalkSpec(int(sd), WALK_KINDS[int(sd) % len(WALK_KINDS)], steps, size) for sd in seeds]


def _generate_one(args: tuple[WalkSpec, str]) -> str:
    spec, folder = args
    return str(generate_walk(spec, shard_path(folder, spec.seed)))


def check_shards_fit(folder: str | Path, seeds: range | list[int], steps: int, size: int) -> None:
    """ValueError (one line naming the folder) when a shard ``folder`` already holds for one of ``seeds`` was made
    with another walk length or frame size than ``steps`` and ``size``, or by an older way of making walks of its
    kind (:data:`STALE_BEFORE`): it would be reused as it is. Reads the shards' headers only."""
    from safetensors import safe_open

    for seed in seeds:
        path = shard_path(folder, seed)
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="numpy") as f:
                shape = tuple(f.get_slice("rgb").get_shape())
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"{path} is not a readable walk shard ({str(e)[:60]}); delete it and run again") from None
        kind, version = meta.get("kind"), meta.get("walks_version", "1")
        if kind in STALE_BEFORE and (not version.isdigit() or int(version) < STALE_BEFORE[kind]):
            raise ValueError(f"{folder} holds {kind} walks made by an older version of the walks ({path.name}: their "
                             "return turned in place again instead of coming back); delete its walk shards (or "
                             "pass another --data folder) and run again")
        if shape[:3] != (steps + 1, size, size):
            raise ValueError(f"{folder} holds walks of {shape[0] - 1} steps at {shape[2]}x{shape[1]} (e.g. "
                             f"{path.name}), made by another run; this one asks for {steps} steps at {size}x{size}: "
                             f"train on them with --walk-steps {shape[0] - 1} (as that run did), or pass another "
                             "--data folder, or delete those shards")


def generate_shards(folder: str | Path, seeds: range | list[int], steps: int = 80, size: int = 128,
                    workers: int = 1, progress: bool = True) -> list[Path]:
    """Make the shards of ``seeds`` that ``folder`` does not hold yet (parallel processes); returns all paths.
    Shards it holds of another walk length or size are refused (:func:`check_shards_fit`), not reused."""
    check_shards_fit(folder, seeds, steps, size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = walk_specs(seeds, steps, size)
    todo = [sp for sp in specs if not shard_path(folder, sp.seed).exists()]
    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="walks", unit="walk", disable=not progress)
        if workers <= 1:
            for sp in todo:
                _generate_one((sp, str(folder)))
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_generate_one, [(sp, str(folder)) for sp in todo]):
                    bar.update()
        bar.close()
    return [shard_path(folder, sp.seed) for sp in specs]


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Read one shard; a file that is not a complete shard raises ValueError naming it."""
    try:
        data = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable training shard ({e}); delete it and run again") from None
    missing = [k for k in SHARD_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: training shard lacks {missing}; delete it and run again")
    return data
