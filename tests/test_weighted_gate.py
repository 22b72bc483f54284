"""Importance-weighted rates in the gate: each label's own effective n, r (1 - r) / var, keeps the
gate's error rates where Kish's global n_eff does not, and lets it decide sooner where the weighting
really reduces a label's variance (docs/importance.md; ``fastdiff bench gate --weighted``).

Simulated with fixed seeds in the latent-Gaussian model of the driving tail proposal
(``bench.gate.simulate_weighted``: mu > 0 points the proposal at the tail, mu < 0 away from it). The
rows are built by the product's functions and judged by the gate's layout.

Sizing (as tests/test_gate.py): each error-rate test asserts at most 5% of T = 4,000 trials; the
largest family-wise miss rate measured with the labels' own n is 3.5% (``fastdiff bench gate
--weighted``, docs/importance.md), and P(Binomial(4000, 0.035) > 200) < 1e-6 (asserted in ``_limit``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from fastdiff_core.bench.gate import simulate_weighted, weighted_decisions, weighted_layout, weighted_truth
from fastdiff_core.metrics.intervals import label_effective_n, snis_rate_variance
from fastdiff_core.rollout import BranchTally

TRIALS = 4000


def _limit(trials: int, worst: float = 0.035) -> int:
    limit = int(0.05 * trials)
    assert binom.sf(limit, trials, worst) < 1e-6
    return limit


def _kish(sim) -> np.ndarray:
    return np.broadcast_to(sim[2][:, None], sim[0].shape)


# both tails, both n and both directions of the proposal, each twice (the full grid: bench gate --weighted)
@pytest.mark.parametrize("p_tail,n,mu", [(0.139, 300, -1.0), (0.139, 1000, 2.0), (0.04, 300, 2.0), (0.04, 1000, -1.0)])
def test_label_effective_n_keeps_the_gate_error_rates(p_tail, n, mu):
    truth = weighted_truth(p_tail)
    r, n_label, _ = simulate_weighted(p_tail, 1.0, n, mu, TRIALS, seed=n + int(100 * p_tail))
    miss, codes = weighted_decisions(r, n_label, truth)
    assert miss.sum() <= _limit(TRIALS)  # every interval covers at once: the event the error control rests on
    assert (codes == -1).sum() <= _limit(TRIALS)  # a perfect sampler FAILs
    halved, n_halved, _ = simulate_weighted(p_tail, 0.5, n, mu, TRIALS, seed=n + 7)
    assert (weighted_decisions(halved, n_halved, truth)[1] == 1).sum() <= _limit(TRIALS)  # a halved tail PASSes


def test_kish_overstates_the_precision_of_a_label_the_proposal_undersamples():
    # mu < 0: the darts get weights near 2 and Kish's single n_eff is too large for their rate. The three
    # informative intervals are each at alpha / 4, so together they may miss at most 3.75%: with Kish's
    # n they miss more often (measured 5.5% of 8,000), with the labels' own n they do not (2.1%).
    truth = weighted_truth(0.04)
    sim = simulate_weighted(0.04, 1.0, 1000, -1.0, 8000, seed=3)
    by_kish = weighted_decisions(sim[0], _kish(sim), truth)[0].mean()
    by_label = weighted_decisions(sim[0], sim[1], truth)[0].mean()
    nominal = 3 * weighted_layout().alpha_per_interval
    assert by_label < nominal < by_kish and by_kish > by_label + 0.015  # the gap is ~11 sd
    assert np.median(sim[1][:, 2]) < 0.8 * np.median(sim[2])


def test_a_proposal_on_the_tail_gives_the_tail_check_more_effective_n_and_more_power():
    truth = weighted_truth(0.04)
    sim = simulate_weighted(0.04, 0.5, 1000, 2.0, 2000, seed=5)
    assert np.median(sim[1][:, 2]) > 4 * np.median(sim[2])  # measured ~5.8x
    fail_label = (weighted_decisions(sim[0], sim[1], truth)[1] == -1).mean()
    fail_kish = (weighted_decisions(sim[0], _kish(sim), truth)[1] == -1).mean()
    assert fail_label > fail_kish + 0.3


def test_label_effective_n_falls_back_to_kish_where_its_variance_is_not_trusted():
    n_eff = label_effective_n([0.0, 0.004, 0.5, 0.3], [0.0, 1e-6, 0.0, 0.001], [0, 4, 500, 300], 1000, 640.0)
    assert n_eff.tolist() == [640.0, 640.0, 640.0, pytest.approx(0.21 / 0.001)]
    var = snis_rate_variance(np.array([300.0]), np.array([300.0]), 1000.0, 1000.0)
    assert var[0] == pytest.approx(0.3 * 0.7 / 1000)  # unweighted: p (1 - p) / n, so the effective n is n


def test_branch_tally_rows_carry_each_label_effective_n_and_kish():
    import torch

    codes = torch.tensor([0, 1, 2, 2] * 100)
    labels = ("waits", "crosses", "darts", "implausible")
    plain = BranchTally(len(labels)).add(codes).rows({"waits": 0.25}, group="g", labels=labels)
    assert [r["n_eff"] for r in plain] == [400.0] * 4 and plain[0]["n_kish"] == 400.0
    log_w = torch.where(codes == 2, -0.5, 0.1).double()  # the tail drawn more often than p: smaller weights
    rows = BranchTally(len(labels)).add(codes, log_w).rows({"waits": 0.25}, group="g", labels=labels)
    darts = next(r for r in rows if r["label"] == "darts")
    assert darts["n_eff"] == pytest.approx(darts["rate"] * (1 - darts["rate"]) / darts["var"])
    assert darts["lo"] <= darts["rate"] <= darts["hi"] and darts["n_kish"] == rows[0]["n_kish"] < 400
    assert rows[3]["n_eff"] == rows[3]["n_kish"]  # 'implausible': no rollouts, Kish's n
