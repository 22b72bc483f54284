"""``fastdiff fit grids [--write]``: last-step defaults and grids that transfer, fitted across random
worlds (fastdiff_core.bench.transfer fits; this module parses the flags, prints the tables and writes
``tuned_grids.json`` only with ``--write``)."""

from __future__ import annotations

import argparse
import json
import sys
from fastdiff_cli.args import comma_list, float_range, int_range, writable_file
from pathlib import Path

import torch

from fastdiff_core.bench.transfer import (
    FINALS, MINE_MAX, NFES, RARE_WEIGHT, SHIPPED_SOLVERS, STUDY_NFES, GridFit, GridFitReport, fit_grids,
)
from fastdiff_core.grids import FIXED_GRIDS, TUNED_GRIDS_FILE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", type=int_range(1, 10_000), default=12, help="training worlds (default 12)")
    p.add_argument("--held-out", type=int_range(1, 100_000), default=20, help="held-out validation worlds (default 20)")
    p.add_argument("--samples", type=int_range(1, 100_000), default=128, help="noise rows per world (default 128)")
    p.add_argument("--budget", type=int_range(1, 100_000), default=120, help="solver runs per fitted grid (default 120)")
    p.add_argument("--nfes", type=comma_list(int_range(2, 20)), default=list(NFES),
                   help="NFEs to fit, a comma list in 2-20 (default 3-10)")
    p.add_argument("--finals", type=comma_list(str, choices=FINALS), default=list(FINALS),
                   help=f"last-step conventions to fit grids for, a comma list of {list(FINALS)} (default all); "
                        "--write replaces only the grids fitted")
    p.add_argument("--rare-weight", type=float_range(0.0, 100.0), default=RARE_WEIGHT,
                   help=f"weight of the rare mode's misplaced share (rows moved in or out over its reference rows) "
                        f"beside the mean log RMSE (default {RARE_WEIGHT}; 0 fits RMSE alone)")
    p.add_argument("--world-rare-weight", type=float_range(0.0, 100.0), default=0.0,
                   help="weight of the mean over training worlds of each world's own misplaced share (its rows moved "
                        "in or out over its own reference rows), so one world's blur counts as its whole mode (default 0)")
    p.add_argument("--off-mode-weight", type=float_range(0.0, 100.0), default=0.0,
                   help="weight of the mean over training worlds of the share of rows off their own mode's 99.9%% "
                        "ellipsoid beyond the reference's (blur between modes; default 0)")
    p.add_argument("--solvers", type=comma_list(str, choices=SHIPPED_SOLVERS), default=list(SHIPPED_SOLVERS),
                   help=f"solvers to fit grids for, a comma list of {list(SHIPPED_SOLVERS)} (default all); "
                        "--write replaces only the grids fitted")
    p.add_argument("--mine", type=int_range(0, MINE_MAX), default=0,
                   help="hard-example mining: screen this many more training-range worlds (seeds 20,000 on) with the "
                        "shipped grids and add to the training worlds each one where a shipped grid moves at least "
                        "--mine-min-in rows into the rare mode (default 0: none)")
    p.add_argument("--mine-min-in", type=int_range(1, 100_000), default=2,
                   help="rows a shipped grid must move into a screened world's rare mode to mine it (default 2)")
    p.add_argument("--mine-weight", type=float_range(0.0, 1000.0, lo_open=True), default=1.0,
                   help="how many training worlds a mined world counts as in the fit's means (default 1)")
    p.add_argument("--skip-study", action="store_true", help="skip the last-step study")
    p.add_argument("--write", action="store_true", help=f"write the fitted grids to {TUNED_GRIDS_FILE.name}")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write every row as JSON to PATH")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    fit = GridFit(train=args.train, held_out=args.held_out, samples=args.samples, budget=args.budget,
                  nfes=tuple(sorted(set(args.nfes))), study=not args.skip_study,
                  finals=tuple(dict.fromkeys(args.finals)), rare_weight=args.rare_weight,
                  world_rare_weight=args.world_rare_weight,
                  off_mode_weight=args.off_mode_weight, solvers=tuple(dict.fromkeys(args.solvers)),
                  mine=args.mine, mine_min_in=args.mine_min_in, mine_weight=args.mine_weight)
    report = fit_grids(fit, log=lambda s: print(s, file=sys.stderr, flush=True))
    print_report(report, fit)
    if args.write:
        TUNED_GRIDS_FILE.write_text(json.dumps(report.tuned_grids, indent=1) + "\n")
        print(f"\ngrids written to {TUNED_GRIDS_FILE}")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1, default=str))
    print(f"\nwall {report.wall_s:.0f}s")
    return 0


def print_report(report: GridFitReport, fit: GridFit) -> None:
    if report.study is not None:
        print(f"\nLast-step study on {fit.train} training worlds, NFE {list(STUDY_NFES)}, grids {list(FIXED_GRIDS)}:")
        print("  geometric mean of RMSE / RMSE(final=solver, plain) on the same world, grid and NFE; and the median")
        print("  over worlds x NFE of best-grid RMSE ratios")
        for r in report.study:
            print(f"  {r['solver']:<10} {json.dumps(r['options']):<52} {r['geomean_ratio']:8.3f} "
                  f"{r['median_best_grid_ratio']:8.3f}  ({r['cases']} cases)")
    if report.mined is not None:
        m = report.mined
        print(f"\nMined {len(m['kept'])} of {fit.mine} training-range worlds (seeds {m['screened'][0]}-{m['screened'][1]}) "
              f"where a shipped grid moves >= {m['min_in']} rows into the rare mode (shipped grids on them: "
              f"{m['shipped_moved_in_out'][0]} in / {m['shipped_moved_in_out'][1]} out); each counts {m['weight']} "
              "training worlds in the fit")
    print(f"\nTransfer grids fitted on {fit.train} training worlds (rare weight {fit.rare_weight}, per-world "
          f"rare weight {fit.world_rare_weight}, off-mode weight {fit.off_mode_weight}), judged on "
          f"{fit.held_out} held-out worlds (RMSE of the tuned grid / the training-best fixed grid, per held-out world; "
          "rare mode pooled over the held-out worlds minus the reference's, tuned and fixed):")
    print(f"  {'solver':<10}{'final':<10}{'NFE':>4}  {'start':<16}{'train':>7}{'held-out median':>17}{'better':>9}"
          f"  {'last sigma':>10}  {'rare tuned':>20}  {'rare fixed':>20}")
    for r in report.fits:
        tr, fr = r["held_out_rare"], r["held_out_rare_fixed"]
        print(f"  {r['solver']:<10}{r['final']:<10}{r['nfe']:>4}  {r['start_grid']:<16}{r['train_ratio']:>7.3f}"
              f"{r['held_out_median_ratio']:>17.3f}{r['held_out_better']:>5}/{r['held_out_worlds']:<3}  "
              f"{r['last_sigma']:>10.4f}  {tr['rare_diff']:+.4f} +- {tr['rare_diff_se']:.4f}  "
              f"{fr['rare_diff']:+.4f} +- {fr['rare_diff_se']:.4f}")
