"""Tests of the procedural world backend (worldmodel.procedural): determinism, geometry ground truth,
camera conventions, walking, chunk streaming and view-independent colour."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from worldmodel.camera import invert_pose, look_at_c2w, reproject_depth, unproject_depth, world_to_pixels
from worldmodel.actions import Action, Kinematics, TargetPose, parse_actions, yaw_rotation
from worldmodel.frame import Context, Frame, WorldModel
from worldmodel import terrain
from worldmodel.procedural import (INVALID_ID, MAT_PATH, MAT_TERRAIN, ProceduralConfig, ProceduralWorld,
                                   generate_chunk)


def walk(world: ProceduralWorld, first: Frame, actions: str) -> list[Frame]:
    frames = [first]
    for a in parse_actions(actions):
        frames.append(world.step(a, Context(recent=frames[-4:])))
    return frames


@pytest.fixture(scope="module")
def world() -> ProceduralWorld:
    return ProceduralWorld(seed=0)


@pytest.fixture(scope="module")
def start(world) -> Frame:
    return world.reset(0)


def test_protocol_and_frame_types(world, start):
    assert isinstance(world, WorldModel)
    assert world.name == "procedural"
    assert start.index == 0 and start.action is None
    assert start.rgb.shape == (256, 256, 3) and start.rgb.dtype == np.uint8
    assert start.depth.shape == (256, 256) and start.depth.dtype == np.float32
    assert start.c2w.dtype == np.float64 and start.c2w.shape == (4, 4)
    assert np.isfinite(start.depth).all() and (start.depth >= 0).all()
    assert np.allclose(start.K, world.K)
    assert world.triangle_count > 0 and len(world.loaded_chunks) == 49


def test_determinism_same_seed_and_actions():
    actions = "(FN)(FL)(fRN)(FR)(BN)"
    cfg = ProceduralConfig(width=96, height=80)
    a = walk(w := ProceduralWorld(cfg, seed=7), w.reset(7), actions)
    b = walk(w := ProceduralWorld(cfg, seed=7), w.reset(7), actions)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
        assert np.array_equal(fa.c2w, fb.c2w)
    assert [f.index for f in a] == list(range(6))
    other = ProceduralWorld(cfg, seed=8)
    fo = other.render(a[0].c2w)
    assert not np.array_equal(fo[0], a[0].rgb)


def test_chunk_is_pure_function_and_terrain_continuous():
    cfg = ProceduralConfig()
    c1, c2 = generate_chunk(5, 2, -1, cfg), generate_chunk(5, 2, -1, cfg)
    assert np.array_equal(c1.vertices, c2.vertices) and np.array_equal(c1.triangles, c2.triangles)
    # the world returns the same chunk however it got there
    w = ProceduralWorld(cfg, seed=5)
    w.ensure_loaded(np.array([2 * 32.0 + 5, -20.0]), radius_chunks=0)
    assert np.array_equal(w.chunk(2, -1).vertices, c1.vertices)
    # shared border between chunk (0, 0) and (1, 0): the x = 32 column of vertices coincides exactly
    n = 33
    a = generate_chunk(5, 0, 0, cfg).vertices[: n * n].reshape(n, n, 3)
    b = generate_chunk(5, 1, 0, cfg).vertices[: n * n].reshape(n, n, 3)
    assert np.array_equal(a[:, -1], b[:, 0])


def test_objects_are_closed_solids_whose_faces_point_out():
    """Every building, trunk, crown and rock is its own set of vertices; each of its faces points away from
    the mean of them (the chunk builder winds them all in one pass)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    checked = 0
    for seed, key in ((1, (0, 0)), (1, (3, -2)), (7, (-1, 4))):
        c = generate_chunk(seed, *key, ProceduralConfig())
        tris = c.triangles[~np.isin(c.tri_mat, [MAT_TERRAIN, MAT_PATH])].astype(np.int64)
        verts = c.vertices.astype(np.float64)
        links = coo_matrix((np.ones(tris.size), (np.repeat(tris[:, 0], 3), tris.ravel())), (len(verts),) * 2)
        _, part = connected_components(links, directed=False)
        used = np.unique(tris)
        centre = np.zeros((part.max() + 1, 3))
        np.add.at(centre, part[used], verts[used])
        centre /= np.maximum(np.bincount(part[used], minlength=len(centre)), 1)[:, None]
        a, b, cc = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
        out = np.einsum("ij,ij->i", np.cross(b - a, cc - a), (a + b + cc) / 3 - centre[part[tris[:, 0]]])
        assert (out > 0).all()
        checked += len(tris)
    assert checked > 500


def test_mesh_height_reads_a_chunks_known_vertices_exactly():
    rng = np.random.default_rng(3)
    i, j = np.meshgrid(np.arange(64, 97), np.arange(-32, 1))  # chunk (2, -1)'s lattice, 1 m cells
    known = (64, -32, terrain.grid_height(i, j, 1.0, 5))
    x, z = rng.uniform(60, 100, 400), rng.uniform(-36, 4, 400)  # inside the block, and around it
    assert np.array_equal(terrain.mesh_height(x, z, 1.0, 5, known=known), terrain.mesh_height(x, z, 1.0, 5))


def test_depth_is_z_depth_on_true_surface(world, start):
    pts, _ = unproject_depth(start.depth, start.K, start.c2w)
    assert len(pts) > 10000
    d = world.distance_to_surface(pts)
    assert np.median(d) < 1e-3
    assert np.percentile(d, 95) < 1e-2


def test_reprojection_between_two_poses():
    w = ProceduralWorld(ProceduralConfig(width=384, height=384), seed=0)
    frames = walk(w, w.reset(0), "(FN)(FL)")
    a, b = frames[0], frames[2]
    assert not np.allclose(a.c2w, b.c2w)
    err = reproject_depth(a.depth, a.K, a.c2w, b.depth, b.K, b.c2w)
    assert len(err) > 20000
    assert np.median(err) < 0.01  # residual is nearest-pixel lookup on grazing ground


def test_render_hits_match_render(world, start):
    hits = world.render_hits(start.c2w, start.K, 256, 256)
    assert np.array_equal(hits["depth"], start.depth)
    miss = start.depth == 0
    assert hits["geometry_ids"].dtype == np.uint32 and hits["primitive_ids"].dtype == np.uint32
    assert (hits["geometry_ids"][miss] == INVALID_ID).all() and (hits["primitive_ids"][miss] == INVALID_ID).all()
    assert (hits["geometry_ids"][~miss] != INVALID_ID).all()
    # normals face the camera and are unit length
    n = hits["normals"][~miss]
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)
    view = hits["points"][~miss] - start.c2w[:3, 3]
    assert ((n * view).sum(axis=1) <= 1e-6).all()
    # ids are stable across a scene rebuild (chunk ids, triangle index within the chunk)
    w2 = ProceduralWorld(seed=0)
    w2.ensure_loaded(start.c2w[[0, 2], 3] + 100.0)
    hits2 = w2.render_hits(start.c2w, start.K, 256, 256)
    assert np.array_equal(hits2["geometry_ids"], hits["geometry_ids"])
    assert np.array_equal(hits2["primitive_ids"], hits["primitive_ids"])


def test_image_is_upright(start):
    fwd = start.c2w[:3, 2]
    assert abs(fwd[1]) < 1e-9  # spawn looks horizontally
    sky = start.depth == 0
    assert sky[:10].mean() > 0.5  # top rows: mostly sky
    assert not sky[-10:].any()  # bottom rows: ground
    # ground gets closer towards the bottom of the image
    assert np.median(start.depth[-5:]) < np.median(start.depth[-60:-50])
    # and the sky is brighter blue at the top than the ground at the bottom
    assert start.rgb[:5][sky[:5]][:, 2].mean() > start.rgb[-5:, :, 2].mean()


def test_walking_follows_terrain_and_turn_direction():
    w = ProceduralWorld(ProceduralConfig(width=64, height=48), seed=1)
    frames = walk(w, w.reset(1), "(FN)(FN)(fLN)(FN)(rRN)(FL)(FN)(LN)(FR)")
    for f in frames:
        x, y, z = f.c2w[:3, 3]
        assert y == pytest.approx(float(w.terrain_height(x, z)) + w.config.eye_height, abs=1e-9)
        assert abs(f.c2w[1, 2]) < 1e-9  # still looking horizontally
    # a step F moves step_m horizontally along the heading
    d = frames[1].c2w[:3, 3] - frames[0].c2w[:3, 3]
    assert np.hypot(d[0], d[2]) == pytest.approx(w.config.kinematics.step_m, abs=1e-9)
    # turning L = +yaw about world +Y (actions.yaw_rotation): forward +z rotates towards +x
    c2w = look_at_c2w(frames[0].c2w[:3, 3], frames[0].c2w[:3, 3] + [0.0, 0.0, 1.0])
    f0 = w.reset(1, c2w)
    f1 = w.step(Action("S", "L"), Context(recent=[f0]))
    expected = yaw_rotation(math.radians(w.config.kinematics.yaw_deg)) @ np.array([0.0, 0.0, 1.0])
    assert np.allclose(f1.forward, expected, atol=1e-9) and f1.forward[0] > 0
    f2 = w.step(Action("S", "R"), Context(recent=[f1]))
    assert np.allclose(f2.forward, [0.0, 0.0, 1.0], atol=1e-9)
    assert f2.index == 2


def _find_building(world: ProceduralWorld):
    for r in range(0, 6):
        for cx in range(-r, r + 1):
            for cz in range(-r, r + 1):
                boxes = world.chunk(cx, cz).boxes
                if len(boxes):
                    return boxes[0]
    raise AssertionError("no building near the origin")


def test_cannot_walk_into_buildings():
    w = ProceduralWorld(ProceduralConfig(width=48, height=48), seed=0)
    xmin, zmin, xmax, zmax, _top = _find_building(w)
    zc = 0.5 * (zmin + zmax)
    eye = np.array([xmin - 3.0, 0.0, zc])
    eye[1] = float(w.terrain_height(eye[0], eye[2])) + w.config.eye_height
    f = w.reset(0, look_at_c2w(eye, eye + [1.0, 0.0, 0.0]))  # facing the building's -x wall
    frames = walk(w, f, "(FN)" * 12 + "(FL)")
    for fr in frames:
        x, z = fr.c2w[0, 3], fr.c2w[2, 3]
        assert not (xmin <= x <= xmax and zmin <= z <= zmax)
    assert frames[-1].c2w[0, 3] < xmin  # stopped in front of the wall
    assert frames[-1].c2w[0, 3] > xmin - 1.0  # but got close
    assert np.allclose(frames[-1].c2w[:3, 3], frames[-2].c2w[:3, 3])  # blocked step kept the position...
    assert frames[-1].forward[2] < -0.1  # ...but applied the turn (left of +x is -z)


def test_a_long_step_cannot_jump_through_a_building():
    """Steps longer than the body are checked along their path, walking and flying: a 12 m step from 3 m in front
    of a building used to land beyond it (only its end point was checked)."""
    from worldmodel.actions import Kinematics

    for fly in (False, True):
        w = ProceduralWorld(ProceduralConfig(width=48, height=48, fly=fly, kinematics=Kinematics(step_m=12.0)),
                            seed=0)
        xmin, zmin, xmax, zmax, top = _find_building(w)
        if xmax - xmin > 8.0:
            pytest.fail("the test needs a building less than 9 m deep along x")
        eye = np.array([xmin - 3.0, 0.0, 0.5 * (zmin + zmax)])
        eye[1] = float(w.terrain_height(eye[0], eye[2])) + (w.config.eye_height if not fly else 3.0)
        f = w.reset(0, look_at_c2w(eye, eye + [1.0, 0.0, 0.0]))
        after = w.step(Action("F", "N"), Context(recent=[f]))
        assert np.allclose(after.c2w[:3, 3], f.c2w[:3, 3]), (fly, after.c2w[:3, 3], (xmin, xmax))


def test_target_pose_keeps_clearance():
    w = ProceduralWorld(ProceduralConfig(width=32, height=32), seed=2)
    f0 = w.reset(2)
    below = f0.c2w.copy()
    below[1, 3] -= 50.0
    f1 = w.step(TargetPose(below), Context(recent=[f0]))
    x, y, z = f1.c2w[:3, 3]
    assert y == pytest.approx(float(w.terrain_height(x, z)) + 0.3)
    above = f0.c2w.copy()
    above[1, 3] += 20.0
    f2 = w.step(TargetPose(above), Context(recent=[f1]))
    assert np.array_equal(f2.c2w, above)


def test_terrain_height_matches_mesh():
    w = ProceduralWorld(seed=4)
    rng = np.random.default_rng(0)
    xz = rng.uniform(-40, 40, size=(300, 2))
    pts = np.stack([xz[:, 0], w.terrain_height(xz[:, 0], xz[:, 1]), xz[:, 1]], axis=1)
    assert np.max(w.distance_to_surface(pts)) < 1e-3
    lifted = pts + [0.0, 0.5, 0.0]  # 0.5 m above ground: no surface closer than ~0.5 m except objects
    assert np.median(w.distance_to_surface(lifted)) > 0.3


def test_chunks_unload_on_long_walk():
    cfg = ProceduralConfig(width=32, height=32, fly=True, load_radius_chunks=2, kinematics=Kinematics(step_m=4.0))
    w = ProceduralWorld(cfg, seed=3)
    eye = np.array([0.0, 90.0, 0.0])  # above every building, so nothing blocks the walk
    frames = [w.reset(3, look_at_c2w(eye, eye + [0.0, 0.0, 1.0]))]
    counts = []
    for _ in range(400):
        frames = [w.step(Action("F", "N"), Context(recent=frames[-1:]))]
        counts.append(len(w.loaded_chunks))
    assert frames[-1].c2w[2, 3] == pytest.approx(1600.0)
    assert max(counts) <= (2 * 2 + 3) ** 2
    assert all(max(abs(cx - 0), abs(cz - 50)) <= 3 for cx, cz in w.loaded_chunks)
    assert len(w._chunks) <= max(cfg.chunk_cache, 49 + 9)


def test_colour_is_view_independent():
    w = ProceduralWorld(ProceduralConfig(width=192, height=192), seed=0)
    a, b = walk(w, w.reset(0), "(FN)(SL)")[1:]
    pts, pix = unproject_depth(a.depth, a.K, a.c2w, max_depth=40.0)
    uv, z = world_to_pixels(pts, b.K, invert_pose(b.c2w))
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    ok = (z > 0) & (u >= 0) & (u < b.width) & (v >= 0) & (v < b.height)
    pix, u, v, z = pix[ok], u[ok], v[ok], z[ok]
    same = np.abs(b.depth[v, u] - z) < 0.02  # the same surface point is visible in b
    assert same.sum() > 5000
    ca = a.rgb.reshape(-1, 3)[pix[same]].astype(int)
    cb = b.rgb[v[same], u[same]].astype(int)
    diff = np.abs(ca - cb).max(axis=1)
    assert np.median(diff) <= 3
    assert np.mean(diff <= 12) > 0.8  # the rest: texture-cell edges under nearest-pixel lookup
    # and the image is textured (not flat colour), so this check means something
    assert a.rgb.reshape(-1, 3)[pix[same]].std(axis=0).mean() > 5


def test_spawn_is_clear_of_buildings():
    for seed in (0, 1, 2):
        w = ProceduralWorld(ProceduralConfig(width=32, height=32), seed=seed)
        f = w.reset(seed)
        assert not w.is_blocked(f.c2w[:3, 3], radius=2.0)
        x, y, z = f.c2w[:3, 3]
        assert y == pytest.approx(float(w.terrain_height(x, z)) + w.config.eye_height)


def test_a_flying_camera_stops_at_a_tree_crown_not_inside_it():
    """Flying at crown height toward a broadleaf tree, the camera stops outside the crown the renderer draws (it
    used to fly in: only the trunk's 0.6 m column was an obstacle). A walker passes under crowns as before."""
    from worldmodel.actions import Kinematics

    w = ProceduralWorld(ProceduralConfig(width=33, height=33, fly=True, kinematics=Kinematics(step_m=0.25)), seed=0)
    checked = 0
    for key in [(i, j) for i in range(-2, 3) for j in range(-2, 3)]:
        for px, pz, r, bottom, height, cone in w.chunk(*key).crowns:
            if cone or checked == 3:
                continue
            mid = bottom + height / 2
            for direction in ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]):
                eye = np.array([px, mid, pz]) - 3.5 * r * np.array(direction)
                if w.is_blocked(eye, crowns=True) or eye[1] < float(w.terrain_height(eye[0], eye[2])) + 0.5:
                    continue
                f = w.reset(0, look_at_c2w(eye, eye + direction))
                surface = 3.5 * r - float(f.depth[16, 16])  # the drawn crown's radius along this ray
                if not 0.5 * r < surface < 1.2 * r:  # something else is in the way: try another side
                    continue
                for _ in range(int(14 * r)):
                    f = w.step(Action("F", "N"), Context(recent=[f]))
                axis_distance = float(np.hypot(f.c2w[0, 3] - px, f.c2w[2, 3] - pz))
                assert surface < axis_distance < surface + 1.5, (key, surface, axis_distance)
                inside = np.array([px, mid, pz]) - 1.0 * np.array(direction)  # in the crown, clear of the trunk
                assert w.is_blocked(inside, crowns=True) and not w.is_blocked(inside)  # walkers pass under crowns
                checked += 1
                break
    assert checked == 3


def test_worlds_of_a_seed_share_their_generated_chunks_read_only():
    """Chunks are generated once per process for every world of a seed and chunk settings (the eval makes several
    simulators per walk, a learned world one of its own); they are read-only, and other settings get their own."""
    a = ProceduralWorld(ProceduralConfig(width=64, height=48), seed=21)
    b = ProceduralWorld(ProceduralConfig(width=128, height=128, fov_y_deg=50.0), seed=21)
    shared = a.chunk(2, -1)
    assert b.chunk(2, -1) is shared and ProceduralWorld(seed=22).chunk(2, -1) is not shared
    assert ProceduralWorld(ProceduralConfig(terrain_cell=2.0), seed=21).chunk(2, -1) is not shared
    with pytest.raises(ValueError, match="read-only"):
        shared.vertices[0, 0] = 1.0
    fresh = generate_chunk(21, 2, -1, ProceduralConfig())
    assert all(np.array_equal(getattr(fresh, k), getattr(shared, k))
               for k in ("vertices", "triangles", "tri_color", "tri_mat", "boxes", "circles", "crowns"))


def test_a_walker_says_its_eye_height_and_a_flying_camera_says_none():
    """WalkingWorld: what a learned world handed these frames rides the ground at (scenes.factory)."""
    from worldmodel.frame import WalkingWorld

    walker, flyer = ProceduralWorld(ProceduralConfig(eye_height=1.2)), ProceduralWorld(ProceduralConfig(fly=True))
    assert isinstance(walker, WalkingWorld) and walker.walker_eye_height == 1.2 and flyer.walker_eye_height is None
    frame = walker.reset(0)
    x, y, z = frame.c2w[:3, 3]
    assert y - walker.terrain_height(x, z) == pytest.approx(walker.walker_eye_height)


def test_chunk_of_floors_negative_coordinates_and_the_chunk_holding_a_point_is_loaded():
    """Chunk (cx, cz) covers [cx * size, (cx + 1) * size) on each axis, negative coordinates too (floor, not
    truncation towards zero): a camera at x = -0.5 is in chunk -1, and with radius 0 exactly that chunk loads."""
    w = ProceduralWorld(ProceduralConfig(width=16, height=16), seed=1)
    s = w.config.chunk_size
    for x, z in ((-0.5, -40.0), (-s, 2 * s - 1e-6), (31.9, -64.0), (-95.0, 0.0)):
        cx, cz = w.chunk_of(x, z)
        assert cx * s <= x < (cx + 1) * s and cz * s <= z < (cz + 1) * s, (x, z, cx, cz)
    w.ensure_loaded(np.array([-0.5, -40.0]), radius_chunks=0)
    assert w.loaded_chunks == {(-1, -2)}


def test_a_world_reset_to_another_seed_shows_that_seeds_world():
    """Resetting a world with another seed drops the chunks of the old seed: its frames are those of a world
    made with the new seed (not the old seed's ground under the new one's spawn)."""
    cfg = ProceduralConfig(width=48, height=32)
    w = ProceduralWorld(cfg, seed=1)
    w.reset(1)
    again = w.reset(2)
    fresh = ProceduralWorld(cfg, seed=2).reset(2)
    assert np.array_equal(again.c2w, fresh.c2w)
    assert np.array_equal(again.depth, fresh.depth) and np.array_equal(again.rgb, fresh.rgb)


def test_value_noise_is_continuous_across_lattice_lines_and_has_no_mirror_symmetry():
    """value_noise is C1 smooth: just either side of a lattice line (x or z a multiple of the scale) it agrees to
    first order; it is the lattice hash at lattice points, and the hash of (i, j) is not that of (j, i) (a
    terrain mirrored about x = z would be)."""
    rng = np.random.default_rng(4)
    scale, eps = 13.0, 1e-7
    lines = scale * rng.integers(-20, 20, 200).astype(np.float64)
    free = rng.uniform(-300, 300, 200)
    for x, z in ((lines, free), (free, lines)):
        dx, dz = (eps, 0.0) if x is lines else (0.0, eps)
        lo = terrain.value_noise(x - dx, z - dz, scale, 9)
        hi = terrain.value_noise(x + dx, z + dz, scale, 9)
        assert np.max(np.abs(hi - lo)) < 1e-5
    i, j = rng.integers(-1000, 1000, 500), rng.integers(-1000, 1000, 500)
    at_lattice = terrain.value_noise(i * scale, j * scale, scale, 9)
    assert np.allclose(at_lattice, terrain.hash2(i, j, 9), atol=1e-6)
    assert np.mean(terrain.hash2(i, j, 9) != terrain.hash2(j, i, 9)) > 0.95


def test_paths_follow_their_centre_lines():
    """path_distance is 0 on a path's centre line (x = 17 + 9 sin(z / 41 + phase) + k * spacing for the x
    family) and path_weight 1 there; it is 0 where both families are farther than half-width + blend."""
    seed = 6
    ph = (seed % 997) * 0.37
    z = np.linspace(-500, 500, 401)
    for k in (-2, 0, 3):
        x = 17.0 + 9.0 * np.sin(z / 41.0 + ph) + k * terrain.PATH_SPACING
        assert np.max(terrain.path_distance(x, z, seed)) < 1e-6
        assert np.allclose(terrain.path_weight(x, z, seed), 1.0)
    rng = np.random.default_rng(1)
    x, z = rng.uniform(-400, 400, 4000), rng.uniform(-400, 400, 4000)
    d = terrain.path_distance(x, z, seed)
    far = d > terrain.PATH_HALF_WIDTH + terrain.PATH_BLEND
    assert far.mean() > 0.5 and np.all(terrain.path_weight(x[far], z[far], seed) == 0.0)
    # 1 m off the centre line (measured along x, as the distance is): at most 1 m from a path
    x1 = 17.0 + 9.0 * np.sin(z / 41.0 + ph) + 1.0
    assert np.max(np.abs(terrain.path_distance(x1, z, seed) - 0.5)) <= 0.5 + 1e-9


def test_far_cuts_by_ray_length_not_by_z_depth():
    """ProceduralConfig.far is a ray length: every pixel with depth lies within far of the camera (its
    unprojected point), and the ones cut off are those whose ray is longer, though their z-depth is shorter (the
    image corners of a wide view over open ground)."""
    cfg = ProceduralConfig(width=64, height=48, fov_y_deg=90.0, far=25.0)
    w = ProceduralWorld(cfg, seed=1)
    f0 = w.reset(1)
    down = look_at_c2w(f0.position, f0.position + 10.0 * f0.forward - [0.0, 1.5, 0.0])  # the ground to ~20 m
    rgb, depth = w.render(down)
    pts, _ = unproject_depth(depth, w.K, down)
    assert len(pts) > 100 and np.max(np.linalg.norm(pts - down[:3, 3], axis=1)) <= cfg.far + 1e-3
    full = ProceduralWorld(dataclasses.replace(cfg, far=1000.0), seed=1)
    far_depth = full.render(down)[1]
    rays = np.linalg.norm(np.linalg.inv(w.K) @ np.stack([*np.meshgrid(np.arange(64.0), np.arange(48.0)),
                                                         np.ones((48, 64))]).reshape(3, -1), axis=0).reshape(48, 64)
    cut = (far_depth > 0) & (far_depth * rays > cfg.far)
    assert cut.any() and (depth[cut] == 0).all() and (far_depth[cut] < cfg.far).any()
    assert np.array_equal(depth[~cut], far_depth[~cut])
