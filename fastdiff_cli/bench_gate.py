"""``fastdiff bench gate``: the coverage gate's PASS / FAIL / UNDECIDED rates by simulation, at fixed n
and sequential, or (``--weighted``) with importance-weighted rates (fastdiff_core.bench.gate simulates;
this module parses the flags, prints the tables and draws the plot)."""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from fastdiff_core.bench.gate import (
    FIXED_N, PROPOSAL_BETA, Schedule, operating_characteristics, weighted_characteristics,
)
from fastdiff_cli.args import comma_list, int_range, writable_file
from fastdiff_core.metrics.gate import RELEASE_GATE
from fastdiff_core.spec import MAX_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int_range(1), default=1000, help="simulated gate runs per row (>= 1)")
    parser.add_argument("--n", type=comma_list(int_range(1)), default=list(FIXED_N),
                        help="fixed-n modes: rollouts per scene, comma-separated")
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=0)
    parser.add_argument("--cap", type=int_range(1), default=Schedule.cap, help="sequential: rollouts per scene at most")
    parser.add_argument("--json", type=writable_file, default=None, help="write the rows as JSON here")
    parser.add_argument("--plot", type=writable_file, default=None, help="write a PNG of the curves here")
    parser.add_argument("--weighted", action="store_true",
                        help="instead: importance-weighted rates, Kish's n_eff against each label's own effective n "
                             "(docs/importance.md)")


def main(args: argparse.Namespace) -> int:
    ns = tuple(args.n)
    if args.weighted:
        return _main_weighted(args, ns)
    schedule = Schedule(cap=args.cap)
    t0 = time.perf_counter()
    rows = operating_characteristics(args.trials, args.seed, ns=ns, schedule=schedule)
    c = RELEASE_GATE
    print(f"coverage gate operating characteristics: 8 driving scenes, {args.trials} trials per row, family alpha "
          f"{c.alpha} (Bonferroni), tail ±{c.tail_tolerance:.0%} or ±{c.tail_tolerance_abs * 100:g} pt, branches "
          f"±{c.branch_tolerance * 100:g} pt, implausible <= {c.leak_tolerance:.0%}, TV <= {c.tv_tolerance}; "
          f"sequential: looks x{schedule.growth} from {schedule.first_batch}, cap {schedule.cap}/scene")
    print(f"{'mode':<10} {'n':>6} {'sampler':<18} {'PASS':>6} {'FAIL':>6} {'UNDEC':>6} {'mean n':>8} {'p95 n':>8}")
    for r in rows:
        print(f"{r['mode']:<10} {r['n'] if r['n'] is not None else '-':>6} {r['sampler']:<18} {r['pass_rate']:>6.1%} "
              f"{r['fail_rate']:>6.1%} {r['undecided_rate']:>6.1%} {r['mean_rollouts']:>8.0f} {r['p95_rollouts']:>8.0f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"trials": args.trials, "seed": args.seed, "config": c.__dict__ | {
            "leak_labels": list(c.leak_labels)}, "schedule": schedule.__dict__, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _main_weighted(args: argparse.Namespace, ns: tuple[int, ...]) -> int:
    t0 = time.perf_counter()
    rows = weighted_characteristics(args.trials, args.seed, ns=ns)
    print(f"importance-weighted rates in the gate: one scene, {args.trials} trials per row, family alpha "
          f"{RELEASE_GATE.alpha}; latent-Gaussian tail proposal, beta {PROPOSAL_BETA} (mu > 0: towards the tail)")
    print(f"{'tail':>6} {'n':>5} {'mu':>5} {'eff. n':<6} {'miss':>7} {'perf FAIL':>9} {'x0.5 PASS':>9} "
          f"{'x0.5 FAIL':>9} {'tail n_eff':>10}")
    for r in rows:
        print(f"{r['tail']:>6g} {r['n']:>5} {r['mu']:>5g} {r['effective_n']:<6} {r['family_miss']:>7.2%} "
              f"{r['perfect_fail']:>9.2%} {r['halved_pass']:>9.2%} {r['halved_fail']:>9.1%} {r['tail_n_eff']:>10,.0f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"trials": args.trials, "seed": args.seed, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """Stacked PASS / UNDECIDED / FAIL bars per sampler, one panel per mode (matplotlib, the docs extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [("fixed", n) for n in sorted({r["n"] for r in rows if r["mode"] == "fixed"})] + [("sequential", None)]
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 4.5), sharey=True)
    for ax, (mode, n) in zip(np.atleast_1d(axes), modes):
        sel = [r for r in rows if r["mode"] == mode and r["n"] == n]
        names = [r["sampler"] for r in sel]
        y = np.arange(len(sel))
        left = np.zeros(len(sel))
        for key, colour, label in (("pass_rate", "#2e7d32", "PASS"), ("undecided_rate", "#bdbdbd", "UNDECIDED"),
                                   ("fail_rate", "#c62828", "FAIL")):
            v = np.array([r[key] for r in sel])
            ax.barh(y, v, left=left, color=colour, label=label)
            left += v
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        if mode == "sequential":
            for k, r in enumerate(sel):
                ax.text(0.02, k, f"mean n {r['mean_rollouts']:,.0f}", va="center", fontsize=7)
        ax.set_title(f"fixed n = {n:,} per scene" if mode == "fixed" else "sequential (confidence sequence)",
                     fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of trials")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9)
    fig.suptitle("coverage gate: outcome rates per simulated sampler (8 driving scenes, family alpha 0.05)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
