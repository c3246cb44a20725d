"""Geometry-aware memory: retrieval against ray-cast co-visibility, cache renders, robustness, Scene integration.

Ground truth comes from the procedural world: ``render_hits`` gives, for every pixel, the exact surface
point and triangle, so whether a past keyframe saw what the target camera sees is known exactly.
Run with ``pytest -s`` to see the recall table.
"""

from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from memory import GeometricMemory, MemoryConfig, agreement, render_cache
from memory.cache import render_map_cache
from memory.grid import Frustum, MapGrid
from worldmodel.camera import intrinsics_from_fov, invert_pose, look_at_c2w
from recon.pointmap import VoxelPointMap
from scenes.scene import Scene, SceneConfig
from scenes.session import load_session, save_session
from worldmodel.actions import Action, parse_actions
from worldmodel.frame import BaseWorldModel, CacheView, Context, Frame
from worldmodel.procedural import ProceduralConfig, ProceduralWorld
from worldmodel.registry import create_world

W, H = 128, 96
OUT, TURN, BACK = 10, 18, 20
# walk away, turn round (18 x 10 degrees), walk back past the start, turn round again, walk out again
RETURN_WALK = "(FN)" * OUT + "(SL)" * TURN + "(FN)" * BACK + "(SL)" * TURN + "(FN)" * 12
RULES = ("ours", "deepverse", "worldmem")
K_RETRIEVE = 4
GT_W, GT_H = 64, 48
RELEVANT = 0.3  # a keyframe "really sees the same surface" when it sees >= 30 % of the target's pixels


def walk(world: ProceduralWorld, actions: str) -> list[Frame]:
    frames = [world.reset(world.seed)]
    for a in parse_actions(actions):
        frames.append(world.step(a, Context(recent=frames[-4:])))
    return frames


@pytest.fixture(scope="module")
def return_walk():
    """Frames of the return walk, the three memories' picks at every target after the first turn, and
    ground-truth ray casts (64x48) of every frame."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    frames = walk(world, RETURN_WALK)
    Kg = intrinsics_from_fov(GT_W, GT_H, world.config.fov_y_deg)
    hits = [world.render_hits(f.c2w, Kg, GT_W, GT_H) for f in frames]
    memories = {r: GeometricMemory(MemoryConfig(retrieval_rule=r)) for r in RULES}
    pmap = VoxelPointMap(0.1, 60.0)
    picks = []  # (target t, bank fids, eligible mask, {rule: bank indices})
    for t, f in enumerate(frames):
        if t > OUT + TURN:
            m = memories["ours"]
            picks.append((t, m.fids.copy(), m.eligible(),
                          {r: mem.retrieve(f.c2w, f.K, W, H, pmap, K_RETRIEVE)[0] for r, mem in memories.items()}))
        fused = pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
        for mem in memories.values():
            mem.observe(f, t, fused, pmap)
    return {"world": world, "frames": frames, "hits": hits, "Kg": Kg, "picks": picks, "memories": memories,
            "map": pmap}


def covisible_pixels(hits: list[dict], Kg: np.ndarray, frames: list[Frame], target: int, source: int) -> np.ndarray:
    """(P,) bool over the target's surface pixels: does camera ``source`` see that very surface point?

    The target pixel's exact hit point is projected into the source camera; it is co-visible when the
    source's own ray through that pixel hits the same triangle or a point at the same depth (not occluded).
    """
    ht, hs = hits[target], hits[source]
    valid = ht["depth"] > 0
    pts = ht["points"][valid].astype(np.float64)
    tri_t = (ht["geometry_ids"][valid].astype(np.int64) << 32) | ht["primitive_ids"][valid]
    w2c = invert_pose(frames[source].c2w)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(Kg[0, 0] * cam[:, 0] / z + Kg[0, 2])
        v = np.rint(Kg[1, 1] * cam[:, 1] / z + Kg[1, 2])
    inside = (z > 0) & (u >= 0) & (u < GT_W) & (v >= 0) & (v < GT_H)
    ui, vi = u[inside].astype(int), v[inside].astype(int)
    tri_s = (hs["geometry_ids"][vi, ui].astype(np.int64) << 32) | hs["primitive_ids"][vi, ui]
    ds = hs["depth"][vi, ui]
    out = np.zeros(len(pts), bool)
    out[inside] = (ds > 0) & ((tri_s == tri_t[inside]) | (np.abs(ds - z[inside]) < 0.03 * z[inside] + 0.05))
    return out


def test_walk_back_retrieval_recall(return_walk):
    frames, hits, Kg = return_walk["frames"], return_walk["hits"], return_walk["Kg"]
    recall = {r: [] for r in RULES}
    cover = {r: [] for r in RULES}
    for t, fids, eligible, picked in return_walk["picks"]:
        masks = np.array([covisible_pixels(hits, Kg, frames, t, int(fid)) for fid in fids])  # (N, P)
        share = np.where(eligible, masks.mean(axis=1), -1.0)
        relevant = set(np.flatnonzero(share >= RELEVANT).tolist())
        for rule, idx in picked.items():
            assert len(idx) <= K_RETRIEVE and len(set(idx.tolist())) == len(idx)
            assert eligible[idx].all(), f"{rule} returned a keyframe from the recent context window"
            cover[rule].append(masks[idx].any(axis=0).mean() if len(idx) else 0.0)
            if relevant:
                recall[rule].append(len(relevant & set(idx.tolist())) / min(K_RETRIEVE, len(relevant)))
    n = len(recall["ours"])
    print(f"\nwalk away and turn back ({len(return_walk['picks'])} targets, {n} with a keyframe that sees "
          f">= {RELEVANT:.0%} of the view; bank {len(return_walk['memories']['ours'])} keyframes)")
    print(f"{'rule':<10} {'recall@' + str(K_RETRIEVE):>9} {'gt coverage':>12}")
    for rule in RULES:
        print(f"{rule:<10} {np.mean(recall[rule]):>9.3f} {np.mean(cover[rule]):>12.3f}")
    assert n >= 20
    assert np.mean(recall["ours"]) > np.mean(recall["deepverse"])
    assert np.mean(recall["ours"]) >= 0.8
    assert np.mean(cover["ours"]) >= np.mean(cover["deepverse"])


def test_scores_are_covisibility_shares(return_walk):
    mem, pmap, f = return_walk["memories"]["ours"], return_walk["map"], return_walk["frames"][-1]
    idx, scores = mem.retrieve(f.c2w, f.K, W, H, pmap, K_RETRIEVE)
    assert len(idx) == K_RETRIEVE and np.all((scores > 0) & (scores <= 1))
    # the best pick of a view identical to a keyframe's is that keyframe (or one that sees as much)
    key = len(mem) - 8
    idx, scores = mem.retrieve(mem.poses[key], f.K, W, H, pmap, 1)
    assert scores[0] >= 0.8


@pytest.fixture(scope="module")
def fine_map():
    """The outgoing leg fused at 3 cm (voxels about a pixel wide at these distances), to 40 m (beyond that
    the procedural world fogs colours by viewing distance, which no view-independent map can reproduce)."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    frames = walk(world, "(FN)" * OUT)
    pmap = VoxelPointMap(0.03, 40.0)
    for f in frames:
        pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    return frames, pmap


def test_cache_render_reproduces_a_keyframe(fine_map):
    frames, pmap = fine_map
    mem = GeometricMemory()
    for i in (0, 5, 10):
        f = frames[i]
        cache = mem.render_cache(f.c2w, f.K, W, H, pmap)
        a = agreement(f.rgb, f.depth, cache)
        seen = (f.depth > 0) & (f.depth < 40.0)
        assert a["psnr_db"] >= 30.0, (i, a)
        assert a["depth_abs_err_m"] <= 0.03, (i, a)
        assert (cache.valid & seen).sum() / seen.sum() >= 0.95, i
        assert a["coverage"] >= 0.6, (i, a)
    # an area never seen has little coverage: the start, looking back
    back = frames[0].c2w.copy()
    back[:3, :3] = back[:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    assert mem.render_cache(back, frames[0].K, W, H, pmap).valid.mean() < 0.2


def test_render_cache_z_test_and_footprints():
    K = intrinsics_from_fov(64, 48, 60.0)
    c2w = np.eye(4)
    g = np.stack(np.meshgrid(np.arange(-4, 4, 0.05), np.arange(-3, 3, 0.05)), -1).reshape(-1, 2)
    wall = np.column_stack([g, np.full(len(g), 5.0)]).astype(np.float32)
    near = np.array([[0.0, 0.0, 2.0]], np.float32)
    pts = np.vstack([wall, near])
    cols = np.vstack([np.full((len(wall), 3), 50, np.uint8), [[200, 10, 10]]])
    sparse = render_cache(pts, cols, K, c2w, 64, 48)             # one pixel per point
    cubes = render_cache(pts, cols, K, c2w, 64, 48, point_size=0.05)
    assert cubes.valid.all() and np.allclose(cubes.depth[cubes.rgb[..., 0] == 50], 5.0, atol=1e-4)
    # the near cube hides the wall behind it, over its footprint (f * 0.05 / 2 ~ 1 pixel)
    hidden = cubes.rgb[..., 0] == 200
    assert 1 <= hidden.sum() <= 9 and np.allclose(cubes.depth[hidden], 2.0)
    assert sparse.rgb[24, 32, 0] == 200 or sparse.rgb[23, 31, 0] == 200
    # points behind the camera or beyond far are not drawn; nothing in, nothing out
    assert not render_cache(pts * [1, 1, -1], cols, K, c2w, 64, 48).valid.any()
    assert not render_cache(pts, cols, K, c2w, 64, 48, far=1.0).valid.any()
    empty = render_cache(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), K, c2w, 64, 48)
    assert empty.rgb.shape == (48, 64, 3) and not empty.valid.any()


def test_agreement_metrics():
    rgb = np.full((4, 5, 3), 100, np.uint8)
    depth = np.full((4, 5), 2.0, np.float32)
    cache = CacheView(rgb.copy(), depth + 0.1, np.zeros((4, 5), bool), np.eye(3), np.eye(4))
    a = agreement(rgb, depth, cache)
    assert math.isnan(a["psnr_db"]) and math.isnan(a["depth_abs_err_m"]) and a["coverage"] == 0.0
    cache.valid[:2] = True
    cache.rgb[0, 0] = 110
    a = agreement(rgb, depth, cache)
    assert a["coverage"] == 0.5 and a["depth_abs_err_m"] == pytest.approx(0.1, abs=1e-6)
    assert a["psnr_db"] == pytest.approx(10 * math.log10(255**2 / (100 / 10)), rel=1e-6)
    with pytest.raises(ValueError):
        agreement(rgb[:2], depth, cache)
    # a smaller cache of the same view is compared at its pixel centres
    big_rgb, big_depth = np.repeat(np.repeat(rgb, 2, 0), 2, 1), np.repeat(np.repeat(depth, 2, 0), 2, 1)
    assert agreement(big_rgb, big_depth, cache) == a


def test_agreement_samples_a_smaller_non_square_cache_at_the_frame_pixel_nearest_each_centre():
    """A cache 4x smaller in height and 8x in width is compared at its pixel centres: on a depth ramp (analytic:
    frame pixel (r, c) holds r or c), the nearest frame pixel to a cache centre is within half a pixel of it, so the
    error is 0.5 px, not the 1.5 px of the cell's corner pixel nor the rows' factor applied to columns."""
    h, w, ch, cw = 16, 24, 4, 3
    r, c = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.zeros((h, w, 3), np.uint8)
    centre_r, centre_c = (np.arange(ch) + 0.5) * h / ch - 0.5, (np.arange(cw) + 0.5) * w / cw - 0.5  # continuous
    for ramp, truth in ((1.0 + r, 1.0 + np.repeat(centre_r[:, None], cw, 1)),
                        (1.0 + c, 1.0 + np.repeat(centre_c[None, :], ch, 0))):
        cache = CacheView(np.zeros((ch, cw, 3), np.uint8), truth.astype(np.float32), np.ones((ch, cw), bool),
                          np.eye(3), np.eye(4))
        a = agreement(rgb, ramp, cache)
        assert a["depth_abs_err_m"] == pytest.approx(0.5, abs=1e-6) and a["coverage"] == 1.0


def test_agreement_depth_error_is_the_median_over_pixels_both_images_measured():
    """depth_abs_err_m leaves out frame pixels with no depth (0) and is a median: three unmeasured pixels and one
    10 m outlier among exact ones give 0, not the cache's depth nor the outlier's mean."""
    rgb = np.zeros((2, 4, 3), np.uint8)
    cache = CacheView(rgb.copy(), np.full((2, 4), 5.0, np.float32), np.ones((2, 4), bool), np.eye(3), np.eye(4))
    depth = np.full((2, 4), 5.0, np.float32)
    depth[0, :3] = 0.0          # not measured by the frame
    depth[1, 3] = 15.0          # one outlier among four measured pixels
    a = agreement(rgb, depth, cache)
    assert a["depth_abs_err_m"] == 0.0 and a["coverage"] == 1.0


def test_empty_tiny_bank_and_degenerate_poses(walk_frames):
    f0 = walk_frames[0]
    pmap = VoxelPointMap(0.1, 60.0)
    for rule in RULES:
        mem = GeometricMemory(MemoryConfig(retrieval_rule=rule, exclude_recent=0))
        idx, scores = mem.retrieve(f0.c2w, f0.K, f0.width, f0.height, pmap, 4)
        assert len(idx) == 0 and len(scores) == 0
        assert mem.build_context(f0.c2w, f0.K, f0.width, f0.height, pmap, 4) == ([], [], None)
        mem.observe(f0, 7, pmap.fuse(f0.depth, f0.rgb, f0.K, f0.c2w, f0.index), pmap)
        fids, scores, cache = mem.build_context(f0.c2w, f0.K, f0.width, f0.height, pmap, 4)
        assert fids == [7] and len(scores) == 1 and cache.valid.mean() > 0.5
        pmap = VoxelPointMap(0.1, 60.0)
    mem = GeometricMemory(MemoryConfig(exclude_recent=0))
    for i, f in enumerate(walk_frames[:6]):
        mem.observe(f, i, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index), pmap)
    mirrored = f0.c2w @ np.diag([-1.0, 1.0, 1.0, 1.0])  # a left-handed camera (a recording read wrongly): no pose
    bad = {"nan": np.full((4, 4), np.nan), "scaled": np.diag([2.0, 2.0, 2.0, 1.0]), "zeros": np.zeros((4, 4)),
           "mirrored": mirrored}
    for name, c2w in bad.items():
        for rule in RULES:
            idx, _ = mem.retrieve(c2w, f0.K, f0.width, f0.height, pmap, 4, rule=rule)
            assert len(idx) == 0, (name, rule)
        assert mem.build_context(c2w, f0.K, f0.width, f0.height, pmap, 4) == ([], [], None)
    for K, w, h in ((f0.K, 0, 10), (f0.K, 10, 0), (np.zeros((3, 3)), 10, 10), (np.full((3, 3), np.nan), 10, 10)):
        assert mem.build_context(f0.c2w, K, w, h, pmap, 4) == ([], [], None)
    # straight up and straight down are valid cameras: no crash, sensible output
    eye = f0.position
    for target in (eye + [0.0, 10.0, 0.0], eye - [0.0, 10.0, 0.0]):
        c2w = look_at_c2w(eye, target)
        for rule in RULES:
            idx, scores = mem.retrieve(c2w, f0.K, f0.width, f0.height, pmap, 4, rule=rule)
            assert len(idx) <= 4 and np.isfinite(scores).all()
        fids, scores, cache = mem.build_context(c2w, f0.K, f0.width, f0.height, pmap, 4)
        # rendered at most MemoryConfig.cache_max_side (128) on the long side, with its own intrinsics
        assert cache.rgb.shape == (96, 128, 3) and cache.valid.shape == (96, 128)
        assert cache.K[0, 0] == pytest.approx(f0.K[0, 0] * 128 / f0.width)
    ahead = eye + 6.0 * f0.forward  # the ground 6 m ahead of the start was seen by the first frames
    looking_down = mem.build_context(look_at_c2w(ahead, ahead - [0.0, 10.0, 0.0]), f0.K, f0.width, f0.height, pmap, 4)
    assert looking_down[2].valid.mean() > 0.5
    # a frame with a broken pose is ignored, not stored
    n = len(mem)
    broken = Frame(99, f0.rgb, f0.depth, f0.K, np.full((4, 4), np.nan))
    mem.observe(broken, 99, pmap.fuse(f0.depth, f0.rgb, f0.K, f0.c2w, 99), pmap)
    assert len(mem) == n
    with pytest.raises(ValueError):
        MemoryConfig(retrieval_rule="nearest")


def test_keyframe_policy_and_ram_bound(return_walk):
    mem, frames = return_walk["memories"]["ours"], return_walk["frames"]
    idx = mem.frame_indices.tolist()
    assert idx[0] == 0
    assert set(range(0, OUT + 1, 2)) <= set(idx) and 1 not in idx  # 0.5 m steps, 0.75 m threshold
    turn = [i for i in idx if OUT < i <= OUT + TURN]
    assert len(turn) == TURN // 2  # 10 degree turns, 15 degree threshold
    full = W * H * (3 + 4)
    assert mem.nbytes / len(mem) < 0.2 * full  # (as allocated: its arrays grow by doubling)
    rgb, depth = mem.thumbnail(0)
    assert rgb.shape == (H // 4, W // 4, 3) and depth.shape == (H // 4, W // 4)
    assert np.allclose(depth, frames[0].depth[2::4, 2::4], rtol=1e-3, atol=1e-2)
    assert not any(isinstance(v, Frame) for v in vars(mem).values())


def test_grid_incremental_equals_rebuild(return_walk):
    pmap = return_walk["map"]
    inc = return_walk["memories"]["ours"].grid
    inc.sync(pmap)
    inc._merge()
    fresh = MapGrid()
    fresh.sync(pmap)
    for name in ("keys", "rows", "level", "rep"):
        assert np.array_equal(getattr(inc, name), getattr(fresh, name)), name
    assert np.allclose(inc.xyz, fresh.xyz, atol=1e-5)
    # every row's representative is the first row of its 8^3 block and has level 0
    assert (fresh.level[fresh.rep] == 0).all() and (fresh.rep <= np.arange(len(fresh.rep))).all()


def test_state_dict_roundtrip_and_corruption(return_walk, tmp_path):
    mem = return_walk["memories"]["ours"]
    path = tmp_path / "memory.safetensors"
    save_file(mem.state_dict(), str(path))
    back = GeometricMemory()
    back.load_state_dict(load_file(str(path)))
    for key, value in mem.state_dict().items():
        assert np.array_equal(value, back.state_dict()[key]), key
    f, pmap = return_walk["frames"][-1], return_walk["map"]
    a, b = mem.retrieve(f.c2w, f.K, W, H, pmap, 4), back.retrieve(f.c2w, f.K, W, H, pmap, 4)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    empty = GeometricMemory()
    save_file(empty.state_dict(), str(path))
    empty.load_state_dict(load_file(str(path)))
    assert len(empty) == 0
    good = mem.state_dict()
    broken = [{k: v for k, v in good.items() if k != "rows"},
              {**good, "row_offsets": good["row_offsets"][::-1].copy()},
              {**good, "c2w": np.full_like(good["c2w"], np.nan)},
              {**good, "meta": np.array([99, 8, 4, 0, 0], np.int64)},
              {**good, "thumb_rgb": good["thumb_rgb"][:-1]},
              {**good, "fid": good["fid"].astype(np.float32)}]
    for state in broken:
        with pytest.raises(ValueError) as err:
            GeometricMemory().load_state_dict(state)
        assert "\n" not in str(err.value) and "memory state" in str(err.value)


class RecordingWorld(BaseWorldModel):
    """A procedural world that records the Context it is given (a learned model would consume it)."""

    name = "procedural"

    def __init__(self, world: ProceduralWorld):
        self.world, self.config, self.contexts = world, world.config, []

    def describe(self) -> dict:
        return self.world.describe()

    def reset(self, seed, start=None):
        return self.world.reset(seed, start)

    def step(self, action, context):
        self.contexts.append(context)
        return self.world.step(action, context)


def test_scene_passes_memory_and_cache_and_sessions_restore_it(tmp_path):
    model = RecordingWorld(ProceduralWorld(ProceduralConfig(width=96, height=72), seed=5))
    scene = Scene(model, SceneConfig(voxel_size=0.1, memory_k=3), memory=GeometricMemory())
    scene.reset(5)
    results = list(scene.steps(parse_actions("(FN)" * 6 + "(SL)" * 18 + "(FN)" * 4)))
    assert len(model.contexts) == len(results)
    with_memory = 0
    for r, ctx in zip(results, model.contexts):
        assert len(ctx.memory) == len(r.memory_fids) == len(r.memory_scores) <= 3
        for fid, frame in zip(r.memory_fids, ctx.memory):
            assert np.array_equal(frame.rgb, scene.store.get(fid).rgb) and frame.rgb.shape == (72, 96, 3)
            assert frame.index <= r.frame.index - 1 - scene.memory.config.exclude_recent
        assert ctx.memory_scores == r.memory_scores
        assert ctx.cache is not None and ctx.cache.rgb.shape == (72, 96, 3)
        assert ctx.cache.depth.dtype == np.float32 and ctx.cache.valid.dtype == bool
        with_memory += bool(ctx.memory)
    assert with_memory >= len(results) - 6
    # coming back round, the cache already knows most of what the new frame shows
    surface = (results[-1].frame.depth > 0) & (results[-1].frame.depth < scene.config.max_depth)
    assert (model.contexts[-1].cache.valid & surface).sum() / surface.sum() > 0.6
    assert results[-1].memory_ms > 0

    folder = save_session(scene, tmp_path / "s")
    loaded = load_session(folder, memory=GeometricMemory())
    for key, value in scene.memory.state_dict().items():
        assert np.array_equal(value, loaded.memory.state_dict()[key]), key
    last = scene.current
    target = look_at_c2w(last.position, last.position + [1.0, 0.0, 0.0])
    expect = scene.memory.build_context(target, last.K, 96, 72, scene.map, 3)
    got = loaded.memory.build_context(target, last.K, 96, 72, loaded.map, 3)
    assert expect[:2] == got[:2] and np.array_equal(expect[2].rgb, got[2].rgb)
    # a corrupt memory file is rebuilt from the frames, to the same bank
    (folder / "memory.safetensors").write_bytes(b"not a safetensors file")
    rebuilt = load_session(folder, memory=GeometricMemory())
    for key, value in scene.memory.state_dict().items():
        assert np.array_equal(value, rebuilt.memory.state_dict()[key]), key
    # stepping on from the loaded session keeps retrieving
    r = loaded.step(parse_actions("(FN)")[0])
    assert r.memory_fids and loaded.memory.last_timings["retrieve_ms"] > 0


def test_bench_section_is_registered():
    from memory.bench import bench_sections

    sections = bench_sections()
    assert set(sections) == {"memory"} and callable(sections["memory"])


def test_observed_surfaces_win_the_cache_over_generated_ones_and_persist():
    """A generated frame (it has a confidence) that puts a wrong wall 1.5 m in front of what the observed
    start frame saw: the cache at the start pose still shows the start frame (``observed`` marks it), the
    layer survives state_dict, and a world of observed frames only (more than the cap) drops it."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    start = world.reset(3)
    fake = Frame(1, np.full_like(start.rgb, 255), np.full_like(start.depth, 1.5), start.K, start.c2w,
                 confidence=np.ones_like(start.depth))
    memory, pmap = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0, carve=True)
    for fid, f in enumerate([start, fake]):
        memory.observe(f, fid, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index, f.confidence), pmap)
        _, _, cache = memory.build_context(start.c2w, start.K, W, H, pmap, 0)
        if fid == 0:  # nothing generated yet: the whole map is observation
            assert cache.observed is None
    surface = (start.depth > 0) & (start.depth < 60)
    # (the layer is fused densely: a few pixels at silhouettes and at the fuse range's edge may fill in)
    assert cache.observed[surface].mean() > 0.97 and cache.observed[~surface].sum() < 0.002 * surface.size
    shown = cache.observed & surface
    assert np.abs(cache.depth[shown] - start.depth[shown]).mean() < 0.05 * start.depth[shown].mean()
    assert np.abs(cache.rgb[shown].astype(int) - start.rgb[shown]).mean() < 12  # not the white wall
    without = VoxelPointMap(0.1, 60.0)  # the same two frames, no observed layer: the wall is all one sees
    for f in (start, fake):
        without.fuse(f.depth, f.rgb, f.K, f.c2w, f.index, f.confidence)
    plain = render_map_cache(without, MapGrid(), start.K, start.c2w, W, H)
    assert (plain.rgb[surface] == 255).all(axis=-1).mean() > 0.9

    restored = GeometricMemory(MemoryConfig())
    restored.load_state_dict(memory.state_dict())
    _, _, again = restored.build_context(start.c2w, start.K, W, H, pmap, 0)
    assert np.array_equal(again.observed, cache.observed) and np.array_equal(again.rgb, cache.rgb)
    state = memory.state_dict()
    state["observed_meta"] = np.array([-1, 0], np.int64)
    with pytest.raises(ValueError, match="observed_meta"):
        GeometricMemory(MemoryConfig()).load_state_dict(state)

    capped = GeometricMemory(MemoryConfig(observed_layer_frames=1))
    for fid, f in enumerate([start, start, fake]):  # two observed frames: more than the cap
        capped.observe(f, fid, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index, f.confidence), pmap)
    assert capped.build_context(start.c2w, start.K, W, H, pmap, 0)[2].observed is None


def test_the_memory_retrieves_the_frames_that_see_what_carving_left():
    """Every frame a keyframe: the start frame and the 9 shifted ones see the wall, frame 1 only the ghost in
    front of it, which carving removes. Seen from the start pose, a frame that saw the wall covers the most."""
    from tests.test_recon import ghost_wall_map

    memory = GeometricMemory(MemoryConfig(key_translation_m=0.0, exclude_recent=0))
    pmap, K, c2w = ghost_wall_map(True, on_frame=memory.observe)
    idx, scores = memory.retrieve(c2w, K, 64, 48, pmap, 3)
    assert memory.frame_indices[idx[0]] != 1 and scores[0] > 0.6, (memory.frame_indices[idx], scores)


def ghost_first_in_the_walls_block(ghost_z: float) -> tuple[VoxelPointMap, np.ndarray]:
    """A carving map (64x48 camera at the origin looking down +z): a ghost at ``ghost_z`` fused first, then 9
    shifted frames of a wall at 5.55 m that see through it. Returns (map, K)."""
    K = intrinsics_from_fov(64, 48, 60.0)
    rgb = np.full((48, 64, 3), 90, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.1, carve=True)
    pmap.fuse(np.full((48, 64), ghost_z, np.float32), rgb, K, np.eye(4), 0)  # the ghost first
    for i, (dx, dy) in enumerate([(dx, dy) for dx in (-0.1, 0.0, 0.1) for dy in (-0.1, 0.0, 0.1)], start=1):
        shifted = np.eye(4)
        shifted[:2, 3] = dx, dy
        pmap.fuse(np.full((48, 64), 5.55, np.float32), rgb, K, shifted, i)
    return pmap, K


@pytest.mark.parametrize("ghost_z", [4.95, 5.25])
def test_level_of_detail_draws_the_wall_behind_a_carved_representative(ghost_z):
    """With level of detail, a far block draws one representative voxel; where carving removed it (the ghost
    held it), the wall in the same block is still drawn, as without level of detail."""
    pmap, K = ghost_first_in_the_walls_block(ghost_z)
    for lod in (0.0, 4.0, 8.0, 30.0):
        cache = render_map_cache(pmap, MapGrid(), K, np.eye(4), 64, 48, lod_pixels=lod)
        assert cache.valid.mean() > 0.95 and np.abs(np.median(cache.depth[cache.valid]) - 5.55) < 0.1, lod


@pytest.mark.parametrize("ghost_z", [4.95, 5.25])
def test_retrieval_keeps_a_block_whose_first_voxel_was_carved(ghost_z):
    """A ghost fused first and a real wall behind it in the same 0.8 m block (z 4.8-5.6 m; at 5.25 also in the
    same 0.4 m sub-blocks): carving removes the ghost, which held the block's first voxel, and the block is still
    seen (the wall is in it), as the cache render shows the wall over the whole view."""
    from memory.retrieval import visible_blocks

    pmap, K = ghost_first_in_the_walls_block(ghost_z)
    grid = MapGrid()
    cache = render_map_cache(pmap, grid, K, np.eye(4), 64, 48)
    assert cache.valid.mean() > 0.95 and np.abs(np.median(cache.depth[cache.valid]) - 5.55) < 0.1
    rows, weights = visible_blocks(grid, K, np.eye(4), 64, 48, 60.0, pointmap=pmap)
    plain_rows, plain_weights = visible_blocks(grid, K, np.eye(4), 64, 48, 60.0)
    assert pmap.carved_mask(plain_rows).mean() > 0.5  # most blocks' first voxel is the carved ghost
    assert weights.sum() > 0.95 * plain_weights.sum() and set(rows) == set(plain_rows)


def test_observed_frames_are_saved_by_store_id_until_the_layer_is_used():
    """A world of observed frames never uses the observed layer, so a save (or a fork's undo copy) names its
    frames by store id instead of fusing them; restored with the store, the memory reads them only once a
    generated frame arrives and builds the same layer. A generated frame named as observed is left out of it."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    start = world.reset(3)
    fake = Frame(1, np.full_like(start.rgb, 255), np.full_like(start.depth, 1.5), start.K, start.c2w,
                 confidence=np.ones_like(start.depth))
    memory, pmap = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0, carve=True)
    memory.observe(start, 7, pmap.fuse(start.depth, start.rgb, start.K, start.c2w, 0), pmap)
    state = memory.state_dict()
    assert state["observed_pending_fid"].tolist() == [7]
    layer = VoxelPointMap.from_state_dict({k[len("observed."):]: v for k, v in state.items()
                                           if k.startswith("observed.")})
    assert len(layer) == 0  # nothing fused for the save

    reads = []
    restored, named_generated = GeometricMemory(MemoryConfig()), GeometricMemory(MemoryConfig())
    restored.load_state_dict(state, lambda fid: reads.append(fid) or {7: start}[fid])
    named_generated.load_state_dict(state, {7: fake}.__getitem__)
    assert reads == []  # nothing read to restore
    fused = pmap.fuse(fake.depth, fake.rgb, fake.K, fake.c2w, 1, fake.confidence)
    caches = []
    for m in (memory, restored, named_generated):
        m.observe(fake, 8, fused, pmap)
        caches.append(m.build_context(start.c2w, start.K, W, H, pmap, 0)[2])
    assert reads == [7] and caches[0].observed.mean() > 0.5
    assert np.array_equal(caches[0].observed, caches[1].observed) and np.array_equal(caches[0].rgb, caches[1].rgb)
    assert caches[2].observed is None  # the generated frame was not taken for an observation
    gone = GeometricMemory(MemoryConfig())  # a frame the store lost (or cannot read): the layer does without it
    gone.load_state_dict(state, {}.__getitem__)
    gone.observe(fake, 8, fused, pmap)
    assert gone.build_context(start.c2w, start.K, W, H, pmap, 0)[2].observed is None
    with pytest.raises(ValueError, match="no frame store"):
        GeometricMemory(MemoryConfig()).load_state_dict(state)
    for bad in ([7, 7], [-1]):
        with pytest.raises(ValueError, match="distinct int64 store ids"):
            GeometricMemory(MemoryConfig()).load_state_dict(
                {**state, "observed_pending_fid": np.array(bad, np.int64), "observed_meta": np.array([2, 0])},
                {7: start}.__getitem__)


def test_the_maps_ground_is_the_observed_ground_where_a_generated_frame_raised_it():
    """The start frame (observed) shows the terrain ahead; a generated frame then puts a floor 0.6 m above it
    over the same ground, and another where the start frame saw nothing: the memory's ground probe answers
    with the true terrain, and nothing where only the generated frame shows ground (the fused map itself has
    the floor there). Before any generated frame, the whole map is observed ground."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    start = world.reset(3)
    fwd = start.c2w[:3, 2] * [1, 0, 1]
    fwd /= np.linalg.norm(fwd)
    x, z = start.c2w[0, 3] + 5 * fwd[0], start.c2w[2, 3] + 5 * fwd[2]
    truth = float(world.terrain_height(x, z))
    memory, pmap = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0, carve=True)
    memory.observe(start, 0, pmap.fuse(start.depth, start.rgb, start.K, start.c2w, 0), pmap)
    floor = np.stack(np.meshgrid(np.arange(-1.0, 1.0, 0.05), np.arange(-1.0, 1.0, 0.05)), -1).reshape(-1, 2)
    raised = np.stack([x + floor[:, 0], np.full(len(floor), truth + 0.6), z + floor[:, 1]], 1)
    behind = raised - [10 * fwd[0], 0, 10 * fwd[2]]  # a place the start frame never saw
    generated = Frame(1, start.rgb, np.zeros_like(start.depth), start.K, start.c2w,
                      confidence=np.ones_like(start.depth),
                      world_points=np.concatenate([raised, behind]).astype(np.float32),
                      world_colors=np.full((2 * len(raised), 3), 90, np.uint8))
    memory.observe(generated, 1, pmap.fuse_points(generated.world_points, generated.world_colors, 1), pmap)
    eye = truth + 1.7
    ground = memory.ground(pmap)
    assert abs(ground.ground_height(x, z, eye - 3.2, eye - 0.7, 0.35) - truth) < 0.1
    bx, bz = behind[0, 0] + 1.0, behind[0, 2] + 1.0
    assert ground.ground_height(bx, bz, eye - 3.2, eye - 0.7, 0.35) is None
    assert abs(pmap.ground_height(bx, bz, eye - 3.2, eye - 0.7, 0.35) - (truth + 0.6)) < 0.1

    only_observed, pmap_observed = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0, carve=True)
    only_observed.observe(start, 0, pmap_observed.fuse(start.depth, start.rgb, start.K, start.c2w, 0), pmap_observed)
    observed = only_observed.ground(pmap_observed).ground_height(x, z, eye - 3.2, eye - 0.7, 0.35)
    assert abs(observed - truth) < 0.1


def test_a_handover_of_more_observed_frames_than_the_layer_takes_still_rides_their_ground():
    """More observed frames than MemoryConfig.observed_layer_frames (a learned world handed a long walk): the
    layer is dropped, so once a generated frame (a floor 0.6 m too high) was fused there was no ground at all
    and the camera rode none (eval, WorldMem's protocol: drift 3.7 %, 0.35 m off eye height). The map as it
    stood before the first generated frame is now kept for the ground: the true terrain under the raised
    floor, nothing where only the generated frame shows ground; it does not win the cache render; it survives
    state_dict. Without a ground query before the generated frame (a rebuilt map) there is none."""
    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    start = world.reset(3)
    fwd = start.c2w[:3, 2] * [1, 0, 1]
    fwd /= np.linalg.norm(fwd)
    x, z = start.c2w[0, 3] + 5 * fwd[0], start.c2w[2, 3] + 5 * fwd[2]
    truth, eye = float(world.terrain_height(x, z)), float(world.terrain_height(x, z)) + 1.7
    floor = np.stack(np.meshgrid(np.arange(-1.0, 1.0, 0.05), np.arange(-1.0, 1.0, 0.05)), -1).reshape(-1, 2)
    raised = np.stack([x + floor[:, 0], np.full(len(floor), truth + 0.6), z + floor[:, 1]], 1)
    behind = raised - [10 * fwd[0], 0, 10 * fwd[2]]
    generated = Frame(2, start.rgb, np.zeros_like(start.depth), start.K, start.c2w,
                      confidence=np.ones_like(start.depth),
                      world_points=np.concatenate([raised, behind]).astype(np.float32),
                      world_colors=np.full((2 * len(raised), 3), 90, np.uint8))
    grounds = {}
    for asked_before in (True, False):
        memory = GeometricMemory(MemoryConfig(observed_layer_frames=1))
        pmap = VoxelPointMap(0.1, 60.0, carve=True)
        for fid, f in enumerate([start, dataclasses.replace(start, index=1)]):  # two observed: more than 1
            memory.observe(f, fid, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index), pmap)
        if asked_before:  # the Scene asks for the ground before each step of a ground-following world
            assert abs(memory.ground(pmap).ground_height(x, z, eye - 3.2, eye - 0.7, 0.35) - truth) < 0.1
        memory.observe(generated, 2, pmap.fuse_points(generated.world_points, generated.world_colors, 2), pmap)
        grounds[asked_before] = memory.ground(pmap).ground_height(x, z, eye - 3.2, eye - 0.7, 0.35)
        if asked_before:
            bx, bz = behind[0, 0] + 1.0, behind[0, 2] + 1.0
            assert memory.ground(pmap).ground_height(bx, bz, eye - 3.2, eye - 0.7, 0.35) is None
            assert memory.build_context(start.c2w, start.K, W, H, pmap, 0)[2].observed is None  # no render win
            restored = GeometricMemory(MemoryConfig(observed_layer_frames=1))
            restored.load_state_dict(memory.state_dict())
            assert restored.ground(pmap).ground_height(x, z, eye - 3.2, eye - 0.7, 0.35) == grounds[True]
    assert abs(grounds[True] - truth) < 0.1 and grounds[False] is None


def test_the_cache_render_does_not_draw_what_carving_removed():
    """A ghost wall in front of the true one, then frames that see the true wall through it: the map carves the
    ghost away, so the cache render (what the model is handed) shows the wall at 5 m, as the viewer's points
    do; without carving the ghost stays in front. The same with the ghost's rows still pending in a grid that
    indexed the wall before (they are drawn from the grid's pending list, not its sorted arrays)."""
    from tests.test_recon import GHOST_Z, WALL_Z, ghost_wall_map

    centre = {}
    for carve in (False, True):
        for pending in (False, True):
            grid = MapGrid()
            pmap, K, c2w = ghost_wall_map(carve, after_wall=grid.sync if pending else None)
            cache = render_map_cache(pmap, grid, K, c2w, 64, 48)
            assert (len(grid.pending_rows) > 0) == pending
            inner = cache.depth[12:36, 16:48][cache.valid[12:36, 16:48]]
            assert inner.size > 0.9 * 24 * 32
            centre[carve, pending] = float(np.median(inner))
    assert all(abs(z - (WALL_Z if carve else GHOST_Z)) < 0.1 for (carve, _), z in centre.items()), centre


def test_retrieval_does_not_see_what_carving_removed():
    """The same ghost wall: the blocks retrieval counts as visible (the co-visibility it scores keyframes by) are
    mostly the real wall's once carving removed the ghost (before: none); without carving, the ghost's. The
    ghost's rim, which the shifted frames do not see through, stays: 13 % of the cache render, and a 0.8 m block
    holding any of it still counts whole (37 % of the blocks' pixels)."""
    from memory.retrieval import visible_blocks
    from recon.pointmap import voxel_coords_of_keys
    from tests.test_recon import GHOST_Z, WALL_Z, ghost_wall_map

    for carve in (False, True):
        for pending in (False, True):
            grid = MapGrid()
            pmap, K, c2w = ghost_wall_map(carve, after_wall=grid.sync if pending else None)
            grid.sync(pmap)
            rows, weights = visible_blocks(grid, K, c2w, 64, 48, 60.0, pointmap=pmap)
            assert len(rows) > 0 and weights.sum() > 0
            z = (voxel_coords_of_keys(pmap.keys[rows])[:, 2] + 0.5) * pmap.voxel_size
            expected = WALL_Z if carve else GHOST_Z
            share = weights[np.abs(z - expected) < 0.3].sum() / weights.sum()
            assert share > 0.5, (carve, pending, share, np.unique(np.round(z, 2)))


def test_a_world_of_observed_frames_never_pays_for_the_observed_layer(monkeypatch):
    """The observed layer is fused densely (costly) and only a world that mixes observed and generated frames
    uses it: a simulator walk never fuses it, not even to save it; a generated frame after observed ones has
    every observed frame fused once, when the cache render first needs the layer."""
    import memory.bank as bank

    fused = []
    real = bank.fuse_frame_dense
    monkeypatch.setattr(bank, "fuse_frame_dense", lambda layer, frame: fused.append(frame.index) or real(layer, frame))
    scene = Scene(create_world("procedural", width=W, height=H), SceneConfig(memory_k=2), memory=GeometricMemory())
    scene.reset(3)
    scene.run(parse_actions("(FN)(FL)(FN)"))
    assert fused == []
    state = scene.memory.state_dict()  # a save (or a fork's undo copy) names the frames, fuses none
    assert state["observed_pending_fid"].tolist() == [0, 1, 2, 3] and len(state["observed.keys"]) == 0
    assert fused == []

    world = ProceduralWorld(ProceduralConfig(width=W, height=H), seed=3)
    start = world.reset(3)
    again = world.step(Action("S", "L"), Context(recent=[start]))
    generated = Frame(2, start.rgb, start.depth, start.K, start.c2w, confidence=np.ones_like(start.depth))
    memory, pmap = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0, carve=True)
    fused.clear()
    for fid, f in enumerate([start, again, generated]):
        memory.observe(f, fid, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index, f.confidence), pmap)
    assert fused == []
    for _ in range(2):
        assert memory.build_context(start.c2w, start.K, W, H, pmap, 0)[2].observed.any()
    assert fused == [0, 1]  # each observed frame once, in order


def test_only_what_is_known_to_be_far_enters_the_far_field():
    """A frame that came as a point cloud has depth 0 everywhere: its pixels are not known to be far, so its
    near wall must not enter the far-field panorama (it was shown as far field in every later view that way).
    Nor do a depth sensor's dropouts (depth 0 is no measurement: a recording's black or shiny surfaces were
    kept as far field in that direction). A frame whose depth 0 means sky (a simulator's, a generated one), or
    whose depth reaches the fuse range, does fill it."""
    K = intrinsics_from_fov(64, 48, 60.0)
    rgb = np.full((48, 64, 3), 220, np.uint8)
    wall = np.stack(np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-0.7, 0.7, 30)), -1).reshape(-1, 2)
    points = np.column_stack([wall, np.full(len(wall), 2.0)]).astype(np.float32)
    cloud = Frame(0, rgb, np.zeros((48, 64), np.float32), K, np.eye(4), world_points=points,
                  world_colors=np.full((len(points), 3), 220, np.uint8))
    sky = Frame(0, rgb, np.zeros((48, 64), np.float32), K, np.eye(4), zero_depth_is_sky=True)
    dropouts = Frame(0, rgb, np.zeros((48, 64), np.float32), K, np.eye(4))
    beyond = Frame(0, rgb, np.full((48, 64), 80.0, np.float32), K, np.eye(4))
    infinite = Frame(0, rgb, np.full((48, 64), np.inf, np.float32), K, np.eye(4))  # invalid, not "at infinity"
    negative = Frame(0, rgb, np.full((48, 64), -1.0, np.float32), K, np.eye(4), zero_depth_is_sky=True)  # nor sky
    for frame, far_expected in ((cloud, False), (sky, True), (dropouts, False), (beyond, True), (infinite, False),
                                (negative, False)):
        memory, pmap = GeometricMemory(MemoryConfig()), VoxelPointMap(0.1, 60.0)
        fused = pmap.fuse_points(points, frame.world_colors if frame.world_points is not None
                                 else np.full((len(points), 3), 220, np.uint8), 0)
        memory.observe(frame, 0, fused, pmap)
        cache = memory.build_context(np.eye(4), K, 64, 48, pmap, 0)[2]
        assert cache.far_valid.any() == far_expected


def test_a_coarse_level_of_detail_block_is_drawn_where_its_surface_is():
    """Level of detail draws one cube per 8^3-voxel block (0.8 m at 0.1 m voxels) in place of the block's voxels:
    the cube is the block itself, so the wall the block holds (5.55 m away) lies inside the drawn cube at every
    pixel (a cube put off by half a block would float 0.4 m in front of the wall)."""
    K = intrinsics_from_fov(64, 48, 60.0)
    pmap = VoxelPointMap(0.1, 60.0)
    pmap.fuse(np.full((48, 64), 5.55, np.float32), np.full((48, 64, 3), 90, np.uint8), K, np.eye(4), 0)
    fine = render_map_cache(pmap, MapGrid(), K, np.eye(4), 64, 48)
    coarse = render_map_cache(pmap, MapGrid(), K, np.eye(4), 64, 48, lod_pixels=30.0)
    assert fine.valid.mean() > 0.85 and np.allclose(fine.depth[fine.valid], 5.55, atol=0.05)
    assert coarse.valid.mean() > 0.95 and not np.allclose(coarse.depth[coarse.valid], 5.55, atol=0.05)  # coarse
    assert (np.abs(coarse.depth[coarse.valid] - 5.55) <= 0.4 + 1e-4).all()
    assert (coarse.rgb[coarse.valid] == 90).all()


def test_a_cache_render_from_a_tilted_camera_has_the_walls_true_depth():
    """A camera that pitches and rolls (a hand-held recording, a flying camera), not only yaws: the cache render of
    a dense wall at z = 5 has at each pixel the depth where that pixel's ray meets the wall."""
    K = intrinsics_from_fov(64, 48, 60.0)
    eye = np.array([0.3, -0.2, 0.5])
    c2w = look_at_c2w(eye, np.array([1.5, 1.2, 5.0]), up=np.array([0.3, 1.0, 0.0]))
    g = np.stack(np.meshgrid(np.arange(-4.0, 8.0, 0.02), np.arange(-4.0, 8.0, 0.02)), -1).reshape(-1, 2)
    wall = np.column_stack([g, np.full(len(g), 5.0)]).astype(np.float32)
    cache = render_cache(wall, np.full((len(wall), 3), 90, np.uint8), K, c2w, 64, 48, point_size=0.02)
    vv, uu = np.mgrid[0:48, 0:64]
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones((48, 64))], -1) @ c2w[:3, :3].T
    truth = (5.0 - eye[2]) / rays[..., 2]  # z-depth: the camera-frame ray has z = 1
    assert cache.valid.mean() > 0.95
    err = np.abs(cache.depth - truth)[cache.valid]
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.05


def _bank_of_poses(poses, index=None):
    """A KeyframeArrays of the given c2w poses (64x48 cameras, no observed map rows)."""
    from memory.retrieval import KeyframeArrays
    n = len(poses)
    K = intrinsics_from_fov(64, 48, 60.0)
    return KeyframeArrays(np.array(poses, np.float64), np.repeat(K[None], n, 0), np.tile([64, 48], (n, 1)),
                          np.arange(n) if index is None else np.asarray(index), np.zeros(n + 1, np.int64),
                          np.zeros(0, np.int32))


def _yawed(deg, at=(0.0, 0.0, 0.0), pitch_deg=0.0):
    """c2w of a camera at ``at`` turned ``deg`` round +Y from +z, looking ``pitch_deg`` up. (A level camera's
    rotation is a symmetric matrix: only a pitched one tells R from its transpose.)"""
    a, p = math.radians(deg), math.radians(pitch_deg)
    forward = [math.sin(a) * math.cos(p), math.sin(p), math.cos(a) * math.cos(p)]
    return look_at_c2w(np.array(at, float), np.array(at, float) + forward)


def test_deepverse_retrieval_picks_the_nearest_cameras_that_look_the_most_the_same_way():
    """DeepVerse's rule: of the 5 nearest cameras, the smallest angle between forward axes first; a camera that
    looks exactly the target's way but stands 50 m off is not among them."""
    from memory.retrieval import CentreIndex, retrieve_deepverse
    poses = [_yawed(d, (0.1 * i, 0.0, 0.0)) for i, d in enumerate((0, 60, 120, 180, 240))] + [_yawed(65, (50, 0, 0))]
    idx, scores = retrieve_deepverse(_bank_of_poses(poses), CentreIndex(), _yawed(65), 3)
    assert idx.tolist() == [1, 2, 0]  # 5, 55 and 65 degrees off
    assert np.allclose(scores, np.cos(np.radians([5, 55, 65])))


def test_worldmem_retrieval_picks_the_camera_whose_view_overlaps_the_target():
    """WorldMem's rule on cameras at one spot looking four ways (75 degrees wide): for a target looking 80 degrees
    round, the camera looking 90 degrees round covers most of its view (about 65 of 75 degrees) and is picked first
    (all look 20 degrees up)."""
    from memory.retrieval import CentreIndex, retrieve_worldmem
    poses = [_yawed(d, (0.05 * i, 0.0, 0.0), 20.0) for i, d in enumerate((0, 90, 180, 270))]
    K = intrinsics_from_fov(64, 48, 60.0)
    idx, scores = retrieve_worldmem(_bank_of_poses(poses), CentreIndex(), _yawed(80, pitch_deg=20.0), K, 64, 48, 1,
                                    now=4)
    assert idx.tolist() == [1] and 0.75 < scores[0] < 0.95


def test_worldmem_retrieval_covers_what_is_left_and_prefers_the_newer_of_equal_views():
    """WorldMem's greedy cover: after the camera 5 degrees off the target, the next pick is the one that sees the
    strip of the target's view still uncovered (45 degrees round), not the one 10 degrees off that sees again what
    is covered; of two cameras with the same view, the newer wins (the recency penalty)."""
    from memory.retrieval import CentreIndex, retrieve_worldmem
    K = intrinsics_from_fov(64, 48, 60.0)
    yaws = (0, 90, 180, 270, 85, 45)
    poses = [_yawed(d, (0.05 * i, 0.0, 0.0), 20.0) for i, d in enumerate(yaws)]
    idx, scores = retrieve_worldmem(_bank_of_poses(poses), CentreIndex(), _yawed(80, pitch_deg=20.0), K, 64, 48, 2,
                                    now=6)
    assert idx.tolist() == [4, 5] and scores[0] > 0.85 and scores[1] > 0.5
    same = [_yawed(80, (0.0, 0.0, 0.0), 20.0), _yawed(80, (0.05, 0.0, 0.0), 20.0)]
    for order in ([0, 9], [9, 0]):
        idx, _ = retrieve_worldmem(_bank_of_poses(same, order), CentreIndex(), _yawed(80, pitch_deg=20.0), K, 64, 48,
                                   1, now=10)
        assert order[idx[0]] == 9


def test_our_retrieval_is_a_set_cover_of_the_visible_blocks():
    """greedy_cover: of three keyframes seeing 60 %, 50 % (the same blocks again) and 40 % (the rest) of the target's
    visible blocks, two picks are the 60 % and the 40 % one: together they see all of it."""
    from memory.retrieval import KeyframeArrays, greedy_cover
    seen = [np.arange(0, 6), np.arange(0, 5), np.arange(6, 10)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seen])])
    bank = KeyframeArrays(np.repeat(np.eye(4)[None], 3, 0), np.repeat(np.eye(3)[None], 3, 0), np.tile([64, 48], (3, 1)),
                          np.array([0, 1, 2]), offsets, np.concatenate(seen).astype(np.int32))
    mark = np.zeros(16, np.int32)
    idx, share = greedy_cover(bank, np.array([0, 1, 2]), np.arange(10), np.ones(10), 2, now=3, recency=0.0,
                              min_share=0.1, mark=mark)
    assert idx.tolist() == [0, 2] and np.allclose(share, [0.6, 0.4]) and not mark.any()


def test_frustum_tests_are_the_image_rectangle_in_front_of_the_camera():
    """in_frustum / _in_frusta (WorldMem's field of view): a point is inside when it is in front of the camera and
    projects inside the image's outer pixel edges, on a 64x48 image (not a square one)."""
    from memory.retrieval import _in_frusta, in_frustum
    K = intrinsics_from_fov(64, 48, 60.0)
    c2w = _yawed(30, (1.0, 2.0, 3.0), 20.0)
    uv = np.array([[0.0, 0.0], [63.4, 47.4], [-0.6, 10.0], [64.0, 10.0], [10.0, -0.6], [10.0, 48.0], [10.0, 60.0],
                   [31.5, 23.5]])
    z = np.array([2.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, -2.0])
    cam = np.column_stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z])
    pts = cam @ c2w[:3, :3].T + c2w[:3, 3]
    expect = [True, True, False, False, False, False, False, False]
    assert in_frustum(pts, c2w, K, 64, 48).tolist() == expect
    assert _in_frusta(pts, c2w[None], K[None], np.array([[64, 48]]))[0].tolist() == expect


def test_the_grid_culls_no_cell_a_tilted_camera_sees():
    """render_map_cache reads only the grid cells in the view frustum: from a camera that pitches and rolls, away
    from the origin and with a far limit, it draws exactly what drawing every voxel of the map draws."""
    rng = np.random.default_rng(5)
    pts = rng.uniform(-20.0, 20.0, (50000, 3))
    pmap = VoxelPointMap(0.1, 60.0)
    pmap.fuse_points(pts, rng.integers(0, 255, (len(pts), 3)).astype(np.uint8), 0)
    K = intrinsics_from_fov(64, 48, 70.0)
    means, colors = pmap.points()
    for eye, target, far in (((8.0, 3.0, 2.0), (18.0, -3.0, 5.0), 10.0), ((5.0, 3.0, -8.0), (8.0, -2.0, 10.0), 15.0),
                             ((5.0, 3.0, -8.0), (8.0, -2.0, 10.0), 60.0), ((-3.0, 2.0, 4.0), (-9.0, -4.0, -10.0), 12.0),
                             ((-2.5, 0.0, 0.0), (-20.0, -1.0, 0.5), 15.0)):  # the eye's cell holds the nearest view
        c2w = look_at_c2w(np.array(eye), np.array(target), up=np.array([0.4, 1.0, 0.0]))
        grid = MapGrid()
        culled = render_map_cache(pmap, grid, K, c2w, 64, 48, far=far)
        every = render_cache(means, colors, K, c2w, 64, 48, point_size=0.08, far=far)
        assert culled.valid.sum() > 150
        assert np.array_equal(culled.valid, every.valid) and np.array_equal(culled.depth, every.depth)
        # each cell's ``near`` (level of detail) bounds its content from the camera side: at most the camera z of
        # its nearest voxel (the box's nearest corner may lie nearer than any voxel)
        q = grid.query(Frustum(invert_pose(c2w), K, 64, 48, 0.05, far))
        pos = grid.take(q.start, q.count)
        z = grid.xyz[:, pos].T.astype(np.float64) @ invert_pose(c2w)[2, :3] + invert_pose(c2w)[2, 3]
        nearest = np.full(len(q.start), np.inf)
        np.minimum.at(nearest, np.repeat(np.arange(len(q.start)), q.count), z)
        assert len(q.start) > 3 and (q.near <= nearest + 1e-4).all()


def test_the_far_field_is_rendered_in_the_directions_it_was_seen():
    """The far-field panorama keys colours by world ray direction: sky observed by a camera that pitches and rolls,
    coloured by the octant of each pixel's world direction, is rendered by another camera (level, turned 20
    degrees) with the colour of its own pixels' directions."""
    from memory.panorama import FarFieldPanorama

    def octant_colours(K, c2w, w, h):
        vv, uu = np.mgrid[0:h, 0:w]
        d = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones((h, w))], -1) @ c2w[:3, :3].T
        return np.where(d > 0, 255, 0).astype(np.uint8), np.abs(d / np.linalg.norm(d, axis=-1, keepdims=True))

    K, K_seen = intrinsics_from_fov(64, 48, 70.0), intrinsics_from_fov(256, 192, 70.0)  # pixels finer than cells
    seen = look_at_c2w(np.zeros(3), np.array([0.1, 0.35, 1.0]), up=np.array([0.3, 1.0, 0.0]))
    pano = FarFieldPanorama()
    rgb, _ = octant_colours(K_seen, seen, 256, 192)
    pano.observe(rgb, np.zeros((192, 256), np.float32), K_seen, seen, 60.0, zero_is_far=True)
    view = look_at_c2w(np.array([3.0, 0.0, 1.0]), np.array([3.0, 0.0, 1.0]) + _yawed(20, pitch_deg=15.0)[:3, 2])
    got, valid = pano.render(K, view, 64, 48)
    want, d = octant_colours(K, view, 64, 48)
    clear = valid & (d.min(axis=-1) > 0.05)  # away from an octant's border (a panorama cell is 0.7 degrees)
    assert valid.mean() > 0.5 and clear.sum() > 500
    assert (got[clear] == want[clear]).all()


def test_the_recent_window_boundary_is_exact_and_survives_a_state_round_trip():
    """exclude_recent=2 after frames 0..5: keyframes of frames 0..3 may be retrieved, 4 and 5 are in the recent
    context (idx <= last - exclude_recent). A restored bank keeps the last frame index (not its keyframe count),
    so the same keyframes stay eligible."""
    world = ProceduralWorld(ProceduralConfig(width=32, height=24), seed=2)
    frames = walk(world, "(FN)" * 5)
    pmap = VoxelPointMap(0.2, 60.0)
    mem = GeometricMemory(MemoryConfig(key_translation_m=0.0, exclude_recent=2, observed_layer_frames=0))
    for i, f in enumerate(frames):
        mem.observe(f, 10 + i, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index), pmap)
    assert mem.frame_indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert mem.eligible().tolist() == [True, True, True, True, False, False]
    restored = GeometricMemory(MemoryConfig(key_translation_m=0.0, exclude_recent=2, observed_layer_frames=0))
    restored.load_state_dict(mem.state_dict())
    assert restored.eligible().tolist() == mem.eligible().tolist()
    target = frames[0]
    fids, _, _ = restored.build_context(target.c2w, target.K, target.width, target.height, pmap, 8)
    assert fids and set(fids) <= {10, 11, 12, 13}


def test_the_cache_camera_caps_the_long_side_of_a_wide_or_tall_image():
    """scaled_camera keeps the aspect and scales by the *long* side: a 256x64 image capped at 128 becomes 128x32
    (and a 64x256 one 32x128) with intrinsics halved about the pixel centres; one within the cap is left as is."""
    from memory.bank import scaled_camera

    K = np.array([[200.0, 0.0, 127.5], [0.0, 100.0, 31.5], [0.0, 0.0, 1.0]])
    cK, w, h = scaled_camera(K, 256, 64, 128)
    assert (w, h) == (128, 32)
    assert np.allclose(cK, [[100.0, 0.0, 63.5], [0.0, 50.0, 15.5], [0.0, 0.0, 1.0]])
    assert scaled_camera(K, 64, 256, 128)[1:] == (32, 128)
    same, w, h = scaled_camera(K, 120, 30, 128)
    assert (w, h) == (120, 30) and same is K


def test_an_observed_layer_of_exactly_its_frame_limit_is_kept():
    """observed_layer_frames=2 with exactly 2 observed frames: the layer is kept (dropped only past the limit),
    so after a generated frame the cache marks the observed surfaces and the ground comes from them; with a third
    observed frame it would be all observation and the layer gone."""
    world = ProceduralWorld(ProceduralConfig(width=32, height=24), seed=2)
    frames = walk(world, "(FN)(FN)")
    for limit, observed_wanted in ((2, True), (1, False)):
        pmap = VoxelPointMap(0.2, 60.0)
        mem = GeometricMemory(MemoryConfig(observed_layer_frames=limit))
        for i, f in enumerate(frames[:2]):
            mem.observe(f, i, pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index), pmap)
        gen = dataclasses.replace(frames[2], confidence=np.ones_like(frames[2].depth))  # a generated frame
        mem.observe(gen, 2, pmap.fuse(gen.depth, gen.rgb, gen.K, gen.c2w, gen.index), pmap)
        f0 = frames[0]
        _, _, cache = mem.build_context(f0.c2w, f0.K, f0.width, f0.height, pmap, 2)
        has_layer = cache.observed is not None and bool(cache.observed.any())
        assert has_layer == observed_wanted, limit
        x, y, z = f0.position + 6.0 * f0.forward  # ground the first frames saw
        ground = mem.ground(pmap).ground_height(x, z, y - 5.0, y, 1.0)
        assert (ground is not None) == observed_wanted, limit
        if observed_wanted:
            assert ground == pytest.approx(float(world.terrain_height(x, z)), abs=0.3)


class GroundRidingWorld(RecordingWorld):
    """A procedural world posing as a learned one: its frames are generated (a confidence) and it asks the map for
    the ground (GroundFollowingWorld), recording the ground probes it is handed."""

    def __init__(self, world: ProceduralWorld):
        super().__init__(world)
        self.grounds = []

    def step(self, action, context):
        frame = super().step(action, context)
        return dataclasses.replace(frame, confidence=np.ones_like(frame.depth))

    def predict_c2w_on_ground(self, last, action, ground):
        self.grounds.append(ground)
        return self.world.predict_c2w(last, action)


def test_a_fork_after_a_long_handover_keeps_the_ground_copy_of_every_handed_frame():
    """A learned world handed more observed frames than the layer takes rides a copy of the map made just before
    its first generated frame (all handed frames, the one it went on from included). A fork rebuilds the memory
    and asks for the ground at that same moment, so the fork's copy is the original's, not one frame short."""
    world = GroundRidingWorld(ProceduralWorld(ProceduralConfig(width=48, height=36), seed=4))
    walked = Scene(ProceduralWorld(ProceduralConfig(width=48, height=36), seed=4), SceneConfig(voxel_size=0.2))
    walked.reset(4)
    walked.run(parse_actions("(FN)(FL)(FL)(FN)"))
    scene = Scene(world, SceneConfig(voxel_size=0.2, memory_k=2),
                  memory=GeometricMemory(MemoryConfig(observed_layer_frames=2)))
    scene.reset(4, start=walked.current.c2w, prelude=walked.iter_frames(upto=walked.cursor - 1))
    assert scene.branch.handed == 4
    scene.run(parse_actions("(FR)(FR)"))
    copy = {k: v.copy() for k, v in scene.memory.state_dict().items() if k.startswith("observed.")}
    assert copy and len(copy["observed.keys"]) > 0
    scene.seek(5)
    scene.step(Action("F", "N"))  # a fork: the map and memory are rebuilt from frames 0..5
    forked = {k: v for k, v in scene.memory.state_dict().items() if k.startswith("observed.")}
    assert forked.keys() == copy.keys() and all(np.array_equal(forked[k], copy[k]) for k in copy)
