"""The WorldModel contract (worldmodel.frame): what every backend provides, and BaseWorldModel's defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory.bank import GeometricMemory
from scenes.scene import MemoryProvider
from worldmodel.actions import Action, Kinematics, TargetPose
from worldmodel.camera import CV_GL_FLIP, flip_cv_gl, look_at_c2w
from worldmodel.frame import BaseWorldModel, CacheView, WorldModel
from worldmodel.procedural import ProceduralWorld
from worldmodel.registry import create_world, world_from_description
from worldmodel.replay import ReplayWorld

TUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tum_fr1_rpy"


def test_builtin_worlds_satisfy_the_contract():
    procedural = create_world("procedural:fly", seed=2, width=32, height=24, kinematics=Kinematics(1.0, 30.0))
    replay = create_world(f"replay:{TUM}?max_frames=5")
    assert isinstance(procedural, ProceduralWorld) and isinstance(replay, ReplayWorld)
    for model in (procedural, replay):
        assert isinstance(model, WorldModel) and isinstance(model, BaseWorldModel)
        again = world_from_description(model.describe())
        assert type(again) is type(model) and again.describe() == model.describe()
    assert procedural.exact_depth and not replay.exact_depth
    assert procedural.kinematics == Kinematics(1.0, 30.0) and replay.kinematics == Kinematics()
    assert isinstance(GeometricMemory(), MemoryProvider)  # runtime check of the method names only
    first = replay.reset(0)
    assert np.allclose(replay.predict_c2w(first, Action("F", "N")), replay.sequence.c2ws[1])  # its own prediction


def test_base_world_model_defaults_move_by_the_kinematics():
    class Still(BaseWorldModel):
        name = "still"
        kinematics = Kinematics(step_m=2.0, yaw_deg=90.0)

    model, last = Still(), type("F", (), {"c2w": look_at_c2w([0, 1, 0], [0, 1, 5])})()
    moved = model.predict_c2w(last, Action("F", "L"))
    assert np.allclose(moved[:3, 3], [0, 1, 2]) and np.allclose(moved[:3, 2], [1, 0, 0], atol=1e-9)
    target = np.eye(4)
    target[:3, 3] = [3, 4, 5]
    assert np.array_equal(model.predict_c2w(last, TargetPose(target)), target)
    assert model.describe() == {"kind": "still"} and not model.exact_depth


def test_cache_view_checks_its_shapes_and_the_flip_is_an_involution():
    ok = dict(rgb=np.zeros((2, 3, 3), np.uint8), depth=np.zeros((2, 3), np.float32), valid=np.zeros((2, 3), bool),
              K=np.eye(3), c2w=np.eye(4))
    assert CacheView(**ok).width == 3
    for bad in ({"valid": np.zeros((3, 2), bool)}, {"depth": np.zeros((2, 3))}, {"K": np.eye(4)}):
        with pytest.raises(ValueError):
            CacheView(**{**ok, **bad})
    c2w = look_at_c2w([1, 2, 3], [0, 0, 0])
    assert np.allclose(flip_cv_gl(flip_cv_gl(c2w)), c2w) and np.allclose(flip_cv_gl(c2w)[:3, 2], -c2w[:3, 2])
    assert np.array_equal(CV_GL_FLIP, np.diag([1.0, -1.0, -1.0, 1.0]))
