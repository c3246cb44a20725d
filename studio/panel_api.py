"""The narrow interfaces the studio hands its panels (nerfstudio's ``ControlPanel(server, ..., rerender_cb)``
style): panels build GUI elements on ``server.gui`` and act only through these callables. Nothing here
touches a Scene: commands run on the worker thread, which passes them the scene (read it, or step it).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import viser

from scenes.scene import Scene
from worldmodel.actions import Action, TargetPose


class Submit(Protocol):
    """Queue ``run(scene)`` on the worker. Errors are notified to ``client`` (or passed to ``on_error``);
    ``on_done(result)`` runs after success; pending commands with the same ``coalesce`` key keep the newest;
    ``droppable``: it is a step, which Stop drops while it waits."""

    def __call__(self, label: str, run: Callable[[Scene], Any], client: viser.ClientHandle | None,
                 coalesce: str | None = None, on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[str], None] | None = None, droppable: bool = False) -> None: ...


class SubmitStep(Protocol):
    """Queue one step of the world by ``action`` (errors are notified to ``client``); pending steps with the
    same ``coalesce`` key keep the newest (camera steering)."""

    def __call__(self, action: Action | TargetPose, client: viser.ClientHandle | None,
                 coalesce: str | None = None) -> None: ...


class Notify(Protocol):
    """Show a notification to ``client`` (None: every connected tab); errors stay until closed."""

    def __call__(self, client: viser.ClientHandle | None, title: str, body: str, error: bool = False) -> None: ...
