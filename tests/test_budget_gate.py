"""The verdict's coverage check is family-wise: a perfect sampler passes it, a halved tail fails it."""

import random

from fastdiff_core import budget
from fastdiff_core.spec import RunSpec

TRUTH = {"waits": 0.55, "crosses": 0.41, "darts": 0.04, "implausible": 0.0}


def rows_for(counts: dict[str, int], n: int) -> list[dict]:
    return [{"group": "s", "label": k, "count": c, "n": n, "rate": c / n, "truth": TRUTH[k], "lo": 0.0, "hi": 1.0}
            for k, c in counts.items()]


def draw(rng: random.Random, n: int, probs: dict[str, float]) -> dict[str, int]:
    counts = dict.fromkeys(TRUTH, 0)
    labels, weights = zip(*probs.items())
    for k in rng.choices(labels, weights=weights, k=n):
        counts[k] += 1
    return counts


def test_perfect_sampler_over_eight_scenes_passes_nearly_always():
    rng = random.Random(0)
    n, trials, passes = 1000, 200, 0
    for _ in range(trials):
        rows = [r for _ in range(8) for r in rows_for(draw(rng, n, TRUTH), n)]
        passes += budget.coverage_gate(rows).status == "pass"
    assert passes / trials >= 0.95


def test_halved_tail_fails():
    rng = random.Random(1)
    halved = {"waits": 0.57, "crosses": 0.41, "darts": 0.02, "implausible": 0.0}
    n = 20000
    rows = [r for _ in range(8) for r in rows_for(draw(rng, n, halved), n)]
    check = budget.coverage_gate(rows)
    assert check.status == "fail" and "darts" in check.text


def test_runner_gate_takes_precedence_in_the_verdict():
    spec = RunSpec(regime="offline")
    bill = budget.bill_for(spec)
    v = budget.verdict("offline", bill, histograms=rows_for({"waits": 550, "crosses": 410, "darts": 40,
                                                              "implausible": 0}, 1000),
                       gate={"passed": False, "text": "release coverage gate fails 1: tv s"})
    assert v.status == "fail" and "release coverage gate fails" in v.sentence
