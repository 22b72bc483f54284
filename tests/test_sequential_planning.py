"""Sequential coverage gates beyond one plan's rollouts: the planning runner (P plans x R futures, with
its speed-ups) and the user-model world sample in looks until the gate decides or the cap is reached.

The planning runner's decision is per plan: its family is the first cycle's candidate plans (known
before the run, so the family-wise alpha is fixed), each gated against its exact branch probabilities;
every look samples all plans at once. Its error rates are simulated here the way tests/test_gate.py
simulates the scene-level gate (fixed seeds, at most 5% wrong decisions with a Binomial flake
probability < 1e-6); end to end, the bill counts exactly what was drawn, Picard's re-evaluations included."""

from __future__ import annotations

import pytest

from fastdiff_core import budget
from fastdiff_core.bench.gate import EqualLooks, plan_truth_table, sampler_rates, simulate_sequential
from fastdiff_core.metrics.gate import RELEASE_GATE, band_edges
from fastdiff_core.rollout import candidate_plans
from fastdiff_core.run import execute
from fastdiff_core.spec import RunResult, RunSpec
from fastdiff_core.worlds.driving.scenes import ACTIONS, LABELS, SCENES
from tests.test_gate import SEQUENTIAL_TRIALS, WRONG, _margin

PLANS = 4
FAMILY = [tuple(p) for p in candidate_plans(PLANS, 6, actions=len(ACTIONS)).tolist()]
NAMES = tuple("-".join(ACTIONS[a][0] for a in p) for p in FAMILY)


@pytest.mark.parametrize("sampler,wrong", [w for w in WRONG if not w[0].startswith("teacher")])
def test_a_planning_runs_per_plan_gate_wrong_decisions_are_rare(sampler, wrong):
    # what a planning run with gate_cap does: P = 4 candidate plans in one scene, looks of samples x R = 250
    # rollouts per plan, every plan sampled in every look, at most 4,000 per plan; every scene is a family
    tail = LABELS.index("darts")
    for i, scene in enumerate(SCENES):
        truth = plan_truth_table(scene, FAMILY)
        lower, _ = band_edges(truth[:, tail], RELEASE_GATE.tail_tolerance, RELEASE_GATE.tail_tolerance_abs)
        if sampler == "tail x0.5" and not (sampler_rates(sampler, truth)[:, tail] < lower).any():
            continue  # no plan's halved tail leaves its band: not a wrong sampler in this scene
        codes, rollouts = simulate_sequential(sampler, EqualLooks(250, 4000), SEQUENTIAL_TRIALS, seed=40 + i,
                                              truth=truth, scenes=NAMES, joint=True)
        assert (codes == wrong).sum() <= _margin(SEQUENTIAL_TRIALS), scene
        assert rollouts.max() <= 4000


def test_the_per_plan_gate_has_power_and_stops_early_on_a_clear_fail():
    truth = plan_truth_table("child_at_curb", FAMILY)
    codes, rollouts = simulate_sequential("tail x0.5", EqualLooks(250, 4000), 200, seed=3, truth=truth, scenes=NAMES,
                                          joint=True)
    assert (codes == -1).mean() > 0.95 and rollouts.mean() < 2000


PLAN = dict(world="driving", scene="child_at_curb", horizon=3, regime="planning", seed=2)


def test_a_planning_run_samples_until_decided_bills_what_it_drew_and_reproduces():
    # Euler at 4 NFE/frame leaks implausible rollouts: the per-plan gate FAILs at an early look
    spec = RunSpec(**PLAN, solver="euler", steps=4, plans=3, futures=40, samples=1, gate_cap=1200)
    res = execute(spec)
    seq = res.info["sequential"]
    assert seq["outcome"] == "FAIL" and seq["stopped"] == "decided" and seq["cap"] == 1200
    assert set(seq["rollouts"]) == {"b-b-b", "k-k-k", "a-a-a"} and seq["looks"] < 10
    cycles = res.metrics["cycles"]
    assert cycles == seq["looks"] and res.metrics["rollouts_drawn"] == cycles * 3 * 40
    assert res.nfe_counted == res.nfe_formula == 4 * 1 * 3 * 3 * 40 * cycles  # S x C x H x P·R x cycles drawn
    _, measured = budget.stored_verdicts(res.verdict)  # planning binds on latency; coverage is quoted
    assert res.info["gate"]["outcome"] == "fail" and "coverage (not gated here) fail" in measured.sentence
    assert "sequential: decided, " in measured.sentence
    assert budget.measured_from(res).nfe_per_cycle == 4 * 3 * 3 * 40
    again = execute(spec)
    assert again.histograms == res.histograms and again.info["sequential"] == seq
    assert RunResult.from_json(res.to_json()).info["sequential"] == seq
    if seq["looks"] == 1:  # the first look is the fixed run of one look
        assert execute(spec.replace(gate_cap=None)).histograms == res.histograms


def test_a_planning_run_that_stays_undecided_stops_at_the_cap_and_says_so():
    spec = RunSpec(**{**PLAN, "horizon": 6}, solver="dpmpp_2m", steps=12, plans=2, futures=20, samples=1, gate_cap=80)
    res = execute(spec)
    seq = res.info["sequential"]
    assert seq["outcome"] == "UNDECIDED" and seq["stopped"] == "cap of 80 rollouts reached" and seq["looks"] == 2
    assert res.metrics["cycles"] == spec.max_cycles == 2
    assert res.nfe_counted == res.nfe_formula == budget.bill_for(spec, sigmas=res.info["sigmas"]).per_run
    assert "rollouts per plan likely to decide" in res.info["gate"]["text"]


@pytest.mark.parametrize("changes", [
    {"parallel": "picard", "solver": "euler", "parallel_options": {"window": 3, "tol": 0.0}},
    {"feature_cache": "fixed", "plans": 1},
    {"precision": "bfloat16", "plans": 1},
])
def test_speedups_sample_sequentially_and_the_bill_counts_every_evaluation(changes):
    spec = RunSpec(**{**PLAN, "solver": "dpmpp_2m", "steps": 4, "plans": 2, "futures": 20, "samples": 1,
                      "gate_cap": 120, **changes})
    assert spec.runnable() is spec  # no refusal (it would raise)
    res = execute(spec)
    cycles = res.metrics["cycles"]
    per_cycle = 4 * 1 * 3 * spec.plans * 20
    parts = res.info["bill_parts"]
    assert res.info["sequential"]["looks"] == cycles and cycles <= spec.max_cycles
    # declared == counted: the sequential count from the formula, plus the re-evaluations Picard counted
    assert parts["sequential"] == per_cycle * cycles
    assert res.nfe_counted == res.nfe_formula == parts["sequential"] + parts["picard_repeats"]
    assert (parts["picard_repeats"] > 0) == (spec.parallel == "picard") and res.metrics["nfe_repeats"] == parts[
        "picard_repeats"]
    if spec.parallel == "picard":
        assert "Picard re-evaluations" in res.info["bill"]


def test_importance_sampling_stays_at_a_fixed_n():
    with pytest.raises(ValueError, match=r"importance='tail' with gate_cap=40.*allowed: importance 'off'"):
        RunSpec(**PLAN, solver="euler", steps=2, plans=2, futures=20, samples=1, importance="tail",
                gate_cap=40).runnable()


def test_the_explore_form_enables_the_gate_where_a_world_declares_it():
    from app.spec_form import unsupported

    assert "gate_cap" not in unsupported("model") and "gate_cap" not in unsupported("driving")
    assert "no sequential coverage gate" in unsupported("mixture")["gate_cap"]
