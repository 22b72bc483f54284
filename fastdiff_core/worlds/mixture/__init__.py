"""The mixture world plugin: an analytic Gaussian mixture with an exact x0-denoiser (``world``) and its
declaration (``plugin``, torch-free). Names of ``world`` are importable from here; the module loads on
first use, so importing the plugin declaration does not import torch."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    world = importlib.import_module("fastdiff_core.worlds.mixture.world")
    try:
        return getattr(world, name)
    except AttributeError:
        raise AttributeError(f"module 'fastdiff_core.worlds.mixture' has no attribute {name!r}") from None
