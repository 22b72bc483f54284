"""``fastdiff train student NAME``: distil one student from the shipped driving teacher, write its
safetensors weights (``fastdiff_core/students/weights``) and, unless ``--no-card``, measure it and
write its model card (the same code path as ``fastdiff bench students``).

    fastdiff train student guidance
    fastdiff train student progressive          # writes progressive_8/4/2/1
    fastdiff train student reflow --no-card
"""

from __future__ import annotations

import argparse

import torch

from fastdiff_cli.args import float_range, int_range, writable_dir
from fastdiff_cli.progress import print_step
from fastdiff_core.spec import MAX_SEED
from fastdiff_core.students import recipes
from fastdiff_core.students.driving import WEIGHTS_DIR
from fastdiff_core.students.training import DRIVING_CONFIGS, TEACHER, train_and_save


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(DRIVING_CONFIGS), help="which student")
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=0)
    parser.add_argument("--scale", type=float_range(0.0, 1000.0, lo_open=True), default=1.0, help="multiply optimiser steps (quick tries)")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1)
    parser.add_argument("--out", type=writable_dir, default=WEIGHTS_DIR)
    parser.add_argument("--no-card", action="store_true", help="train and save only; measure later with bench")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.name not in recipes():
        raise ValueError(f"student={args.name!r} is not one of {sorted(recipes())}")
    print(f"training student {args.name} from driving_teacher_{TEACHER}", flush=True)
    for file, seconds in train_and_save(args.name, args.seed, args.scale, args.out, on_step=print_step):
        print(f"wrote {file} ({seconds:.0f}s training)", flush=True)
    if not args.no_card:
        from fastdiff_cli.bench_students import print_progress
        from fastdiff_core.students import bench

        data = bench.run_bench([args.name], write_readme=False, write=True, on_row=print_progress)  # writes its card
        print(bench.render_table(data))
    return 0
