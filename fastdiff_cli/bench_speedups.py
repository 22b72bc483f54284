"""``fastdiff bench speedups [--json PATH]``: every systems lever side by side, measured in one run
(fastdiff_core.bench.speedups measures; this module parses the flags and prints each lever's row as
it is measured)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.speedups import SCENE_SET, SpeedupsBench, lever_rows
from fastdiff_cli.teacher_bench_args import add_teacher_bench_arguments
from fastdiff_cli.args import int_range
from fastdiff_core.latency import device_name
from fastdiff_core.spec import MAX_SEED
from fastdiff_core.worlds.driving import ACTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_teacher_bench_arguments(parser)
    parser.add_argument("--n", type=int_range(1, 1_000_000), default=1500, help="futures per scene (coverage and throughput workload)")
    parser.add_argument("--steps", type=int_range(1, 1000), default=8, help="solver steps of the baseline rows")
    parser.add_argument("--solver", choices=sorted(catalog.SOLVERS), default="dpmpp_2m")
    parser.add_argument("--action", default="keep", choices=ACTIONS)
    parser.add_argument("--horizon", type=int_range(1, 1000), default=6)
    parser.add_argument("--repeats", type=int_range(1, 10_000), default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="lever labels (prefixes) to skip, e.g. torch.compile")
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=0,
                        help="seed of the noise and the waiting frames every lever shares")
    parser.add_argument("--no-timing", action="store_true",
                        help="coverage columns only (no wall-clock workloads): for re-measuring coverage over seeds")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bench = SpeedupsBench(checkpoint=args.checkpoint, n=args.n, steps=args.steps, solver=args.solver,
                          action=args.action, horizon=args.horizon, repeats=args.repeats, skip=tuple(args.skip),
                          seed=args.seed, timing=not args.no_timing)
    dev_name = device_name(device)
    print(f"fastdiff bench speedups — device {dev_name}; {args.solver} {args.steps} steps, H = {args.horizon}, "
          f"action {args.action}, {args.n} futures x {len(SCENE_SET)} scenes per lever")
    print(f"\n{'lever':32s} {'NFE/roll':>8s} {'rounds/fr':>9s} {'deep':>5s} {'thru ms':>8s} {'speed':>6s} "
          f"{'1-roll ms':>9s} {'lat':>6s} {'TV':>6s} {'dTV':>7s} {'tail':>6s} {'dtail':>7s} {'impl':>5s} gate")
    rows: list[dict[str, Any]] = []
    for row in lever_rows(bench, device):
        rows.append(row)
        timing = ("       -      -          -      -" if row["throughput"] is None else
                  f"{row['throughput']['median_s'] * 1e3:8.1f} {row['speed_ratio']:5.2f}x "
                  f"{row['latency_one_rollout']['median_s'] * 1e3:9.2f} {row['latency_ratio']:5.2f}x")
        print(f"{row['lever']:32s} {row['nfe_per_rollout']:8.1f} {row['rounds_per_frame']:9.1f} {row['deep_fraction']:5.2f} "
              f"{timing} "
              f"{row['mean_tv']:6.3f} {row['tv_change']:+7.3f} {row['tail_rate']:6.2%} {row['tail_change']:+7.2%} "
              f"{row['implausible']:5.1%} {row['gate']}")
    if rows:
        print(f"\ntrue mean tail rate {rows[0]['tail_true']:.2%}.", end=" ")
    print("Ratios are against each row's reference, timed "
          "interleaved in this run (the guidance interval against guidance at every step, 32-step rows against "
          f"32-step references); 'speed' = throughput workload ({args.n} futures in one fan-out), 'lat' = one "
          "rollout alone, 'rounds/fr' = sequential network rounds per frame (latency on hardware with spare "
          "parallel lanes), 'deep' = share of steps that ran the deep blocks.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": dev_name, "steps": args.steps, "solver": args.solver, "seed": args.seed,
                                         "horizon": args.horizon, "n": args.n, "scenes": list(SCENE_SET),
                                         "levers": rows}, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
