"""``fastdiff fit grids``: last-step defaults and grids that transfer, fitted across random worlds.

1. The last-step study: every fixed-step deterministic solver x last-step convention x lower-order final
   x fixed grid x NFE on ``--train`` random training worlds (``worlds.random_mixtures``); per solver the
   setting with the smallest geometric-mean RMSE ratio to the solver's plain setting.
2. Transfer grids: per solver in ``SHIPPED_SOLVERS`` and NFE 3-10, the grid's log-sigma fractions fitted
   by coordinate search on the mean log RMSE over the training worlds, from the best fixed grid.
3. Validation on ``--held-out`` worlds the fit never saw (seeds from ``HELD_OUT``; ``check_disjoint``
   refuses overlap): shipped grid vs the best fixed grid, per world.

``--write`` stores the grids in ``fastdiff_core/tuned_grids.json`` (the ``tuned`` grid reads it);
without it nothing tracked is touched. This module computes rows (``fit_grids``);
``fastdiff_cli.fit_grids`` parses the flags, prints the tables and writes the files.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff_core import catalog
from fastdiff_core.grid_search import (
    WorldBatch, fractions_to_sigmas, optimise_transfer_grid, world_batches, world_rmse,
)
from fastdiff_core.grids import FIXED_GRIDS, build_grid
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.worlds.random_mixtures import check_disjoint, held_out_seeds, training_seeds

SHIPPED_SOLVERS = ("dpmpp_2m", "unipc", "ipndm")
NFES = (3, 4, 5, 6, 7, 8, 9, 10)
STUDY_NFES = (4, 6, 8, 10)
PATH_NAME = "vp_discrete"


def settings(name: str) -> list[dict[str, Any]]:
    """Every last-step convention x lower-order-final setting of a solver."""
    opts = catalog.SOLVERS[name].options
    lofs = (False, True) if "lower_order_final" in opts else (None,)
    return [{"final": f, **({} if lof is None else {"lower_order_final": lof})}
            for f in opts["final"].choices for lof in lofs]


def run_setting(name: str, opts: dict[str, Any], grid: str, nfe: int, world: WorldBatch, path: Any) -> float:
    """RMSE of one (solver, options, fixed grid) at exactly ``nfe`` evaluations on one world."""
    plan = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
    if plan is None:
        return math.nan
    steps, planned = plan
    return world_rmse(name, planned, build_grid(grid, steps, path), world)


def last_step_study(worlds: list[WorldBatch], path: Any, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Per solver and setting: the geometric mean over worlds x grids x NFE of RMSE / RMSE of the plain
    setting (final = solver, no lower-order final) on the same world, grid and NFE."""
    rows = []
    for name, info in catalog.SOLVERS.items():
        if info.adaptive or info.stochastic:
            continue
        errs: dict[tuple, float] = {}
        for opts in settings(name):
            for grid in FIXED_GRIDS:
                for nfe in nfes:
                    for w in worlds:
                        errs[(json.dumps(opts, sort_keys=True), grid, nfe, w.seed)] = run_setting(
                            name, opts, grid, nfe, w, path)
        plain = json.dumps(settings(name)[0], sort_keys=True)
        for opts in settings(name):
            key = json.dumps(opts, sort_keys=True)
            logs = [math.log(errs[(key, g, v, w.seed)] / errs[(plain, g, v, w.seed)])
                    for g in FIXED_GRIDS for v in nfes for w in worlds
                    if math.isfinite(errs[(key, g, v, w.seed)]) and math.isfinite(errs[(plain, g, v, w.seed)])]
            best_grid = [min(errs[(key, g, v, w.seed)] for g in FIXED_GRIDS) / min(errs[(plain, g, v, w.seed)]
                         for g in FIXED_GRIDS) for v in nfes for w in worlds]
            rows.append({"solver": name, "options": opts, "geomean_ratio": math.exp(statistics.fmean(logs)),
                         "median_best_grid_ratio": statistics.median(best_grid), "cases": len(logs)})
    return rows


def best_fixed(name: str, opts: dict[str, Any], nfe: int, worlds: list[WorldBatch], path: Any
               ) -> tuple[str, list[float], float]:
    """The fixed grid with the smallest mean log RMSE over ``worlds``: (name, sigmas, mean log RMSE)."""
    steps, planned = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
    scored = []
    for grid in FIXED_GRIDS:
        sig = build_grid(grid, steps, path)
        scored.append((statistics.fmean(math.log(max(world_rmse(name, planned, sig, w), 1e-300)) for w in worlds),
                       grid, sig))
    score, grid, sig = min(scored)
    return grid, sig, score


@dataclass(frozen=True)
class GridFit:
    """What one ``fastdiff fit grids`` run fits: worlds, samples, search budget, NFEs."""

    train: int = 12  # training worlds
    held_out: int = 20  # held-out validation worlds
    samples: int = 128  # noise rows per world
    budget: int = 120  # solver runs per fitted grid
    nfes: tuple[int, ...] = NFES
    study: bool = True  # run the last-step study first


@dataclass
class GridFitReport:
    train_seeds: list[int]
    held_out_seeds: list[int]
    study: list[dict[str, Any]] | None  # last_step_study rows (None when skipped)
    fits: list[dict[str, Any]]  # per solver and NFE: the fitted grid judged on the held-out worlds
    tuned_grids: dict[str, Any]  # the document ``--write`` stores in tuned_grids.json
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": PATH_NAME, "train_seeds": self.train_seeds,
                               "held_out_seeds": self.held_out_seeds}
        if self.study is not None:
            out["study"] = self.study
        out["fits"] = self.fits
        return out


def fit_one(name: str, nfe: int, train: list[WorldBatch], held: list[WorldBatch], path: Any, budget: int
            ) -> dict[str, Any]:
    """One solver's grid at one NFE: fitted on the training worlds from the best fixed grid, then the
    tuned / best-fixed RMSE ratio on each held-out world."""
    smin, smax = sigma_range(path)
    opts: dict[str, Any] = {}  # the solver's defaults
    grid, start, _ = best_fixed(name, opts, nfe, train, path)
    res = optimise_transfer_grid(name, opts, start, train, smin, smax, budget=budget)
    sig = fractions_to_sigmas(res.fractions, smin, smax)
    steps, planned = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
    fixed_held = [world_rmse(name, planned, build_grid(grid, steps, path), w) for w in held]
    ratios = [world_rmse(name, planned, sig, w) / f for w, f in zip(held, fixed_held)]
    return {"solver": name, "nfe": nfe, "start_grid": grid, "fractions": res.fractions, "last_sigma": sig[-2],
            "train_ratio": res.train_ratio, "search_evals": res.evaluations,
            "held_out_median_ratio": statistics.median(ratios), "held_out_better": sum(r < 1 for r in ratios),
            "held_out_worlds": len(ratios)}


def fit_grids(fit: GridFit, log: Callable[[str], None] = lambda s: None) -> GridFitReport:
    """The last-step study (unless skipped) and every shipped solver's transfer grid per NFE."""
    t0 = time.perf_counter()
    path = get_path(PATH_NAME)
    smax = sigma_range(path)[1]
    train_seeds, eval_seeds = training_seeds(fit.train), held_out_seeds(fit.held_out)
    check_disjoint(train_seeds, eval_seeds)
    log(f"references: {fit.train} training + {fit.held_out} held-out worlds x {fit.samples} samples ...")
    train = world_batches(train_seeds, fit.samples, smax)
    held = world_batches(eval_seeds, fit.samples, smax, noise_seed=1)
    study = None
    if fit.study:
        log("last-step study ...")
        study = last_step_study(train, path, STUDY_NFES)
    rows = []
    grids: dict[str, Any] = {name: {"options": {}, "grids": {}} for name in SHIPPED_SOLVERS}
    for name in SHIPPED_SOLVERS:
        for nfe in fit.nfes:
            row = fit_one(name, nfe, train, held, path, fit.budget)
            rows.append(row)
            grids[name]["grids"][str(nfe)] = [round(f, 6) for f in row["fractions"]]
            log(f"  {name} NFE {nfe}: from {row['start_grid']}, train ratio {row['train_ratio']:.3f}, held-out "
                f"median ratio {row['held_out_median_ratio']:.3f} ({row['held_out_better']}/{len(held)} better), "
                f"last sigma {row['last_sigma']:.4f}")
    tuned = {"about": "log-sigma fractions u (sigma = smax^(1-u) smin^u) of the nonzero sigmas after sigma_max, "
                      "fitted by `fastdiff fit grids` across random mixture worlds; per solver and NFE",
             "train_seeds": train_seeds, "samples": fit.samples, "budget": fit.budget, "solvers": grids}
    return GridFitReport(train_seeds, eval_seeds, study, rows, tuned, time.perf_counter() - t0)
