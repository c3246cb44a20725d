"""Mistakes a plugin author makes, each refused with one line before a session that could not be opened again
(or that opens as another world) is made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scenes.factory import make_scene
from scenes.scene import SceneError
from scenes.session import SessionError, save_session
from worldmodel.actions import Kinematics, parse_actions
from worldmodel.camera import intrinsics_from_fov
from worldmodel.frame import BaseWorldModel, Frame
from worldmodel.registry import register


class Wall(BaseWorldModel):
    name = "mistake_wall"
    exact_depth = True

    def __init__(self, distance: float = 3.0, size=(32, 24), kinematics: Kinematics = Kinematics(), depth_dtype=np.float32):
        self.distance, self.size, self.kinematics, self.depth_dtype = distance, size, kinematics, depth_dtype
        self.K = intrinsics_from_fov(size[0], size[1], 60.0)

    def _frame(self, index, c2w, action=None):
        w, h = self.size
        depth = np.full((h, w), self.distance, np.float32)
        if self.depth_dtype == np.uint16:
            depth = (depth * 1000).astype(np.uint16)
        return Frame(index, np.full((h, w, 3), 128, np.uint8), depth, self.K, c2w, action)

    def reset(self, seed, start=None):
        return self._frame(0, np.eye(4) if start is None else start)

    def step(self, action, context):
        return self._frame(context.last.index + 1, self.target_c2w(action, context), action)


class OwnDescription(Wall):
    def describe(self):
        return {"kind": "mistake_wall", "distance": self.distance}


def _factory(arg, seed, width, height, kinematics):
    """A wall ARG metres ahead."""
    return OwnDescription(float(arg or 3.0), (width or 32, height or 24), kinematics)


register("mistake_wall", _factory)


def test_a_frame_with_integer_depth_is_refused_naming_the_unit():
    with pytest.raises(ValueError, match="float32 z-depth in metres.*millimetres"):
        make_scene(Wall(depth_dtype=np.uint16))


def test_a_frame_with_a_list_for_K_is_refused_naming_it():
    with pytest.raises(ValueError, match="Frame.K must be a numpy array"):
        Frame(0, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), np.eye(3).tolist(), np.eye(4))


@pytest.mark.parametrize("desc, why", [({"kind": "x", "K": np.eye(3)}, "not plain JSON"),
                                       ({"type": "x"}, "string 'kind'"), (None, "string 'kind'")])
def test_a_world_whose_description_a_session_cannot_hold_is_refused(desc, why):
    class Described(Wall):
        def describe(self):
            return desc

    with pytest.raises(SceneError, match=why):
        make_scene(Described())


def test_a_class_instead_of_an_instance_is_refused():
    with pytest.raises(SceneError, match="class Wall, not an instance"):
        make_scene(Wall)


def test_a_session_of_a_world_its_factory_does_not_rebuild_is_refused_not_opened_as_another(tmp_path):
    scene = make_scene("mistake_wall:5", seed=1)  # describes itself as distance 5 without an 'arg'
    scene.run(parse_actions("(FN)"))
    save_session(scene, tmp_path / "s")
    scene.close()
    with pytest.raises(SessionError, match="cannot be rebuilt from its description"):
        make_scene(session=tmp_path / "s")


def test_a_spec_world_with_the_default_description_reopens(tmp_path):
    register("mistake_plain_wall", lambda arg, seed, width, height, kinematics: Wall(float(arg or 3.0),
                                                                                   (width or 32, height or 24), kinematics))
    scene = make_scene("mistake_plain_wall:5", seed=1, size=(40, 20), kinematics=Kinematics(step_m=0.25))
    scene.run(parse_actions("(FN)"))
    save_session(scene, tmp_path / "s")
    scene.close()
    again = make_scene(session=tmp_path / "s")
    assert again.model.distance == 5.0 and again.model.kinematics.step_m == 0.25 and again.current.width == 40
    again.close()


def test_a_factory_with_the_wrong_signature_is_named():
    from worldmodel.registry import WorldSpecError, create_world

    register("mistake_short", lambda arg, seed: Wall())
    with pytest.raises(WorldSpecError, match="does not take \\(arg, seed, width, height, kinematics\\)"):
        create_world("mistake_short")


def test_bad_depth_and_confidence_from_a_world_are_zeroed_or_refused(tmp_path):
    """NaN, inf and a few negative depth pixels are no measurement: stored as 0 (the map ignored them already);
    depth negative for the most part is an OpenGL camera's -z, refused naming the convention; a confidence outside
    [0, 1] or NaN (its frames fused nothing) is refused."""
    class Spotty(Wall):
        def __init__(self, depth_fill=None, confidence=None):
            super().__init__()
            self.depth_fill, self.confidence = depth_fill, confidence

        def _frame(self, index, c2w, action=None):
            frame = super()._frame(index, c2w, action)
            if self.depth_fill is not None:
                frame.depth[: self.depth_fill[0]] = self.depth_fill[1]
            if self.confidence is not None:
                frame = dataclasses.replace(frame, confidence=np.full(frame.depth.shape, self.confidence, np.float32))
            return frame

    scene = make_scene(Spotty(depth_fill=(3, np.nan)))
    scene.run(parse_actions("(FN)"))
    assert np.isfinite(scene.current.depth).all() and (scene.current.depth[:3] == 0).all()
    assert (scene.current.depth[3:] == 3.0).all() and len(scene.map) > 0
    scene.close()
    for bad in (np.inf, -1.0):
        scene = make_scene(Spotty(depth_fill=(2, bad)))
        assert (scene.current.depth[:2] == 0).all() and (scene.current.depth[2:] == 3.0).all()
        scene.close()
    with pytest.raises(SceneError, match="mostly negative depth.*OpenGL"):
        make_scene(Spotty(depth_fill=(24, -3.0)))
    for confidence in (np.nan, 7.0):
        with pytest.raises(SceneError, match="confidence that is not finite in \\[0, 1\\]"):
            make_scene(Spotty(confidence=confidence))


def test_a_session_of_a_world_handed_as_an_instance_reopens_once_its_name_is_registered(tmp_path):
    """README: a world handed to make_scene as an instance is saved under its name, which then needs registering
    too: its description is the name alone, so the registered factory rebuilds it (as sessions saved so before
    the rebuild check did)."""
    class Named(Wall):
        name = "mistake_instance_wall"

    register("mistake_instance_wall", lambda arg, seed, width, height, kinematics: Named())
    scene = make_scene(Named())
    scene.run(parse_actions("(FN)"))
    assert scene.model.describe() == {"kind": "mistake_instance_wall"}
    save_session(scene, tmp_path / "s")
    scene.close()
    again = make_scene(session=tmp_path / "s")
    assert again.model.name == "mistake_instance_wall" and again.length == 2
    again.close()


def test_a_factory_that_ignores_the_size_and_steps_asked_is_said(tmp_path, capsys):
    """`run --size W H --step-m M` with a plugin whose factory ignores them walked its own size and steps without a
    word; a note now says what the world makes."""
    from launch import main

    register("mistake_fixed_wall", lambda arg, seed, width, height, kinematics: Wall())  # 32x24, 0.5 m, always
    assert main(["run", "--world", "mistake_fixed_wall", "--size", "40", "30", "--step-m", "0.25", "--actions",
                 "(FN)", "--no-video", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert ("note: the mistake_wall world makes 32x24 frames (not 40x30) and steps of 0.5 m and 10 degrees (not "
            "0.25 m and 10 degrees)") in err, err
    assert main(["run", "--world", "mistake_fixed_wall", "--size", "32", "24", "--actions", "(FN)", "--no-video",
                 "--out", str(tmp_path / "b")]) == 0
    assert "world makes" not in capsys.readouterr().err


def test_a_world_member_of_the_wrong_type_is_named():
    """The contract was checked for presence only: kinematics given as a dict passed and failed at the first step
    ("'dict' object has no attribute 'apply'"); now the Scene names the member and the type it wants."""
    wall = Wall()
    wall.kinematics, wall.exact_depth = {"step_m": 0.5}, "yes"
    with pytest.raises(SceneError, match=r"its kinematics \(a dict, not Kinematics\), exact_depth \(a str, not bool\)"):
        make_scene(wall)


def test_a_member_named_nearly_as_the_contracts_is_warned_of():
    """A misspelt optional member (predict_c2W, exact_depths) was never called, and the default stood in for it
    without a word; defining the class now warns, naming the member meant. Names merely alike are left alone."""
    with pytest.warns(UserWarning, match="Misspelt.predict_c2W is named nearly as the contract's predict_c2w"):
        class Misspelt(Wall):
            def predict_c2W(self, last, action):
                return last.c2w

    with pytest.warns(UserWarning, match="exact_depths is named nearly as the contract's exact_depth"):
        class Plural(Wall):
            exact_depths = True

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Alike(Wall):
            closed, steps, step_m, render = False, 3, 0.5, None


def _factory_missing_a_dependency(arg, seed, width, height, kinematics):
    """A world whose factory imports what is not installed."""
    raise ModuleNotFoundError("No module named 'some_optional_dependency'")


register("mistake_missing_dependency", _factory_missing_a_dependency)


def test_a_factory_that_fails_inside_is_one_line_naming_it(tmp_path, capsys):
    """A plugin factory that raised anything but ValueError/OSError (its optional dependency missing, a bug) ended
    `run` and `view` in a traceback through the registry and the factory module; now one line naming the world,
    the factory and its error, and nothing is written."""
    from launch import main
    from worldmodel.registry import WorldSpecError

    with pytest.raises(WorldSpecError, match="'mistake_missing_dependency' could not be made.*ModuleNotFoundError"):
        make_scene("mistake_missing_dependency")
    out = tmp_path / "out"
    assert main(["run", "--world", "mistake_missing_dependency", "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "_factory_missing_a_dependency raised ModuleNotFoundError" in err[0], err
    assert "report it with this line" in err[0]  # (registered here, a built-in: not "reinstall a built-in world")
    assert not (out / "session").exists()


def _plain_wall(arg, seed, width, height, kinematics):
    """A wall ARG metres ahead, described by the registry (the spec it was made from)."""
    return Wall(float(arg or 3.0), (width or 32, height or 24), kinematics)


register("plain_wall", _plain_wall)


def test_the_same_command_with_resume_is_not_told_its_plugin_world_was_not_used(tmp_path, capsys):
    """A registered world made without --size records no size in its description: `run --resume` with the same
    --world built it again at the frame size, found it described otherwise and said '--world plain_wall not used'.
    Another wall (another spec) is still said."""
    from launch import main

    out = tmp_path / "walk"
    assert main(["run", "--world", "plain_wall", "--steps", "2", "--no-video", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", "--world", "plain_wall", "--steps", "3", "--no-video", "--out", str(out),
                 "--resume", str(out / "session")]) == 0
    assert "not used" not in capsys.readouterr().err
    assert main(["run", "--world", "plain_wall:5", "--steps", "4", "--no-video", "--out", str(out),
                 "--resume", str(out / "session")]) == 0
    assert "note: --world plain_wall:5 not used: --resume goes on with the world" in capsys.readouterr().err
