"""``fastdiff bench coverage [--json PATH]``: solvers x NFE x guidance on the driving teacher
(fastdiff_core.bench.coverage measures row by row; this module parses the flags and prints each row as it
arrives, then one line per configuration over the seeds). ``--json PATH`` writes every row."""

from __future__ import annotations

import argparse
import json

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.coverage import CoverageBench, guidance_sweep, solver_sweep, summary
from fastdiff_cli.args import comma_list, float_range, int_range, writable_file
from fastdiff_core.models.teacher import DEFAULT_TEACHER, TEACHERS, load_teacher
from fastdiff_core.spec import MAX_SEED
from fastdiff_core.worlds.driving import ACTIONS, SCENES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", choices=TEACHERS, default=DEFAULT_TEACHER)
    parser.add_argument("--solvers", type=comma_list(str, choices=tuple(catalog.SOLVERS)),
                        default="euler,heun,dpmpp_2m,unipc,dpmpp_2m_sde")
    parser.add_argument("--nfe", type=comma_list(int_range(1, 1000)), default="4,8,16,32,50", help="NFE per frame (before guidance)")
    parser.add_argument("--sweeps", type=comma_list(str, choices=("solver", "guidance")), default="solver,guidance",
                        help="which sweeps to run: the solver x NFE sweep, the guidance sweep, or both")
    parser.add_argument("--guidance", type=comma_list(float_range(0.0)), default="1,1.5,3,5")
    parser.add_argument("--interval", type=comma_list(float_range(0.0), length=2), default="0.3,5.0", help="guidance interval [sigma_lo, sigma_hi] (VE sigma)")
    parser.add_argument("--guidance-solver", choices=sorted(catalog.SOLVERS), default="dpmpp_2m")
    parser.add_argument("--guidance-nfe", type=int_range(1, 1000), default=16)
    parser.add_argument("--n", type=int_range(1, 1_000_000), default=1000, help="rollouts per scene per configuration")
    parser.add_argument("--horizon", type=int_range(1, 1000), default=6)
    parser.add_argument("--action", choices=ACTIONS, default="keep")
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=0)
    parser.add_argument("--seeds", type=comma_list(int_range(0, MAX_SEED)), default=None,
                        help="comma-separated seeds: every configuration once per seed")
    parser.add_argument("--sequential", action="store_true", help="sample in batches until the gate decides")
    parser.add_argument("--cap", type=int_range(1), default=4000, help="sequential: rollouts per scene at most")
    parser.add_argument("--threads", type=int_range(1, 1024), default=2)
    parser.add_argument("--no-pr", action="store_true", help="skip k-NN precision/recall")
    parser.add_argument("--json", type=writable_file, default=None)


def bench_of(args: argparse.Namespace) -> CoverageBench:
    """The flags as the bench's settings (checked there, before the teacher loads)."""
    return CoverageBench(
        teacher=args.teacher, solvers=tuple(args.solvers), nfe=tuple(args.nfe), sweeps=tuple(args.sweeps),
        guidance=tuple(args.guidance), interval=tuple(args.interval), guidance_solver=args.guidance_solver,
        guidance_nfe=args.guidance_nfe, n=args.n, horizon=args.horizon, action=args.action,
        seeds=(args.seed,) if args.seeds is None else tuple(args.seeds), sequential=args.sequential, cap=args.cap,
        pr=not args.no_pr)


HEADER = (f"{'solver':<13} {'steps':>5} {'NFE/f':>6} {'cfg':>4} {'interval':>10} {'meanTV':>7} {'maxTV':>7} "
          f"{'tail':>7} {'[95% CI]':>17} {'true':>7} {'implaus':>7} {'prec':>5} {'rec':>5} {'seed':>4} "
          f"{'n/scene':>7} {'gate':>9}")


def format_row(row: dict) -> str:
    gi = "-" if row["interval"] is None else f"[{row['interval'][0]:g},{row['interval'][1]:g}]"
    pr = (f"{row['precision']:.3f} {row['recall']:.3f}" if "precision" in row else "   -     -  ")
    return (f"{row['solver']:<13} {row['steps']:>5} {row['nfe_per_frame']:>6.1f} {row['guidance']:>4g} {gi:>10} "
            f"{row['mean_tv']:>7.4f} {row['max_tv']:>7.4f} {row['tail_rate']:>7.4f} "
            f"[{row['tail_lo']:.4f},{row['tail_hi']:.4f}] {row['tail_truth']:>7.4f} {row['implausible_rate']:>7.4f} "
            f"{pr} {row['seed']:>4} {row['rollouts_per_scene']:>7.0f} {row['gate']:>9}")


def format_summary_line(s: dict) -> str:
    what = f"cfg {s['guidance']:g} {s['interval']}" if s["sweep"] == "guidance" else ""
    return (f"{s['solver']:<13} {s['steps']:>5} {s['nfe_per_frame']:>6.1f} {what:<16} {'/'.join(s['outcomes']):<30} "
            f"mean {s['mean_rollouts']:>7.0f} [{s['min_rollouts']:.0f}, {s['max_rollouts']:.0f}]")


def main(args: argparse.Namespace) -> int:
    bench = bench_of(args)
    torch.set_num_threads(args.threads)
    net = load_teacher(bench.teacher)
    rows = []
    print(f"teacher={bench.teacher}  n={bench.n}/scene x {len(SCENES)} scenes  H={bench.horizon}  action={bench.action}")
    print("\n== solver x NFE (guidance 1) ==")
    print(HEADER)
    for row in solver_sweep(net, bench):
        rows.append(row)
        print(format_row(row), flush=True)
    print(f"\n== guidance ({bench.guidance_solver}, {bench.guidance_nfe} NFE/frame before guidance) ==")
    print(HEADER)
    for row in guidance_sweep(net, bench):
        rows.append(row)
        print(format_row(row), flush=True)
    lines = summary(rows)
    print(f"\n== over seeds {list(bench.seeds)}: gate outcomes and rollouts per scene ==")
    for s in lines:
        print(format_summary_line(s))
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "summary": lines}, indent=1))
        print(f"\nwrote {args.json}")
    return 0
