"""The coverage gate decides with stated error rates: simulated operating characteristics, the
confidence sequence's coverage under peeking, and the decision rule's properties.

Error-rate tests use fixed seeds and are sized so that a change of seed flips them with probability
< 1e-6: each asserts at most 5% wrong decisions out of T trials, and ``fastdiff bench gate`` (1,000
trials per row, docs/gate.md) measures every one of these rates at 0 (<= 0.3% by the rule of three),
so even at a true rate of 1% P(Binomial(T, 0.01) > 0.05 T) < 1e-6 (asserted in ``_margin``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from fastdiff_core.bench.gate import (
    EqualLooks,
    Schedule,
    sampler_rates,
    simulate_fixed,
    simulate_sequential,
    truth_table,
)
from fastdiff_core.metrics.gate import (
    RELEASE_GATE,
    Estimate,
    GateConfig,
    SequentialGate,
    band_edges,
    coverage_gate,
    decide,
    teacher_gate,
)
from fastdiff_core.metrics.intervals import beta_binomial_cs, clopper_pearson
from fastdiff_core.worlds.driving.scenes import LABELS, SCENES, branch_probabilities

TRUTH = {s: branch_probabilities(sc, "keep", 6) for s, sc in SCENES.items()}
# The n the product gates at by default: students' protocol 2000, bench coverage / teacher card 1000 per
# seed, bench speedups 1500, README tables 300-400, the CI release protocol 4000; RunSpec.samples 1000
# and the Explore form's 2000 (a driving run's own sequential gate: test_a_runs_sequential_gate_...).
PRODUCT_N = (300, 400, 1000, 1500, 2000, 4000)
FIXED_TRIALS = 400
SEQUENTIAL_TRIALS = 300
SCHEDULE = Schedule()


def _margin(trials: int) -> int:
    limit = int(0.05 * trials)
    assert binom.sf(limit, trials, 0.01) < 1e-6  # the sizing argument of the module doc
    return limit


# (sampler, the outcome it must rarely get): wrong decisions
WRONG = [("perfect", -1), ("tail x0.5", 1), ("implausible 3.5%", 1), ("teacher identical", -1),
         ("teacher halved", 1)]


@pytest.mark.parametrize("sampler,wrong", WRONG)
@pytest.mark.parametrize("n", PRODUCT_N)
def test_fixed_n_wrong_decisions_are_rare(sampler, wrong, n):
    codes = simulate_fixed(sampler, n, FIXED_TRIALS, seed=n)
    assert (codes == wrong).sum() <= _margin(FIXED_TRIALS)


@pytest.mark.parametrize("sampler,wrong", WRONG)
def test_sequential_wrong_decisions_are_rare(sampler, wrong):
    codes, rollouts = simulate_sequential(sampler, SCHEDULE, SEQUENTIAL_TRIALS, seed=11)
    assert (codes == wrong).sum() <= _margin(SEQUENTIAL_TRIALS)
    assert rollouts.max() <= SCHEDULE.cap


@pytest.mark.parametrize("sampler,wrong", [w for w in WRONG if not w[0].startswith("teacher")])
def test_a_runs_sequential_gate_wrong_decisions_are_rare(sampler, wrong):
    # what a driving run with RunSpec.gate_cap does: one scene per run (its own family), equal looks of
    # samples x futures rollouts up to the cap (here looks of 250 to 4,000)
    # (a halved tail is a wrong sampler only in the scenes where it leaves the band: tails above 1%)
    tail = LABELS.index("darts")
    rates = sampler_rates(sampler, truth_table())
    lower, _ = band_edges(truth_table()[:, tail], RELEASE_GATE.tail_tolerance, RELEASE_GATE.tail_tolerance_abs)
    scenes = [s for i, s in enumerate(SCENES) if wrong == -1 or sampler != "tail x0.5" or rates[i, tail] < lower[i]]
    assert len(scenes) >= 4
    for i, scene in enumerate(scenes):
        codes, rollouts = simulate_sequential(sampler, EqualLooks(250, 4000), SEQUENTIAL_TRIALS, seed=20 + i,
                                              scenes=(scene,))
        assert (codes == wrong).sum() <= _margin(SEQUENTIAL_TRIALS), scene
        assert rollouts.max() <= 4000


def test_the_gate_has_power_where_the_sample_allows():
    # the wrong samplers are caught, not just left undecided; a perfect sampler passes sequentially
    assert (simulate_fixed("tail x0.5", 4000, 200, seed=1) == -1).mean() > 0.9
    assert (simulate_fixed("implausible 3.5%", 1000, 200, seed=2) == -1).mean() > 0.9
    codes, rollouts = simulate_sequential("perfect", SCHEDULE, 200, seed=3)
    assert (codes == 1).mean() > 0.8 and rollouts.mean() < SCHEDULE.cap
    codes, rollouts = simulate_sequential("tail x0.5", SCHEDULE, 200, seed=4)
    assert (codes == -1).mean() > 0.95 and np.median(rollouts) < 4000  # stops early on a clear FAIL


def test_the_dict_api_and_the_simulation_decide_alike():
    # the vectorised simulation and coverage_gate/teacher_gate on dicts are one decision
    rng = np.random.default_rng(5)
    truth = truth_table()
    for sampler in ("perfect", "tail x0.5", "implausible 3.5%"):
        rates = sampler_rates(sampler, truth)
        for _ in range(5):
            counts = {s: dict(zip(LABELS, rng.multinomial(2000, rates[i]).tolist())) for i, s in enumerate(SCENES)}
            res = coverage_gate(counts, TRUTH)
            again = coverage_gate(counts, TRUTH)
            assert res.outcome == again.outcome in ("PASS", "FAIL", "UNDECIDED")
            assert res.passed == (res.outcome == "PASS")
            if sampler == "implausible 3.5%":
                assert res.outcome == "FAIL" and any(f["check"] == "leak" for f in res.failures)


# --- the confidence sequence -------------------------------------------------------------------------------

def test_confidence_sequence_covers_under_peeking_where_clopper_pearson_does_not():
    rng = np.random.default_rng(0)
    p, paths, looks, alpha = 0.1, 1000, 500, 0.1
    x = np.cumsum(rng.random((paths, looks)) < p, 1).astype(float)
    n = np.broadcast_to(np.arange(1, looks + 1, dtype=float), x.shape)
    lo, hi = beta_binomial_cs(x, n, alpha)
    assert ((lo > p) | (hi < p)).any(1).mean() <= alpha  # measured 0.051: a Binomial margin of ~7 sd
    lo, hi = clopper_pearson(x[:, ::5], n[:, ::5], alpha)  # peeking every 5th draw at a fixed-n interval
    assert ((lo > p) | (hi < p)).any(1).mean() > 3 * alpha  # measured 0.44


def test_confidence_sequence_shrinks_and_contains_the_estimate():
    n = np.array([10, 100, 1000, 10000, 100000], dtype=float)
    lo, hi = beta_binomial_cs(0.3 * n, n, 0.01)
    assert np.all(np.diff(hi - lo) < 0) and np.all(lo < 0.3) and np.all(hi > 0.3)
    cp_lo, cp_hi = clopper_pearson(0.3 * n, n, 0.01)
    assert np.all(hi - lo > cp_hi - cp_lo)  # the price of looking any number of times


def test_running_intersection_is_nested_and_decisions_are_final():
    rng = np.random.default_rng(1)
    gate = SequentialGate(TRUTH, cap=3000)
    widths, outcomes = [], []
    while not gate.stop:
        rates = sampler_rates("tail x0", truth_table())
        gate.update({s: dict(zip(LABELS, rng.multinomial(250, rates[i]).tolist()))
                     for i, s in enumerate(SCENES) if s in gate.scenes_to_sample()})
        widths.append(gate._hi - gate._lo)
        outcomes.append(gate.result.outcome)
    assert all(np.all(b <= a + 1e-12) for a, b in itertools.pairwise(widths))
    assert outcomes[-1] == "FAIL" and gate.scenes_to_sample() == []
    assert gate.rollouts("child_at_curb") <= 3000


def test_interval_edge_cases():
    lo, hi = beta_binomial_cs(np.array([0.0, 50.0, 0.0]), np.array([50.0, 50.0, 0.0]), 0.05)
    assert lo[0] == 0.0 and 0 < hi[0] < 0.2 and hi[1] == 1.0 and 0.8 < lo[1] < 1 and (lo[2], hi[2]) == (0, 1)
    lo, hi = clopper_pearson(np.array([0.0, 10.0]), np.array([10.0, 10.0]), 0.05)
    assert lo[0] == 0 and hi[0] == pytest.approx(1 - 0.025 ** 0.1) and hi[1] == 1 and lo[1] == pytest.approx(0.025 ** 0.1)
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(11, 10, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        beta_binomial_cs(1, 10, 0.0)



def test_clopper_pearson_is_exactly_the_plain_formula_cached_or_not():
    """The interval computes each bound only where it is not 0 or 1 and keeps recent answers (a verdict's
    fixed cost): bit for bit what the plain formula gives, on a first call and on a repeated one."""
    from scipy.stats import beta

    def plain(s, m, alpha):
        s, m = np.broadcast_arrays(np.asarray(s, float), np.asarray(m, float))
        return (np.where(s > 0, beta.ppf(alpha / 2, np.maximum(s, 1e-12), m - s + 1), 0.0),
                np.where(s < m, beta.ppf(1 - alpha / 2, s + 1, np.maximum(m - s, 1e-12)), 1.0))

    rng = np.random.default_rng(3)
    cases = [(0.0, 10.0), (10.0, 10.0), (1e-13, 1.0), (0.0, 0.0), (np.zeros(4), np.ones(4))]
    for shape in [(20,), (71, 5), (3, 4, 2), (), (5000,)]:
        n = rng.integers(0, 10 ** 6, shape).astype(float) * rng.uniform(0.5, 2)
        x = np.where(rng.uniform(size=shape) < 0.3, 0.0, rng.uniform(0, 1, shape) * n)
        cases.append((np.where(rng.uniform(size=shape) < 0.2, n, x), n))
    for x, n in cases:
        for alpha in (0.05, 0.05 / 7):
            want = plain(x, n, alpha)
            for _ in range(2):
                got = clopper_pearson(x, n, alpha)
                assert all(g.shape == w.shape and g.tobytes() == w.tobytes() for g, w in zip(got, want))
                got[0][...] = -1  # the caller's copy: the kept answer is not changed through it


# --- the decision rule -------------------------------------------------------------------------------------

rate = st.floats(0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(q=rate, a=rate, b=rate, r=rate, c=rate, d=rate, rel=st.sampled_from([0.0, 0.25]),
       tol=st.sampled_from([0.005, 0.02]))
def test_decisions_are_right_whenever_the_intervals_cover(q, a, b, r, c, d, rel, tol):
    lo, hi = min(q, a, b), max(q, a, b)  # an interval around the true rate q
    r_lo, r_hi = min(r, c, d), max(r, c, d)  # and one around the true reference r
    code = int(decide(np.array(lo), np.array(hi), np.array(r_lo), np.array(r_hi), np.array(rel), np.array(tol)))
    L, U = band_edges(np.array(r), np.array(rel), np.array(tol))
    if L <= q <= U:
        assert code != -1  # a sampler inside its band never FAILs when the intervals cover
    else:
        assert code != 1  # ... nor one outside PASSes


@settings(max_examples=200, deadline=None)
@given(lo=rate, w=st.floats(0, 0.5), shrink=st.floats(0, 1), r=rate, rel=st.sampled_from([0.0, 0.25]))
def test_narrower_intervals_never_undo_a_decision_and_exact_is_the_special_case(lo, w, shrink, r, rel):
    hi = min(1.0, lo + w)
    inner_lo, inner_hi = lo + shrink * (hi - lo) / 2, hi - shrink * (hi - lo) / 2
    args = (np.array(r), np.array(r), np.array(rel), np.array(0.02))
    outer = int(decide(np.array(lo), np.array(hi), *args))
    inner = int(decide(np.array(inner_lo), np.array(inner_hi), *args))
    assert outer == 0 or inner == outer
    L, U = band_edges(np.array(r), np.array(rel), np.array(0.02))
    assert (outer == 1) == (L <= lo and hi <= U) and (outer == -1) == (hi < L or lo > U)


# --- the API: outcome, rows, estimates, errors ---------------------------------------------------------------

def test_result_rows_carry_their_bands_and_what_would_decide_them():
    rng = np.random.default_rng(2)
    counts = {s: dict(zip(p, rng.multinomial(1000, list(p.values())).tolist())) for s, p in TRUTH.items()}
    res = coverage_gate(counts, TRUTH)
    assert res.outcome == "UNDECIDED" and not res.passed and res.alpha == RELEASE_GATE.alpha == 0.05
    assert res.alpha_per_interval == pytest.approx(0.05 / 32)  # 8 scenes x (3 branches + implausible)
    assert {c["check"] for c in res.checks} == {"tail", "branch", "leak", "tv"}
    for c in res.checks:
        assert c["band_lo"] <= c["band_hi"] and c["tolerance"] and c["outcome"] in ("PASS", "FAIL", "UNDECIDED")
        if c["outcome"] == "UNDECIDED":
            assert c["n_to_decide"] is None or c["n_to_decide"] > 1000
    assert set(res.more_samples_needed) == {c["scene"] for c in res.undecided}
    # the per-scene n it asks for does decide those scenes (at the same estimates)
    bigger = {s: {k: round(v * 40) for k, v in c.items()} for s, c in counts.items()}
    assert coverage_gate(bigger, TRUTH).outcome != "UNDECIDED"
    leak = next(c for c in res.checks if c["check"] == "leak")
    assert (leak["band_lo"], leak["band_hi"]) == (0.0, 0.02)
    tail = next(c for c in res.checks if c["check"] == "tail" and c["scene"] == "child_at_curb")
    assert tail["band_lo"] == pytest.approx(0.75 * tail["truth"]) and tail["band_hi"] == pytest.approx(1.25 * tail["truth"])


def test_teacher_gate_carries_the_teachers_noise_and_exact_truth_is_its_special_case():
    counts = {s: {k: round(v * 2000) for k, v in p.items()} for s, p in TRUTH.items()}
    exact = coverage_gate(counts, TRUTH)
    sampled = teacher_gate(counts, counts)
    assert sampled.alpha_per_interval < exact.alpha_per_interval  # the teacher's intervals spend alpha too
    for a, b in zip(exact.checks, sampled.checks):
        if a["check"] in ("tail", "branch"):
            assert b["band_hi"] - b["band_lo"] < a["band_hi"] - a["band_lo"]  # teacher noise narrows PASS ...
            assert b["fail_above"] - b["fail_below"] > a["fail_above"] - a["fail_below"]  # ... and FAIL
    assert sampled.outcome == "UNDECIDED"


def test_importance_weighted_estimates_use_their_effective_sample_size():
    counts = {s: {k: round(v * 20000) for k, v in p.items()} for s, p in TRUTH.items()}
    res_counts = coverage_gate(counts, TRUTH)
    est = {s: {k: Estimate(c.get(k, 0) / sum(c.values()), float(sum(c.values())))
               for k in list(TRUTH[s]) + ["implausible"]} for s, c in counts.items()}
    res_est = coverage_gate(est, TRUTH)
    assert [c["lo"] for c in res_est.checks] == pytest.approx([c["lo"] for c in res_counts.checks], abs=1e-9)
    small = {s: {k: Estimate(v.rate, 300.0) for k, v in e.items()} for s, e in est.items()}
    assert coverage_gate(small, TRUTH).outcome == "UNDECIDED"  # fewer effective draws: wider intervals
    for c in coverage_gate(small, TRUTH).checks:
        assert c["check"] == "tv" or c["lo"] <= c["rate"] <= c["hi"]  # the rate shown lies in its interval


def test_input_errors_name_the_field():
    with pytest.raises(ValueError, match="alpha=0"):
        GateConfig(alpha=0)
    with pytest.raises(ValueError, match="tail_tolerance=1.5"):
        GateConfig(tail_tolerance=1.5)
    with pytest.raises(ValueError, match="scenes"):
        coverage_gate({"a": {"waits": 1}}, TRUTH)
    bad = {s: {k: 10 for k in p} for s, p in TRUTH.items()}
    bad["walk_signal"]["waits"] = -1
    with pytest.raises(ValueError, match=r"counts\['walk_signal'\]\['waits'\]=-1"):
        coverage_gate(bad, TRUTH)
    with pytest.raises(ValueError, match="mixes counts and Estimate"):
        coverage_gate({s: {"waits": 1, "darts": Estimate(0.1, 10)} for s in TRUTH}, TRUTH)
    with pytest.raises(ValueError, match="cap=0"):
        SequentialGate(TRUTH, cap=0)
    with pytest.raises(ValueError, match="label='blurred'"):
        SequentialGate(TRUTH, cap=100).update({"walk_signal": {"blurred": 1}})
    with pytest.raises(ValueError, match="growth=1"):
        Schedule(growth=1)


def test_bench_gate_command_writes_the_rows_the_issue_names(tmp_path, capsys):
    import json

    from workers.cli import main

    out = tmp_path / "gate.json"
    assert main(["bench", "gate", "--trials", "20", "--n", "300", "--cap", "2000", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["mode"], r["n"]) for r in rows} == {("fixed", 300), ("sequential", None)}
    assert {r["sampler"] for r in rows} == {"perfect", "tail x0.75", "tail x0.5", "tail x0", "implausible 1%",
                                           "implausible 3.5%", "implausible 5%", "teacher identical", "teacher halved"}
    for r in rows:
        assert r["pass_rate"] + r["fail_rate"] + r["undecided_rate"] == pytest.approx(1.0)
        assert r["mean_rollouts"] <= 2000 and "p95_rollouts" in r
    assert "tail x0.5" in capsys.readouterr().out


def test_sequential_teacher_gate_fed_batch_by_batch():
    rng = np.random.default_rng(9)
    truth = truth_table()
    labels = {s: list(LABELS) for s in SCENES}
    outcomes = {}
    for sampler in ("teacher identical", "teacher halved"):
        gate = SequentialGate({s: dict.fromkeys(LABELS, 0) for s in SCENES}, cap=8000, sampled_reference=True,
                              labels=labels)
        student = sampler_rates(sampler, truth)
        while not gate.stop:
            todo = gate.scenes_to_sample()
            gate.update({s: dict(zip(LABELS, rng.multinomial(500, student[i]).tolist()))
                         for i, s in enumerate(SCENES) if s in todo},
                        {s: dict(zip(LABELS, rng.multinomial(500, truth[i]).tolist()))
                         for i, s in enumerate(SCENES) if s in todo})
        outcomes[sampler] = gate.result.outcome
        assert gate.result.method == "sequential" and gate.result.alpha_per_interval == pytest.approx(0.05 / 56)
    assert outcomes == {"teacher identical": "UNDECIDED", "teacher halved": "FAIL"}
