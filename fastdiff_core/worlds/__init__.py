"""Worlds with ground truth, and the runner each one provides to ``fastdiff_core.run.execute``.

A runner is ``run(spec, device, on_progress) -> RunResult``; it is imported lazily so that
asking for one world does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Callable

RUNNERS: dict[str, str] = {
    "mixture": "fastdiff_core.worlds.mixture:run",
    "driving": "fastdiff_core.worlds.driving.runner:run",
}


def runner_for(world: str) -> Callable:
    if world not in RUNNERS:
        raise ValueError(f"world={world!r} has no runner; known: {sorted(RUNNERS)}")
    module, _, fn = RUNNERS[world].partition(":")
    return getattr(importlib.import_module(module), fn)
