"""``fastdiff fit grids``: last-step defaults and grids that transfer, fitted across random worlds.

1. The last-step study: every fixed-step deterministic solver x last-step convention x lower-order final
   x fixed grid x NFE on ``--train`` random training worlds (``worlds.random_mixtures``); per solver the
   setting with the smallest geometric-mean RMSE ratio to the solver's plain setting.
2. Transfer grids: per solver in ``SHIPPED_SOLVERS``, last-step convention in ``--finals`` (the grid of
   ``final="sigma_min"`` ends where sampling stops, not at the last evaluation, so it is fitted apart)
   and NFE 3-10, the grid's log-sigma fractions fitted by coordinate search on the mean log RMSE over
   the training worlds plus ``rare_weight`` times the share of the rare mode misplaced (rows moved in or
   out against their references; ``grid_search.optimise_transfer_grid``), from the best fixed grid.
   With ``--mine N`` the training worlds get hard examples from the same family (``mine_worlds``): N
   other training-range worlds screened with the *shipped* grids, the ones where a shipped grid moves rows
   into the rare mode added, each counting ``--mine-weight`` times.
3. Validation on ``--held-out`` worlds the fit never saw (seeds from ``HELD_OUT``; ``check_disjoint``
   refuses overlap): shipped grid vs the best fixed grid, per world, and both grids' rare mode pooled.

``--write`` stores the grids in ``fastdiff_core/tuned_grids.json`` (the ``tuned`` grid reads it),
replacing the grids fitted (solver, convention, step count) and keeping the others as shipped; without
it nothing tracked is touched. This module computes rows (``fit_grids``);
``fastdiff_cli.fit_grids`` parses the flags, prints the tables and writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff_core import catalog
from fastdiff_core.grid_search import (
    WorldBatch, fractions_to_sigmas, optimise_transfer_grid, world_batches, world_errors, world_rmse,
)
from fastdiff_core.grids import FIXED_GRIDS, TUNED_GRIDS_FILE, build_grid
from fastdiff_core.metrics.solver_error import paired_rate_difference
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.worlds.random_mixtures import check_disjoint, held_out_seeds, training_seeds

SHIPPED_SOLVERS = catalog.TUNED_SOLVERS
NFES = (3, 4, 5, 6, 7, 8, 9, 10)
STUDY_NFES = (4, 6, 8, 10)
PATH_NAME = "vp_discrete"
FINALS = tuple(catalog.GRIDS["tuned"].options["final"].choices)  # conventions with their own tuned grids
RARE_WEIGHT = 2.0  # the fit's weight on the rare mode's misplaced share (a tenth misplaced = 22% more RMSE)
# Mined candidates are training seeds from 20,000 on: after any fit's own worlds (1,000 + --train, at most
# 10,000 of them) and before tools/lownfe_probe.py's validation worlds (90,000 on).
MINE_START = 19_000  # index into worlds.random_mixtures.TRAINING (seed 20,000)
MINE_MAX = 70_000  # candidates up to seed 89,999


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
    """What one ``fastdiff fit grids`` run fits: worlds, samples, search budget, NFEs, conventions."""

    train: int = 12  # training worlds
    held_out: int = 20  # held-out validation worlds
    samples: int = 128  # noise rows per world
    budget: int = 120  # solver runs per fitted grid
    nfes: tuple[int, ...] = NFES
    study: bool = True  # run the last-step study first
    finals: tuple[str, ...] = FINALS  # last-step conventions to fit grids for
    rare_weight: float = RARE_WEIGHT
    world_rare_weight: float = 0.0  # weight of the mean over worlds of each world's own misplaced share
    off_mode_weight: float = 0.0  # weight of the mean over worlds of the share of rows off their mode (blur)
    solvers: tuple[str, ...] = SHIPPED_SOLVERS  # solvers to fit grids for
    mine: int = 0  # training-range worlds screened for hard examples (``mine_worlds``; 0: none)
    mine_min_in: int = 2  # a mined world: some shipped grid moves at least this many rows into its rare mode
    mine_weight: float = 1.0  # how many training worlds a mined world counts as


def shipped_settings(fit: GridFit, path: Any) -> list[tuple[str, dict[str, Any], list[float]]]:
    """(solver, planned options, shipped tuned sigmas) of every solver, convention and NFE ``fit`` fits that
    has a shipped grid (``tuned_grids.json`` as it is before this fit)."""
    out = []
    for name in fit.solvers:
        for final in fit.finals:
            opts: dict[str, Any] = {} if final == "solver" else {"final": final}
            for nfe in fit.nfes:
                plan = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
                if plan is None or plan[0] not in catalog.TUNED_STEPS:
                    continue
                out.append((name, plan[1], build_grid("tuned", plan[0], path, {"solver": name, "final": final})))
    return out


def mine_worlds(fit: GridFit, path: Any, log: Callable[[str], None] = lambda s: None
                ) -> tuple[list[WorldBatch], dict[str, Any]]:
    """Hard-example mining inside the training family: screen ``fit.mine`` training-range worlds (seeds from
    20,000 on, none of them a fit's own training world or a held-out one) with the shipped grids of what
    ``fit`` fits (``shipped_settings``), and keep each world where one of them moves at least
    ``fit.mine_min_in`` rows into the rare mode (against their own reference rows) -- blur between modes
    that a grid fitted on the family's typical worlds never sees -- with weight ``fit.mine_weight``.
    Returns the kept worlds (``fit.samples`` rows each, noise other than the training worlds') and a
    summary: screened seeds, kept seeds, and the rows moved in / out by the shipped grids on the kept ones."""
    if not 0 < fit.mine <= MINE_MAX:
        raise ValueError(f"mine={fit.mine!r} must be in [1, {MINE_MAX}]")
    if fit.mine_min_in < 1:
        raise ValueError(f"mine_min_in={fit.mine_min_in!r} must be >= 1")
    if not (math.isfinite(fit.mine_weight) and fit.mine_weight > 0):
        raise ValueError(f"mine_weight={fit.mine_weight!r} must be a finite number > 0")
    seeds = training_seeds(fit.mine, start=MINE_START)
    shipped = shipped_settings(fit, path)
    smax = sigma_range(path)[1]
    kept: list[WorldBatch] = []
    moved_in = moved_out = 0
    for k in range(0, len(seeds), 100):
        for w in world_batches(seeds[k:k + 100], fit.samples, smax, noise_seed=2):
            moves = [world_errors(name, opts, sig, w)[1:] for name, opts, sig in shipped]
            if max((i for i, _ in moves), default=0) >= fit.mine_min_in:
                kept.append(dataclasses.replace(w, weight=fit.mine_weight))
                moved_in, moved_out = moved_in + sum(i for i, _ in moves), moved_out + sum(o for _, o in moves)
        log(f"  mined {min(k + 100, len(seeds))} of {len(seeds)} worlds: {len(kept)} kept")
    return kept, {"screened": [seeds[0], seeds[-1]], "kept": [w.seed for w in kept], "min_in": fit.mine_min_in,
                  "weight": fit.mine_weight, "shipped_moved_in_out": [moved_in, moved_out]}


@dataclass
class GridFitReport:
    train_seeds: list[int]
    held_out_seeds: list[int]
    study: list[dict[str, Any]] | None  # last_step_study rows (None when skipped)
    fits: list[dict[str, Any]]  # per solver, convention and NFE: the fitted grid judged on the held-out worlds
    tuned_grids: dict[str, Any]  # the document ``--write`` stores in tuned_grids.json
    wall_s: float
    mined: dict[str, Any] | None = None  # ``mine_worlds``' summary (None without --mine)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": PATH_NAME, "train_seeds": self.train_seeds,
                               "held_out_seeds": self.held_out_seeds}
        if self.study is not None:
            out["study"] = self.study
        if self.mined is not None:
            out["mined"] = self.mined
        out["fits"] = self.fits
        return out


def _pooled_rare(solver: str, opts: dict[str, Any], sigmas: list[float], worlds: list[WorldBatch]
                 ) -> tuple[list[float], dict[str, Any]]:
    """RMSE per world and the rare mode pooled over ``worlds`` against their references (paired)."""
    errs = [world_errors(solver, opts, sigmas, w) for w in worlds]
    n = sum(int(w.x_start.shape[0]) for w in worlds)
    return [e[0] for e in errs], paired_rate_difference(sum(e[1] for e in errs), sum(e[2] for e in errs), n)


def fit_one(name: str, nfe: int, train: list[WorldBatch], held: list[WorldBatch], path: Any, budget: int,
            final: str = "solver", rare_weight: float = 0.0, world_rare_weight: float = 0.0,
            off_mode_weight: float = 0.0) -> dict[str, Any] | None:
    """One solver's grid for one last-step convention at one NFE: fitted on the training worlds from the
    best fixed grid, then per held-out world the tuned / best-fixed RMSE ratio, and both grids' rare mode
    pooled over the held-out worlds. None when the convention's step count at ``nfe`` has no tuned grid."""
    smin, smax = sigma_range(path)
    opts: dict[str, Any] = {} if final == "solver" else {"final": final}  # otherwise the solver's defaults
    plan = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
    if plan is None or plan[0] not in catalog.TUNED_STEPS:
        return None
    steps, planned = plan
    grid, start, _ = best_fixed(name, opts, nfe, train, path)
    res = optimise_transfer_grid(name, planned, start, train, smin, smax, budget=budget, rare_weight=rare_weight,
                                 world_rare_weight=world_rare_weight, off_mode_weight=off_mode_weight)
    sig = fractions_to_sigmas(res.fractions, smin, smax)
    fixed_held, fixed_rare = _pooled_rare(name, planned, build_grid(grid, steps, path), held)
    tuned_held, tuned_rare = _pooled_rare(name, planned, sig, held)
    ratios = [t / f for t, f in zip(tuned_held, fixed_held)]
    return {"solver": name, "final": final, "nfe": nfe, "steps": steps, "start_grid": grid,
            "fractions": res.fractions, "last_sigma": sig[-2], "train_ratio": res.train_ratio,
            "rare_weight": rare_weight, "train_rare_start": list(res.start_rare), "train_rare": list(res.train_rare),
            "world_rare_weight": world_rare_weight, "train_world_rare_start": res.start_world_rare,
            "train_world_rare": res.train_world_rare, "off_mode_weight": off_mode_weight,
            "train_off_mode_start": res.start_off_mode, "train_off_mode": res.train_off_mode,
            "search_evals": res.evaluations, "held_out_median_ratio": statistics.median(ratios),
            "held_out_better": sum(r < 1 for r in ratios), "held_out_worlds": len(ratios),
            "held_out_rare": tuned_rare, "held_out_rare_fixed": fixed_rare}


def _tuned_document(fit: GridFit, train_seeds: list[int], fitted: dict[tuple[str, str], dict[str, list[float]]],
                    mined: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped tuned_grids.json with the fitted (solver, convention, step count) grids replaced and the
    others kept; each convention's fit settings are stored beside its grids (for final = solver at the top)."""
    doc = json.loads(TUNED_GRIDS_FILE.read_text())
    meta = {"train_seeds": train_seeds, "samples": fit.samples, "budget": fit.budget, "rare_weight": fit.rare_weight}
    if fit.world_rare_weight:
        meta["world_rare_weight"] = fit.world_rare_weight
    if fit.off_mode_weight:
        meta["off_mode_weight"] = fit.off_mode_weight
    if mined is not None:
        meta["mined"] = {k: mined[k] for k in ("screened", "kept", "min_in", "weight")}
    for (name, final), grids in fitted.items():
        entry = doc["solvers"].setdefault(name, {"options": {}, "grids": {}})
        if final == "solver":
            entry["grids"] = {**entry["grids"], **grids}
            doc.update(meta)
        else:
            old = entry.setdefault("finals", {}).get(final, {"grids": {}})
            # the convention's top-level fields say how its first grids were fitted; a refit of some step
            # counts records its own settings per step count (they win over the top-level ones)
            fits = {**old.get("fits", {}), **{steps: {**meta, "train_seeds": [train_seeds[0], train_seeds[-1]]}
                                              for steps in grids}}
            first = {k: v for k, v in old.items() if k not in ("grids", "fits")} or meta
            entry["finals"][final] = {**first, "grids": {**old["grids"], **grids}, "fits": fits}
    doc["about"] = ("log-sigma fractions u (sigma = smax^(1-u) smin^u) of the nonzero sigmas after sigma_max, "
                    "fitted by `fastdiff fit grids` across random mixture worlds; per solver, step count and "
                    "last-step convention ('grids': final = solver, fitted as the top-level fields say; "
                    "'finals': the others, each with its own fit; a final's 'fits' give, per step count, the settings of a "
                    "later refit, train_seeds as [first, last])")
    return doc


def fit_grids(fit: GridFit, log: Callable[[str], None] = lambda s: None) -> GridFitReport:
    """The last-step study (unless skipped) and every shipped solver's transfer grid per convention and NFE."""
    t0 = time.perf_counter()
    path = get_path(PATH_NAME)
    smax = sigma_range(path)[1]
    unknown = sorted(set(fit.finals) - set(FINALS))
    if unknown or not fit.finals:
        raise ValueError(f"finals={list(fit.finals)!r} must be a non-empty subset of {list(FINALS)}")
    if not fit.solvers or set(fit.solvers) - set(SHIPPED_SOLVERS):
        raise ValueError(f"solvers={list(fit.solvers)!r} must be a non-empty subset of {list(SHIPPED_SOLVERS)}")
    train_seeds, eval_seeds = training_seeds(fit.train), held_out_seeds(fit.held_out)
    check_disjoint(train_seeds, eval_seeds)
    log(f"references: {fit.train} training + {fit.held_out} held-out worlds x {fit.samples} samples ...")
    train = world_batches(train_seeds, fit.samples, smax)
    held = world_batches(eval_seeds, fit.samples, smax, noise_seed=1)
    mined, extra = None, []
    if fit.mine:
        log(f"mining {fit.mine} training-range worlds for ones the shipped grids blur into the rare mode ...")
        extra, mined = mine_worlds(fit, path, log)
        check_disjoint(mined["kept"], eval_seeds + train_seeds)
    study = None
    if fit.study:
        log("last-step study ...")
        study = last_step_study(train, path, STUDY_NFES)
    rows = []
    fitted: dict[tuple[str, str], dict[str, list[float]]] = {}
    for name in fit.solvers:
        for final in fit.finals:
            for nfe in fit.nfes:
                row = fit_one(name, nfe, train + extra, held, path, fit.budget, final, fit.rare_weight, fit.world_rare_weight,
                              fit.off_mode_weight)
                if row is None:
                    continue
                rows.append(row)
                fitted.setdefault((name, final), {})[str(row["steps"])] = [round(f, 6) for f in row["fractions"]]
                log(f"  {name} final={final} NFE {nfe}: from {row['start_grid']}, train ratio {row['train_ratio']:.3f}, "
                    f"held-out median ratio {row['held_out_median_ratio']:.3f} ({row['held_out_better']}/{len(held)} "
                    f"better), last sigma {row['last_sigma']:.4f}, train rare in/out {row['train_rare_start']} -> {row['train_rare']}, "
                    f"per-world share {row['train_world_rare_start']:.3f} -> {row['train_world_rare']:.3f}, "
                    f"off-mode share {row['train_off_mode_start']:.4f} -> {row['train_off_mode']:.4f}, "
                    f"held-out rare {row['held_out_rare']['rare_diff']:+.4f} (fixed {row['held_out_rare_fixed']['rare_diff']:+.4f})")
    return GridFitReport(train_seeds, eval_seeds, study, rows, _tuned_document(fit, train_seeds, fitted, mined),
                         time.perf_counter() - t0, mined)
