"""The driving world's declaration (torch-free): what it is, what it supports, where its runner is."""

from __future__ import annotations

from fastdiff_core.registry import Option
from fastdiff_core.worlds import SPEEDUP_FIELDS, Capabilities, WorldInfo, WorldPlugin

INFO = WorldInfo(
    "driving", "Driving scene: pedestrian near a crossing",
    "trained flow-matching world model (H autoregressive frames) vs a simulator with exact branch "
    "probabilities: waits / crosses / darts out (the tail) / implausible",
    {
        "action": Option(str, "keep", "ego action", choices=("brake", "keep", "accelerate")),
        "teacher": Option(str, "x0", "shipped teacher: clean-x0 (default, measured better) or velocity "
                          "('flow') prediction", choices=("x0", "flow")),
        "k": Option(int, 5, "k of the k-NN precision/recall/density/coverage", min=1, max=50),
        "batch": Option(int, 4096, "rollouts per batched forward", min=1, max=1_000_000),
    },
    scenes=("quiet_far_back", "walk_signal", "red_light_jaywalker", "hesitant_no_signal", "commuter_late",
            "child_at_curb", "school_zone_slow", "night_far_car"),
    tail="darts",
)

CAPABILITIES = Capabilities(
    rollouts=True, fan_out=True, guidance=True, samplers=("solver", "student"),
    students=("guidance", "progressive", "consistency", "dmd", "rcm", "reflow", "shortcut"),
    speedups=tuple(SPEEDUP_FIELDS),
    metrics=("tv", "tail_rate", "implausible_rate", "mean_tv", "cycle_s", "tail_rate_mean"),
    coverage_gate=True)


def check(spec) -> str | None:
    """A sequential gate judges exact branch rates at every look, which importance-weighted rates (normal
    approximations at one look) cannot give: importance sampling runs at a fixed n."""
    if spec.gate_cap is not None and spec.importance != "off":
        return (f"importance={spec.importance!r} with gate_cap={spec.gate_cap!r}: weighted rates are not "
                "anytime-valid; allowed: importance 'off', or gate_cap null")
    return None


PLUGIN = WorldPlugin(INFO, CAPABILITIES, "fastdiff_core.worlds.driving.runner:run", check,
                     world_model="fastdiff_core.worlds.driving.model:from_spec")
