"""The coverage gate is itself tested: a perfect sampler passes it, a halved tail fails it."""

import numpy as np
import pytest

from fastdiff_core.metrics.gate import GateConfig, coverage_gate, perfect_sampler_tv_limit
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.worlds.driving.scenes import SCENES, branch_probabilities

TRUTH = {s: branch_probabilities(sc, "keep", 6) for s, sc in SCENES.items()}
N = 4000


def draw(rng, probs, n=N):
    return {s: dict(zip(p, rng.multinomial(n, list(p.values())).tolist())) for s, p in probs.items()}


def test_naive_per_branch_95_percent_test_fails_a_perfect_sampler_often():
    # the motivation: without a family-wise correction, a perfect sampler fails most of the time
    rng = np.random.default_rng(0)
    fails = 0
    for _ in range(200):
        counts = draw(rng, TRUTH)
        fails += any(not (lambda lo_hi: lo_hi[0] <= p <= lo_hi[1])(wilson_interval(counts[s][b], N))
                     for s in TRUTH for b, p in TRUTH[s].items())
    assert fails / 200 > 0.3


def test_perfect_sampler_passes_at_least_99_percent():
    rng = np.random.default_rng(1)
    config = GateConfig(tv_draws=1000)
    trials = 400
    passed = sum(coverage_gate(draw(rng, TRUTH), TRUTH, config).passed for _ in range(trials))
    assert passed / trials >= 0.99


def test_perfect_sampler_limit_matches_the_stated_noise_level():
    # ~0.023 at the 99th percentile for n = 4000 over 8 scenes
    limit = perfect_sampler_tv_limit(TRUTH, {s: N for s in TRUTH}, 0.99, draws=4000)
    assert 0.018 < limit < 0.03


def halve_tail(probs):
    out = {}
    for s, p in probs.items():
        q = dict(p)
        q["waits"] += q["darts"] / 2
        q["darts"] /= 2
        out[s] = q
    return out


def test_halved_tail_fails():
    rng = np.random.default_rng(2)
    results = [coverage_gate(draw(rng, halve_tail(TRUTH)), TRUTH) for _ in range(20)]
    assert not any(r.passed for r in results)
    assert all(any(f["check"] == "tail" for f in r.failures) for r in results)


def test_tail_within_the_stated_model_tolerance_passes_and_beyond_fails():
    # 15% under-sampling of every tail is inside a 25% tolerance; 45% is not
    rng = np.random.default_rng(3)
    for factor, expect in ((0.85, True), (0.55, False)):
        probs = {}
        for s, p in TRUTH.items():
            q = dict(p)
            q["waits"] += q["darts"] * (1 - factor)
            q["darts"] *= factor
            probs[s] = q
        n = N
        counts = {s: {k: round(v * n) for k, v in q.items()} for s, q in probs.items()}
        res = coverage_gate(counts, TRUTH, GateConfig(tv_tolerance=0.05))
        assert res.passed is expect, [f for f in res.failures]


def test_leak_tolerance_for_zero_rate_labels():
    counts = {s: {k: round(v * N) for k, v in p.items()} for s, p in TRUTH.items()}
    one = {s: dict(c, implausible=1) for s, c in counts.items()}
    assert coverage_gate(one, TRUTH, GateConfig(tv_tolerance=0.01)).passed  # a stray sample is not a failure
    many = {s: dict(c, implausible=200) for s, c in counts.items()}  # 5% blur
    res = coverage_gate(many, TRUTH, GateConfig(tv_tolerance=0.1))
    assert not res.passed and "leak" in {f["check"] for f in res.failures}


def test_gate_config_and_input_validation():
    with pytest.raises(ValueError, match="alpha=0"):
        GateConfig(alpha=0)
    with pytest.raises(ValueError, match="tail_tolerance=1.5"):
        GateConfig(tail_tolerance=1.5)
    with pytest.raises(ValueError, match="scenes"):
        coverage_gate({"a": {"waits": 1}}, TRUTH)


def test_release_gate_tolerances_still_catch_a_halved_tail():
    from fastdiff_core.metrics.gate import RELEASE_GATE

    rng = np.random.default_rng(4)
    results = [coverage_gate(draw(rng, halve_tail(TRUTH)), TRUTH, RELEASE_GATE) for _ in range(20)]
    assert not any(r.passed for r in results)
    rng = np.random.default_rng(5)
    assert sum(coverage_gate(draw(rng, TRUTH), TRUTH, RELEASE_GATE).passed for _ in range(50)) == 50
