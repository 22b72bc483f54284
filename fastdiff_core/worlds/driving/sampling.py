"""Sampling the world model: one frame (the unit a solver integrates), and H-frame rollouts.

    next = sample_frame(net, prev, scene, action, solver=..., sigmas=..., guidance=..., generator=g, counter=c)
    frames = rollout(net, scene, action, n, horizon, solver=..., sigmas=..., generator=g, counter=c)

A frame is one ODE/SDE solve of the x0-denoiser that ``fastdiff_core.denoiser`` builds from the
network (the only place where the network's prediction type is converted), conditioned on the
previous frame, the scene and the action; the unconditional branch of classifier-free guidance drops
scene and action but keeps the previous frame. A rollout is H such solves in sequence, each batched
over all n samples, so the counted NFE is exactly NFE(solver, steps) x C x H per sample.

``solver`` is any function with the solver contract ``(denoiser, x, sigmas, *, generator, callback,
**options) -> x0``; ``sigmas`` is a decreasing VE grid ending in 0 (``fastdiff_core.grids``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.paths import RectifiedFlow
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.scenes import Scene
from fastdiff_core.worlds.driving.simulator import waiting_frame

Solver = Callable[..., torch.Tensor]
FrameSampler = Callable[..., torch.Tensor]

PATH = RectifiedFlow()


def frame_denoiser(net: torch.nn.Module, prev: torch.Tensor, scene: Scene, action: str, *,
                   guidance: Guidance = Guidance(), counter: NFECounter | None = None) -> Denoiser:
    """The x0-denoiser of the next frame given ``prev`` (B, SUBSTEPS, 2), in network coordinates."""
    cond = encoding.condition(prev, scene, action)
    uncond = encoding.drop_condition(cond)
    return Denoiser(net, PATH, net.prediction, cond=cond, uncond=uncond, guidance=guidance, counter=counter)


def sample_frame(net: torch.nn.Module, prev: torch.Tensor, scene: Scene, action: str, *, solver: Solver,
                 sigmas: Sequence[float], guidance: Guidance = Guidance(), generator: torch.Generator | None = None,
                 counter: NFECounter | None = None, solver_options: Mapping[str, Any] | None = None,
                 callback: Callable | None = None) -> torch.Tensor:
    """One generated frame per row of ``prev``: (B, SUBSTEPS, 2). NFE: the solver's, per sample."""
    den = frame_denoiser(net, prev, scene, action, guidance=guidance, counter=counter)
    noise = torch.randn(prev.shape[0], encoding.FRAME_DIM, generator=generator, device=prev.device,
                        dtype=prev.dtype)
    with torch.no_grad():
        x0 = solver(den, noise * float(sigmas[0]), sigmas, generator=generator, callback=callback,
                    **dict(solver_options or {}))
    return encoding.decode_frame(x0, prev)


def rollout(net: torch.nn.Module, scene: Scene, action: str, n: int, horizon: int, *, solver: Solver,
            sigmas: Sequence[float], guidance: Guidance = Guidance(), generator: torch.Generator | None = None,
            counter: NFECounter | None = None, solver_options: Mapping[str, Any] | None = None,
            context: torch.Tensor | None = None, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32,
            frame_sampler: FrameSampler = sample_frame,
            on_frame: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """n autoregressive rollouts of ``horizon`` frames: (n, horizon + 1, SUBSTEPS, 2), frame 0 the context.

    ``context`` (n, SUBSTEPS, 2) defaults to a simulator waiting frame drawn with ``generator`` (in ``dtype``,
    which must match the network's).
    ``frame_sampler`` has ``sample_frame``'s signature (override it to add caching, fan-out, ...).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon={horizon!r} must be an integer >= 1")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1")
    prev = context if context is not None else waiting_frame(scene, n, generator, device).to(dtype)
    if prev.shape != (n, *prev.shape[1:]):
        raise ValueError(f"context shape={tuple(prev.shape)} must have n={n} rows")
    frames = [prev]
    for h in range(horizon):
        prev = frame_sampler(net, prev, scene, action, solver=solver, sigmas=sigmas, guidance=guidance,
                             generator=generator, counter=counter, solver_options=solver_options)
        frames.append(prev)
        if on_frame is not None:
            on_frame(h, prev)
    return torch.stack(frames, 1)
