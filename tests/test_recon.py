"""Camera math and the fused point map, checked against the procedural world's exact surface."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodel.camera import (depth_edge_mask, intrinsics_from_fov, invert_pose, look_at_c2w, reproject_depth,
                               unproject_depth, world_to_pixels)
from worldmodel.frame import Frame
from recon.pointmap import VoxelPointMap
from recon.voxelhash import Int64HashTable


def test_unproject_project_roundtrip():
    rng = np.random.default_rng(0)
    K = intrinsics_from_fov(64, 48, 60.0)
    c2w = look_at_c2w(np.array([3.0, 1.0, -2.0]), np.array([0.0, 0.5, 4.0]))
    depth = rng.uniform(0.5, 20.0, size=(48, 64)).astype(np.float32)
    depth[5, 7] = 0.0
    depth[6, 8] = np.nan
    depth[7, 9] = np.inf
    pts, pix = unproject_depth(depth, K, c2w)
    assert len(pts) == 48 * 64 - 3 and np.isfinite(pts).all()
    uv, z = world_to_pixels(pts, K, invert_pose(c2w))
    assert np.allclose(uv[:, 0], pix % 64, atol=1e-6) and np.allclose(uv[:, 1], pix // 64, atol=1e-6)
    assert np.allclose(z, depth.reshape(-1)[pix], rtol=1e-6)


def test_hash_table_matches_a_dict():
    rng = np.random.default_rng(1)
    table, ref = Int64HashTable(8), {}
    for _ in range(40):
        keys = np.unique(rng.integers(0, 2**40, size=rng.integers(1, 3000)))
        found = table.find(keys)
        assert all(ref.get(int(k), -1) == v for k, v in zip(keys, found))
        new = keys[found < 0]
        table.insert(new, np.arange(len(ref), len(ref) + len(new)))
        ref.update({int(k): len(ref) + i for i, k in enumerate(new)})
    assert len(table) == len(ref)
    assert (table.find(np.array([2**41, 2**42])) == -1).all()
    with pytest.raises(ValueError, match="row numbers"):  # rows are stored as int32
        table.insert(np.array([2**43]), np.array([2**31]))


def test_hash_table_finds_every_key_while_it_grows():
    """Int64HashTable grows incrementally (an old table is moved across a few slots per insert): after every
    insert, whether or not a move is under way, every key inserted so far is found with its value, and absent
    keys are not."""
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(0, 2**50, 60000))
    rng.shuffle(keys)
    table, n = Int64HashTable(8), 0
    for size in (3000, 5000, 9000, 20000, 1, 7, 15000):
        table.insert(keys[n: n + size], np.arange(n, n + size))
        n += size
        assert np.array_equal(table.find(keys[:n]), np.arange(n)), n
        assert (table.find(keys[n: n + 500]) == -1).all()
    assert len(table) == n
    # a table exactly half full after a doubling doubles again at the next key, while the first move is under way
    table = Int64HashTable(16384)  # 32768 slots
    table.insert(keys[:16384], np.arange(16384))  # half full
    table.insert(keys[16384:32768], np.arange(16384, 32768))  # -> 65536 slots, 8192 of the old 32768 moved
    table.insert(keys[32768:32769], [32768])  # another doubling: the rest of the old table must come along
    assert np.array_equal(table.find(keys[:32769]), np.arange(32769))


def test_fused_points_lie_on_the_true_surface(walk_world, walk_frames):
    voxel = 0.1
    pmap = VoxelPointMap(voxel_size=voxel, max_depth=60.0)
    for f in walk_frames:
        pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    pts, cols = pmap.points()
    assert len(pts) > 20_000
    d = walk_world.distance_to_surface(pts)
    assert np.median(d) <= voxel / 2
    assert np.percentile(d, 95) <= 2 * voxel
    # colours are the frames' colours: each voxel's colour is close to what the frames saw there
    f = walk_frames[-1]
    uv, z = world_to_pixels(pts.astype(np.float64), f.K, invert_pose(f.c2w))
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    ok = (z > 0) & (u >= 0) & (u < f.width) & (v >= 0) & (v < f.height)
    ok[ok] &= np.abs(f.depth[v[ok], u[ok]] - z[ok]) < 0.05
    diff = np.abs(cols[ok].astype(int) - f.rgb[v[ok], u[ok]].astype(int)).mean()
    assert ok.sum() > 1000 and diff < 20


def test_depth_reprojects_between_frames(walk_frames):
    a, b = walk_frames[4], walk_frames[6]
    err = reproject_depth(a.depth, a.K, a.c2w, b.depth, b.K, b.c2w, max_depth=40.0)
    assert len(err) > 5000 and np.median(err) < 0.05
    # reading the pose the wrong way round is clearly wrong
    bad = reproject_depth(a.depth, a.K, invert_pose(a.c2w), b.depth, b.K, b.c2w, max_depth=40.0)
    assert len(bad) < 100 or np.median(bad) > 0.5


def test_map_rejects_invalid_depth_and_counts_observations():
    K = intrinsics_from_fov(32, 24, 60.0)
    c2w = np.eye(4)
    depth = np.full((24, 32), 2.0, np.float32)
    depth[:4] = np.nan
    depth[4:8] = np.inf
    depth[8:10] = 0.0
    depth[10:12] = 500.0  # beyond max_depth
    rgb = np.full((24, 32, 3), 100, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.05, max_depth=50.0)
    s1 = pmap.fuse(depth, rgb, K, c2w, 0)
    assert s1.points_in == 12 * 32
    pts, _ = pmap.points()
    assert np.isfinite(pts).all() and np.allclose(pts[:, 2], 2.0, atol=1e-6)
    s2 = pmap.fuse(depth, rgb, K, c2w, 1)
    assert s2.voxels_new == 0 and len(pmap) == s1.voxels_new
    assert (pmap.weight[: len(pmap)] > 1).all() and (pmap.last_seen[: len(pmap)] == 1).all()
    with pytest.raises(ValueError, match="NaN"):
        pmap.fuse(depth, rgb, K, np.full((4, 4), np.nan), 2)


def test_a_voxel_one_frame_saw_with_low_confidence_is_shown_and_exported():
    """A learned model's confidences are below 1: a voxel one generated frame saw weighs under 1, and was hidden
    from points() (the viewer, PLY and GLB) while the cache drew it. min_weight counts frames."""
    K = intrinsics_from_fov(32, 24, 60.0)
    depth = np.full((24, 32), 2.0, np.float32)
    rgb = np.full((24, 32, 3), 100, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.05)
    pmap.fuse(depth, rgb, K, np.eye(4), 0, confidence=np.full((24, 32), 0.4, np.float32))
    assert len(pmap) > 100 and len(pmap.points()[0]) == len(pmap)
    strict = VoxelPointMap(voxel_size=0.05, min_weight=2)
    strict.fuse(depth, rgb, K, np.eye(4), 0)
    assert len(strict.points()[0]) == 0  # seen by one frame only
    strict.fuse(depth, rgb, K, np.eye(4), 1, confidence=np.full((24, 32), 0.4, np.float32))
    assert len(strict.points()[0]) == len(strict)


def test_changed_since_and_box_queries(walk_frames):
    pmap = VoxelPointMap(voxel_size=0.2, carve=False)  # carving also marks the voxels it sees through
    for f in walk_frames[:3]:
        pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    v = pmap.version
    rows_before = len(pmap)
    stats = pmap.fuse(walk_frames[3].depth, walk_frames[3].rgb, walk_frames[3].K, walk_frames[3].c2w, 3)
    changed = pmap.changed_since(v)
    assert len(changed) == stats.voxels_touched
    assert set(range(rows_before, len(pmap))) <= set(changed.tolist())
    # the fallback scan (version older than the log) agrees
    assert np.array_equal(np.nonzero(pmap.modified[: len(pmap)] > v)[0], changed)
    pts, _ = pmap.points()
    lo, hi = np.percentile(pts, 25, axis=0), np.percentile(pts, 75, axis=0)
    inside, _ = pmap.points_in_box(lo, hi)
    expect = np.all((pts >= lo) & (pts <= hi), axis=1).sum()
    assert len(inside) == expect > 0
    # the map as it was at frame 1
    early, _ = pmap.points(upto_frame=1)
    assert 0 < len(early) < len(pts)


GHOST_Z, WALL_Z = 4.25, 5.0


def ghost_wall_map(carve: bool, after_wall=None, on_frame=None) -> tuple[VoxelPointMap, np.ndarray, np.ndarray]:
    """A 64x48 camera at the origin looking down +z at a wall 5 m away; one frame with wrong depth puts a ghost
    wall 0.75 m in front of it, then 9 frames from shifted cameras (0.1 m apart) see the real wall through it
    (carving casts every 3rd ray of each frame). ``after_wall(map)`` is called once the wall alone is fused;
    ``on_frame(frame, store id, fuse stats, map)`` after each frame is fused (a memory's ``observe``; frame i
    has index and store id i).
    Returns (map, K, c2w of the first camera)."""
    K = intrinsics_from_fov(64, 48, 60.0)
    rgb = np.full((48, 64, 3), 90, np.uint8)
    pmap = VoxelPointMap(voxel_size=0.1, carve=carve)
    shifts = [(0.0, 0.0), (0.0, 0.0)] + [(dx, dy) for dx in (-0.1, 0.0, 0.1) for dy in (-0.1, 0.0, 0.1)]
    for i, (dx, dy) in enumerate(shifts):
        c2w = np.eye(4)
        c2w[:2, 3] = dx, dy
        frame = Frame(i, rgb, np.full((48, 64), GHOST_Z if i == 1 else WALL_Z, np.float32), K, c2w, None)
        stats = pmap.fuse(frame.depth, rgb, K, c2w, i)
        if on_frame is not None:
            on_frame(frame, i, stats, pmap)
        if i == 0 and after_wall is not None:
            after_wall(pmap)
    return pmap, K, np.eye(4)


def test_free_space_carving_removes_ghost_surfaces():
    """A frame with wrong depth leaves a ghost wall 0.75 m in front of the real one; frames that see the real
    wall through it carve the ghost away, and the real wall stays."""
    ghosts = {}
    for carve in (False, True):
        pmap, _, _ = ghost_wall_map(carve)
        pts = pmap.points()[0]
        z = pts[:, 2]
        assert (np.abs(z - WALL_Z) < 0.1).sum() > 1000            # the real wall is kept
        # ghost voxels away from the image border (where every shifted view looks through them)
        inner = (np.abs(pts[:, 0]) < 2.5) & (np.abs(pts[:, 1]) < 1.8)
        ghosts[carve] = int((inner & (np.abs(z - GHOST_Z) < 0.1)).sum())
    assert ghosts[False] > 1000 and ghosts[True] < 0.02 * ghosts[False]
    # a surface seen by every frame is never carved by its own rays
    on_wall = np.abs(pmap.rows_points(np.arange(len(pmap)))[0][:, 2] - WALL_Z) < 0.1
    assert (pmap.free_frames[: len(pmap)][on_wall] == 0).all()


def test_carving_keeps_exact_surfaces(walk_frames):
    """On exact (ray-cast) depth nothing is in front of the surfaces: carving hides almost nothing,
    including ground seen at grazing angles."""
    plain, carving = VoxelPointMap(0.1, 60.0), VoxelPointMap(0.1, 60.0, carve=True)
    for f in walk_frames:
        for pmap in (plain, carving):
            pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    assert len(carving) == len(plain)
    assert len(carving.points()[0]) >= 0.995 * len(plain.points()[0])


def test_state_dict_roundtrip_and_corruption(walk_frames):
    pmap = VoxelPointMap(voxel_size=0.15)
    for f in walk_frames[:4]:
        pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    state = pmap.state_dict()
    back = VoxelPointMap.from_state_dict(state)
    for c in VoxelPointMap.COLUMNS:
        assert np.array_equal(getattr(back, c)[: len(back)], getattr(pmap, c)[: len(pmap)])
    f = walk_frames[4]
    a, b = pmap.fuse(f.depth, f.rgb, f.K, f.c2w, 4), back.fuse(f.depth, f.rgb, f.K, f.c2w, 4)
    assert (a.voxels_new, a.voxels_touched) == (b.voxels_new, b.voxels_touched)
    broken = dict(state)
    broken["weight"] = broken["weight"][:-1]
    with pytest.raises(ValueError, match="corrupt"):
        VoxelPointMap.from_state_dict(broken)


def test_depth_edge_mask_marks_both_sides_of_a_jump_and_of_a_hole():
    depth = np.full((6, 8), 2.0)
    depth[:, 4:] = 5.0            # a step between columns 3 and 4
    depth[0, 0] = 0.0             # a hole
    edge = depth_edge_mask(depth, 0.1)
    assert edge[:, 3].all() and edge[:, 4].all()
    assert edge[0, 1] and edge[1, 0]                       # the hole's neighbours
    assert edge.sum() == 12 + 3                            # both step columns, the hole and its 2 neighbours
    assert not depth_edge_mask(depth * np.linspace(1, 1.05, 8), 0.1)[2:, 1:3].any()  # a slope is no edge


def test_zero_confidence_at_depth_edges_keeps_blended_depth_off_the_map(walk_world, walk_frames):
    """Depth blended across object edges (as a learned model's soft blend of sources makes it: log depth
    box-filtered 3x3) leaves floating voxels between near and far surfaces; fusing with confidence 0 at the
    depth edges (what NeuralWorld outputs) removes most of them and keeps most of the map."""
    voxel = 0.1
    maps = {gated: VoxelPointMap(voxel, 60.0) for gated in (False, True)}
    for f in walk_frames[::2]:
        valid = f.depth > 0
        logd = np.log(np.where(valid, f.depth, 1.0))
        pad, pad_valid = np.pad(logd, 1, mode="edge"), np.pad(valid, 1, mode="edge")
        box = sum(pad[i:i + f.height, j:j + f.width] for i in range(3) for j in range(3)) / 9
        all_valid = np.logical_and.reduce([pad_valid[i:i + f.height, j:j + f.width]
                                           for i in range(3) for j in range(3)])
        blended = np.where(all_valid, np.exp(box), f.depth).astype(np.float32)
        for gated, pmap in maps.items():
            conf = np.where(depth_edge_mask(blended, 0.1), 0.0, 1.0).astype(np.float32) if gated else None
            pmap.fuse(blended, f.rgb, f.K, f.c2w, f.index, conf)
    floating, kept = {}, {}
    for gated, pmap in maps.items():
        pts, _ = pmap.points()
        floating[gated] = int((walk_world.distance_to_surface(pts) > 3 * voxel).sum())
        kept[gated] = len(pts)
    assert floating[False] > 200, floating                 # the blend really makes floating voxels
    assert floating[True] < 0.3 * floating[False], floating
    assert kept[True] > 0.7 * kept[False], kept


def test_ground_height_is_the_true_terrain_under_what_the_map_saw(walk_world, walk_frames):
    """Ground under points the first frames saw (2-12 m ahead of the start) is the procedural terrain's exact
    height within a voxel; a box standing on it does not lift it (lowest voxel per column); where the map saw
    nothing (behind the start camera) there is no answer."""
    pmap = VoxelPointMap(voxel_size=0.1, carve=False)
    for f in walk_frames[:3]:
        pmap.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    start = walk_frames[0].c2w
    fwd = start[:3, 2].copy()
    fwd[1] = 0
    fwd /= np.linalg.norm(fwd)
    eye_y = start[1, 3]
    checked = 0
    for ahead in np.linspace(3.0, 12.0, 10):
        x, z = start[0, 3] + ahead * fwd[0], start[2, 3] + ahead * fwd[2]
        truth = float(walk_world.terrain_height(x, z))
        if walk_world.is_blocked(np.array([x, truth + 1.0, z]), radius=0.5):
            continue  # something stands there: not bare ground
        got = pmap.ground_height(x, z, eye_y - 4.0, eye_y - 0.5, radius=0.4)
        assert got is not None and abs(got - truth) < 0.1, (ahead, got, truth)
        checked += 1
    assert checked >= 5
    # a 1 m box put on the ground at 6 m: the columns' lowest voxels are still the ground
    x, z = start[0, 3] + 6 * fwd[0], start[2, 3] + 6 * fwd[2]
    truth = float(walk_world.terrain_height(x, z))
    box = np.stack(np.meshgrid(np.arange(-0.3, 0.31, 0.05), np.arange(0.1, 1.0, 0.05), np.arange(-0.3, 0.31, 0.05),
                               indexing="ij"), -1).reshape(-1, 3) + [x, truth, z]
    pmap.fuse_points(box, np.full((len(box), 3), 200, np.uint8), frame_index=3)
    assert abs(pmap.ground_height(x, z, eye_y - 4.0, eye_y - 0.5, radius=0.4) - truth) < 0.1
    behind = start[:3, 3] - 6 * fwd
    assert pmap.ground_height(behind[0], behind[2], eye_y - 4.0, eye_y - 0.5, radius=0.4) is None


def test_a_dense_fuse_leaves_no_gaps_where_far_pixels_span_several_voxels(walk_world, walk_frames):
    """A 4x closer look (4x the focal length, same camera) at what a frame saw: a plain fuse leaves the voxels
    of far surfaces a pixel's footprint apart, so the render shows gaps between them; the dense fuse covers
    those surfaces, and its points stay on the true surface (no points bridge depth edges)."""
    from memory.cache import render_map_cache
    from memory.grid import MapGrid
    from recon.pointmap import fuse_frame, fuse_frame_dense, supersample_factor
    from worldmodel.camera import valid_depth_mask

    first, voxel = walk_frames[0], 0.1
    assert supersample_factor(first.depth, first.K, voxel, 60.0) > 1  # its far pixels are larger than a voxel
    sparse, dense = VoxelPointMap(voxel, 60.0), VoxelPointMap(voxel, 60.0)
    fuse_frame(sparse, first)
    fuse_frame_dense(dense, first)
    pts, _ = dense.points()
    gap = walk_world.distance_to_surface(pts)
    assert np.median(gap) <= voxel / 2 and np.percentile(gap, 99) <= 3 * voxel
    zoom = first.K.copy()
    zoom[:2, :2] *= 4
    _, truth = walk_world.render(first.c2w, zoom, first.width, first.height)
    far = valid_depth_mask(truth, 60.0) & (truth > 15.0)  # beyond ~ f * voxel: a pixel spans > 1 voxel there
    assert far.sum() > 2000
    shown = {name: render_map_cache(m, MapGrid(), zoom, first.c2w, first.width, first.height)
             for name, m in (("sparse", sparse), ("dense", dense))}
    coverage = {name: view.valid[far].mean() for name, view in shown.items()}
    assert coverage["sparse"] < 0.75 and coverage["dense"] > 0.9, coverage
    d = shown["dense"].depth[far & shown["dense"].valid]
    # as right as the plain fuse's few pixels (0.95 on this frame; the misses are cube edges at silhouettes)
    assert np.mean(np.abs(d - truth[far & shown["dense"].valid]) <= 0.05 * d) > 0.9


def test_point_cloud_outlier_beyond_key_range_leaves_the_frame_fused():
    """One point a point-cloud frame puts beyond the key range (a sky point of disparity ~0) is left out, as a depth
    frame's far pixel is; a frame with nothing in range still says why."""
    from recon.pointmap import fuse_frame
    pts = np.random.default_rng(0).uniform(-5, 5, (500, 3)).astype(np.float32)
    pts[0] = (0.0, 0.0, 2e5)
    cols = np.full((500, 3), 200, np.uint8)
    f = Frame(0, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), np.eye(3), np.eye(4),
              world_points=pts, world_colors=cols)
    m = VoxelPointMap(0.1, 60.0)
    stats = fuse_frame(m, f)
    assert stats.points_in == 499 and np.abs(m.points()[0]).max() < 6
    with pytest.raises(ValueError, match="beyond"):
        m.fuse_points(np.array([[3e5, 0.0, 0.0]]), np.zeros((1, 3), np.uint8), 1)


def test_map_nbytes_is_what_it_allocates():
    """nbytes (the studio's "map N MB", bench's map_mb_at_end) counts what the map's arrays hold: traced allocations."""
    import gc
    import tracemalloc
    rng = np.random.default_rng(1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    m = VoxelPointMap(0.1, 60.0, initial_capacity=16)
    for i in range(20):
        pts = rng.uniform(-30, 30, (20000, 3))
        m.fuse_points(pts, np.zeros((len(pts), 3), np.uint8), i)
    m._log.clear()  # the change log is not the map's storage
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert 0.9 * held <= m.nbytes <= 1.1 * held


def test_camera_math_with_non_square_pixels_is_the_pinhole_model():
    """Recorded cameras have fx != fy (TUM's colour camera: 517.3 / 516.5): projection and lifting use fx for x
    and fy for y, cx for u and cy for v. Checked against the pinhole formula on a camera with 2:1 pixels."""
    from worldmodel.camera import camera_to_pixels, pixels_to_camera
    K = np.array([[600.0, 0.0, 70.3], [0.0, 300.0, 20.6], [0.0, 0.0, 1.0]])
    c2w = look_at_c2w(np.array([1.0, 2.0, -3.0]), np.array([0.5, 1.0, 4.0]))
    cam = np.array([[0.3, -0.2, 2.0], [-0.5, 0.4, 5.0], [0.0, 0.0, 1.0]])      # OpenCV camera coordinates
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    uv, z = world_to_pixels(world, K, invert_pose(c2w))
    assert np.allclose(uv[:, 0], 600.0 * cam[:, 0] / cam[:, 2] + 70.3)
    assert np.allclose(uv[:, 1], 300.0 * cam[:, 1] / cam[:, 2] + 20.6) and np.allclose(z, cam[:, 2])
    u, v, _ = camera_to_pixels(cam, K)
    assert np.allclose(u, uv[:, 0]) and np.allclose(v, uv[:, 1])
    assert np.allclose(pixels_to_camera(np.array([130.3]), np.array([50.6]), 3.0, K), [[0.3, 0.3, 3.0]])
    depth = np.zeros((48, 160), np.float32)
    depth[40, 150] = 2.5
    pts, flat = unproject_depth(depth, K, c2w)
    expect = np.array([(150 - 70.3) / 600.0 * 2.5, (40 - 20.6) / 300.0 * 2.5, 2.5]) @ c2w[:3, :3].T + c2w[:3, 3]
    assert np.allclose(pts, [expect]) and flat.tolist() == [40 * 160 + 150]


def test_resized_intrinsics_keep_the_outer_edges_of_the_image():
    """resize_intrinsics (recordings imaged at another size, keyframes kept small): the same camera at another
    size sees the same field of view, so the rays through the outer pixel edges (-0.5 and width - 0.5) are the
    same rays; checked for a resize that changes the aspect ratio."""
    from worldmodel.camera import resize_intrinsics
    K = np.array([[520.0, 0.0, 318.6], [0.0, 510.0, 255.3], [0.0, 0.0, 1.0]])
    Kr = resize_intrinsics(K, 640, 480, 160, 360)
    for (k, w, h) in ((K, 640, 480), (Kr, 160, 360)):
        edges_x = [(-0.5 - k[0, 2]) / k[0, 0], (w - 0.5 - k[0, 2]) / k[0, 0]]
        edges_y = [(-0.5 - k[1, 2]) / k[1, 1], (h - 0.5 - k[1, 2]) / k[1, 1]]
        if k is K:
            want_x, want_y = edges_x, edges_y
    assert np.allclose(edges_x, want_x, atol=1e-12) and np.allclose(edges_y, want_y, atol=1e-12)


def test_negative_depth_is_no_measurement():
    """Depth <= 0 is invalid (a sign error upstream, a learned model's overshoot): it is neither lifted nor fused,
    so nothing lands behind the camera."""
    from worldmodel.camera import valid_depth_mask
    K = intrinsics_from_fov(8, 6, 60.0)
    depth = np.full((6, 8), 2.0, np.float32)
    depth[:3] = -2.0
    assert not valid_depth_mask(depth)[:3].any() and valid_depth_mask(depth)[3:].all()
    assert not valid_depth_mask(depth, max_depth=2.0).any()  # max_depth itself is beyond the range
    pts, pix = unproject_depth(depth, K, np.eye(4))
    assert len(pts) == 3 * 8 and (pix >= 3 * 8).all() and (pts[:, 2] > 0).all()
    pmap = VoxelPointMap(voxel_size=0.05)
    pmap.fuse(depth, np.zeros((6, 8, 3), np.uint8), K, np.eye(4), 0)
    assert (pmap.points()[0][:, 2] > 0).all()


def test_depth_edge_mask_marks_the_rim_of_a_hole_at_any_depth():
    """A hole (no depth) is an edge for its neighbours whatever the surface's depth (also 1 m, where log z is 0)."""
    for z in (1.0, 3.0):
        depth = np.full((5, 5), z)
        depth[2, 2] = 0.0
        edge = depth_edge_mask(depth, 0.1)
        assert edge[2, 2] and edge[1, 2] and edge[3, 2] and edge[2, 1] and edge[2, 3]
        assert edge.sum() == 5, z


def test_points_to_depth_is_the_ray_cast_depth_of_the_nearest_point(walk_world, walk_frames):
    """A point-cloud frame's depth (Frame.world_points): the world's own ray-cast hit points give back the
    ray-cast depth at every pixel, points farther along the same rays (given later) do not cover them, and points
    just outside the right edge of the image land nowhere."""
    from worldmodel.camera import points_to_depth
    w, h = 40, 30
    c2w = walk_frames[2].c2w
    K = intrinsics_from_fov(w, h, 60.0)
    hits = walk_world.render_hits(c2w, K, w, h)
    hit = hits["depth"] > 0
    assert 200 < hit.sum() < w * h
    pts = hits["points"][hit].astype(np.float64)
    eye = c2w[:3, 3]
    behind = eye + 1.5 * (pts - eye)
    # a point per row projecting at u = w - 0.4 (outside the image), 0.5 m away: nearer than anything
    v = np.arange(h, dtype=np.float64)
    outside = np.column_stack([np.full(h, (w - 0.4 - K[0, 2]) / K[0, 0] * 0.5), (v - K[1, 2]) / K[1, 1] * 0.5,
                               np.full(h, 0.5)])
    outside = outside @ c2w[:3, :3].T + eye
    depth = points_to_depth(np.vstack([pts, behind, outside]), K, c2w, w, h)
    assert np.allclose(depth[hit], hits["depth"][hit], rtol=1e-4)
    assert (depth[~hit] == 0).all()


def test_points_behind_the_destination_camera_land_nowhere():
    """depth_landing (recording checks, reprojection errors): a wall 5 m in front of the source camera lies 5 m
    behind a destination camera 10 m further on, looking the same way; its mirrored projections are no landing."""
    from worldmodel.camera import depth_landing
    K = intrinsics_from_fov(32, 24, 60.0)
    depth = np.full((24, 32), 5.0, np.float32)
    dst = np.eye(4)
    dst[2, 3] = 10.0
    flat, z, inside, landed = depth_landing(depth, K, np.eye(4), depth, K, dst)
    assert len(flat) == 32 * 24 and np.allclose(z, -5.0)
    assert not inside.any() and (landed == 0).all()
    assert len(reproject_depth(depth, K, np.eye(4), depth, K, dst)) == 0
    # seen from 1 m back instead, every point lands, 1 m farther than the destination's own depth of 5 m
    dst[2, 3] = -1.0
    flat, z, inside, landed = depth_landing(depth, K, np.eye(4), depth, K, dst)
    assert inside.sum() > 0.6 * len(flat) and np.allclose(z[inside] - landed[inside], 1.0)


def test_the_map_as_it_was_at_a_frame_is_what_the_frames_up_to_it_saw(walk_frames):
    """points(upto_frame=i) (scrubbing back) shows every voxel frames 0..i saw, also those later frames saw again:
    the same voxels as a map fused from frames 0..i alone."""
    both, first = VoxelPointMap(0.1, 60.0), VoxelPointMap(0.1, 60.0)
    for f in walk_frames[:2]:
        both.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    f = walk_frames[0]
    first.fuse(f.depth, f.rgb, f.K, f.c2w, f.index)
    then, _ = both.points(upto_frame=walk_frames[0].index)
    keys_then = set(both.keys_of_points(then.astype(np.float64)).tolist())
    keys_first = set(first.keys_of_points(first.points()[0].astype(np.float64)).tolist())
    assert len(then) == len(first) > 5000
    assert len(keys_then ^ keys_first) <= 0.001 * len(first)  # (a mean on a voxel face may round across it)
    assert len(both.points(upto_frame=walk_frames[1].index)[0]) == len(both) > len(first)


def test_a_ghost_is_hidden_only_once_more_frames_saw_through_it_than_carve_ratio_allows():
    """carve_ratio 0.5: a voxel two frames saw stays while one frame saw through it (1 is not more than half of 2)
    and goes when a second frame does."""
    K = intrinsics_from_fov(64, 48, 60.0)
    g = np.stack(np.meshgrid(np.arange(-2.0, 2.0, 0.02), np.arange(-1.5, 1.5, 0.02)), -1).reshape(-1, 2)
    ghost = np.column_stack([g, np.full(len(g), 4.45)])
    pmap = VoxelPointMap(voxel_size=0.1, carve=True, carve_ratio=0.5)
    for i in (0, 1):
        pmap.fuse_points(ghost, np.full((len(ghost), 3), 90, np.uint8), i)
    wall = np.full((48, 64), 5.0, np.float32)
    rows = np.arange(len(pmap))
    pmap.fuse(wall, np.full((48, 64, 3), 90, np.uint8), K, np.eye(4), 2)
    once = rows[pmap.free_frames[rows] == 1]
    assert len(once) > 20 and (pmap.seen_frames[once] == 2).all()
    assert pmap.visible_mask(once).all()
    pmap.fuse(wall, np.full((48, 64, 3), 90, np.uint8), K, np.eye(4), 3)
    assert (pmap.free_frames[once] == 2).all() and not pmap.visible_mask(once).any()


def test_ground_height_on_a_slope_is_the_height_under_the_column():
    """On a plane rising 0.25 m per m the ground under (x, z) is the plane's height there (the median over the
    columns around it), not the height at the box's edge."""
    g = np.stack(np.meshgrid(np.arange(-3.0, 3.0, 0.02), np.arange(-3.0, 3.0, 0.02)), -1).reshape(-1, 2)
    plane = np.column_stack([g[:, 0], 0.25 * g[:, 0], g[:, 1]])
    pmap = VoxelPointMap(voxel_size=0.1)
    pmap.fuse_points(plane, np.full((len(plane), 3), 90, np.uint8), 0)
    for x in (-1.0, 0.3, 1.5):
        got = pmap.ground_height(x, 0.5, -2.0, 2.0, radius=0.4)
        assert got is not None and abs(got - 0.25 * x) < 0.05, (x, got)


def test_a_frame_never_carves_the_surfaces_it_saw():
    """Carving counts a free frame only for voxels the frame did not itself observe: on noisy depth (a sensor's
    +-0.1 m), rays of deeper pixels pass through voxels their shallower neighbours observed; one frame alone must
    leave everything it saw in the map."""
    K = intrinsics_from_fov(160, 120, 60.0)
    depth = (5.0 + np.random.default_rng(0).normal(0.0, 0.1, (120, 160))).astype(np.float32)
    pmap = VoxelPointMap(0.1, 60.0, carve=True)
    pmap.fuse(depth, np.full((120, 160, 3), 90, np.uint8), K, np.eye(4), 0)
    assert len(pmap) > 5000 and (pmap.free_frames[: len(pmap)] == 0).all()
    assert len(pmap.points()[0]) == len(pmap)
