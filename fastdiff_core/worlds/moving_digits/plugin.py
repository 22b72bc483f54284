"""The moving-digits world's declaration (torch-free): what it is, what it supports, where its runner is."""

from __future__ import annotations

from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin

INFO = WorldInfo(
    "moving_digits", "Moving digits (real data)",
    "a trained frame denoiser rolls out a handwritten digit (sklearn's bundled 8x8 digits) moving on an 8x16 "
    "canvas under left / stay / right, vs dynamics with exact branch probabilities: steady / jumps three "
    "columns (the tail) / implausible",
    {
        "action": Option(str, "stay", "the action of a single-plan run (plans 1)", choices=("left", "stay", "right")),
        "start": Option(int, 4, "the digit's starting column (0 and 8 are the walls)", min=0, max=8),
        "batch": Option(int, 4096, "rollouts per batched forward (plans 1)", min=1, max=1_000_000),
    },
    tail="jumps",
)

# The generic rollout runner over the world model: P x R fan-out, guidance, every registry solver, Picard and
# importance sampling of the tail; the network is a plain conv net (not the staged MLP), so the speed-ups that
# act on a staged network (feature cache, precision, compile) are refused.
CAPABILITIES = Capabilities(
    rollouts=True, fan_out=True, guidance=True, samplers=("solver",), speedups=("parallel", "importance"),
    metrics=("mean_tv", "tail_rate_mean", "tail_truth_mean", "cycle_s", "nfe_per_cycle"))

PLUGIN = WorldPlugin(INFO, CAPABILITIES, "fastdiff_core.rollout_runner:run",
                     world_model="fastdiff_core.worlds.moving_digits.model:from_spec")
