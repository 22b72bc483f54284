"""The driving world's planning runs: a driving spec with candidate plans (P > 1) or a speed-up toggle runs
on the generic rollout runner (``fastdiff_core.rollout_runner``) over the driving world model
(``model.DrivingWorldModel``: the shipped teacher in the spec's scene)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fastdiff_core.rollout_runner import run_world_model
from fastdiff_core.spec import RunResult
from fastdiff_core.worlds.driving.model import DrivingWorldModel, from_spec


def needs_planning_runner(spec) -> bool:
    """True when a driving solver spec asks for what ``run_planning`` owns: candidate plans (P > 1) or a
    speed-up. (P = 1 with R futures is R rollouts of the spec's action: the world's own runner.)"""
    speedups = (spec.feature_cache != "off" or spec.parallel != "off" or spec.precision != "float32"
                or spec.compile or spec.importance != "off")
    return spec.sampler == "solver" and (spec.plans > 1 or speedups)


def run_planning(spec, device: torch.device, on_progress: Callable | None = None, *,
                 net: nn.Module | None = None) -> RunResult:
    """``spec.samples`` planning cycles of ``spec.plans`` x ``spec.futures`` rollouts of ``spec.horizon``
    frames (or, with P = 1, ``samples x futures`` rollouts under world_options.action) with every
    speed-up toggle of the spec; see ``fastdiff_core.rollout_runner``. ``net``: the world-model network
    (default: the shipped teacher named by world_options.teacher)."""
    world = from_spec(spec, device) if net is None else \
        DrivingWorldModel(net, spec.scene, spec.world_options["action"])
    return run_world_model(spec, device, on_progress, world)
