"""The flags every benchmark of the driving teacher takes (``bench rollout``, ``bench speedups``)."""

from __future__ import annotations

import argparse
import pathlib

from fastdiff_cli.args import int_range, writable_file


def add_teacher_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, --threads, --checkpoint."""
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures as JSON here")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1,
                        help="intra-op CPU threads (default 1: on a shared CPU, OpenMP oversubscription can stall "
                             "small ops ~100x; the device string records the count)")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="world-model checkpoint stem (default: the shipped driving teacher)")
