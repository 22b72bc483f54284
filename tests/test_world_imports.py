"""Every module of every built-in world imports as the first project module of a process (a lazily
exported package once re-entered a half-initialised sibling: importing driving.sampling first failed with
a circular ImportError)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, pathlib, sys
import torch  # noqa: F401  (kept loaded across probes: only the project's modules are re-imported)
failed = []
for path in sorted(pathlib.Path("fastdiff_core/worlds").glob("*/*.py")):
    name = ".".join(path.with_suffix("").parts)
    for loaded in [m for m in sys.modules if m == "fastdiff_core" or m.startswith("fastdiff_core.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported below, one line each
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(list(pathlib.Path("fastdiff_core/worlds").glob("*/*.py"))), "modules")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_world_module_imports_first():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert int(out.stdout.split()[0]) >= 20  # the probe saw the worlds' modules
