"""Third-party worlds plug in through the ``worldstudio.worlds`` entry-point group (importlib.metadata)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scenes.factory import make_scene
from scenes.session import load_session, save_session
from worldmodel.actions import Kinematics, parse_actions
from worldmodel.frame import WorldModel
from worldmodel.registry import WorldSpecError, available_worlds, create_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def plugin_site(tmp_path: Path):
    """A site directory holding an installed distribution 'wall-world' that declares one entry point."""
    site = tmp_path / "site"
    dist = site / "wall_world-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wall-world\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[worldstudio.worlds]\nwall = tests.plugin_world:make_wall_world\n"
                                           "tinted = tests.plugin_world:TINTED_WALL\n"
                                           "longstep = tests.plugin_world:LONG_STEP_WALL\n"
                                           "procedural = tests.plugin_world:make_wall_world\n")  # hidden: a built-in
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    importlib.invalidate_caches()


def test_a_plugin_world_is_found_built_stepped_and_saved(plugin_site, tmp_path):
    worlds = available_worlds()
    assert {"procedural", "replay", "wall"} <= set(worlds) and worlds["wall"].origin == "wall-world"
    assert worlds["wall"].description == "A flat wall 3 m ahead, coloured by ARG (red | green)."
    model = create_world("wall:red", seed=1, width=40, height=30)
    assert isinstance(model, WorldModel) and model.exact_depth
    scene = make_scene("wall:green", 2, size=(40, 30))
    scene.run(parse_actions("(FN)(FN)(SL)"))
    assert np.all(scene.current.rgb == (30, 200, 60)) and scene.current.rgb.shape == (30, 40, 3)
    assert np.allclose(scene.current.position, [0.0, 0.0, 1.0])  # two steps of 0.5 m along +z
    assert len(scene.map) > 0 and scene.memory is not None
    loaded = load_session(save_session(scene, tmp_path / "s"))  # rebuilt by calling the factory again
    assert loaded.model.describe() == scene.model.describe() and loaded.model.describe()["arg"] == "green"
    loaded.step(parse_actions("(FN)")[0])
    assert np.all(loaded.current.rgb == (30, 200, 60))
    with pytest.raises(WorldSpecError, match="red or green"):
        create_world("wall:blue")


def test_a_plugin_world_with_steps_of_its_own_is_told_when_none_are_asked(plugin_site, tmp_path):
    """A plugin whose WorldPlugin says own_kinematics gets None when no steps are asked (its own 2 m / 45 degrees)
    and keeps an explicit 0.5 m / 10 degrees; a plain plugin still gets the default when none are asked; a
    session of it reopens at the steps it walked."""
    from launch import main

    for asked, walked in ((None, Kinematics(2.0, 45.0)), (Kinematics(), Kinematics()),
                          (Kinematics(1.0), Kinematics(1.0))):
        assert create_world("longstep", kinematics=asked).kinematics == walked
    assert create_world("wall:red", width=8, height=8).kinematics == Kinematics()
    scene = make_scene("longstep", 0, size=(16, 12))
    scene.run(parse_actions("(FN)"))
    assert np.allclose(scene.current.position, [0.0, 0.0, 2.0])
    assert load_session(save_session(scene, tmp_path / "s")).model.kinematics == Kinematics(2.0, 45.0)
    assert main(["run", "--world", "longstep", "--step-m", "0.5", "--yaw-deg", "10", "--actions", "(FN)",
                 "--size", "16", "16", "--no-video", "--out", str(tmp_path / "run")]) == 0
    assert load_session(tmp_path / "run" / "session").model.kinematics == Kinematics()
    assert main(["run", "--world", "longstep", "--yaw-deg", "10", "--actions", "(FN)", "--size", "16", "16",
                 "--no-video", "--out", str(tmp_path / "one_flag")]) == 0  # the other: its own (it was 0.5 m)
    assert load_session(tmp_path / "one_flag" / "session").model.kinematics == Kinematics(2.0, 10.0)


def test_a_plugin_world_that_describes_itself_is_rebuilt_by_its_plugin(plugin_site, tmp_path):
    """A world whose describe() holds more than its spec (here a tint set after it was made) comes back from a
    session through its plugin's from_description (a WorldPlugin entry point), not as the factory's default."""
    assert available_worlds()["tinted"].description == "A grey wall 3 m ahead; tint it with its rgb attribute."
    scene = make_scene("tinted", 2, size=(40, 30), kinematics=Kinematics(step_m=0.25))
    scene.model.rgb = np.array((200, 120, 10), np.uint8)
    scene.run(parse_actions("(FN)"))
    loaded = load_session(save_session(scene, tmp_path / "s"))
    loaded.step(parse_actions("(FN)")[0])
    assert np.all(loaded.current.rgb == (200, 120, 10)) and loaded.current.rgb.shape == (30, 40, 3)
    assert np.allclose(loaded.current.position, [0.0, 0.0, 0.5])  # its 0.25 m steps


def test_launch_worlds_lists_builtins_and_the_plugin(plugin_site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_site), str(ROOT)]))
    res = subprocess.run([sys.executable, str(ROOT / "launch.py"), "worlds"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert {"procedural", "replay", "wall"} <= set(lines)
    assert "coloured by ARG" in lines["wall"] and "plugin: wall-world" in lines["wall"]
    assert "plugin: " not in lines["procedural"]  # the built-in wins, and the hidden plugin is said
    assert "note: the plugin world procedural (wall-world) is hidden by another world of that name" in res.stderr


def test_unknown_world_names_what_is_there():
    with pytest.raises(WorldSpecError, match="procedural, replay"):
        create_world("minecraft")
