"""The verdict's coverage check is the one gate of metrics.gate: three outcomes, wrong decisions rare."""

import numpy as np

from fastdiff_core import budget
from fastdiff_core.spec import RunSpec

TRUTH = {"waits": 0.55, "crosses": 0.41, "darts": 0.04, "implausible": 0.0}


def rows_for(group: str, counts: dict[str, int], n: int) -> list[dict]:
    return [{"group": group, "label": k, "count": c, "n": n, "rate": c / n, "truth": TRUTH[k], "lo": 0.0, "hi": 1.0}
            for k, c in counts.items()]


def draw(rng: np.random.Generator, n: int, probs: dict[str, float]) -> list[dict]:
    return [r for g in range(8) for r in rows_for(f"s{g}", dict(zip(probs, rng.multinomial(n, list(probs.values())))),
                                                 n)]


HALVED = {"waits": 0.57, "crosses": 0.41, "darts": 0.02, "implausible": 0.0}


def test_perfect_sampler_over_eight_groups_never_fails_and_passes_given_enough_rollouts():
    rng = np.random.default_rng(0)
    statuses = [budget.coverage_gate(draw(rng, 1000, TRUTH)).status for _ in range(40)]
    assert "fail" not in statuses and statuses.count("undecided") >= 35  # +-2 points cannot be shown at 1,000
    # at 40,000 an estimate must stray 4 sd from the truth to leave a +-2 point check undecided
    statuses = [budget.coverage_gate(draw(rng, 40000, TRUTH)).status for _ in range(10)]
    assert statuses == ["pass"] * 10


def test_halved_tail_fails_and_never_passes():
    rng = np.random.default_rng(1)
    checks = [budget.coverage_gate(draw(rng, 4000, HALVED)) for _ in range(10)]
    assert all(c.status == "fail" and "'darts'" in c.text for c in checks)
    assert not any(budget.coverage_gate(draw(rng, 300, HALVED)).status == "pass" for _ in range(40))


def test_undecided_says_how_many_rollouts_would_likely_decide():
    check = budget.coverage_gate(draw(np.random.default_rng(2), 1000, TRUTH))
    assert check.status == "undecided" and "UNDECIDED" in check.text and "rollouts per group likely to decide" in check.text


def test_runner_gate_takes_precedence_in_the_verdict_and_undecided_is_not_fail():
    spec = RunSpec(regime="offline")
    bill = budget.bill_for(spec)
    hist = rows_for("s", {"waits": 550, "crosses": 410, "darts": 40, "implausible": 0}, 1000)
    v = budget.verdict("offline", bill, histograms=hist,
                       gate={"passed": False, "outcome": "FAIL", "text": "release coverage gate FAIL on 1: tv s"})
    assert v.status == "fail" and "release coverage gate FAIL" in v.sentence
    v = budget.verdict("offline", bill, histograms=hist,
                       gate={"passed": False, "outcome": "UNDECIDED", "text": "release coverage gate UNDECIDED"})
    assert v.status == "undecided"  # carried through: not FAIL, not PASS
