"""Shared fixtures: a short seeded walk in the procedural world (the ground truth for geometry tests)."""

from __future__ import annotations

import pytest

from worldmodel.actions import parse_actions
from worldmodel.frame import Context
from worldmodel.procedural import ProceduralConfig, ProceduralWorld

WALK = "(FN)(FN)(fLN)(FL)(FL)(FN)(FR)(FN)(fRN)(FN)(SL)(SL)(FN)(FN)(BN)"


@pytest.fixture(scope="session")
def walk_world() -> ProceduralWorld:
    return ProceduralWorld(ProceduralConfig(width=160, height=120), seed=3)


@pytest.fixture(scope="session")
def walk_frames(walk_world):
    frames = [walk_world.reset(3)]
    for a in parse_actions(WALK):
        frames.append(walk_world.step(a, Context(recent=frames[-4:])))
    return frames
