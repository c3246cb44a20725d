"""Find and build world models: from a spec string (CLI ``--world``, the studio's *Open world* box) or from a
saved description (sessions).

Spec strings are ``NAME[:ARGS]``: built-ins ``procedural`` (walks on the terrain), ``procedural:fly`` (keeps
its height), ``replay:PATH[?up=+z&stride=2&max_frames=N&level=1]`` (a recorded sequence, see worldmodel/replay.py);
anything else is looked up among the plugins.

**The factory signature** (built-ins, :func:`register` and plugins alike)::

    def factory(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel

``arg`` is what follows the first ``:`` of the spec ("" when none); width/height are the frame size asked for, or
None for the world's own default (256x256 procedural, the trained size of a learned model); ``kinematics`` is
what was asked for, or the default 0.5 m / 10 degrees when nothing was, unless the world is registered with
``own_kinematics=True`` (a plugin: ``WorldPlugin(factory, own_kinematics=True)``): its factory then gets None for
"the world's own" (a learned model's trained steps), so that an explicit 0.5 m / 10 degrees is told apart. The
world is returned not yet reset. The first line of the factory's docstring is its one-line description in
``launch.py worlds``. Raise :class:`WorldSpecError` (one line, says what is accepted) on a bad ``arg``.

**Built-ins** are registered with ``register(name, factory, from_description=None, own_kinematics=False)``;
a backend that imports heavy packages registers a small factory that imports them inside.

**Plugins** declare an entry point in the group ``worldstudio.worlds`` (name -> factory, or a
:class:`WorldPlugin`), e.g. in their ``pyproject.toml``::

    [project.entry-points."worldstudio.worlds"]
    boxroom = "my_package.worlds:make_box_room"

**Descriptions** (sessions): ``model.describe()`` returns JSON with ``"kind"`` = the registered name. A
world made by :func:`create_world` from a :class:`~worldmodel.frame.BaseWorldModel` describes itself as
``{"kind", "arg", "seed", "width", "height", "kinematics"}`` unless it overrides ``describe``, and is rebuilt
by calling its factory again (a session whose world the factory makes otherwise is refused); a world with
its own description passes ``from_description`` to :func:`register`, or its entry point names a
``WorldPlugin(factory, from_description)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

from worldmodel.actions import Kinematics
from worldmodel.frame import BaseWorldModel, WorldModel
from worldmodel.recordings import FORMAT_NAMES

ENTRY_POINT_GROUP = "worldstudio.worlds"

WorldFactory = Callable[[str, int, int, int, Kinematics], WorldModel]
"""``factory(arg, seed, width, height, kinematics) -> WorldModel`` (not yet reset)."""


class WorldSpecError(ValueError):
    """An unknown or malformed world spec; the message lists what is accepted."""


@dataclass(frozen=True)
class WorldPlugin:
    """What a plugin's entry point may name instead of a bare factory: its factory; ``from_description(desc)``
    rebuilding a world from its own ``describe()`` (one that holds more than the spec it was made from), or None;
    ``own_kinematics``: the factory takes kinematics=None for "the world's own" (a learned model's trained steps),
    as :func:`register`'s."""

    factory: WorldFactory
    from_description: Callable[[dict], WorldModel] | None = None
    own_kinematics: bool = False


@dataclass(frozen=True)
class WorldEntry:
    """A world the registry can build. ``origin``: "built-in" or the plugin's distribution name."""

    name: str
    factory: WorldFactory
    from_description: Callable[[dict], WorldModel] | None = None
    origin: str = "built-in"
    own_kinematics: bool = False  # the factory takes kinematics=None: the world's own

    @property
    def description(self) -> str:
        """First line of the factory's docstring (a plugin is imported for it)."""
        try:
            fn = self.factory.load() if isinstance(self.factory, _LazyFactory) else self.factory
        except WorldSpecError as e:
            return f"(broken: {e})"
        doc = (inspect.getdoc(fn) or "").strip()
        return doc.splitlines()[0] if doc else "(no description)"


def _procedural(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel:
    """Infinite seeded terrain, ray cast (exact depth); procedural:fly keeps its height."""
    from worldmodel.procedural import ProceduralConfig, ProceduralWorld

    if arg not in ("", "walk", "fly"):
        raise WorldSpecError(f"unknown procedural option {arg!r}; use 'procedural' or 'procedural:fly'")
    cfg = ProceduralConfig(width=256 if width is None else width, height=256 if height is None else height,
                           fly=arg == "fly", kinematics=kinematics)
    return ProceduralWorld(cfg, seed=seed)


def _procedural_from(desc: dict) -> WorldModel:
    from worldmodel.procedural import ProceduralWorld

    return ProceduralWorld.from_description(desc)


def _replay(arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel:
    """A recorded sequence: replay:PATH[?up=+z&stride=2&max_frames=N&level=1] (TUM, 7-Scenes, ScanNet, Replica, ...)."""
    from worldmodel.replay import ReplayWorld, parse_replay_arg

    if not arg:
        raise WorldSpecError(f"replay needs a folder: replay:/path/to/sequence ({FORMAT_NAMES} folder)")
    try:
        path, opts = parse_replay_arg(arg)
    except ValueError as e:
        raise WorldSpecError(str(e)) from None
    return ReplayWorld.open(path, **opts)


def _replay_from(desc: dict) -> WorldModel:
    from worldmodel.replay import ReplayWorld

    try:
        return ReplayWorld.from_description(desc)
    except ValueError as e:  # SequenceError and friends: say that it is the recording, not the session file
        raise WorldSpecError(f"its replay recording cannot be opened: {e}") from None


def _neural(arg: str, seed: int, width: int | None, height: int | None, kinematics: Kinematics | None) -> WorldModel:
    """The learned world model (DeepVerse-style RGB + depth + pose, memory-conditioned); neural:FOLDER_OR_REPO."""
    from worldmodel.neural.weights import WeightsError
    from worldmodel.neural.world import SHIPPED_WEIGHTS, NeuralWorld, check_size

    try:  # kinematics None: the weights' own (config.json: what they were trained with)
        world = NeuralWorld(arg or SHIPPED_WEIGHTS, seed=seed, kinematics=kinematics)
        if width is not None or height is not None:
            check_size(world, width or world.width, height or world.height)
    except WeightsError as e:
        raise WorldSpecError(str(e)) from None
    return world


def _neural_from(desc: dict) -> WorldModel:
    from worldmodel.neural.weights import WeightsError
    from worldmodel.neural.world import NeuralWorld

    try:
        return NeuralWorld.from_description(desc)
    except WeightsError as e:
        raise WorldSpecError(f"its learned model cannot be loaded: {e}") from None


_BUILTINS: dict[str, WorldEntry] = {}


def register(name: str, factory: WorldFactory, from_description: Callable[[dict], WorldModel] | None = None, *,
             own_kinematics: bool = False) -> None:
    """Add (or replace) a built-in world ``name``: ``factory(arg, seed, width, height, kinematics)``, and
    optionally ``from_description(desc)`` for worlds that describe themselves (else the factory is called
    again with the description's arg/seed/width/height/kinematics). ``own_kinematics``: the factory is given
    None when no kinematics were asked for, and picks the world's own (else it gets the default ``Kinematics()``)."""
    _BUILTINS[name.lower()] = WorldEntry(name.lower(), factory, from_description, own_kinematics=own_kinematics)


register("procedural", _procedural, _procedural_from)
register("replay", _replay, _replay_from)
register("neural", _neural, _neural_from, own_kinematics=True)


def _plugins() -> dict[str, WorldEntry]:
    """Worlds declared by installed packages (entry-point group ``worldstudio.worlds``), read on every call."""
    return _read_plugins()[0]


def hidden_plugins() -> list[str]:
    """The plugin worlds whose name a built-in or an earlier plugin already takes, as "NAME (package)": never
    built (``launch.py worlds`` says so)."""
    return _read_plugins()[1]


def _read_plugins() -> tuple[dict[str, WorldEntry], list[str]]:
    found, hidden = {}, []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        name = ep.name.lower()
        origin = ep.dist.name if ep.dist is not None else "plugin"
        if name in _BUILTINS or name in found:  # built-ins win; the first plugin of a name wins
            hidden.append(f"{name} ({origin})")
            continue
        found[name] = WorldEntry(name, _LazyFactory(ep), None, origin)
    return found, hidden


class _LazyFactory:
    """An entry point's factory, imported on first use (listing worlds imports every plugin for its doc).
    Entry points are re-read on every look-up (a plugin installed while the studio runs shows up), so this
    lives as long as one look-up."""

    def __init__(self, ep):
        self.ep = ep

    def load(self) -> WorldFactory:
        loaded = self._load()
        return loaded.factory if isinstance(loaded, WorldPlugin) else loaded

    def from_description(self) -> Callable[[dict], WorldModel] | None:
        """The plugin's own way to rebuild its worlds (a :class:`WorldPlugin`'s), or None."""
        loaded = self._load()
        return loaded.from_description if isinstance(loaded, WorldPlugin) else None

    def own_kinematics(self) -> bool:
        """Whether the plugin's factory takes kinematics=None for the world's own (a :class:`WorldPlugin`'s say)."""
        loaded = self._load()
        return isinstance(loaded, WorldPlugin) and loaded.own_kinematics

    def _load(self) -> WorldFactory | WorldPlugin:
        try:
            return self.ep.load()
        except Exception as e:  # a broken plugin names itself instead of crashing the studio
            raise WorldSpecError(f"world plugin {self.ep.name!r} ({self.ep.value}) cannot be loaded: {e}") from None

    def __call__(self, arg: str, seed: int, width: int, height: int, kinematics: Kinematics) -> WorldModel:
        return self.load()(arg, seed, width, height, kinematics)


def available_worlds() -> dict[str, WorldEntry]:
    """Every world by name: built-ins first, then plugins."""
    return {**_BUILTINS, **_plugins()}


def _entry(name: str) -> WorldEntry:
    name = name.strip().lower()
    if name in _BUILTINS:
        return _BUILTINS[name]
    plugins = _plugins()  # entry points are read once per look-up
    if name not in plugins:
        raise WorldSpecError(f"unknown world {name!r}; choose one of {', '.join({**_BUILTINS, **plugins})} "
                             "(python3 launch.py worlds describes them)")
    return plugins[name]


def create_world(spec: str, seed: int = 0, width: int | None = None, height: int | None = None,
                 kinematics: Kinematics | None = None) -> WorldModel:
    """``"procedural"``, ``"procedural:fly"``, ``"replay:PATH"``, ``"PLUGIN[:ARGS]"`` -> a world (not yet reset)."""
    kind, _, arg = spec.partition(":")
    entry = _entry(kind)
    if kinematics is None and not _has_own_kinematics(entry):
        kinematics = Kinematics()
    width, height = (None if v is None else int(v) for v in (width, height))
    factory = entry.factory.load() if isinstance(entry.factory, _LazyFactory) else entry.factory
    try:
        inspect.signature(factory).bind(arg.strip(), int(seed), width, height, kinematics)
    except TypeError as e:
        raise WorldSpecError(f"world {entry.name!r}: its factory {getattr(factory, '__qualname__', factory)} does not "
                             f"take (arg, seed, width, height, kinematics) ({e})") from None
    except ValueError:
        pass  # no signature to read (a builtin or C callable): call it and see
    try:
        model = factory(arg.strip(), int(seed), width, height, kinematics)
    except (ValueError, OSError):  # WorldSpecError, a bad path, weights: their own one line, said by the caller
        raise
    except Exception as e:  # noqa: BLE001 - a fault inside a factory (a plugin's missing dependency): one line, not
        # a traceback of the studio's or run's internals
        todo = ("unless the machine is short of something (memory, a library), report it with this line"
                if entry.origin == "built-in"
                else f"fix or reinstall the plugin {entry.origin}")
        where = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"
        raise WorldSpecError(f"world {entry.name!r} could not be made: its factory {where} raised "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else '(no message)'}; {todo}, "
                             "or choose another world (launch.py worlds)") from e
    if isinstance(model, BaseWorldModel) and entry.from_description is None:
        model.created_with = {"kind": entry.name, "arg": arg.strip(), "seed": int(seed), "width": width,
                              "height": height, "kinematics": dataclasses.asdict(kinematics or model.kinematics)}
    return model


def has_own_kinematics(spec: str) -> bool:
    """Whether the world ``spec`` names walks steps of its own when none are asked for (registered or declared with
    ``own_kinematics``); WorldSpecError for an unknown world."""
    return _has_own_kinematics(_entry(spec.partition(":")[0]))


def _has_own_kinematics(entry: WorldEntry) -> bool:
    return entry.own_kinematics or isinstance(entry.factory, _LazyFactory) and entry.factory.own_kinematics()


def world_from_description(desc: dict) -> WorldModel:
    """Rebuild a world from ``model.describe()`` (as stored in a session)."""
    kind = desc.get("kind") if isinstance(desc, dict) else None
    if not isinstance(kind, str):
        raise WorldSpecError("the world description has no 'kind'")
    try:
        entry = _entry(kind)
    except WorldSpecError:
        raise WorldSpecError(f"session names an unknown world {kind!r}; known: {', '.join(available_worlds())} "
                             "(install the plugin that provides it; a world made in a script is registered there "
                             "with worldmodel.registry.register before the session is opened)") from None
    rebuild = entry.from_description
    if rebuild is None and isinstance(entry.factory, _LazyFactory):
        rebuild = entry.factory.from_description()
    if rebuild is not None:
        return rebuild(desc)
    try:
        kin = Kinematics(**desc.get("kinematics", {}))
        model = create_world(f"{entry.name}:{desc.get('arg', '')}", int(desc.get("seed", 0)),
                             desc.get("width"), desc.get("height"), kin)
    except (TypeError, ValueError) as e:
        if isinstance(e, WorldSpecError):
            raise
        raise WorldSpecError(f"the description of world {kind!r} is garbled ({e})") from None
    # A world rebuilt by calling its factory again must be the world that was saved: a plugin that overrides
    # describe() with keys of its own (or an instance handed to make_scene, which describes itself by its name
    # alone) would otherwise come back as the factory's default world, silently.
    try:
        again = json.loads(json.dumps(model.describe()))
    except (TypeError, ValueError):
        again = None
    # A description of the name alone is a world handed to make_scene as an instance (BaseWorldModel.describe
    # without created_with): it recorded no spec, so the registered factory's world is the one it names (README:
    # such a world's name "then needs registering too"; sessions saved so before this check opened this way).
    if set(desc) != {"kind"} and again != json.loads(json.dumps(desc)):
        raise WorldSpecError(f"world {kind!r} cannot be rebuilt from its description: called again with "
                             f"arg={desc.get('arg', '')!r}, seed, width, height and kinematics from it, its factory made "
                             f"a world that describes itself as {json.dumps(again)[:160]}, not {json.dumps(desc)[:160]} "
                             "(make it with registry.create_world and keep the default describe(), or give the "
                             "registry its from_description: registry.register, or a WorldPlugin entry point)")
    return model
