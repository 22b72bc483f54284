"""``fastdiff bench students``: every shipped student on the driving world, beside the teacher, over seeds
(fastdiff_core.students.bench measures, summarises and renders the tracked tables and cards; this module
parses the flags and prints a line per measured setting, then the table)."""

from __future__ import annotations

import argparse
import json
import pathlib

import torch

from fastdiff_core import catalog
from fastdiff_cli.args import comma_list, int_range, writable_dir, writable_file
from fastdiff_core.students import bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(catalog.STUDENTS))
    parser.add_argument("--teacher", action="store_true", help="re-measure the teacher curve even if stored")
    parser.add_argument("--seeds", type=comma_list(int_range(0, 10**6)), default="0,1,2",
                        help="evaluation seeds: every setting once per seed")
    parser.add_argument("--cap", type=int_range(250, 1_000_000), default=1000,
                        help="sequential (default): rollouts per scene at most")
    parser.add_argument("--n", type=int_range(10, 1_000_000), default=None,
                        help="a fixed n rollouts per scene instead of sequential sampling")
    parser.add_argument("--write", action="store_true",
                        help="save the shipped bench JSON and model cards and the docs/bench-students.md table "
                             "(tracked files); without it the bench only prints (and writes --json)")
    parser.add_argument("--no-readme", action="store_true", help="with --write: leave docs/bench-students.md as is")
    parser.add_argument("--json", type=writable_file, default=None,
                        help="also write the results here (after every seed)")
    parser.add_argument("--weights-dir", type=writable_dir, default=None,
                        help="measure students trained elsewhere (`fastdiff train student NAME --out DIR`); "
                             "not with --write")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1, help="torch threads (2 spin-wait on a loaded 2-core CPU)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the cards and the docs/bench-students.md table from the bench JSON without sampling")
    parser.add_argument("--combine", nargs="+", type=pathlib.Path, default=None, metavar="JSON",
                        help="print the tables over the runs of these bench JSON files (a later file's run replaces "
                             "an earlier one of the same seed); with --write they become the shipped results")


def progress_line(kind: str, seed: int, r: dict) -> str:
    """One measured setting as it finishes: a teacher curve point or a student setting."""
    if kind == "teacher":
        return (f"seed {seed} teacher {r['solver']} x {r['steps']}: NFE/frame {r['nfe_per_frame']:.0f}, mean TV "
                f"{r['mean_tv']:.4f}, tail {r['tail_rate']:.4f}, gate {r['gate_truth']['outcome']}, "
                f"{r['cpu_seconds_per_rollout'] * 1e3:.3f} CPU ms/rollout")
    return (f"seed {seed} {r['student']} x {r['steps']}" + (f" (w={r['guidance']})" if r.get("guidance") else "")
            + f": NFE/frame {r['nfe_per_frame']:.0f}, mean TV {r['mean_tv']:.4f}, tail {r['tail_rate']:.4f} "
            f"(truth {r['tail_truth']:.4f}), implausible {r['implausible_rate']:.4f}, gate truth "
            f"{bench.gate_text(r['gate_truth'])}, gate teacher {bench.gate_text(r['gate_teacher'])} at "
            f"{r['n_per_scene']:.0f} rollouts per scene")


def print_progress(kind: str, seed: int, row: dict) -> None:
    print(progress_line(kind, seed, row), flush=True)


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.combine:
        data = bench.combine(args.combine)
        if args.write:  # runs measured by separate processes (one seed each) become the shipped results
            bench.check_combined(data)
            bench.write_results(data, not args.no_readme)
        print(bench.render_table(data))
        return 0
    if args.render_only:
        data = bench.load_results()
        if args.write:
            bench.write_results(data, not args.no_readme)
        else:
            print(bench.render_table(data))
        return 0
    if args.weights_dir is not None:
        if args.write:
            raise ValueError("--write with --weights-dir: only the shipped students' results are tracked files")
        bench.check_weights_dir(args.weights_dir, args.only)

    def checkpoint(data: dict) -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    data = bench.run_bench(args.only, tuple(args.seeds), args.n, args.cap, not args.no_readme,
                           True if args.teacher else None, on_row=print_progress, write=args.write,
                           weights_dir=args.weights_dir, on_seed=checkpoint)
    print(bench.render_table(data))
    checkpoint(data)
    return 0
