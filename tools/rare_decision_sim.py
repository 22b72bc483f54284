"""The rare-mode decision's error rates by simulation (``fastdiff_core.metrics.rate_change``; the figures in
docs/lownfe.md, "The rare-mode decision"; tests/test_rate_change.py asserts bounds on a few of them).

    PYTHONPATH=$PWD python tools/rare_decision_sim.py [--reps 8000]

Per number of worlds: P(PASS) with the true relative change on the margin (-10%, +10%), P(FAIL) and P(PASS) at
no change, P(PASS) at -2.5%; then with a share of blur worlds (5% of worlds at +100% or +300%); and P(PASS) on
the margin had the decision used the row-level (McNemar-type) SE instead of the world-level one.
"""

from __future__ import annotations

import argparse
from statistics import NormalDist

from fastdiff_core.metrics.rate_change import RARE_MODE, row_level_se, simulated_rates, simulated_worlds


def row_level_pass(r: float, worlds: int, reps: int, seed: int = 3) -> float:
    """P(PASS) had the decision used ``row_level_se`` with the normal quantile (what the worlds as clusters avoid)."""
    moved_in, moved_out, ref_in = simulated_worlds(r, worlds, reps, seed)
    est = (moved_in - moved_out).sum(-1) / ref_in.sum(-1)
    half = NormalDist().inv_cdf(1 - RARE_MODE.alpha) * row_level_se(moved_in, moved_out, ref_in)
    m = RARE_MODE.margin
    return float(((est - half > -m) & (est + half < m)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=8000)
    args = p.parse_args()
    m, reps = RARE_MODE.margin, args.reps
    print(f"{RARE_MODE.text}; {reps} replicates per cell")
    print(f"{'worlds':>6} {'PASS@-m':>8} {'PASS@+m':>8} {'FAIL@0':>7} {'PASS@0':>7} {'PASS@-2.5%':>10} "
          f"{'blur+100%: PASS@+m':>19} {'FAIL@-m':>8} {'blur+300%: FAIL@0':>18} {'row SE: PASS@-m':>16}")
    for w in (10, 20, 60, 120):
        cells = [simulated_rates(-m, w, reps)["pass"], simulated_rates(m, w, reps)["pass"],
                 simulated_rates(0.0, w, reps)["fail"], simulated_rates(0.0, w, reps)["pass"],
                 simulated_rates(-0.025, w, reps)["pass"], simulated_rates(m, w, reps, blur=1.0)["pass"],
                 simulated_rates(-m, w, reps, blur=1.0)["fail"], simulated_rates(0.0, w, reps, blur=3.0)["fail"],
                 row_level_pass(-m, w, reps)]
        print(f"{w:>6} " + " ".join(f"{c:>{k}.4f}" for c, k in zip(cells, (8, 8, 7, 7, 10, 19, 8, 18, 16))))


if __name__ == "__main__":
    main()
