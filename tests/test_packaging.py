"""The role extras keep their promises: what the dashboard installs pulls no torch, what a worker
installs pulls no Streamlit (checked over the installed packages' own requirements, transitively),
and constraints.txt pins a version inside every bound pyproject.toml declares."""

import importlib.metadata as md
import pathlib
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def role_requirements(extra: str) -> list[Requirement]:
    """The base dependencies plus one extra, with the extra's references to fastdiff[...] expanded."""
    reqs, todo, seen = [Requirement(r) for r in PROJECT["dependencies"]], [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for r in map(Requirement, PROJECT["optional-dependencies"][name]):
            if canonicalize_name(r.name) == "fastdiff":
                todo.extend(r.extras)
            else:
                reqs.append(r)
    return reqs


def closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution these requirements install, following installed metadata (extras included)."""
    found: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in found:
            continue
        found.add(key)
        dist = md.distribution(name)  # PackageNotFoundError: the venv lacks a declared dependency
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (extras or {""})):
                todo.append((sub, frozenset(sub.extras)))
    return {k.split("[")[0] for k in found}


def test_the_dashboard_role_installs_no_torch():
    app = closure(role_requirements("app"))
    assert {"streamlit", "polars", "celery"} <= app and "duckdb" not in app  # the store is Parquet + polars
    assert not {"torch", "safetensors", "scipy"} & app, sorted(app)


def test_the_worker_role_installs_no_streamlit_or_plotly():
    worker = closure(role_requirements("worker"))
    assert {"torch", "celery", "numpy"} <= worker
    assert not {"streamlit", "plotly", "duckdb", "polars"} & worker, sorted(worker)


def test_dev_installs_both_roles():
    dev = {canonicalize_name(r.name) for r in role_requirements("dev")}
    assert {canonicalize_name(r.name) for r in role_requirements("app") + role_requirements("worker")} <= dev


def test_constraints_pin_every_declared_dependency_inside_its_bounds():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    declared = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"]:
        declared += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    wrong = []
    for r in declared:
        name = canonicalize_name(r.name)
        if name == "fastdiff":
            continue
        if name not in pins:
            wrong.append(f"{r.name}: not pinned in constraints.txt")
        elif not r.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{r.name}: constraints.txt pins {pins[name]}, pyproject.toml allows {r.specifier}")
    assert not wrong, "\n".join(wrong)
