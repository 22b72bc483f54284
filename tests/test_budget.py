"""The NFE bill, waterfall, latency projection and verdicts, against the seed's own numbers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastdiff_core import budget, catalog
from fastdiff_core.budget import NFEBill, ProductionModel
from fastdiff_core.spec import RunSpec


def test_seed_vanilla_rollout_and_plan():
    one = RunSpec(solver="ddpm", steps=1000, guidance_scale=3.0, horizon=20)
    assert budget.bill_for(one).per_cycle == 40_000
    plan = one.replace(plans=10, futures=4)
    bill = budget.bill_for(plan)
    assert bill.per_cycle == 1_600_000
    assert bill.formula() == "1,000 x 2 x 20 x 40 = 1,600,000"
    assert bill.per_frame == 2000 and bill.per_rollout == 40_000


def test_seed_optimised_plan_and_planning_cycle():
    assert NFEBill(S=4, C=1, H=12, P=8, R=1).per_cycle == 384
    # Seed section 11 writes "12 x 4 x 1 x (10·4) = 19,200"; the product is 1,920. 19,200 is the same
    # cycle at P·R = 400 (10 plans x 40 futures). The bill multiplies; it does not copy the typo.
    cycle = RunSpec(solver="euler", steps=4, guidance_scale=1.0, horizon=12, plans=10, futures=4)
    assert budget.bill_for(cycle).per_cycle == 1_920
    assert budget.bill_for(cycle.replace(futures=40)).per_cycle == 19_200


def test_per_run_multiplies_cycles():
    spec = RunSpec(solver="heun", steps=10, guidance_scale=2.0, horizon=3, plans=2, futures=5, samples=7)
    bill = budget.bill_for(spec)
    assert bill.S == 19  # Heun: 2n - 1
    assert bill.per_run == 19 * 2 * 3 * 10 * 7


@pytest.mark.parametrize("scale, C", [(0.0, 1.0), (1.0, 1.0), (1.5, 2.0), (7.5, 2.0)])
def test_guidance_passes(scale, C):
    assert budget.bill_for(RunSpec(guidance_scale=scale)).C == C


def test_seed_waterfall():
    target = NFEBill(S=4, C=1, H=12, P=8, R=1)
    stages = budget.waterfall(target, distilled=True)
    nfe = [s.bill.per_cycle for s in stages]
    assert nfe == [1_600_000, 32_000, 16_000, 9_600, 1_920, 384]
    assert [s.lever for s in stages][1:] == ["solver", "guidance distillation", "shorter horizon",
                                             "smarter proposals (P·R)", "few-step distillation"]
    assert stages[1].factor == 50 and stages[-1].factor == 5
    total = 1.0
    for s in stages:
        total *= s.factor
    assert total == pytest.approx(1_600_000 / 384)


def test_waterfall_for_a_solver_spec_has_no_distillation_step():
    bill = budget.bill_for(RunSpec(solver="dpmpp_2m", steps=15, guidance_scale=4.0, horizon=20, plans=10, futures=4))
    stages = budget.waterfall(bill, distilled=False)
    assert stages[1].bill.S == 15 and stages[-1].factor == 1.0
    assert stages[-1].bill.per_cycle == bill.per_cycle


def test_guidance_interval_fraction_from_custom_grid():
    sig = [10.0, 5.0, 2.0, 1.0, 0.5]
    spec = RunSpec(solver="euler", steps=5, grid="custom", grid_options={"sigmas": sig},
                   guidance_scale=3.0, guidance_interval=(0.8, 6.0))
    bill = budget.bill_for(spec)
    assert bill.C == pytest.approx(1 + 3 / 5) and bill.exact  # 5, 2, 1 inside [0.8, 6]
    # Heun evaluates at sigma_0..sigma_4 and again at sigma_1..sigma_4: 9 evaluations, 3 + 3 inside.
    heun = spec.replace(solver="heun")
    assert budget.bill_for(heun).C == pytest.approx(1 + 6 / 9)
    assert budget.bill_for(heun).per_frame == pytest.approx(9 + 6)


def test_guidance_interval_needs_sigmas_or_fraction():
    spec = RunSpec(guidance_scale=3.0, guidance_interval=(0.5, 2.0))
    with pytest.raises(ValueError, match="guided_fraction"):
        budget.bill_for(spec)
    bill = budget.bill_for(spec, guided_fraction=0.25)
    assert bill.C == 1.25 and not bill.exact
    with pytest.raises(ValueError, match="guided_fraction=1.5"):
        budget.bill_for(spec, guided_fraction=1.5)


@pytest.mark.parametrize("solver", ["adaptive", "dpm_adaptive"])
def test_adaptive_solver_bills_its_cap_as_upper_bound(solver):
    bill = budget.bill_for(RunSpec(solver=solver, solver_options={"max_nfe": 300}))
    assert bill.S == 300 and not bill.exact


def test_seed_latency_projection_five_times_over():
    bill = NFEBill(S=4, C=1, H=12, P=1, R=1)
    lat = budget.project_latency(bill, ProductionModel(per_nfe_s=0.010, parallelism=1))
    assert lat.per_frame_s == pytest.approx(0.040)
    assert lat.per_cycle_s == pytest.approx(0.480)
    assert not lat.fits and lat.over_budget == pytest.approx(4.8)


def test_latency_with_parallel_fan_out():
    bill = NFEBill(S=4, C=1, H=12, P=10, R=4)
    serial = budget.project_latency(bill, ProductionModel(parallelism=1))
    wide = budget.project_latency(bill, ProductionModel(parallelism=40))
    assert serial.per_cycle_s == pytest.approx(1_920 * 0.010)
    assert wide.per_cycle_s == pytest.approx(wide.floor_cycle_s) == pytest.approx(0.480)
    half = budget.project_latency(bill, ProductionModel(parallelism=16))  # ceil(40/16) = 3 waves
    assert half.per_cycle_s == pytest.approx(48 * 3 * 0.010)


def test_one_step_short_horizon_fits():
    lat = budget.project_latency(NFEBill(S=1, C=1, H=8, P=4, R=2), ProductionModel(parallelism=8))
    assert lat.fits and lat.per_cycle_s == pytest.approx(0.080)


def test_cost_per_1000_scenarios():
    usd, sec = budget.cost_per_1000_scenarios(NFEBill(S=30, C=1, H=20, P=1, R=1),
                                               ProductionModel(parallelism=8, usd_per_hour=2.0))
    assert sec == pytest.approx(1000 * 600 * 0.010 / 8) and usd == pytest.approx(sec / 3600 * 2.0)


def test_regimes_agree_with_catalog():
    assert set(budget.REGIME_BUDGETS) == set(catalog.REGIMES)


def test_planning_verdict_names_latency_and_numbers():
    spec = RunSpec(solver="euler", steps=4, horizon=12, regime="planning")
    v = budget.judge_spec(spec)
    assert v.status == "fail" and v.binding == "latency"
    assert "latency FAIL" in v.sentence and "480 ms" in v.sentence and "4.8x over" in v.sentence
    assert "100 ms" in v.sentence
    ok = budget.judge_spec(spec.replace(steps=1, horizon=8), model=ProductionModel(parallelism=8))
    assert ok.status == "pass" and "80 ms" in ok.sentence


# 20,000 samples: enough for the gate to show the rare mode inside +-25% and the common one inside +-2 points
HIST_OK = [
    {"label": "common", "count": 19200, "n": 20000, "rate": 0.96, "lo": 0.957, "hi": 0.963, "truth": 0.96},
    {"label": "rare", "count": 800, "n": 20000, "rate": 0.04, "lo": 0.037, "hi": 0.043, "truth": 0.04},
]
HIST_DROPPED = [
    {"label": "common", "count": 1000, "n": 1000, "rate": 1.0, "lo": 0.996, "hi": 1.0, "truth": 0.96},
    {"label": "rare", "count": 0, "n": 1000, "rate": 0.0, "lo": 0.0, "hi": 0.0038, "truth": 0.04},
]


def test_offline_verdict_is_the_coverage_gate():
    spec = RunSpec(steps=20, regime="offline")
    assert budget.judge_spec(spec).status == "unmeasured"
    good = budget.judge_spec(spec, histograms=HIST_OK)
    assert good.passed and "coverage PASS" in good.sentence and "'rare' generated 4.0%" in good.sentence
    bad = budget.judge_spec(spec, histograms=HIST_DROPPED)
    assert bad.status == "fail" and "2 of 2 branches" in bad.sentence and "'rare' generated 0.0%" in bad.sentence


def test_coverage_gate_counts_exact_zero_and_one_truths_as_inside():
    from fastdiff_core.metrics.intervals import wilson_interval

    rows = []
    for label, count, truth in (("other", 0, 0.0), ("target", 500, 1.0)):
        lo, hi = wilson_interval(count, 500)
        rows.append({"label": label, "count": count, "n": 500, "rate": count / 500, "lo": lo, "hi": hi, "truth": truth})
    assert budget.coverage_gate(rows).status == "pass"
    # one stray sample in a branch of probability zero is within the leak tolerance (a perfect
    # sampler's classifier can produce it); a 5% leak is not
    rows[0].update(count=1, rate=1 / 500)
    rows[1].update(count=499, rate=499 / 500)
    assert budget.coverage_gate(rows).status == "pass"
    rows[0].update(count=25, rate=25 / 500)
    rows[1].update(count=475, rate=475 / 500)
    assert budget.coverage_gate(rows).status == "fail"


def test_closed_loop_verdict_is_cost_then_coverage():
    spec = RunSpec(steps=6, horizon=20, regime="closed_loop")
    prod = ProductionModel(parallelism=8)
    v = budget.judge_spec(spec, model=prod, histograms=HIST_OK)
    assert v.passed and v.binding == "cost" and "$0.083" in v.sentence
    solver30 = budget.judge_spec(spec.replace(steps=30), model=prod, histograms=HIST_OK)
    assert solver30.status == "fail" and "cost FAIL" in solver30.sentence
    dropped = budget.judge_spec(spec, model=prod, histograms=HIST_DROPPED)
    assert dropped.status == "fail" and "cost PASS" in dropped.sentence and "coverage FAIL" in dropped.sentence


def test_run_guard_refuses_hours():
    spec = RunSpec(solver="ddpm", steps=1000, guidance_scale=3, horizon=20, plans=10, futures=4, samples=100)
    prior = budget.RUNTIME_PRIORS["driving"]
    reason = budget.run_guard(prior.estimate(budget.work_of(spec, budget.bill_for(spec))))
    assert reason is not None and " h (" in reason and "over the 30 min limit" in reason
    assert "conservative prior" in reason
    small = RunSpec(world="driving", scene="child_at_curb", steps=4, horizon=3, samples=32)
    assert budget.run_guard(prior.estimate(budget.work_of(small, budget.bill_for(small)))) is None
    with pytest.raises(ValueError, match="estimate.seconds"):
        budget.run_guard(budget.RuntimeEstimate(0.0, 0.0, 0.0, "x", False))


def test_a_run_without_its_network_load_rescales_the_work_terms_only():
    """A short run whose network was already loaded, compared with the whole prior (whose fixed term is mostly the
    network's load), took the scale down with that term: a run 100x larger was estimated far too fast. A run that
    recorded its setup seconds counts without them, against the prior's work terms only; a run stored without
    the record still counts whole."""
    prior = budget.RuntimeModel((20.0, 7.0e-4, 3.2e-3, 3.8e-3), 1.0, 0, "prior", prior=True, load_s=19.0)
    quiet = budget.RuntimeModel(tuple(c / 20 for c in prior.coef), 0.0, 0, "prior / 20")  # the machine: 20x faster
    small, large = budget.Work(900, 100, 9), budget.Work(90_000, 10_000, 90)
    load = prior.load_s / 20
    work_s = quiet.seconds(small) - load
    assert work_s < 0.2 * load  # short next to the load
    warm = budget.fit_runtime([(small, work_s, 0.0)], "warm", prior)  # loaded by an earlier run: setup 0
    assert warm.coef[0] == pytest.approx(quiet.coef[0] - load)  # the estimate is of a worker that has the network
    assert warm.seconds(small) == pytest.approx(work_s)
    assert warm.seconds(large) == pytest.approx(quiet.seconds(large) - load)
    cold = budget.fit_runtime([(small, work_s + load, load)], "cold", prior)  # it loaded the network: the same fit
    assert cold.coef == pytest.approx(warm.coef)
    unknown = budget.fit_runtime([(small, work_s)], "no record", prior)  # the old reading of the warm run
    assert unknown.seconds(large) < 0.2 * quiet.seconds(large)
    whole = budget.fit_runtime([(small, work_s + load)], "no record, loaded", prior)  # right when it paid the load
    assert whole.seconds(large) == pytest.approx(quiet.seconds(large))
    mixed = budget.fit_runtime([(small, work_s + load), (small, work_s, 0.0)], "mixed", prior)
    assert mixed.seconds(large) == pytest.approx(quiet.seconds(large))  # the load kept: one run paid it


def test_a_model_world_estimate_names_the_reference_a_seeds_first_run_samples():
    import types

    spec = types.SimpleNamespace(world_options={"reference_samples": 1000, "reference_steps": 16})  # a model's
    assert budget.setup_nfe(spec) == 1000 * (31 + 15) and budget.setup_nfe(RunSpec()) == 0.0
    work = budget.Work(8 * 400, 400, 8, budget.setup_nfe(spec))  # (tests/test_model_runs.py: a real model's spec)
    e = budget.runtime_prior("model").estimate(work)
    per_nfe = (e.seconds - budget.runtime_prior("model").coef[0]) / work.nfe
    assert e.setup_s == pytest.approx(per_nfe * 46_000) and e.setup_s > e.seconds - 10.0
    assert "also samples the model's reference, 46,000 NFE, about" in e.describe()
    assert "reference" not in budget.runtime_prior("mixture").estimate(budget.Work(800, 200, 4)).describe()


def test_runtime_fit_recovers_the_cost_terms_and_ignores_a_slowed_run():
    """seconds = 2 + 1e-4 NFE + 0.01 rollouts + 0.05 forwards, +-10% noise, one run slowed 5x by a neighbour."""
    import random

    rng = random.Random(0)
    truth = budget.RuntimeModel((2.0, 1e-4, 0.01, 0.05), 0.0, 0, "truth")
    works = [budget.Work(n, r, f) for n, r, f in ((1e4, 100, 40), (4e4, 100, 160), (1e4, 800, 40), (2e5, 400, 200),
                                                   (8e4, 1600, 80), (3e5, 200, 600), (5e4, 50, 400), (2e4, 30, 90))]
    runs = [(w, truth.seconds(w) * rng.uniform(0.9, 1.1)) for w in works]
    runs.append((budget.Work(1e5, 300, 100), 5 * truth.seconds(budget.Work(1e5, 300, 100))))
    flat = budget.RuntimeModel((1.0, 0.0, 0.0, 0.0), 1.0, 0, "flat prior", prior=True)  # a poor shape
    m = budget.fit_runtime(runs, "synthetic", flat)
    assert m.n_runs == len(runs) - 1  # the slowed run is left out
    for w in (budget.Work(2e4, 200, 100), budget.Work(1e6, 1000, 2000)):
        est = m.estimate(w)
        assert 0.8 < est.seconds / truth.seconds(w) < 1.25 and est.lo < truth.seconds(w) < est.hi


def test_runtime_before_four_runs_rescales_the_prior():
    prior = budget.RUNTIME_PRIORS["mixture"]
    w1, w2 = budget.Work(3200, 400, 8), budget.Work(19200, 1200, 32)
    one = budget.fit_runtime([(w1, prior.seconds(w1) / 4)], "one run", prior)  # this machine is 4x faster
    assert one.seconds(w2) == pytest.approx(prior.seconds(w2) / 4)
    e = one.estimate(w2)
    assert e.hi / e.seconds == pytest.approx(e.seconds / e.lo) and e.hi / e.seconds > 3  # factor 3, widened
    assert "fitted on 1 measured run" in e.describe() and not e.prior
    p = prior.estimate(w2)
    assert p.prior and "conservative prior" in p.describe()
    with pytest.raises(ValueError, match="runs="):
        budget.fit_runtime([], "none", prior)
    plugin = budget.runtime_prior("a plugin world")  # no prior of its own: the unmeasured fallback of a user's model
    assert plugin.prior and plugin.coef == budget.RUNTIME_PRIORS["model"].coef and plugin.kind == "a plugin world"
    assert all(plugin.seconds(w2) >= budget.RUNTIME_PRIORS[w].seconds(w2) for w in ("mixture", "driving"))


def test_latency_verdict_is_undecided_when_the_median_interval_straddles_the_budget():
    """The decision rule on synthetic timings: the interval for the median (order statistics) decides."""
    from fastdiff_core.metrics.intervals import median_interval

    bill = budget.NFEBill(S=4, C=1, H=12, P=10, R=4)

    def check(times):
        lo, hi, conf = median_interval(times)
        sample = budget.LatencySample(sorted(times)[len(times) // 2], lo, hi, conf, len(times), "cpu:test", 2, 1.5)
        return budget.verdict("planning", bill, latency=sample, basis="measured")

    under = check([0.060, 0.062, 0.065, 0.070, 0.071, 0.074, 0.080, 0.090, 0.095])
    over = check([0.120, 0.130, 0.135, 0.140, 0.150, 0.160, 0.170, 0.200, 0.671])
    # one shared machine: the same cycle at 76 ms and at 672 ms, as issue 12 saw
    straddle = check([0.076, 0.080, 0.085, 0.090, 0.110, 0.150, 0.300, 0.500, 0.672])
    assert (under.status, over.status, straddle.status) == ("pass", "fail", "undecided")
    assert "straddling the 100 ms budget" in straddle.sentence and "2 threads" in straddle.sentence
    c = straddle.check("latency")
    assert c.basis == "measured" and c.lo < 0.100 < c.hi
    once = budget.verdict("planning", bill, latency=budget.LatencySample(0.05, None, None, None, 1, "cpu"),
                          basis="measured")
    assert once.status == "undecided" and "no interval" in once.sentence
    # the overall verdict: FAIL if any FAIL, PASS only if all PASS, else UNDECIDED
    assert budget.overall_status(["pass", "undecided"]) == "undecided"
    assert budget.overall_status(["fail", "undecided"]) == "fail"
    assert budget.overall_status(["pass", "pass"]) == "pass"
    assert budget.overall_status(["pass", "unmeasured"]) == "unmeasured"


def test_projected_and_measured_verdicts_come_from_one_function_and_agree_on_cost():
    spec = RunSpec(steps=6, horizon=20, regime="closed_loop")
    bill = budget.bill_for(spec)
    before = budget.judge(spec)
    after = budget.judge(spec, budget.Measured(bill.per_cycle, tuple(HIST_OK)))
    assert (before.basis, after.basis) == ("projected", "measured")
    assert before.check("cost").value == after.check("cost").value == pytest.approx(0.0833, abs=1e-4)
    assert before.check("coverage").status == "unmeasured" and after.check("coverage").status == "pass"
    assert before.tail == after.tail == "rare" and after.rates[1]["rate"] == 0.04
    # a gate that cannot decide carries UNDECIDED through to the regime's verdict
    undecided = budget.judge(spec, budget.Measured(bill.per_cycle, tuple(HIST_OK),
                                                   gate={"outcome": "undecided", "text": "needs ~900 more"}))
    assert undecided.status == "undecided" and "coverage UNDECIDED" in undecided.sentence
    # round trip through the store's JSON
    stored = budget.run_verdicts(spec, budget.Measured(bill.per_cycle, tuple(HIST_OK)))
    p, m = budget.stored_verdicts(stored)
    assert p == before and m == after


def test_each_world_declares_its_tail_once():
    from fastdiff_core.worlds import mixture
    from fastdiff_core.worlds.driving.scenes import TAIL

    assert budget.world_tail("driving") == TAIL
    for make in mixture.PRESETS.values():
        mix = make()
        assert mix.labels[mix.rare] == budget.world_tail("mixture")


@pytest.mark.parametrize("field, value", [("S", 0), ("C", 2.5), ("H", 0), ("P", 1.5), ("cycles", -1),
                                          ("repeats", -1.0), ("repeats", float("nan"))])
def test_bill_validation_names_field(field, value):
    kw = dict(S=1, C=1, H=1, P=1, R=1)
    kw[field] = value
    with pytest.raises(ValueError, match=f"^{field}="):
        NFEBill(**kw)


def test_picard_re_evaluations_are_a_line_of_the_bill():
    bill = NFEBill(S=4, C=1, H=3, P=2, R=20, cycles=2, repeats=96)
    assert bill.per_run == 4 * 3 * 40 * 2 + 96 and bill.to_dict()["repeats"] == 96
    assert bill.formula() == "4 x 1 x 3 x 40 = 480; run: 2 cycles x 480 + 96 Picard re-evaluations = 1,056"
    assert NFEBill(S=4, C=1, H=3, P=2, R=20).formula() == "4 x 1 x 3 x 40 = 480"
    spec = RunSpec(solver="euler", steps=4, parallel="picard", parallel_options={"window": 3})
    assert any("at most 2 x S with window 3" in note for note in budget.bill_for(spec).notes)


def test_picard_runtime_estimate_and_limits_take_its_worst_case():
    """The run-time estimate (and so the run guard) and the run limits both take Picard's worst case, the
    bill x its window, from one definition (spec.picard_window); other samplers are billed as they are."""
    plain = RunSpec(solver="euler", steps=8, samples=64)
    picard = plain.replace(parallel="picard", parallel_options={"window": 4})
    assert budget.picard_window(plain) == 1 and budget.picard_window(picard) == 4
    w_plain, w_picard = (budget.work_of(s, budget.bill_for(s)) for s in (plain, picard))
    assert w_picard.nfe == 4 * w_plain.nfe and w_picard.forwards == w_plain.forwards
    prior = budget.runtime_prior(plain.world)
    assert prior.estimate(w_picard).seconds > prior.estimate(w_plain).seconds


@given(st.integers(1, 50), st.sampled_from(sorted(catalog.SOLVERS)), st.integers(1, 30), st.integers(1, 8),
       st.integers(1, 8), st.floats(0, 10))
def test_bill_is_the_product(steps, solver, H, P, R, scale):
    if catalog.SOLVERS[solver].adaptive:  # the tolerance sets S: billed at its cap (test above)
        return
    spec = RunSpec(solver=solver, steps=steps, horizon=H, plans=P, futures=R, guidance_scale=scale)
    bill = budget.bill_for(spec)
    S = catalog.SOLVERS[solver].nfe(steps, dict(spec.solver_options))
    C = 1 if scale in (0.0, 1.0) else 2
    assert bill.per_cycle == S * C * H * P * R
    lat = budget.project_latency(bill, ProductionModel(parallelism=10_000))
    assert lat.per_cycle_s == pytest.approx(bill.S * H * 0.010)
