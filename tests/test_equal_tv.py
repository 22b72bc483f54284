"""Equal-TV interpolation of a reference's TV-vs-NFE curve (``metrics.equal_tv``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdiff_core.metrics.equal_tv import equal_tv_rows, frontier, nfe_at_tv


def power_law(nfe: float) -> float:
    return 0.6 * nfe ** -1.3


def cost(nfe: float) -> float:
    return 0.2 + 0.05 * nfe  # ms per rollout: affine in NFE


CURVE = [{"nfe": n, "tv": power_law(n), "cost": cost(n)} for n in (4, 8, 16, 32)]


@pytest.mark.parametrize("target", [4.0, 5.5, 11.0, 23.0, 32.0])
def test_interpolated_nfe_is_exact_on_a_power_law(target):
    # a dominated setting (more NFE, worse TV) is not on the frontier and must not move the answer
    points = CURVE + [{"nfe": 31, "tv": power_law(12), "cost": cost(31)}]
    nfe, c, bound = nfe_at_tv(points, power_law(target))
    assert bound is None
    assert nfe == pytest.approx(target, rel=1e-12) and c == pytest.approx(cost(target), rel=1e-12)
    assert [p["nfe"] for p in frontier(points)] == [4, 8, 16, 32]


def test_exact_curve_gives_an_exact_row_and_a_point_interval():
    curve = {seed: CURVE for seed in (0, 1, 2)}
    student = {"label": "s x 2", "nfe": 2, "per_seed": {s: {"tv": power_law(11.0), "cost": 0.3} for s in (0, 1, 2)}}
    (row,) = equal_tv_rows(curve, [student])
    assert row["teacher_nfe"] == pytest.approx(11.0) and row["nfe_ratio"] == pytest.approx(5.5)
    assert row["speedup"] == pytest.approx(cost(11.0) / 0.3)
    assert row["teacher_nfe_lo"] == pytest.approx(11.0) and row["teacher_nfe_hi"] == pytest.approx(11.0)


def test_the_interval_over_three_seeds_covers_the_true_nfe():
    """Log-normal noise (10%) on every measured TV, 3 seeds per trial: the 95% interval of the equal-TV
    NFE must cover the true one in >= 90% of 1,000 trials (measured 94-95%; fixed seed, deterministic)."""
    rng = np.random.default_rng(0)
    truth = 11.0
    covered = 0
    trials = 1000
    for _ in range(trials):
        curve = {s: [{"nfe": p["nfe"], "tv": p["tv"] * math.exp(0.1 * rng.standard_normal()), "cost": p["cost"]}
                     for p in CURVE] for s in range(3)}
        per_seed = {s: {"tv": power_law(truth) * math.exp(0.1 * rng.standard_normal()), "cost": 0.3} for s in range(3)}
        (row,) = equal_tv_rows(curve, [{"label": "s", "nfe": 2, "per_seed": per_seed}])
        covered += row["teacher_nfe_lo"] <= truth <= row["teacher_nfe_hi"]
    assert covered / trials >= 0.90, covered / trials


def test_a_student_beyond_the_curve_is_a_bound_not_an_estimate():
    curve = {0: CURVE, 1: CURVE, 2: CURVE}
    better = {"label": "b", "nfe": 4, "per_seed": {s: {"tv": power_law(60.0), "cost": 0.3} for s in range(3)}}
    worse = {"label": "w", "nfe": 1, "per_seed": {s: {"tv": power_law(2.0), "cost": 0.3} for s in range(3)}}
    mixed = {"label": "m", "nfe": 1, "per_seed": {0: {"tv": power_law(2.0), "cost": 0.3},
                                                  1: {"tv": power_law(60.0), "cost": 0.3}}}
    b, w, m = equal_tv_rows(curve, [better, worse, mixed])
    assert b["bound"] == "above" and b["teacher_nfe"] == pytest.approx(32) and b["teacher_nfe_hi"] is None
    assert w["bound"] == "below" and w["teacher_nfe"] == pytest.approx(4) and w["teacher_nfe_lo"] is None
    assert not m["estimable"] and m["teacher_nfe"] is None


def test_a_seed_without_a_curve_is_refused():
    with pytest.raises(ValueError, match=r"seeds \[5\] have no reference curve"):
        equal_tv_rows({0: CURVE}, [{"label": "s", "nfe": 1, "per_seed": {5: {"tv": 0.1, "cost": 1.0}}}])
