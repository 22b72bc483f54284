"""The mixture world's declaration (torch-free): what it is, what it supports, where its runner is."""

from __future__ import annotations

from typing import Any

from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin

INFO = WorldInfo(
    "mixture", "Analytic Gaussian mixture",
    "exact x0-denoiser in closed form, one rare mode (~2%), exact samples and a tight reference ODE solve",
    {
        "preset": Option(str, "rare2d", "which mixture", choices=("rare2d", "rare16d", "anisotropic8d")),
        "path": Option(str, "vp_linear", "noise path the exact network is queried on",
                       choices=("vp_discrete", "vp_linear", "vp_cosine", "rectified_flow")),
        "prediction": Option(str, "eps", "what the exact network predicts", choices=("eps", "x0", "v", "flow")),
        "condition": Option(str, "none", "class the conditional model is given (needed for guidance != 1)",
                            choices=("none", "rare", "major")),
    },
    tail="rare",
)

CAPABILITIES = Capabilities(
    rollouts=False, fan_out=False, guidance=True, samplers=("solver",), speedups=(),
    metrics=("rmse", "median_err", "rare_rate", "rare_rate_ref", "rare_rate_truth", "mode_flip_rate", "mode_tv"),
    why="single draws from an exact formula: no rollout, no network to speed up")


def check(spec: Any) -> str | None:
    """Guidance needs a class to guide towards."""
    if spec.guidance_scale != 1.0 and spec.world_options.get("condition", "none") == "none":
        return (f"guidance_scale={spec.guidance_scale!r} needs a condition; world_options.condition='none' "
                "(allowed with guidance: 'rare', 'major')")
    return None


PLUGIN = WorldPlugin(INFO, CAPABILITIES, "fastdiff_core.worlds.mixture.world:run", check)
