"""DeepVerse action grammar and camera kinematics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldmodel.actions import (ALL_ACTIONS, Action, ActionParseError, Kinematics, TargetPose, action_from_text,
                                action_to_text, format_actions, parse_actions)
from worldmodel.camera import look_at_c2w


def test_valid_strings_from_deepverse():
    acts = parse_actions("(rLN)(fRL)(BN)(LN)(RN)")
    assert [str(a) for a in acts] == ["(rLN)", "(fRL)", "(BN)", "(LN)", "(RN)"]
    assert format_actions(acts) == "(rLN)(fRL)(BN)(LN)(RN)"
    assert parse_actions(" (FN) (SL)\n(fLR) ") == [Action("F", "N"), Action("S", "L"), Action("fL", "R")]
    assert len(ALL_ACTIONS) == 27


@pytest.mark.parametrize("text,position,token", [
    ("(rL)", 3, ")"),         # rL is a translation: the steering is missing
    ("(fR_L)", 3, "_"),
    ("(B)", 2, ")"),
    ("(N)", 1, "N"),
    ("(FRB)", 3, "B"),
    ("(FN)(FN", 7, ""),
    ("(FN)x(FN)", 4, "x"),
    ("", 0, ""),
    ("(fln)", 2, "l"),        # a diagonal's second letter is the bad one, not its 'f'
    ("(r", 2, ""),
])
def test_invalid_strings_name_position_and_token(text, position, token):
    with pytest.raises(ActionParseError) as info:
        parse_actions(text)
    err = info.value
    assert (err.position, err.token) == (position, token)
    msg = str(err)
    assert f"position {position}" in msg and "\n" not in msg


def _start():
    return look_at_c2w(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 13.0]))  # looking along +Z


def test_forward_moves_along_heading_and_left_is_counter_clockwise():
    kin = Kinematics(step_m=0.5, yaw_deg=10.0)
    c2w = _start()
    fwd = kin.apply(c2w, Action("F", "N"))
    assert np.allclose(fwd[:3, 3], [1.0, 2.0, 3.5]) and np.allclose(fwd[:3, :3], c2w[:3, :3])
    left = kin.apply(c2w, Action("L", "N"))
    # Facing +Z with +Y up, the camera's left is +X (right-handed: right = forward x up = -X).
    assert np.allclose(left[:3, 3], [1.5, 2.0, 3.0])
    assert np.allclose(c2w[:3, 0], [-1.0, 0.0, 0.0])  # OpenCV x (right) is -X here
    turned = kin.apply(c2w, Action("S", "L"))
    f = turned[:3, 2]
    # Counter-clockwise seen from above (+Y looking down): +Z turns towards +X.
    assert math.isclose(math.degrees(math.atan2(f[0], f[2])), 10.0, abs_tol=1e-9)
    assert np.allclose(turned[:3, 3], c2w[:3, 3])
    diag = kin.apply(c2w, Action("fR", "N"))
    assert np.allclose(diag[:3, 3] - c2w[:3, 3], 0.5 * np.array([-1, 0, 1]) / math.sqrt(2))


def test_kinematics_keep_a_rigid_upright_camera():
    kin = Kinematics(step_m=1.0, yaw_deg=15.0)
    c2w = _start()
    for a in parse_actions("(FL)(fRR)(rLL)(BN)(RN)" * 10):
        c2w = kin.apply(c2w, a)
    R = c2w[:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and math.isclose(np.linalg.det(R), 1.0, abs_tol=1e-9)
    assert abs(c2w[1, 3] - 2.0) < 1e-9  # translations stay horizontal
    assert abs(R[1, 0]) < 1e-9            # no roll


def test_full_turn_returns_home():
    kin = Kinematics(step_m=1.0, yaw_deg=10.0)
    c2w = _start()
    for _ in range(36):
        c2w = kin.apply(c2w, Action("F", "L"))
    assert np.allclose(c2w[:3, :3], _start()[:3, :3], atol=1e-9)
    assert np.linalg.norm(c2w[:3, 3] - _start()[:3, 3]) < 1e-6  # a closed 36-gon


def test_nearest_action_inverts_apply():
    kin = Kinematics()
    c2w = _start()
    for a in ALL_ACTIONS:
        assert kin.nearest_action(c2w, kin.apply(c2w, a)) == a


def test_action_text_roundtrip():
    pose = TargetPose(_start())
    back = action_from_text(action_to_text(pose))
    assert isinstance(back, TargetPose) and np.array_equal(back.c2w, pose.c2w)
    assert action_from_text(action_to_text(Action("fL", "R"))) == Action("fL", "R")
    assert action_from_text("") is None
    with pytest.raises(ValueError):
        action_from_text("pose:1,2,3")


def test_a_move_is_refused_only_when_a_commanded_move_was_not_made():
    kin = Kinematics(step_m=0.5, yaw_deg=10.0)
    start = look_at_c2w(np.array([1.0, 1.7, 2.0]), np.array([4.0, 1.7, 6.0]))
    forward = Action("F", "L")
    turned_in_place = kin.apply(start, Action("S", "L"))
    assert kin.move_refused(start, turned_in_place, forward)          # an obstacle: it only turned
    regrounded = turned_in_place.copy()
    regrounded[1, 3] += 0.2                                          # a walker re-seated on the terrain
    assert kin.move_refused(start, regrounded, forward)
    assert not kin.move_refused(start, kin.apply(start, forward), forward)  # the move was made
    assert not kin.move_refused(start, turned_in_place, Action("S", "L"))   # stay was asked for
    assert not kin.move_refused(start, start, TargetPose(start))            # a target pose is never refused
    assert not Kinematics(step_m=0.0).move_refused(start, turned_in_place, forward)  # nothing to refuse


def test_a_generated_walk_is_made_on_demand_and_reads_the_same_every_way():
    """`run --steps N` walks (accepted up to 10M steps) are made as they are taken: the walk of 10M steps exists at
    once (it was a list built before the first step: 106 s and 1.5 GB), and iterating, indexing forward or back,
    negative indices and slices of slices all give the same actions."""
    from worldmodel.actions import generated_walk

    huge = generated_walk("random", 10_000_000, 1)
    assert len(huge) == 10_000_000 and len(huge[9_999_990:]) == 10
    walk = generated_walk("random", 300, 7)
    listed = list(walk)
    assert len(listed) == 300 and len(set(listed)) > 5  # a wander, not one action
    assert [walk[i] for i in range(300)] == listed and [walk[i] for i in (250, 3, 299, 0)] == [
        listed[250], listed[3], listed[299], listed[0]]
    assert walk[-1] == listed[-1] and list(walk[40:200][10:20]) == listed[50:60] and walk[::100] == listed[::100]
    assert list(generated_walk("random", 300, 8)) != listed  # another seed, another walk
    assert set(generated_walk("orbit", 5, 0)) == {Action("F", "L")}
    with pytest.raises(IndexError):
        walk[300]


def test_a_step_translates_along_the_old_heading_then_turns():
    """(FL): forward along the heading the camera had, then the turn (the module's rule): from a camera looking
    along +z the step ends 0.5 m along +z exactly, looking 10 degrees left (towards +x)."""
    eye = np.array([1.0, 1.6, 2.0])
    c2w = look_at_c2w(eye, eye + [0.0, 0.0, 1.0])
    out = Kinematics(step_m=0.5, yaw_deg=10.0).apply(c2w, Action("F", "L"))
    assert np.allclose(out[:3, 3], eye + [0.0, 0.0, 0.5])
    assert np.allclose(out[:3, 2], [math.sin(math.radians(10)), 0.0, math.cos(math.radians(10))])


def test_a_camera_looking_straight_down_steps_towards_the_top_of_its_image():
    """Looking straight down there is no horizontal forward; F moves towards the top edge of the image (the
    camera's -y axis): here world +z."""
    eye = np.array([0.0, 5.0, 0.0])
    c2w = look_at_c2w(eye, eye - [0.0, 10.0, 0.0])
    assert np.allclose(-c2w[:3, 1], [0.0, 0.0, 1.0])
    out = Kinematics(step_m=0.5).apply(c2w, Action("F", "N"))
    assert np.allclose(out[:3, 3], eye + [0.0, 0.0, 0.5])
