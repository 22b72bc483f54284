"""A third-party world plugin, as a user would write one: a coin (x0 = +1 heads with probability p, -1
tails) sampled by any registry solver through fastdiff's public API, with the exact x0-denoiser

    E[x0 | x_sigma] = tanh(x / sigma^2 + logit(p) / 2)      (x_sigma = x0 + sigma * noise)

It lives outside fastdiff_core and reaches fastdiff only through its ``fastdiff.worlds`` entry point."""

from __future__ import annotations

import math
import time

from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin

INFO = WorldInfo("toy_coin", "Toy coin", "x0 in {-1, +1} with P(+1) = p; exact denoiser",
                 {"p": Option(float, 0.3, "probability of heads", min=0.01, max=0.99)})
PLUGIN = WorldPlugin(INFO, Capabilities(rollouts=False, fan_out=False, guidance=False, regimes=("offline",),
                                        metrics=("heads_rate",), why="one coin flip per sample"),
                     "toy_coin_world:run")


def run(spec, device, on_progress=None):
    import torch

    from fastdiff_core import catalog
    from fastdiff_core.grids import build_grid
    from fastdiff_core.metrics.coverage import branch_histogram
    from fastdiff_core.paths import get_path
    from fastdiff_core.solvers import sample
    from fastdiff_core.spec import RunResult

    t0, p = time.perf_counter(), spec.world_options["p"]
    sigmas = build_grid(spec.grid, spec.steps, get_path("vp_linear"), spec.grid_options)
    evaluations = []

    def denoiser(x, sigma):
        evaluations.append(x.shape[0])
        return torch.tanh(x / sigma ** 2 + 0.5 * math.log(p / (1 - p)))

    gen = torch.Generator().manual_seed(spec.seed)
    x0 = sample(spec.solver, denoiser, torch.randn(spec.samples, 1, generator=gen, dtype=torch.float64) * sigmas[0],
                sigmas, options=dict(spec.solver_options), generator=gen)
    heads = int((x0 > 0).sum())
    rows = branch_histogram({"heads": heads, "tails": spec.samples - heads}, {"heads": p, "tails": 1 - p})
    per_sample = catalog.solver_info(spec.solver).nfe(spec.steps, dict(spec.solver_options))
    return RunResult(spec=spec, device=str(device), wall_s=time.perf_counter() - t0,
                     nfe_counted=float(sum(evaluations)), nfe_formula=float(per_sample * spec.samples),
                     metrics={"heads_rate": heads / spec.samples}, histograms=tuple(rows))
