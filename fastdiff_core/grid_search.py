"""Grid optimisation by direct search against an exact reference (the "Align Your Steps" idea,
Sabour et al. 2024, done here by derivative-free search on a world with ground truth).

For a fixed solver and step count, the free parameters are the log-sigmas of the interior grid
points and of sigma_min (sigma_max is the path's; the trailing 0 is fixed). The objective is the
terminal RMSE of the solver's samples against the reference ODE solution from the same noise,
computed on a *training* noise batch; evaluate the result on other noise.

What the search finds on mixtures (measured by ``fastdiff bench solvers``): the steps at high noise
decide which mode a sample lands in (mode flips, the rare mode's rate), the steps at low noise decide
the precision within a mode (median error). No fixed grid is best at both, which is why the optimum
moves with the solver and the NFE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from fastdiff_core.grids import check_sigmas
from fastdiff_core.metrics.solver_error import terminal_rmse
from fastdiff_core.solvers import sample
from fastdiff_core.solvers.primitives import X0Denoiser


@dataclass(frozen=True)
class GridSearchResult:
    """The best grid found, its objective, the objective of the starting grid, and evaluations used."""

    sigmas: list[float]
    objective: float
    start_objective: float
    evaluations: int


def optimise_grid(
    solver: str,
    denoiser: X0Denoiser,
    x: torch.Tensor,
    reference: torch.Tensor,
    start: Sequence[float],
    *,
    options: Mapping[str, Any] | None = None,
    sigma_floor: float,
    objective: Callable[[torch.Tensor, torch.Tensor], float] = terminal_rmse,
    budget: int = 200,
    step: float = 0.5,
    min_step: float = 0.01,
) -> GridSearchResult:
    """Coordinate search on log-sigmas, starting from grid ``start`` (n + 1 sigmas ending in 0).

    Each sweep tries moving every free log-sigma by +-``step`` (keeping the grid strictly
    decreasing and sigma_min >= ``sigma_floor``), keeps every improvement, and halves ``step`` after
    a sweep without one. Stops after ``budget`` solver runs or when ``step`` < ``min_step``.
    Cost: one sampling run of the batch per evaluation.
    """
    grid = check_sigmas(list(start), field="start")
    if not (0 < sigma_floor <= grid[-2]):
        raise ValueError(f"sigma_floor={sigma_floor!r} must be in (0, start[-2]={grid[-2]!r}]")
    if budget < 1:
        raise ValueError(f"budget={budget!r} must be >= 1")
    logs = [math.log(s) for s in grid[:-1]]
    opts = dict(options or {})

    def score(ls: list[float]) -> float:
        sig = [grid[0]] + [math.exp(v) for v in ls[1:]] + [0.0]
        out = sample(solver, denoiser, x, sig, options=opts, generator=torch.Generator().manual_seed(0))
        value = objective(out, reference)
        return value if math.isfinite(value) else math.inf

    best = score(logs)
    start_value, evals = best, 1
    free = range(1, len(logs))  # sigma_max stays
    while evals < budget and step >= min_step:
        improved = False
        for i in free:
            for direction in (-1.0, 1.0):
                if evals >= budget:
                    break
                trial = list(logs)
                trial[i] += direction * step
                upper = logs[i - 1]
                lower = logs[i + 1] if i + 1 < len(logs) else math.log(sigma_floor) - 1e-12
                if not (lower < trial[i] < upper):
                    continue
                value = score(trial)
                evals += 1
                if value < best:
                    best, logs, improved = value, trial, True
                    break
        if not improved:
            step *= 0.5
    return GridSearchResult([grid[0]] + [math.exp(v) for v in logs[1:]] + [0.0], best, start_value, evals)
