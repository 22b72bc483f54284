"""``fastdiff fit learned``: fit a learned few-step grid + last step (``fastdiff_core.learned_grid``) on held-out
random mixture worlds and, with ``--driving-scene``, on the shipped driving teacher; print the comparison."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

from fastdiff_core.bench.learned import driving_rows, world_rows, world_summary
from fastdiff_cli.args import comma_list, int_range, writable_file
from fastdiff_core.metrics.rate_change import RARE_MODE, decision_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--worlds", type=int_range(0, 1000), default=20, help="held-out random worlds (default 20; 0 skips)")
    p.add_argument("--nfes", type=comma_list(int_range(1, 50)), default=[3, 4, 6], help="NFEs, a comma list (default 3,4,6)")
    p.add_argument("--samples", type=int_range(2, 100_000), default=256, help="noise rows to fit on, and to judge on (default 256)")
    p.add_argument("--budget", type=int_range(1, 10_000), default=120, help="solver runs per solver and last step (default 120)")
    p.add_argument("--driving-scene", type=comma_list(str), default=None,
                   help="also fit the driving teacher on these scenes (a comma list, or 'all') and measure its tail")
    p.add_argument("--no-rare-check", action="store_true",
                   help="keep a fit whose rare-mode (tail) rate strays from its teacher's (default: replace it by the "
                        "shipped setting)")
    p.add_argument("--futures", type=int_range(1, 1_000_000), default=4000, help="futures per driving run (default 4000)")
    p.add_argument("--seeds", type=comma_list(int_range(0, 2**31 - 1)), default=[0, 1, 2], help="driving run seeds (default 0,1,2)")
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write every row as JSON to PATH")


def main(args: argparse.Namespace) -> int:
    scenes: list[str] = []
    if args.driving_scene is not None:
        from fastdiff_core.worlds.driving import SCENES

        scenes = list(SCENES) if args.driving_scene == ["all"] else args.driving_scene
        unknown = [s for s in scenes if s not in SCENES]
        if unknown:
            print(f"fastdiff fit learned: --driving-scene={unknown[0]!r} is not one of {sorted(SCENES)} (or 'all')",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    rare_check = not args.no_rare_check
    rows = world_rows(args.worlds, args.nfes, args.samples, args.budget, rare_check) if args.worlds else []
    summary = world_summary(rows) if rows else []
    if summary:
        print_worlds(summary, args.worlds, args.samples, rare_check)
    drows: list[dict] = []
    for scene in scenes:
        part = driving_rows(scene, args.nfes, args.futures, args.seeds, args.budget, rare_check)
        print_driving(part, scene, args.futures, args.seeds)
        drows += part
        if args.json:  # after each scene: a long run stopped part-way keeps what it measured
            args.json.write_text(json.dumps({"worlds": rows, "summary": summary, "driving": drows}, indent=1, default=str))
    print(f"\nwall {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"worlds": rows, "summary": summary, "driving": drows}, indent=1, default=str))
    return 0


def print_worlds(summary: list[dict], worlds: int, samples: int, rare_check: bool) -> None:
    print(f"held-out random worlds ({worlds}, {samples} samples; fitted on the teacher (DPM-Solver++(3M), 50 Karras "
          f"steps) only; judged against the exact reference; rare-mode check {'on' if rare_check else 'off'})")
    print(f"{'NFE':>4} {'learned/shipped':>16} {'better':>7} {'learned/oracle':>15} {'better':>7} "
          f"{'rare - ref (paired, pooled)':>28} {'shipped: rare - ref':>22} {'rejected':>8} {'fit s':>6} {'teacher ok':>10}")
    for s in summary:
        lp, sp = s["learned_pooled"], s["shipped_pooled"]
        print(f"{s['nfe']:>4} {s['median_vs_shipped']:>16.3f} {s['better_than_shipped']:>4}/{s['worlds']:<2} "
              f"{s['median_vs_oracle']:>15.3f} {s['better_than_oracle']:>4}/{s['worlds']:<2} "
              f"{lp['rare_diff']:>+12.4f} ± {lp['rare_diff_se']:.4f} {'':>6} "
              f"{sp['rare_diff']:>+11.4f} ± {sp['rare_diff_se']:.4f} {s['rejected']:>5}/{s['worlds']:<2} "
              f"{s['fit_seconds_median']:>6.1f} {s['teacher_converged']:>7}/{s['worlds']}")
    print(f"rare-mode decision, pooled over the worlds ({RARE_MODE.text}):")
    for s in summary:
        print(f"  NFE {s['nfe']:>2}: learned {decision_text(s['learned_decision'])}\n"
              f"  {'':>6}  shipped {decision_text(s['shipped_decision'])}")


def print_driving(rows: list[dict], scene: str, futures: int, seeds: list[int]) -> None:
    print(f"\ndriving teacher, scene {scene}, horizon 2, {futures} futures per seed, seeds {seeds}: tail rate")
    for name in dict.fromkeys(r["setting"] for r in rows):
        for nfe in dict.fromkeys(r["nfe"] for r in rows if r["setting"] == name):
            rs = [r for r in rows if r["setting"] == name and r["nfe"] == nfe]
            rates = [r["tail_rate"] for r in rs]
            mean = statistics.fmean(rates)
            se = statistics.stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else math.nan
            print(f"  {name:<40} NFE {str(nfe or 'ref'):>4}: tail {mean:.4f} ± {se:.4f} (per seed "
                  f"{', '.join(f'{v:.4f}' for v in rates)}; truth {rs[0]['tail_truth']:.4f})")
