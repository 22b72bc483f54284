"""Probe shipped final = sigma_min tuned grids on validation worlds from the *training* range that no fit
used (seeds 90,000+; ``fastdiff fit grids --train N`` uses 1,000 .. 1,000 + N - 1), so nothing here
touches the held-out worlds (docs/lownfe.md, "NFE 6 and 8, third pass" has the figures).

    PYTHONPATH=$PWD python tools/lownfe_probe.py compare OLD.json NEW.json --nfe 8 [--worlds 200 --samples 128]
    PYTHONPATH=$PWD python tools/lownfe_probe.py last-sigma --solver unipc --nfe 6 --fractions 0.95,1.0

``compare``: per solver variant (unipc bh1/bh2 x order 2/3, ipndm, dpmpp_2m; final = sigma_min) the
geometric mean over worlds of RMSE on NEW's grid / on OLD's, and rows moved into / out of the rare mode;
then each world's best variant, old and new. ``last-sigma``: the shipped grid with its last fraction
replaced (sigma_min grids: where sampling stops), against the shipped one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from fastdiff_core import catalog
from fastdiff_core.grid_search import fractions_to_sigmas, world_batches, world_errors
from fastdiff_core.grids import TUNED_GRIDS_FILE
from fastdiff_core.paths import get_path, sigma_range

VARIANTS = [("unipc", {"variant": v, "order": o}) for v in ("bh1", "bh2") for o in (2, 3)] + [
    ("ipndm", {}), ("dpmpp_2m", {})]
FIRST_SEED = 90_000


def _worlds(n: int, samples: int) -> list:
    return world_batches(list(range(FIRST_SEED, FIRST_SEED + n)), samples, sigma_range(get_path("vp_discrete"))[1],
                         noise_seed=3)


def _fractions(doc: dict, solver: str, steps: int) -> list[float]:
    return doc["solvers"][solver]["finals"]["sigma_min"]["grids"][str(steps)]


def _run(name: str, opts: dict, fractions: list[float], worlds: list) -> list[tuple[float, int, int]]:
    smin, smax = sigma_range(get_path("vp_discrete"))
    return [world_errors(name, opts, fractions_to_sigmas(fractions, smin, smax), w) for w in worlds]


def _line(label: str, new: list, old: list) -> str:
    logs = [math.log(a[0] / b[0]) for a, b in zip(new, old)]
    return (f"{label}: geomean RMSE ratio {math.exp(statistics.fmean(logs)):.3f}, better on "
            f"{sum(v < 0 for v in logs)}/{len(logs)} worlds, rare in/out {sum(r[1] for r in new)}/{sum(r[2] for r in new)} "
            f"(reference grid {sum(r[1] for r in old)}/{sum(r[2] for r in old)}), most moved in on one world "
            f"{max(r[1] for r in new)}")


def compare(args: argparse.Namespace) -> None:
    old, new = (json.loads(Path(p).read_text()) for p in (args.old, args.new))
    worlds = _worlds(args.worlds, args.samples)
    best_old: list = [(math.inf, 0, 0)] * len(worlds)
    best_new = list(best_old)
    for name, base in VARIANTS:
        steps, planned = catalog.SOLVERS[name].plan_for_nfe(args.nfe, {**base, "final": "sigma_min"})
        o, n = _run(name, planned, _fractions(old, name, steps), worlds), _run(name, planned, _fractions(new, name, steps), worlds)
        best_old, best_new = [min(a, b) for a, b in zip(best_old, o)], [min(a, b) for a, b in zip(best_new, n)]
        print(_line(f"{name} {base} new / old", n, o), flush=True)
    print(_line("each world's best variant, new / old", best_new, best_old))


def last_sigma(args: argparse.Namespace) -> None:
    doc = json.loads(TUNED_GRIDS_FILE.read_text())
    worlds = _worlds(args.worlds, args.samples)
    steps, planned = catalog.SOLVERS[args.solver].plan_for_nfe(args.nfe, {"final": "sigma_min"})
    shipped = _fractions(doc, args.solver, steps)
    base = _run(args.solver, planned, shipped, worlds)
    print(_line(f"shipped (last fraction {shipped[-1]})", base, base))
    smin, smax = sigma_range(get_path("vp_discrete"))
    for last in args.fractions:
        f = shipped[:-1] + [last]
        print(_line(f"last fraction {last} (sigma {fractions_to_sigmas(f, smin, smax)[-2]:.4f}) / shipped",
                    _run(args.solver, planned, f, worlds), base), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    lp = sub.add_parser("last-sigma")
    lp.add_argument("--solver", default="unipc", choices=("dpmpp_2m", "unipc", "ipndm"))
    lp.add_argument("--fractions", type=lambda s: [float(v) for v in s.split(",")], default=[0.95, 1.0])
    for q in (c, lp):
        q.add_argument("--nfe", type=int, required=True)
        q.add_argument("--worlds", type=int, default=200)
        q.add_argument("--samples", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(1)
    compare(args) if args.cmd == "compare" else last_sigma(args)


if __name__ == "__main__":
    main()
