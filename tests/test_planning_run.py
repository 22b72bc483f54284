"""A planning run end to end: RunSpec with fan-out and speed-ups -> RunResult with the NFE bill
(counted == formula), per-plan coverage rows with exact truths, device-named latencies and a verdict."""

import pytest
import torch

from fastdiff_core import budget
from fastdiff_core.worlds.driving.planning import run_planning
from fastdiff_core.run import judged
from fastdiff_core.spec import RunResult, RunSpec
from tests.test_rollout import random_net



@pytest.mark.parametrize("changes", [
    {},
    {"importance": "tail", "feature_cache": "controlled", "guidance_scale": 2.0, "guidance_interval": (0.5, 20.0)},
    {"solver": "euler", "parallel": "picard", "parallel_options": {"window": 3, "tol": 0.0}, "precision": "bfloat16"},
])
def test_planning_run_bills_counts_and_judges(changes):
    spec = RunSpec(**{"world": "driving", "scene": "child_at_curb", "solver": "dpmpp_2m", "steps": 3, "horizon": 3,
                      "plans": 4, "futures": 3, "samples": 2, "regime": "planning", **changes})
    progress = []
    result = judged(run_planning(spec, torch.device("cpu"), progress.append, net=random_net(width=32, depth=2)))
    bill = budget.bill_for(spec, sigmas=result.info["sigmas"])
    # the bill counts what was drawn: the sequential formula plus Picard's re-evaluations (counted apart)
    assert result.nfe_counted == result.nfe_formula == bill.per_run + result.metrics["nfe_repeats"]
    assert (result.metrics["nfe_repeats"] > 0) == (spec.parallel == "picard")
    assert [p.done for p in progress] == [1, 2]
    projected, measured = budget.stored_verdicts(result.verdict)
    assert measured.regime == projected.regime == "planning" and measured.binding == "latency"
    assert "measured on cpu" in measured.sentence and "projected for a 2B latent DiT" in projected.sentence
    cycle = measured.check("latency")
    assert cycle.basis == "measured" and cycle.status in ("pass", "fail", "undecided")
    assert {row["what"] for row in result.latency} == {"nfe", "frame", "cycle"}
    assert all(row["device"].startswith("cpu") for row in result.latency)
    groups = {row["group"] for row in result.histograms}
    assert len(groups) >= 4  # plans of both cycles (warm start adds the shifted best plan)
    for g in groups:
        rows = [r for r in result.histograms if r["group"] == g]
        assert sum(r["rate"] for r in rows) == pytest.approx(1.0)
        assert sum(r["truth"] for r in rows) == pytest.approx(1.0)
    back = RunResult.from_json(result.to_json())
    assert back.spec == spec and back.verdict == result.verdict


def test_rollouts_without_fan_out_use_the_spec_action_and_speedups():
    spec = RunSpec(world="driving", scene="commuter_late", world_options={"action": "brake", "batch": 5},
                   solver="euler", steps=2, horizon=2, samples=6, futures=2, feature_cache="fixed",
                   regime="closed_loop")
    result = judged(run_planning(spec, torch.device("cpu"), net=random_net(width=32, depth=2)))
    assert result.nfe_counted == result.nfe_formula == 2 * 2 * 12
    assert {r["group"] for r in result.histograms} == {"b-b"}
    assert sum(r["count"] for r in result.histograms) == 12
    projected, measured = budget.stored_verdicts(result.verdict)
    assert measured.binding == "cost" and "1,000 scenarios cost" in measured.sentence
    assert measured.check("cost").value == projected.check("cost").value  # counted == billed: one cost


def test_execute_on_the_driving_world_carries_a_verdict_and_routes_fan_outs():
    from fastdiff_core.run import execute

    plain = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=2, horizon=2, samples=8,
                    world_options={"k": 3}, regime="closed_loop")
    res = execute(plain)
    assert res.verdict["measured"]["regime"] == "closed_loop" and res.verdict["measured"]["binding"] == "cost"
    assert res.verdict["measured"]["tail"] == res.verdict["projected"]["tail"] == "darts"
    assert res.nfe_counted == res.nfe_formula
    fan = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=2, horizon=2, samples=1, plans=3,
                  futures=2, regime="planning")
    res = execute(fan)  # P > 1: the rollout module's planning runner on the shipped teacher
    assert res.nfe_counted == res.nfe_formula == 2 * 2 * 3 * 2
    assert res.verdict["measured"]["binding"] == "latency" and any(r["what"] == "cycle" for r in res.latency)


def test_importance_run_on_the_shipped_teacher_judges_weighted_rates_inside_their_intervals():
    """importance='tail' on the shipped teacher, which darts in child_at_curb: the proposal is fitted
    after the pilot cycle and used by the next ones (this crashed once a proposal existed). Every row's
    rate is the weighted estimate, inside its own interval at its own effective n (n_eff: the label's
    r (1 - r) / var where valid, Kish's n_kish otherwise), and the verdict's coverage check judges
    (rate, n_eff), never the raw count / n."""
    import re

    from fastdiff_core.metrics.intervals import rate_interval
    from fastdiff_core.run import execute

    spec = RunSpec(world="driving", scene="child_at_curb", solver="dpmpp_2m", steps=6, horizon=3, plans=3,
                   futures=40, samples=4, importance="tail", regime="offline", seed=0)
    res = execute(spec)
    assert res.nfe_counted == res.nfe_formula == 6 * 3 * 3 * 40 * 4  # the pilot cycle is billed like the rest
    shift = res.info["proposal_shift"]
    assert len(shift) == 3 and all(len(row) == 8 for row in shift)  # a fitted proposal: (H, D)
    darts = [r for r in res.histograms if r["label"] == "darts"]
    assert sum(r["count"] for r in darts) > 0  # the network does dart
    weighted = [r for r in res.histograms if r["n_kish"] < r["n"] - 1e-9]
    assert weighted, "no group was sampled from the proposal"
    # weighted rates differ from the raw count / n: the rows judge the former
    assert any(abs(r["rate"] - r["count"] / r["n"]) > 1e-3 for r in weighted)
    for r in res.histograms:
        assert r["lo"] <= r["rate"] <= r["hi"]
        assert (r["lo"], r["hi"]) == pytest.approx(rate_interval(r["rate"], r["n_eff"]))
    sentence = res.verdict["measured"]["sentence"]
    quoted = re.findall(r"generated ([\d.]+)% \[([\d.]+)%, ([\d.]+)%\]", sentence)
    assert quoted, sentence
    for rate, lo, hi in quoted:
        assert float(lo) <= float(rate) <= float(hi)
    # the raw counts play no part in the coverage check
    stripped = [{k: v for k, v in r.items() if k != "count"} for r in res.histograms]
    assert budget.coverage_gate(stripped) == budget.coverage_gate(res.histograms)


def test_the_run_page_bills_picards_re_evaluations_and_agrees_with_the_counter():
    from app.run_view import nfe_figures

    spec = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=4, horizon=2, plans=2, futures=4,
                   samples=2, parallel="picard", parallel_options={"window": 3, "tol": 0.0})
    res = run_planning(spec, torch.device("cpu"), net=random_net(width=32, depth=2))
    repeats = res.metrics["nfe_repeats"]
    assert repeats > 0
    fig = nfe_figures(spec, res, budget.bill_for(spec, sigmas=res.info["sigmas"]))
    assert fig.matches and fig.dashboard_formula == fig.counted == res.nfe_counted / 2
    assert f"+ {repeats:,.0f} Picard re-evaluations = {res.nfe_counted:,.0f}" in fig.caption
