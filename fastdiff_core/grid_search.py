"""Grid optimisation by direct search against an exact reference (the "Align Your Steps" idea,
Sabour et al. 2024, done here by derivative-free search on a world with ground truth).

Per-world search (this module's ``optimise_grid``): tuned against one world's own exact reference, so
its result is labelled "optimised" and never shipped. For a fixed solver and step count, the free parameters are the log-sigmas of the interior grid
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

    logs, best, start_value, evals = coordinate_search(
        score, logs, free=range(1, len(logs)), upper=lambda i, v: v[i - 1],
        lower=lambda i, v: v[i + 1] if i + 1 < len(v) else math.log(sigma_floor) - 1e-12,
        budget=budget, step=step, min_step=min_step)
    return GridSearchResult([grid[0]] + [math.exp(v) for v in logs[1:]] + [0.0], best, start_value, evals)


# ---------------------------------------------------------------------------------------------
# Grids that transfer: one grid per (solver, NFE) fitted across many random worlds
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WorldBatch:
    """One world, a batch of its noise started at sigma_max and the exact ODE solution from it."""

    seed: int
    mixture: Any
    x_start: torch.Tensor
    reference: torch.Tensor
    reference_rare: torch.Tensor | None = None  # (B,) bool: the reference row lies in the rare mode
    reference_off_mode: int = 0  # reference rows outside their own mode's 99.9% ellipsoid (``off_mode_rows``)
    weight: float = 1.0  # how many training worlds this one counts as in a transfer fit (mined worlds: more)


def world_batches(seeds: Sequence[int], samples: int, sigma_max: float, *, noise_seed: int = 0,
                  rtol: float = 1e-8) -> list[WorldBatch]:
    """Exact references for the random worlds of ``seeds`` (``worlds.random_mixtures``), ``samples``
    noise rows each, solved with DOP853 at ``rtol`` from sigma_max to 0."""
    from fastdiff_core.worlds.random_mixtures import random_world

    out = []
    for seed in seeds:
        m = random_world(seed)
        noise = torch.randn(samples, m.dim, generator=torch.Generator().manual_seed(noise_seed * 7919 + seed),
                            dtype=torch.float64)
        x = noise * sigma_max
        ref = m.reference(x, sigma_max, 0.0, rtol=rtol, atol=rtol)
        modes = m.assign(ref)
        out.append(WorldBatch(seed, m, x, ref, modes == m.rare, off_mode_rows(m, ref, modes)))
    return out


def off_mode_rows(mixture: Any, x: torch.Tensor, modes: torch.Tensor | None = None, level: float = 0.999) -> int:
    """Rows of ``x`` outside the ``level`` probability ellipsoid of their own mode (``mixture.assign``, or
    ``modes``): Mahalanobis^2 > chi2_d(level). Samples blurred between modes land here; exact samples do
    with probability 1 - ``level``."""
    from scipy.stats import chi2

    a = mixture.assign(x) if modes is None else modes
    z = torch.einsum("bd,bde->be", x - mixture.means[a], mixture.eigvecs[a])
    return int(((z * z / mixture.eigvals[a]).sum(-1) > float(chi2.ppf(level, mixture.dim))).sum())


def world_scores(solver: str, options: Mapping[str, Any], sigmas: Sequence[float], world: WorldBatch
                 ) -> tuple[float, int, int, int]:
    """``world_errors`` and, fourth, how many more rows than the reference's lie off their mode
    (``off_mode_rows``; at least 0)."""
    out = sample(solver, world.mixture.denoise, world.x_start, sigmas, options=dict(options),
                 generator=torch.Generator().manual_seed(0))
    value = terminal_rmse(out, world.reference)
    if not math.isfinite(value):
        return math.inf, 0, 0, 0
    modes = world.mixture.assign(out)
    off = max(0, off_mode_rows(world.mixture, out, modes) - world.reference_off_mode)
    if world.reference_rare is None:
        return value, 0, 0, off
    rare = modes == world.mixture.rare
    return value, int((rare & ~world.reference_rare).sum()), int((~rare & world.reference_rare).sum()), off


def world_errors(solver: str, options: Mapping[str, Any], sigmas: Sequence[float], world: WorldBatch
                 ) -> tuple[float, int, int]:
    """Terminal RMSE of ``solver`` on ``sigmas`` against the world's exact reference (inf if not finite),
    and the rows moved into / out of the rare mode against their own reference rows (the mixture's
    ``assign`` label, as the bench counts them; 0, 0 without ``reference_rare``)."""
    return world_scores(solver, options, sigmas, world)[:3]


def world_rmse(solver: str, options: Mapping[str, Any], sigmas: Sequence[float], world: WorldBatch) -> float:
    """Terminal RMSE of ``solver`` on ``sigmas`` against the world's exact reference (inf if not finite)."""
    return world_errors(solver, options, sigmas, world)[0]


def fractions_to_sigmas(fractions: Sequence[float], sigma_min: float, sigma_max: float) -> list[float]:
    """A grid from log-sigma fractions: sigma = exp(log smax + u (log smin - log smax)), u in (0, 1]
    increasing (u = 1 is sigma_min); sigma_max first, 0 last. Fractions carry a grid to any path."""
    la, lb = math.log(sigma_max), math.log(sigma_min)
    return [sigma_max] + [math.exp(la + u * (lb - la)) for u in fractions] + [0.0]


def sigmas_to_fractions(sigmas: Sequence[float], sigma_min: float, sigma_max: float) -> list[float]:
    la, lb = math.log(sigma_max), math.log(sigma_min)
    return [(math.log(s) - la) / (lb - la) for s in sigmas[1:-1]]


def coordinate_search(score: Callable[[list[float]], float], values: Sequence[float], *,
                      lower: Callable[[int, list[float]], float], upper: Callable[[int, list[float]], float],
                      free: Sequence[int] | None = None, budget: int, step: float,
                      min_step: float = 0.01) -> tuple[list[float], float, float, int]:
    """Derivative-free coordinate search: each sweep tries moving every free value by +-``step``, keeping a
    move that improves ``score`` and stays strictly inside (lower(i, values), upper(i, values)); ``step``
    halves after a sweep without an improvement. Stops after ``budget`` scores or when ``step`` <
    ``min_step``. Returns (best values, best score, first score, scores used)."""
    vals = list(values)
    best = score(vals)
    first, evals = best, 1
    idx = list(range(len(vals))) if free is None else list(free)
    while evals < budget and step >= min_step and idx:
        improved = False
        for i in idx:
            for direction in (-1.0, 1.0):
                if evals >= budget:
                    break
                trial = list(vals)
                trial[i] += direction * step
                if not (lower(i, vals) < trial[i] < upper(i, vals)):
                    continue
                value = score(trial)
                evals += 1
                if value < best:
                    best, vals, improved = value, trial, True
                    break
        if not improved:
            step *= 0.5
    return vals, best, first, evals


@dataclass(frozen=True)
class TransferResult:
    """A grid fitted across training worlds: its fractions, the geometric-mean RMSE ratio to the start
    grid on the training worlds, the training seeds it saw, the solver runs it spent, and the rare mode
    on the training worlds at the start and at the result (rows moved in / out, pooled, paired)."""

    fractions: list[float]
    train_ratio: float
    train_seeds: list[int]
    evaluations: int
    rare_weight: float = 0.0
    start_rare: tuple[int, int] = (0, 0)
    train_rare: tuple[int, int] = (0, 0)
    world_rare_weight: float = 0.0
    start_world_rare: float = 0.0  # mean over the training worlds of each world's own misplaced share
    train_world_rare: float = 0.0
    off_mode_weight: float = 0.0
    start_off_mode: float = 0.0  # mean over the training worlds of the share of rows off-mode beyond the reference's
    train_off_mode: float = 0.0


def rare_misplaced(moved_in: float, moved_out: float, reference_rare: float) -> float:
    """The share of the rare mode misplaced: rows moved into it plus rows moved out of it (against their
    own reference rows), over the reference's rows in it. Unlike the pooled difference in - out, blur
    into the mode cannot cancel losses out of it here."""
    return (moved_in + moved_out) / max(reference_rare, 1)


def optimise_transfer_grid(solver: str, options: Mapping[str, Any], start: Sequence[float],
                           worlds: Sequence[WorldBatch], sigma_min: float, sigma_max: float, *,
                           budget: int = 150, step: float = 0.2, min_step: float = 0.01,
                           rare_weight: float = 0.0, world_rare_weight: float = 0.0,
                           off_mode_weight: float = 0.0) -> TransferResult:
    """Coordinate search on the log-sigma fractions of ``start`` (a grid from sigma_max, ending in 0)
    minimising the mean over ``worlds`` of log RMSE (each world's error counts by its ratio, not its
    scale) plus ``rare_weight`` times ``rare_misplaced`` pooled over the worlds: RMSE barely sees a mode
    of 1-4% weight, so a grid fitted on RMSE alone can buy its error by blurring samples between modes
    (the label hands them to the broadest one) or by losing the rare mode. With ``rare_weight`` = 2,
    misplacing a tenth of the rare mode costs as much as 22% more RMSE. (A penalty on the pooled
    difference in - out instead was gamed: at NFE 4 its fit pushed rows into the mode to cancel the
    ones it lost.) ``world_rare_weight`` adds that weight times the mean over worlds of each world's own
    misplaced share (its moves over its own reference rows): pooled, one world that blurs many rows into
    its mode is diluted by every other world's rows; per world it counts as that world's whole mode.
    ``off_mode_weight`` adds that weight times the mean over worlds of the share of rows off their mode
    beyond the reference's (``world_scores``): blur between modes, which the rare mode's label sees only
    where the broadest mode is the rare one, shows here in every world with thin modes.
    Each world's terms count ``WorldBatch.weight`` times (the means are weighted; a world of weight 3 counts
    as three copies of it): mined hard worlds (``bench.transfer.mine_worlds``) can weigh more than the
    family's share of them. The fractions stay increasing and <= 1 (no evaluation below sigma_min)."""
    if not worlds:
        raise ValueError("worlds must hold at least one training world")
    for field, value in (("rare_weight", rare_weight), ("world_rare_weight", world_rare_weight),
                         ("off_mode_weight", off_mode_weight)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{field}={value!r} must be a finite number >= 0")
    fr = sigmas_to_fractions(check_sigmas(list(start), field="start"), sigma_min, sigma_max)
    parts: dict[tuple[float, ...], tuple[float, int, int, float, float]] = {}
    if not all(math.isfinite(w.weight) and w.weight > 0 for w in worlds):
        raise ValueError(f"world weights {[w.weight for w in worlds][:5]} must be finite numbers > 0")
    refs = [int(w.reference_rare.sum()) if w.reference_rare is not None else 0 for w in worlds]
    ref_rare = sum(w.weight * r for w, r in zip(worlds, refs))
    n = sum(w.weight for w in worlds)

    def score(f: list[float]) -> float:
        sig = fractions_to_sigmas(f, sigma_min, sigma_max)
        total, moved_in, moved_out, shares, off_share, w_in, w_out = 0.0, 0, 0, 0.0, 0.0, 0.0, 0.0
        for w, ref in zip(worlds, refs):
            e, i, o, off = world_scores(solver, options, sig, w)
            if not math.isfinite(e):
                return math.inf
            total, moved_in, moved_out = total + w.weight * math.log(max(e, 1e-300)), moved_in + i, moved_out + o
            w_in, w_out = w_in + w.weight * i, w_out + w.weight * o
            shares += w.weight * rare_misplaced(i, o, ref)
            off_share += w.weight * off / int(w.x_start.shape[0])
        parts[tuple(f)] = (total / n, moved_in, moved_out, shares / n, off_share / n)
        return (total / n + rare_weight * rare_misplaced(w_in, w_out, ref_rare)
                + world_rare_weight * shares / n + off_mode_weight * off_share / n)

    start_fr = tuple(fr)
    fr, _, _, evals = coordinate_search(  # the objective's parts at the start and the end are in ``parts``
        score, fr, lower=lambda i, v: v[i - 1] if i > 0 else 0.0,
        upper=lambda i, v: v[i + 1] if i + 1 < len(v) else 1.0 + 1e-12, budget=budget, step=step, min_step=min_step)
    unscored = (math.inf, 0, 0, math.nan, math.nan)  # a grid with a non-finite RMSE on some world
    (log_start, *start_rare, start_world, start_off), (log_best, *best_rare, best_world, best_off) = (
        parts.get(start_fr, unscored), parts.get(tuple(fr), unscored))
    ratio = math.exp(log_best - log_start) if math.isfinite(log_start) and math.isfinite(log_best) else math.nan
    return TransferResult(fr, ratio, [w.seed for w in worlds], evals, rare_weight, tuple(start_rare), tuple(best_rare),
                          world_rare_weight, start_world, best_world, off_mode_weight, start_off, best_off)
