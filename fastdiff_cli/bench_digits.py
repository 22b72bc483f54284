"""``fastdiff bench digits``: the digits model's class histogram per solver x NFE x guidance, against the
data truth and against its teacher, with both gates (fastdiff_core.worlds.digits.bench measures; this
module parses the flags and prints each row as it is measured).

    fastdiff bench digits                          # the figures in docs/digits.md
    fastdiff bench digits --n 300 --nfe 4,8        # a quicker look
    fastdiff bench digits --conditions even --guidance 5   # one part (parts run side by side in processes)
"""

from __future__ import annotations

import argparse
import json
import time

from fastdiff_core import catalog
from fastdiff_cli.args import comma_list, float_range, int_range, writable_file
from fastdiff_core.worlds.digits import (
    CONDITION_NAMES, REFERENCE, WEIGHTS_DIR, DigitsBench, bench_rows, load_model,
)

HEADER = (f"{'cond':<5} {'cfg':>3} {'solver':<9} {'steps':>5} {'NFE':>4} {'rare [95% CI]':>22} {'data':>6} "
          f"{'teacher':>7} {'unread':>6} {'TVdata':>6} {'TVteach':>7} {'vs data':>9} {'vs teacher':>10} {'s':>6}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DigitsBench()
    parser.add_argument("--solvers", type=comma_list(str, choices=tuple(catalog.SOLVERS)), default=",".join(d.solvers))
    parser.add_argument("--nfe", type=comma_list(int_range(1, 1000)), default=",".join(map(str, d.nfe)),
                        help="network evaluations per sample per guidance pass (each solver's steps spend it exactly)")
    parser.add_argument("--guidance", type=comma_list(float_range(0.0)), default="1,3,5")
    parser.add_argument("--conditions", type=comma_list(str, choices=CONDITION_NAMES), default=",".join(d.conditions),
                        help="what the model is conditioned on; 'none' is sampled at guidance 1 only")
    parser.add_argument("--n", type=int_range(100, 1_000_000), default=d.n, help="samples per configuration")
    parser.add_argument("--seed", type=int_range(0, 2**31 - 1), default=d.seed)
    parser.add_argument("--threads", type=int_range(1, 1024), default=1)
    parser.add_argument("--json", type=writable_file, default=None, help="also write every row as JSON here")


def _row(r: dict) -> str:
    return (f"{r['condition']:<5} {r['guidance']:>3g} {r['solver']:<9} {r['steps']:>5} {r['nfe_per_sample']:>4.0f} "
            f"{r['rare_rate']:>7.4f} [{r['rare_lo']:.4f}, {r['rare_hi']:.4f}] {r['rare_rate_truth']:>6.4f} "
            f"{r['rare_rate_ref']:>7.4f} {r['unreadable_rate']:>6.3f} {r['tv_truth']:>6.4f} {r['tv_ref']:>7.4f} "
            f"{r['gate_truth']:>9} {r['gate_ref']:>10} {r['seconds']:>6.1f}")


def _reference(r: dict) -> str:
    return (f"\nteacher {r['condition']} cfg {r['guidance']:g}: {REFERENCE.solver} x {REFERENCE.steps} "
            f"({REFERENCE.grid}): rare {r['rare_rate']:.4f} (data {r['rare_rate_truth']:.4f}), unreadable "
            f"{r['unreadable_rate']:.3f}, TV vs data {r['tv_model']:.4f} (gate {r['gate_teacher_vs_truth']}); vs "
            f"{r['steps_check']} steps: labels flipped {r['label_flip_rate']:.4f}, TV {r['tv']:.4f}  "
            f"[{r['seconds']:.0f} s]\n{HEADER}")


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    bench = DigitsBench(solvers=tuple(args.solvers), nfe=tuple(args.nfe), guidance=tuple(args.guidance),
                        conditions=tuple(args.conditions), n=args.n, seed=args.seed)
    model = load_model(WEIGHTS_DIR)
    print(f"fastdiff bench digits: model sha256 {model.checksum[:12]}, rare digit {model.rare}, n = {args.n} per "
          f"configuration, seed {args.seed}, {args.threads} thread(s)", flush=True)
    skipped = [f"{s} at NFE {k}" for (s, k), p in bench.plans().items() if p is None]
    if skipped:
        print("no step count spends exactly: " + ", ".join(skipped), flush=True)
    t0, references, rows = time.perf_counter(), [], []
    for kind, r in bench_rows(model, bench):
        (references if kind == "reference" else rows).append(r)
        print(_reference(r) if kind == "reference" else _row(r), flush=True)
    print(f"\n{len(rows)} configurations, {time.perf_counter() - t0:.0f} s. NFE: per sample, guided steps count 2. "
          "rare: the rare digit's generated rate (Wilson 95%); data: its frequency in the training data given the "
          "condition; teacher: the reference's rate. Gates PASS / FAIL / UNDECIDED at family-wise alpha 0.05 "
          "(docs/gate.md), vs the data and vs the teacher (its sampling noise carried).", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"model_sha256": model.checksum, "n": args.n, "seed": args.seed,
                                         "reference": {"solver": REFERENCE.solver, "steps": REFERENCE.steps,
                                                       "grid": REFERENCE.grid},
                                         "references": references, "rows": rows}, indent=1, default=str) + "\n")
    return 0
