"""The model registry: names -> users' models, kept as JSON in ``$FASTDIFF_HOME/models.json``; torch-free.

``fastdiff models add PATH`` loads a model once (checking it), then records its name, source, kind,
checksum, interface and card here; RunSpecs carry only the NAME (an id, validated against one pattern;
files are found from it, never from a path a caller passed); the dashboard lists and validates models
by reading this file, without torch. Installed ``fastdiff.models`` entry points are models too, known
by their entry-point name.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

ENTRY_POINT_GROUP = "fastdiff.models"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
KINDS = ("diffusers", "module", "entry_point")


def registry_file() -> pathlib.Path:
    """``$FASTDIFF_HOME/models.json`` (default ``./var/models.json``)."""
    return pathlib.Path(os.environ.get("FASTDIFF_HOME", "var")).resolve() / "models.json"


def check_name(name: Any, what: str = "model") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{what}={name!r} is not a model name; allowed: 1-64 characters of a-z 0-9 _ . -, "
                         "starting with a letter or digit")
    return name


def name_for(source: str) -> str:
    """A registry name derived from a directory or 'module:function' (lower-cased, other characters -> '-')."""
    base = pathlib.Path(source).name if ":" not in source else source.replace(":", ".")
    name = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-._")[:64]
    return name or "model"


_READ_CACHE: dict[str, tuple[tuple[int, int], dict[str, dict[str, Any]]]] = {}
_EP_CACHE: dict[tuple[str, ...], dict[str, str]] = {}


def _read() -> dict[str, dict[str, Any]]:
    """The registry's entries (a fresh copy), re-read only when the file changed (every RunSpec naming a
    model validates against it: a sweep must not re-parse it per point)."""
    f = registry_file()
    try:
        st = f.stat()
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _READ_CACHE.get(str(f))
    if hit is not None and hit[0] == stamp:
        return {k: dict(v) for k, v in hit[1].items()}
    models = _parse(f)
    _READ_CACHE[str(f)] = (stamp, models)
    return {k: dict(v) for k, v in models.items()}


def _parse(f: pathlib.Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"model registry {f}: cannot be read ({type(e).__name__}: {e})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ValueError(f"model registry {f}: expected {{\"models\": {{name: entry}}}}")
    return models


def _write(models: Mapping[str, Any]) -> None:
    f = registry_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=".models.", suffix=".json")
    with os.fdopen(fd, "w") as fh:  # written whole, then renamed: a reader never sees half a registry
        json.dump({"models": dict(models)}, fh, indent=1, sort_keys=True)
    os.replace(tmp, f)


def entry_point_names() -> dict[str, str]:
    """name -> 'module:function' of the installed ``fastdiff.models`` entry points (looked up again when
    sys.path changes: scanning the installed distributions costs ~20 ms)."""
    key = tuple(sys.path)
    if key not in _EP_CACHE:
        _EP_CACHE.clear()
        _EP_CACHE[key] = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return dict(_EP_CACHE[key])


def registered() -> dict[str, dict[str, Any]]:
    """name -> entry of every model a RunSpec may name: registered ones, then installed entry points
    (kind 'entry_point', no interface until loaded) not shadowed by a registered name."""
    models = _read()
    for name, target in entry_point_names().items():
        if NAME_PATTERN.fullmatch(name) and name not in models:
            models[name] = {"name": name, "kind": "entry_point", "source": name, "target": target}
    return models


def model_names() -> tuple[str, ...]:
    return tuple(sorted(registered()))


def model_entry(name: str) -> dict[str, Any]:
    """The entry a RunSpec's ``model`` names; ValueError naming it and the available ones."""
    check_name(name)
    models = registered()
    if name not in models:
        raise ValueError(f"model={name!r} is not registered; available: {sorted(models)} "
                         "(add one with `fastdiff models add PATH`)")
    return models[name]


def add(entry: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
    """Record a loaded model's entry (name, kind, source, checksum, interface, card, nbytes)."""
    name = check_name(entry.get("name"))
    if entry.get("kind") not in ("diffusers", "module"):  # an entry point is known by its name, not added
        raise ValueError(f"kind={entry.get('kind')!r} is not one of ['diffusers', 'module']")
    models = _read()
    if name in models and not replace:
        have = models[name]
        if have.get("source") == entry.get("source") and have.get("checksum") == entry.get("checksum"):
            return have
        raise ValueError(f"model={name!r} is already registered (source {have.get('source')}); "
                         "choose another --name or remove it first")
    models[name] = dict(entry)
    _write(models)
    return models[name]


def remove(name: str) -> dict[str, Any]:
    models = _read()
    if name not in models:
        raise ValueError(f"model={name!r} is not registered; registered: {sorted(models)}")
    entry = models.pop(name)
    _write(models)
    return entry


def find_source(source: str) -> str | None:
    """The registered name whose source is ``source`` (a resolved directory or 'module:function'), or None."""
    for name, entry in _read().items():
        if entry.get("source") == source:
            return name
    return None
