"""``fastdiff bench models``: flags and tables over ``fastdiff_core.bench.models`` (which measures)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from fastdiff_core.bench.models import run_bench
from fastdiff_cli.args import int_range


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int_range(1, 100), default=3)
    p.add_argument("--samples", type=int_range(1, 100_000), default=256, help="samples of the cold/warm run")
    p.add_argument("--reference-samples", type=int_range(200, 100_000), default=256)
    p.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    r = run_bench(args.repeats, args.samples, args.reference_samples)
    if args.json:
        print(json.dumps(asdict(r), indent=1))
        return 0
    print(f"import diffusers: {r.import_diffusers_s:.2f} s (once per process)\n")
    print(f"{'model kind':<50}{'params (M)':>11}{'weights MiB':>12}{'load median s':>14}{'min s':>8}")
    for row in r.loads:
        print(f"{row.kind:<50}{row.params_m:>11.1f}{row.weights_mb:>12.1f}{row.median_s:>14.3f}{row.min_s:>8.3f}")
    print(f"\n{'run (UNet2DModel 16x16x1, dpmpp_2m 10 steps)':<46}{'wall s':>9}{'cached':>8}{'reference NFE':>15}")
    for row in r.runs:
        print(f"{row.what:<46}{row.wall_s:>9.2f}{str(row.model_cached):>8}{row.reference_nfe:>15,.0f}")
    return 0
