"""The held-out section's summaries of `fastdiff bench solvers` (issue 16): per-setting rare-mode criterion
and the tail-safe choice, computed from rows (the rows a bench run produces; their figures written here)."""

import math

import pytest

from fastdiff_core.bench.solvers import heldout_settings, heldout_summary, tail_safe


def _row(seed, solver, grid, rmse, moved_in, moved_out, impl="fastdiff", n=10_000):
    return {"impl": impl, "world_seed": seed, "solver": solver, "grid": grid, "nfe_target": 6, "rmse": rmse,
            "rare_in": moved_in, "rare_out": moved_out, "n": n, "rare_rate_ref": 0.05}


def _rows():
    rows = []
    for seed in (1, 2, 3, 4):
        rows += [_row(seed, "fast", "tuned", 0.10, 0, 300),  # lowest RMSE, loses the rare mode
                 _row(seed, "safe", "quadratic", 0.15, 5, 6),  # a little worse, keeps it
                 _row(seed, "broken", "karras", math.inf, 0, 0),
                 _row(seed, "peer", "own", 0.20, 0, 0, impl="diffusers")]
    rows.append(_row(4, "partial", "karras", 0.5, 0, 0))  # not on every world: not a setting over worlds
    return rows


def test_every_setting_carries_its_pooled_rare_criterion_and_its_rmse_over_worlds():
    got = {r["setting"]: r for r in heldout_settings(_rows(), 6)}
    assert set(got) == {"fast / tuned", "safe / quadratic"}
    fast, safe = got["fast / tuned"], got["safe / quadratic"]
    assert fast["rare_diff"] == pytest.approx(-1200 / 40_000) and fast["rare_diff_se"] == pytest.approx(math.sqrt(1200) / 40_000)
    assert not fast["rare_within_2se"] and safe["rare_within_2se"]
    # the decision on the relative change: fast loses 300 of 500 reference rows per world, safe 1 of 500
    assert fast["rare_decision"]["outcome"] == "FAIL" and fast["rare_decision"]["r"] == pytest.approx(-0.6)
    assert safe["rare_decision"]["outcome"] == "PASS" and safe["rare_decision"]["r"] == pytest.approx(-0.002)
    assert fast["rmse_vs_best"] == pytest.approx(1.0) and safe["rmse_vs_best"] == pytest.approx(1.5)
    assert fast["ratio_median"] == pytest.approx(0.5) and safe["ratio_median"] == pytest.approx(0.75)
    assert [r["setting"] for r in heldout_settings(_rows(), 6)] == ["fast / tuned", "safe / quadratic"]  # by RMSE


def test_the_tail_safe_setting_is_chosen_on_half_the_worlds_and_judged_on_the_rest():
    t = tail_safe(_rows(), 6)
    assert t["setting"] == "safe / quadratic" and t["chosen_on"] == [1, 2] and t["judged_on"] == [3, 4]
    assert t["judged"]["worlds"] == 2 and t["judged"]["n"] == 20_000 and t["judged"]["rare_decision"]["outcome"] == "PASS"
    assert tail_safe([r for r in _rows() if r["world_seed"] < 4], 6) is None  # a half of one world cannot decide
    summary = heldout_summary(_rows(), (6,))
    # each world's best setting is "fast": its decision FAILs (and it is outside 2 SE); the tail-safe one passes
    assert summary[0]["rare_decision"]["outcome"] == "FAIL" and summary[0]["rare_within_2se"] is False
    assert summary[0]["tail_safe"]["setting"] == "safe / quadratic"
    # each world's best peer ("peer", no moves) keeps the rate exactly; the decision is reported for it too
    assert summary[0]["peer_rare_decision"]["outcome"] == "PASS" and summary[0]["peer_rare_decision"]["r"] == 0
