"""Probe shipped final = sigma_min tuned grids on validation worlds from the *training* range that no fit
used (seeds 90,000+; ``fastdiff fit grids --train N`` uses 1,000 .. 1,000 + N - 1), so nothing here
touches the held-out worlds (docs/lownfe.md, "NFE 6 and 8, third pass" has the figures).

    PYTHONPATH=$PWD python tools/lownfe_probe.py compare OLD.json NEW.json --nfe 8 [--worlds 200 --samples 128 --hard 2]
    PYTHONPATH=$PWD python tools/lownfe_probe.py last-sigma --solver unipc --nfe 6 --fractions 0.95,1.0

``compare``: per solver variant (unipc bh1/bh2 x order 2/3, ipndm, dpmpp_2m; final = sigma_min) the
geometric mean over worlds of RMSE on NEW's grid / on OLD's, and rows moved into / out of the rare mode;
then each world's best variant, old and new; with ``--hard K`` the same again on the "hard" worlds only,
those where some bh2 / ipndm / dpmpp_2m variant on OLD's grids moves at least K rows into the rare mode
(the worlds ``fastdiff fit grids --mine`` looks for, here from the validation range). ``last-sigma``: the shipped grid with its last fraction
replaced (sigma_min grids: where sampling stops), against the shipped one. ``variants``: UniPC bh1 and bh2
(orders 2 and 3) at each NFE and last step on the shipped tuned grids of every solver, as the geometric mean
over worlds of RMSE / RMSE on the variant's best fixed grid (the one with the lowest geometric mean), and rows
moved into the rare mode (what ``RunSpec`` refuses for bh1 on tuned grids rests on this).

    PYTHONPATH=$PWD python tools/lownfe_probe.py variants --nfes 4,6,8 [--worlds 200]

``bench-worlds``: the held-out summary of a ``fastdiff bench solvers --worlds N --json PATH`` file over the
held-out worlds number FIRST to LAST (1-based, in seed order; the bench draws world k's noise from its own
seed, so worlds 1-20 of a 60-world run are a 20-world run's), with the rows each world's best setting moved
into / out of the rare mode, and the rare-mode decision (``metrics.rate_change``) of each world's best fastdiff
and best peer setting; ``--bootstrap B`` adds a world-level bootstrap interval beside the decision's.

    PYTHONPATH=$PWD python tools/lownfe_probe.py bench-worlds PATH --first 41 --last 60 [--bootstrap 2000]
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
from fastdiff_core.grids import FIXED_GRIDS, TUNED_GRIDS_FILE, build_grid
from fastdiff_core.paths import get_path, sigma_range

VARIANTS = [("unipc", {"variant": v, "order": o}) for v in ("bh1", "bh2") for o in (2, 3)] + [
    ("ipndm", {}), ("dpmpp_2m", {})]
FIRST_SEED = 90_000


def _worlds(n: int, samples: int) -> list:
    if not 1 <= n <= 9_999:
        raise SystemExit(f"--worlds={n} must be in [1, 9999] (validation seeds 90,000-99,999)")
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
    runs = []
    for name, base in VARIANTS:
        steps, planned = catalog.SOLVERS[name].plan_for_nfe(args.nfe, {**base, "final": "sigma_min"})
        o, n = _run(name, planned, _fractions(old, name, steps), worlds), _run(name, planned, _fractions(new, name, steps), worlds)
        best_old, best_new = [min(a, b) for a, b in zip(best_old, o)], [min(a, b) for a, b in zip(best_new, n)]
        runs.append((f"{name} {base} new / old", n, o))
        print(_line(*runs[-1]), flush=True)
    runs.append(("each world's best variant, new / old", best_new, best_old))
    print(_line(*runs[-1]))
    if args.hard:
        hard = [k for k in range(len(worlds)) if max(o[k][1] for label, _, o in runs[:-1] if "bh1" not in label) >= args.hard]
        print(f"\nhard worlds (an old bh2 / ipndm / dpmpp_2m grid moves >= {args.hard} rows in): {len(hard)} of {len(worlds)}")
        for label, n, o in runs:
            print(_line(label, [n[k] for k in hard], [o[k] for k in hard]))


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


def variants(args: argparse.Namespace) -> None:
    worlds = _worlds(args.worlds, args.samples)
    path = get_path("vp_discrete")
    for nfe in args.nfes:
        for final in ("solver", "sigma_min"):
            for v in ("bh1", "bh2"):
                for order in (2, 3):
                    steps, planned = catalog.SOLVERS["unipc"].plan_for_nfe(nfe, {"variant": v, "order": order, "final": final})
                    fixed = {g: [world_errors("unipc", planned, build_grid(g, steps, path), w) for w in worlds]
                             for g in FIXED_GRIDS}
                    best = min(fixed, key=lambda g: statistics.fmean(math.log(r[0]) for r in fixed[g]))
                    cells = [f"best fixed {best} in {sum(r[1] for r in fixed[best])}"]
                    for solver in catalog.GRIDS["tuned"].options["solver"].choices:
                        sig = build_grid("tuned", steps, path, {"solver": solver, "final": final})
                        tuned = [world_errors("unipc", planned, sig, w) for w in worlds]
                        ratio = math.exp(statistics.fmean(math.log(a[0] / b[0]) for a, b in zip(tuned, fixed[best])))
                        cells.append(f"tuned/{solver} {ratio:.3f} in {sum(r[1] for r in tuned)}")
                    print(f"NFE {nfe} final={final} {v} order {order}: " + "; ".join(cells), flush=True)


def _bootstrap_interval(best: list[dict], reps: int, alpha: float) -> tuple[float, float]:
    """World-level bootstrap (percentile) (1 - 2 alpha) interval of r = sum(in - out) / sum(ref_in): the
    check beside the decision's cluster SE (docs/lownfe.md, "The rare-mode decision")."""
    import numpy as np

    d = np.array([r["rare_in"] - r["rare_out"] for r in best], dtype=float)
    a = np.array([round(r["rare_rate_ref"] * r["n"]) for r in best], dtype=float)
    pick = np.random.default_rng(0).integers(0, len(best), (reps, len(best)))
    r = d[pick].sum(1) / np.maximum(a[pick].sum(1), 1)
    return float(np.quantile(r, alpha)), float(np.quantile(r, 1 - alpha))


def bench_worlds(args: argparse.Namespace) -> None:
    from fastdiff_core.bench.solvers import heldout_summary
    from fastdiff_core.metrics.rate_change import decision_text

    rows = json.loads(Path(args.path).read_text())["held_out"]
    seeds = sorted({r["world_seed"] for r in rows})[args.first - 1:args.last]
    rows = [r for r in rows if r["world_seed"] in seeds]
    nfes = sorted({r["nfe_target"] for r in rows})
    print(f"held-out worlds {args.first}-{args.first + len(seeds) - 1} (seeds {seeds[0]}-{seeds[-1]})")
    for s in heldout_summary(rows, tuple(nfes)):
        best = {}
        for who in ("fastdiff", "peer"):
            for seed in seeds:
                here = [r for r in rows if r["world_seed"] == seed and (r["impl"] == "fastdiff") == (who == "fastdiff")
                        and r["nfe_target"] == s["nfe"] and "rmse" in r and math.isfinite(r["rmse"])]
                if here:
                    best.setdefault(who, []).append(min(here, key=lambda r: r["rmse"]))
        most = max(best["fastdiff"], key=lambda r: r["rare_in"])
        ratio = (f"ratio {s['ratio_median']:.3f} [{s['ratio_q1']:.3f}, {s['ratio_q3']:.3f}] "
                 f"{s['worlds_better']}/{s['worlds_compared']}; " if "ratio_median" in s else "")
        print(f"NFE {s['nfe']:>2}: {ratio}rare {s['rare_diff']:+.4f} +- {s['rare_diff_se']:.4f} "
              f"{'within' if s['rare_within_2se'] else 'outside'} 2 SE (in {s['rare_decision']['rare_in']} / out "
              f"{s['rare_decision']['rare_out']}; most in: world {most['world_seed']} {most['rare_in']} in / "
              f"{most['rare_out']} out, {most['solver']} / {most['grid']})")
        for who, key in (("fastdiff", "rare_decision"), ("best peer", "peer_rare_decision")):
            if key in s:
                d = s[key]
                boot = ""
                if args.bootstrap:
                    lo, hi = _bootstrap_interval(best["fastdiff" if who == "fastdiff" else "peer"], args.bootstrap,
                                                 d["alpha"])
                    boot = f"; world bootstrap [{lo:+.1%}, {hi:+.1%}]"
                print(f"    {who:<9} {decision_text(d)}{boot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--hard", type=int, default=0, help="also report the worlds where OLD moves >= HARD rows in")
    lp = sub.add_parser("last-sigma")
    lp.add_argument("--solver", default="unipc", choices=("dpmpp_2m", "unipc", "ipndm"))
    lp.add_argument("--fractions", type=lambda s: [float(v) for v in s.split(",")], default=[0.95, 1.0])
    va = sub.add_parser("variants")
    va.add_argument("--nfes", type=lambda s: [int(v) for v in s.split(",")], default=[4, 6, 8])
    bw = sub.add_parser("bench-worlds")
    bw.add_argument("path")
    bw.add_argument("--first", type=int, default=1)
    bw.add_argument("--last", type=int, default=100_000)
    bw.add_argument("--bootstrap", type=int, default=0, help="also a world-level bootstrap interval (B resamples)")
    for q in (c, lp):
        q.add_argument("--nfe", type=int, required=True)
    for q in (c, lp, va):
        q.add_argument("--worlds", type=int, default=200)
        q.add_argument("--samples", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"compare": compare, "last-sigma": last_sigma, "variants": variants, "bench-worlds": bench_worlds}[args.cmd](args)


if __name__ == "__main__":
    main()
