"""``fastdiff fit grids [--write]``: last-step defaults and grids that transfer, fitted across random worlds.

1. The last-step study: every fixed-step deterministic solver x last-step convention x lower-order final
   x fixed grid x NFE on ``--train`` random training worlds (``worlds.random_mixtures``); per solver the
   setting with the smallest geometric-mean RMSE ratio to the solver's plain setting.
2. Transfer grids: per solver in ``SHIPPED_SOLVERS`` and NFE 3-10, the grid's log-sigma fractions fitted
   by coordinate search on the mean log RMSE over the training worlds, from the best fixed grid.
3. Validation on ``--held-out`` worlds the fit never saw (seeds from ``HELD_OUT``; ``check_disjoint``
   refuses overlap): shipped grid vs the best fixed grid, per world.

``--write`` stores the grids in ``fastdiff_core/tuned_grids.json`` (the ``tuned`` grid reads it);
without it nothing tracked is touched. The core computes rows; this command prints them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.commands.args import int_range, writable_file
from fastdiff_core.grid_search import (
    WorldBatch, fractions_to_sigmas, optimise_transfer_grid, world_batches, world_rmse,
)
from fastdiff_core.grids import FIXED_GRIDS, TUNED_GRIDS_FILE, build_grid
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=int_range(1, 10_000), default=12, help="training worlds (default 12)")
    p.add_argument("--held-out", type=int_range(1, 100_000), default=20, help="held-out validation worlds (default 20)")
    p.add_argument("--samples", type=int_range(1, 100_000), default=128, help="noise rows per world (default 128)")
    p.add_argument("--budget", type=int_range(1, 100_000), default=120, help="solver runs per fitted grid (default 120)")
    p.add_argument("--nfes", default=",".join(map(str, NFES)), help="NFEs to fit, a comma list in 2-20 (default 3-10)")
    p.add_argument("--skip-study", action="store_true", help="skip the last-step study")
    p.add_argument("--write", action="store_true", help=f"write the fitted grids to {TUNED_GRIDS_FILE.name}")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write every row as JSON to PATH")


def main(args: argparse.Namespace) -> int:
    try:
        nfes = tuple(sorted({int(v) for v in args.nfes.split(",")}))
    except ValueError:
        nfes = ()
    if not nfes or any(v < 2 or v > 20 for v in nfes):
        print(f"fastdiff fit grids: --nfes={args.nfes!r} must be a comma list of integers in [2, 20]", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    path = get_path(PATH_NAME)
    smin, smax = sigma_range(path)
    train_seeds, eval_seeds = training_seeds(args.train), held_out_seeds(args.held_out)
    check_disjoint(train_seeds, eval_seeds)
    log(f"references: {args.train} training + {args.held_out} held-out worlds x {args.samples} samples ...")
    train = world_batches(train_seeds, args.samples, smax)
    held = world_batches(eval_seeds, args.samples, smax, noise_seed=1)
    out: dict[str, Any] = {"path": PATH_NAME, "train_seeds": train_seeds, "held_out_seeds": eval_seeds}
    if not args.skip_study:
        log("last-step study ...")
        study = last_step_study(train, path, STUDY_NFES)
        out["study"] = study
        print(f"\nLast-step study on {args.train} training worlds, NFE {list(STUDY_NFES)}, grids {list(FIXED_GRIDS)}:")
        print("  geometric mean of RMSE / RMSE(final=solver, plain) on the same world, grid and NFE; and the median")
        print("  over worlds x NFE of best-grid RMSE ratios")
        for r in study:
            print(f"  {r['solver']:<10} {json.dumps(r['options']):<52} {r['geomean_ratio']:8.3f} "
                  f"{r['median_best_grid_ratio']:8.3f}  ({r['cases']} cases)")
    fitted: dict[str, Any] = {}
    rows = []
    for name in SHIPPED_SOLVERS:
        opts: dict[str, Any] = {}  # the solver's defaults
        fitted[name] = {"options": opts, "grids": {}}
        for nfe in nfes:
            grid, start, _ = best_fixed(name, opts, nfe, train, path)
            res = optimise_transfer_grid(name, opts, start, train, smin, smax, budget=args.budget)
            sig = fractions_to_sigmas(res.fractions, smin, smax)
            steps, planned = catalog.SOLVERS[name].plan_for_nfe(nfe, opts)
            fixed_held = [world_rmse(name, planned, build_grid(grid, steps, path), w) for w in held]
            tuned_held = [world_rmse(name, planned, sig, w) for w in held]
            ratios = [t / f for t, f in zip(tuned_held, fixed_held)]
            row = {"solver": name, "nfe": nfe, "start_grid": grid, "fractions": res.fractions,
                   "last_sigma": sig[-2], "train_ratio": res.train_ratio, "search_evals": res.evaluations,
                   "held_out_median_ratio": statistics.median(ratios),
                   "held_out_better": sum(r < 1 for r in ratios), "held_out_worlds": len(ratios)}
            rows.append(row)
            fitted[name]["grids"][str(nfe)] = [round(f, 6) for f in res.fractions]
            log(f"  {name} NFE {nfe}: from {grid}, train ratio {res.train_ratio:.3f}, held-out median ratio "
                f"{row['held_out_median_ratio']:.3f} ({row['held_out_better']}/{len(ratios)} better), "
                f"last sigma {sig[-2]:.4f}")
    out["fits"] = rows
    print(f"\nTransfer grids fitted on {args.train} training worlds, judged on {args.held_out} held-out worlds "
          "(RMSE of the tuned grid / the training-best fixed grid, per held-out world):")
    print(f"  {'solver':<10}{'NFE':>4}  {'start':<16}{'train':>7}{'held-out median':>17}{'better':>9}  last sigma")
    for r in rows:
        print(f"  {r['solver']:<10}{r['nfe']:>4}  {r['start_grid']:<16}{r['train_ratio']:>7.3f}"
              f"{r['held_out_median_ratio']:>17.3f}{r['held_out_better']:>5}/{r['held_out_worlds']:<3}  {r['last_sigma']:.4f}")
    payload = {"about": "log-sigma fractions u (sigma = smax^(1-u) smin^u) of the nonzero sigmas after sigma_max, "
                        "fitted by `fastdiff fit grids` across random mixture worlds; per solver and NFE",
               "train_seeds": train_seeds, "samples": args.samples, "budget": args.budget, "solvers": fitted}
    if args.write:
        TUNED_GRIDS_FILE.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"\ngrids written to {TUNED_GRIDS_FILE}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwall {time.perf_counter() - t0:.0f}s")
    return 0
