"""One way to build a Scene, shared by the studio (start, *Open world*, *Open session*), the headless
``run`` and Python scripts::

    scene = make_scene("procedural:fly", seed=3)                 # reset, with geometry-aware memory
    scene = make_scene(MyWorld(), memory=False)                  # any WorldModel instance
    scene = make_scene(session="sessions/latest")                # a saved session, with its memory settings
    learned = continue_with_learned_model(scene)                 # the learned model goes on from its cursor
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from memory.bank import GeometricMemory, MemoryConfig
from scenes.framestore import FrameStore
from scenes.scene import MemoryProvider, Scene, SceneConfig
from worldmodel.actions import Kinematics
from worldmodel.frame import WalkingWorld, WorldModel
from worldmodel.registry import create_world


def make_memory(memory: bool | MemoryConfig | MemoryProvider | None, saved: dict | None = None
                ) -> MemoryProvider | None:
    """True -> GeometricMemory (with the ``saved`` settings of a session when given), a MemoryConfig ->
    GeometricMemory(config), a MemoryProvider as it is, False/None -> no memory."""
    if memory is None or memory is False:
        return None
    if memory is True:
        return GeometricMemory.from_description(saved) if saved else GeometricMemory()
    if isinstance(memory, MemoryConfig):
        return GeometricMemory(memory)
    return memory


def make_scene(world: str | WorldModel = "procedural", seed: int = 0, *, size: tuple[int, int] | None = None,
               kinematics: Kinematics | None = None, config: SceneConfig | None = None,
               memory: bool | MemoryConfig | MemoryProvider = True, session: str | Path | None = None,
               reset: bool = True, spill_near: str | Path | None = None, session_meta: dict | None = None) -> Scene:
    """A Scene over ``world`` (a spec for worldmodel.registry.create_world, e.g. ``"procedural:fly"``,
    ``"replay:PATH"`` or a plugin name, or a WorldModel instance), reset at ``seed`` unless ``reset=False``.

    size: (width, height) of generated frames (None: the world's own default); kinematics: metres/degrees per action step (spec worlds);
    memory: see :func:`make_memory` (default: GeometricMemory). session: open this saved session folder
    instead (world, seed, size and kinematics then come from it; ``config`` is ignored).
    spill_near: the folder beside which frames that leave RAM are written (default: the session's parent
    folder when opening one, else the temporary folder); see scenes.framestore.FrameStore. session_meta: the
    session's session.json as :func:`scenes.session.read_session_meta` returned it (read here when None).
    Raises WorldSpecError / SessionError / ValueError with a one-line message.
    """
    if session is not None:
        from scenes.session import load_session, read_session_meta, saved_memory_config

        meta = read_session_meta(session) if session_meta is None else session_meta  # read once: memory, session
        saved = saved_memory_config(meta) if memory is True else None
        return load_session(session, memory=make_memory(memory, saved), spill_near=spill_near, meta=meta)
    if isinstance(world, str):
        width, height = size if size is not None else (None, None)
        world = create_world(world, seed=seed, width=width, height=height, kinematics=kinematics)
    config = config or SceneConfig()
    store = FrameStore(ram_frames=config.ram_frames, spill_near=spill_near)
    try:
        scene = Scene(world, config, memory=make_memory(memory), store=store)
    except BaseException:
        store.close()  # its spill folder goes with it
        raise
    if reset:
        try:
            scene.reset(seed)
        except BaseException:
            scene.close()  # its spill folder goes with it
            raise
    return scene


def continue_with_learned_model(scene: Scene, weights: str | os.PathLike | None = None) -> Scene:
    """A new Scene (reset) in which the learned world model goes on from the frame at ``scene``'s cursor, with
    the frames before it in the branch handed over as its own (``Scene.reset(prelude=)``, each cut and resized
    to the model's size by ``NeuralWorld.adopt``): its map and memory hold what they saw, so turning back shows
    it, and a walker's camera (a WalkingWorld's: the simulator's, not a recording's) rides the ground at its
    height. ``weights``: a folder or hub repo id; None: a learned world's own weights and settings, else the
    shipped ones. ``scene`` is left as it was (close it when done). ValueError when the cursor frame has no
    depth."""
    from worldmodel.neural.world import SHIPPED_WEIGHTS, NeuralWorld

    current = scene.model
    same = ({"weights": current.weights, "bf16": current.bf16, "context_noise": current.context_noise}
            if isinstance(current, NeuralWorld) and weights is None else {"weights": weights or SHIPPED_WEIGHTS})
    eye_height = current.walker_eye_height if isinstance(current, WalkingWorld) else None
    model = NeuralWorld(seed=scene.seed, kinematics=current.kinematics, first_frame=scene.current,
                        eye_height=eye_height, **same)
    learned = make_scene(model, scene.seed, config=dataclasses.replace(scene.config), reset=False)
    try:
        learned.reset(scene.seed, prelude=(model.adopt(f) for f in scene.iter_frames(upto=scene.cursor - 1)))
    except BaseException:
        learned.close()
        raise
    return learned
