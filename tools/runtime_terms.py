"""Measure a world's run-time terms (seconds = a + b NFE + c rollouts + d forwards) on real runs.

    OMP_NUM_THREADS=1 nice -n 5 python tools/runtime_terms.py [--worlds driving,mixture] [--json PATH]

Runs each world's specs (spanning >= 100x in work) through ``fastdiff_core.run.execute`` in this one
process, after the imports a worker makes at start-up (``setup_time.preload``), the first spec twice: cold
(it loads the world's network, as a worker's first run of a kind does; ``setup_s`` says how long) and warm
(another seed). Prints per run the work, the measured wall time and the current
``budget.RUNTIME_PRIORS`` estimate; then the four terms fitted on the warm runs (non-negative least
squares on relative error), the cold run's extra seconds and the prior they suggest
(``suggested_prior``); for every run with >= 50x a run's NFE, what that one run rescales the prior to
(estimate / measured, ``one_run_rescaling``); and the 1-minute load average before and after. Writes
nothing unless ``--json`` is given. Figures and how the priors were set: docs/verdicts.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

from fastdiff_core import budget, setup_time
from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec


def _driving(steps: int, samples: int, horizon: int) -> RunSpec:
    return RunSpec(world="driving", scene="red_light_jaywalker", solver="heun", regime="closed_loop",
                   steps=steps, samples=samples, horizon=horizon, futures=2, seed=1)


def _mixture(steps: int, samples: int) -> RunSpec:
    return RunSpec(solver="euler", steps=steps, samples=samples, seed=1, regime="offline")


def _moving(steps: int, samples: int, horizon: int) -> RunSpec:
    return RunSpec(world="moving_digits", solver="heun", regime="closed_loop", steps=steps, samples=samples,
                   horizon=horizon, futures=2, seed=1)


def _digits(steps: int, samples: int) -> RunSpec:
    return RunSpec(world="digits", solver="euler", regime="offline", steps=steps, samples=samples, seed=1)


# Each world's specs: the first is small (run cold, then warm); the rest vary samples (NFE, rollouts) apart
# from steps x horizon (NFE, forwards) so the terms separate. Work spans >= 100x from smallest to largest.
SPECS = {
    "driving": [_driving(2, 50, 3), _driving(3, 400, 6), _driving(2, 4000, 3), _driving(12, 100, 12),
                _driving(6, 2000, 8), _driving(12, 2000, 12)],
    "mixture": [_mixture(4, 200), _mixture(8, 2000), _mixture(64, 500), _mixture(8, 40_000),
                _mixture(32, 20_000)],
    "moving_digits": [_moving(2, 20, 3), _moving(3, 200, 6), _moving(2, 2000, 3), _moving(10, 50, 10),
                      _moving(6, 1000, 8)],
    "digits": [_digits(4, 50), _digits(8, 400), _digits(32, 100), _digits(8, 2000)],
}


# How much slower the same run is at load ~20 on this shared 2-core machine than when it is quiet
# (docs/verdicts.md: the driving world's first run, 20.0 s at load ~20 against 1.1 s quiet).
LOAD_SLOWDOWN = 20.0


def _load() -> float:
    return os.getloadavg()[0]


def measure(world: str) -> dict:
    """Per-run rows (work, wall, prior) and the terms fitted on the warm runs of ``world``."""
    specs = SPECS[world]
    rows = []
    # The warm repeat of the first spec draws other noise: the mixture caches its reference solve per noise.
    for i, spec in enumerate([specs[0], specs[0].replace(seed=specs[0].seed + 1), *specs[1:]]):
        bill = budget.bill_for(spec)
        work = budget.work_of(spec, bill)
        t0 = time.perf_counter()
        setup = execute(spec).metrics["setup_s"]
        wall = time.perf_counter() - t0
        prior_s = budget.runtime_prior(world).seconds(work)
        rows.append({"spec": spec.to_dict(), "cold": i == 0, "nfe": work.nfe, "rollouts": work.rollouts,
                     "forwards": work.forwards, "wall_s": wall, "setup_s": setup, "prior_s": prior_s})
        print(f"  {world:13s} steps {spec.steps:3d} samples {spec.samples:6d} H {spec.horizon:2d}"
              f"{' (cold)' if i == 0 else '       '}  NFE {work.nfe:12,.0f} rollouts {work.rollouts:8,.0f} "
              f"forwards {work.forwards:6,.0f}  wall {wall:7.2f} s (setup {setup:.2f})  prior {prior_s:8.1f} s "
              f"({prior_s / wall:5.1f}x)  load {_load():.1f}", flush=True)
    fit, envelope, cold_extra = terms(rows)
    print(f"  {world}: fitted a={fit[0]:.3g} s, b={fit[1]:.3g} s/NFE, c={fit[2]:.3g} s/rollout, "
          f"d={fit[3]:.3g} s/forward; envelope x{envelope:.2f}; cold run +{cold_extra:.2f} s", flush=True)
    prior = suggested_prior(fit, envelope, cold_extra)
    print(f"  {world}: prior at {LOAD_SLOWDOWN:g}x: ({', '.join(f'{v:.2g}' for v in prior)})", flush=True)
    rescaled = one_run_rescaling(world, rows)
    return {"world": world, "runs": rows, "rescaled": rescaled, "coef": list(fit), "envelope": envelope,
            "cold_extra_s": cold_extra, "prior": list(prior)}


def one_run_rescaling(world: str, rows: list[dict]) -> list[dict]:
    """What the page shows after ONE run of a kind (``budget.fit_runtime``: the prior rescaled by it) for every
    later run with >= 50x its NFE: estimate / measured."""
    prior = budget.runtime_prior(world)
    out = []
    for i, base in enumerate(rows):
        one = budget.fit_runtime([(_work(base), base["wall_s"], base["setup_s"])], world, prior)
        for j, target in enumerate(rows[2:], 2):
            if target["nfe"] >= 50 * base["nfe"]:
                est, times = one.seconds(_work(target)), target["nfe"] / base["nfe"]
                out.append({"base": i, "target": j, "work_x": times, "ratio": est / target["wall_s"]})
                print(f"  one run #{i}{' (cold)' if base['cold'] else ''} ({base['wall_s']:.2f} s) -> run #{j} "
                      f"({times:,.0f}x the NFE, {target['wall_s']:.2f} s): estimate {est:.2f} s = "
                      f"{est / target['wall_s']:.2f}x measured", flush=True)
    return out


def _work(row: dict) -> budget.Work:
    return budget.Work(row["nfe"], row["rollouts"], row["forwards"])


def terms(rows: list[dict]) -> tuple[list[float], float, float]:
    """(a, b, c, d) fitted on the warm runs by non-negative least squares on relative error, the envelope
    (the factor that lifts the fit above every warm run: 1 / the smallest fitted / measured), and the cold
    run's extra seconds over its warm repeat (loading the network)."""
    import numpy as np
    from scipy.optimize import nnls

    warm = rows[1:]
    X = np.array([[1.0, r["nfe"], r["rollouts"], r["forwards"]] for r in warm])
    y = np.array([r["wall_s"] for r in warm])
    coef, _ = nnls(X / y[:, None], np.ones(len(y)))
    return [float(v) for v in coef], float(1.0 / min((X @ coef) / y)), rows[0]["wall_s"] - rows[1]["wall_s"]


def suggested_prior(fit: list[float], envelope: float, cold_extra: float) -> list[float]:
    """The prior these runs suggest: every term of the envelope x LOAD_SLOWDOWN, and the fixed term the cold
    run's (loading the network, as a kind's first run on a worker does) x LOAD_SLOWDOWN."""
    return [LOAD_SLOWDOWN * (cold_extra + fit[0] * envelope), *(LOAD_SLOWDOWN * envelope * v for v in fit[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="driving,mixture,moving_digits,digits",
                    help=f"comma-separated, of {', '.join(SPECS)}")
    ap.add_argument("--json", type=pathlib.Path, default=None, help="also write the rows and fits here")
    args = ap.parse_args()
    worlds = [w for w in args.worlds.split(",") if w]
    unknown = [w for w in worlds if w not in SPECS]
    if unknown:
        ap.error(f"--worlds: {', '.join(unknown)} not among {', '.join(SPECS)}")
    print(f"load {_load():.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"preloaded {', '.join(setup_time.LAZY_IMPORTS)} in {setup_time.preload():.2f} s (as a worker does)")
    out = [measure(w) for w in worlds]
    print(f"load {_load():.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
