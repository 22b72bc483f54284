"""Worlds as plugins behind one small protocol, torch-free.

A world is a ``WorldPlugin``: what it is (``WorldInfo``: name, title, option schema, scenes), what it
supports, declared once (``Capabilities``: rollouts, fan-out, guidance, samplers and students,
speed-ups, regimes, metrics), and where its runner lives (``"module:function"``, imported only when a
run of that world executes, so asking for one world does not import the others or torch).

RunSpec validation asks ``refusal(spec)`` of the spec's world, so the command line, the client (before
anything is queued), the worker and the page refuse the same specs with the same message.

The built-in worlds (driving, mixture, digits, model: a user's registered model, moving_digits) register here; third-party
worlds register through the Python
entry-point group ``fastdiff.worlds`` (each entry point names a ``WorldPlugin``), or explicitly with
``register_world`` — the entry points feed that same call.
"""

from __future__ import annotations

import importlib
import importlib.util
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from fastdiff_core.registry import Entry
from fastdiff_core.setup_time import one_off

ENTRY_POINT_GROUP = "fastdiff.worlds"
SPEEDUP_FIELDS: dict[str, Any] = {"feature_cache": "off", "parallel": "off", "precision": "float32",
                                  "compile": False, "importance": "off"}


@dataclass(frozen=True)
class WorldInfo(Entry):
    """A world with ground truth: name, title, doc and options (``registry.Entry``), its scenes (empty for
    worlds without named scenes) and its tail."""

    scenes: tuple[str, ...] = ()
    tail: str | None = None  # the rare branch every verdict and page calls "the tail"


@dataclass(frozen=True)
class Capabilities:
    """What a world supports, declared once. ``rollouts``: horizon and futures above 1; ``fan_out``:
    plans above 1 (candidate plans); ``guidance``: a guidance scale other than 1; ``samplers`` and
    ``students``: what may sample it; ``speedups``: the speed-up toggles that act on its network
    (names from ``SPEEDUP_FIELDS``); ``regimes``: the regimes it can be judged in (None: all);
    ``metrics``: the metric names its runner reports; ``coverage_gate``: its runner judges a coverage
    gate and can sample until it decides (RunSpec.gate_cap); ``why``: one phrase said with every refusal."""

    rollouts: bool = True
    fan_out: bool = True
    guidance: bool = True
    samplers: tuple[str, ...] = ("solver",)
    students: tuple[str, ...] = ()
    speedups: tuple[str, ...] = ()
    regimes: tuple[str, ...] | None = None
    metrics: tuple[str, ...] = ()
    coverage_gate: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.speedups) - set(SPEEDUP_FIELDS))
        if unknown:
            raise ValueError(f"speedups={unknown!r} are not speed-up fields; allowed: {sorted(SPEEDUP_FIELDS)}")


@dataclass(frozen=True)
class WorldPlugin:
    """A world: its facts, its capabilities, its runner ``run(spec, device, on_progress) -> RunResult``
    as ``"module:function"``, an optional extra check over a spec's world options
    (``check(spec) -> refusal or None``) for rules no capability expresses, and, for a world with a world
    model the rollout engine can run, its factory ``world_model(spec, device) -> WorldModel`` as
    ``"module:function"`` (``fastdiff_core.worlds.protocol``; such a world can take
    ``"fastdiff_core.rollout_runner:run"`` as its runner)."""

    info: WorldInfo
    capabilities: Capabilities
    runner: str
    check: Callable[[Any], str | None] | None = None
    world_model: str | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def refusal(self, spec: Any) -> str | None:
        """Why this world cannot run ``spec`` (one sentence naming the field, the value and what is
        allowed), or None."""
        cap = self.capabilities
        world = f"world={self.name!r}" + (f" ({cap.why})" if cap.why else "")
        if not cap.rollouts:
            for name in ("horizon", "futures"):
                if getattr(spec, name) != 1:
                    return f"{name}={getattr(spec, name)!r} is not supported by {world}: no rollouts; allowed: 1"
        if not cap.fan_out and spec.plans != 1:
            return f"plans={spec.plans!r} is not supported by {world}: no candidate plans; allowed: 1"
        if not cap.guidance and spec.guidance_scale != 1.0:
            return f"guidance_scale={spec.guidance_scale!r} is not supported by {world}; allowed: 1.0"
        if spec.sampler not in cap.samplers:
            return f"sampler={spec.sampler!r} is not supported by {world}; allowed: {list(cap.samplers)}"
        if spec.sampler == "student" and spec.student not in cap.students:
            return f"student={spec.student!r} is not supported by {world}; allowed: {list(cap.students)}"
        for name, off in SPEEDUP_FIELDS.items():
            value = getattr(spec, name)
            if value != off and name not in cap.speedups:
                return f"{name}={value!r} is not supported by {world}; allowed: {off!r}"
        if spec.gate_cap is not None and not cap.coverage_gate:
            return (f"gate_cap={spec.gate_cap!r} is not supported by {world}: no coverage gate to sample until "
                    "decided; allowed: null")
        if spec.regime is not None and cap.regimes is not None and spec.regime not in cap.regimes:
            return f"regime={spec.regime!r} is not supported by {world}; allowed: {list(cap.regimes)}"
        return self.check(spec) if self.check is not None else None

    def load_runner(self) -> Callable:
        return _attribute(self.runner)

    def load_world_model(self) -> Callable:
        """The world-model factory ``(spec, device) -> WorldModel`` (imported now)."""
        if self.world_model is None:
            raise ValueError(f"world={self.name!r} declares no world model the rollout engine can run")
        return _attribute(self.world_model)


@one_off  # a world's modules are imported by its first run in a process
def _attribute(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def lazy_exports(package: str, modules: tuple[str, ...]) -> Callable[[str], Any]:
    """A plugin package's module ``__getattr__``: a public name is looked up in ``package.<module>`` for
    each of ``modules`` in order, imported on first use and kept (so a torch-free name stays torch-free)."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        namespace = vars(importlib.import_module(package))
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            # a submodule (``from package import encoding`` while a sibling is half-initialised): import it
            # as itself, never by searching the other modules (which could re-enter the half-initialised one)
            return importlib.import_module(f"{package}.{name}")
        for module in modules:
            found = vars(importlib.import_module(f"{package}.{module}"))
            if name in found and not name.startswith("_"):
                namespace[name] = found[name]
                return found[name]
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

BUILTIN = ("fastdiff_core.worlds.mixture.plugin:PLUGIN", "fastdiff_core.worlds.driving.plugin:PLUGIN",
           "fastdiff_core.worlds.digits.plugin:PLUGIN", "fastdiff_core.worlds.model.plugin:PLUGIN",
           "fastdiff_core.worlds.moving_digits.plugin:PLUGIN")
_REGISTRY: dict[str, WorldPlugin] = {}
_loaded = False


def register_world(plugin: WorldPlugin) -> WorldPlugin:
    """Add a world (what each ``fastdiff.worlds`` entry point is fed to). A name already taken by a
    different plugin is refused."""
    if not isinstance(plugin, WorldPlugin):
        raise ValueError(f"register_world takes a WorldPlugin, got {type(plugin).__name__}")
    have = _REGISTRY.get(plugin.name)
    if have is not None and have != plugin:
        raise ValueError(f"world={plugin.name!r} is already registered (runner {have.runner})")
    _REGISTRY[plugin.name] = plugin
    return plugin


def unregister_world(name: str) -> None:
    """Remove a registered world (a plugin uninstalled while the process runs, or a test's own)."""
    if _REGISTRY.pop(name, None) is None:
        raise ValueError(f"world={name!r} is not registered; registered: {sorted(_REGISTRY)}")


def _load(target: str, source: str) -> None:
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as e:  # a broken third-party plugin names itself, not a traceback from inside it
        raise ValueError(f"world plugin {source} ({target}) cannot be loaded: {type(e).__name__}: {e}") from e
    register_world(obj() if callable(obj) and not isinstance(obj, WorldPlugin) else obj)


def load_plugins(*, reload: bool = False) -> None:
    """Register the built-in worlds and every ``fastdiff.worlds`` entry point (once per process;
    ``reload=True`` looks again, e.g. after a distribution was added to sys.path)."""
    global _loaded
    if _loaded and not reload:
        return
    _loaded = True
    for target in BUILTIN:
        _load(target, "built-in")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load(ep.value, f"entry point {ep.name!r}")


def world_plugin(name: str) -> WorldPlugin:
    load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"world={name!r} is not one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def builtin_world_names() -> tuple[str, ...]:
    """The worlds that ship with fastdiff (``BUILTIN``), whatever else is registered."""
    return tuple(_attribute(target).name for target in BUILTIN)


def world_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(_REGISTRY)


class _WorldInfos(Mapping[str, WorldInfo]):
    """name -> WorldInfo of every registered world, read live (plugins may register after import)."""

    def __getitem__(self, name: str) -> WorldInfo:
        load_plugins()
        return _REGISTRY[name].info

    def __iter__(self) -> Iterator[str]:
        return iter(world_names())

    def __len__(self) -> int:
        return len(world_names())


WORLD_INFOS: Mapping[str, WorldInfo] = _WorldInfos()


def runner_for(world: str) -> Callable:
    """The world's runner ``run(spec, device, on_progress) -> RunResult`` (imported now)."""
    return world_plugin(world).load_runner()
