"""The digits world's declaration (torch-free): what it is, what it supports, where its runner is."""

from __future__ import annotations

import importlib.util
from typing import Any

from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin

# the class-embedding conditions of the shipped model (model.CONDITIONS; a test checks they agree)
CONDITION_NAMES = tuple(str(d) for d in range(10)) + ("even", "odd", "none")
RARE_DIGIT = "4"  # the shipped model's thinned digit (fastdiff.json; a test checks they agree)

INFO = WorldInfo(
    "digits", "Handwritten digits (real data)",
    "a class-conditional diffusers UNet trained on scikit-learn's bundled 8x8 digits with the digit "
    f"{RARE_DIGIT} thinned to 2%; class histogram vs the data's frequencies and vs the model's own 2x-step "
    "converged sampling",
    {"condition": Option(str, "none", "what the model is conditioned on: a digit, a parity group, or none "
                         "(the null class; needed for guidance != 1: a digit or a group)",
                         choices=CONDITION_NAMES)},
    tail=RARE_DIGIT,
)

CAPABILITIES = Capabilities(
    rollouts=False, fan_out=False, guidance=True, samplers=("solver",), speedups=(),
    metrics=("rare_rate", "rare_rate_truth", "rare_rate_ref", "tv_truth", "tv_ref", "tv_model", "unreadable_rate"),
    why="one image per sample: no rollout")


def check(spec: Any) -> str | None:
    """Guidance needs a class to guide towards; the guidance interval is not offered; the model needs diffusers."""
    if spec.guidance_interval is not None:
        return f"guidance_interval={list(spec.guidance_interval)!r} is not supported by world='digits'; allowed: null"
    if importlib.util.find_spec("diffusers") is None:
        return "world='digits' needs diffusers to load its UNet; install the extra: pip install 'fastdiff[digits]'"
    if spec.guidance_scale != 1.0 and spec.world_options.get("condition", "none") == "none":
        return (f"guidance_scale={spec.guidance_scale!r} needs a condition; world_options.condition='none' "
                "(allowed with guidance: a digit '0'-'9', 'even', 'odd')")
    return None


PLUGIN = WorldPlugin(INFO, CAPABILITIES, "fastdiff_core.worlds.digits.runner:run", check)
