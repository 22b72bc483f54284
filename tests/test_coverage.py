"""Coverage metrics: hand-computed k-NN cases, diversity and distances, and why branch intervals are needed."""

import math

import pytest
import torch

from fastdiff_core.metrics.coverage import (
    branch_histogram, density_coverage, knn_radii, mmd_rbf, precision_recall, sliced_wasserstein, tail_rate,
    total_variation, vendi_score,
)
from fastdiff_core.worlds.driving.branches import branch_counts
from fastdiff_core.worlds.driving.scenes import branch_probabilities, get_scene
from fastdiff_core.worlds.driving.simulator import simulate


def col(*v):
    return torch.tensor(v, dtype=torch.float64)[:, None]


REAL = col(0, 1, 2, 10, 11)
FAKE = col(0.5, 5, 20, 2.5)


def test_knn_radii_by_hand():
    # k = 1 nearest other point
    assert knn_radii(REAL, 1).tolist() == [1, 1, 1, 1, 1]
    assert knn_radii(FAKE, 1).tolist() == [2, 2.5, 15, 2]
    assert knn_radii(REAL, 2).tolist() == [2, 1, 2, 8, 9]


def test_precision_recall_by_hand():
    # precision: fakes inside some real ball (radius 1 around 0,1,2,10,11): 0.5 and 2.5 -> 2/4
    # recall: reals inside some fake ball (0.5:r2, 5:r2.5, 20:r15, 2.5:r2): all five -> 1
    assert precision_recall(REAL, FAKE, k=1) == (0.5, 1.0)
    # k = 2: real radii [2, 1, 2, 8, 9]: 0.5 (ball of 0), 5 (ball of 10: |5-10|=5 <= 8), 2.5 (ball of 2);
    # 20 is 9 from 11 -> inside (<= 9): 4/4. Fake radii k=2: [2.0, 4.5, 17.5, 2.5]; reals: all inside -> 1
    assert precision_recall(REAL, FAKE, k=2) == (1.0, 1.0)


def test_density_coverage_by_hand():
    # density: 0.5 in balls of 0 and 1 (2), 5 in none, 20 in none, 2.5 in ball of 2 (1): 3 / (1 * 4)
    # coverage: balls of 0, 1, 2 hold a fake, 10 and 11 do not: 3/5
    d, c = density_coverage(REAL, FAKE, k=1)
    assert d == pytest.approx(0.75) and c == pytest.approx(0.6)


def test_knn_metrics_reject_bad_k_and_shapes():
    with pytest.raises(ValueError, match="k=4"):
        precision_recall(REAL, FAKE, k=4)
    with pytest.raises(ValueError, match="shape"):
        density_coverage(REAL, torch.zeros(3, 2), k=1)


def test_vendi_counts_effective_modes():
    same = torch.zeros(50, 3)
    assert vendi_score(same, 1.0) == pytest.approx(1.0, abs=1e-6)
    far = torch.eye(20) * 100
    assert vendi_score(far, 1.0) == pytest.approx(20.0, rel=1e-6)
    two = torch.cat([torch.zeros(30, 2), torch.full((30, 2), 100.0)])
    assert vendi_score(two, 1.0) == pytest.approx(2.0, rel=1e-6)


def test_mmd_and_sliced_wasserstein_separate_shifted_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    c = torch.randn(400, 4, generator=g) + 1.0
    assert abs(mmd_rbf(a, b, 2.0)) < 0.01 < mmd_rbf(a, c, 2.0)
    assert sliced_wasserstein(a, b) < 0.15 < sliced_wasserstein(a, c)
    # shift (1,1,1,1): W1 along a uniform unit direction u is |u . 1| = 2 |u_1| in law; E|u_1| = 1 / (sqrt(pi) Gamma(5/2)) in 4-D
    expected = 2 / (math.sqrt(math.pi) * math.gamma(2.5))
    assert sliced_wasserstein(a, c) == pytest.approx(expected, rel=0.15)


def test_histogram_tv_and_tail_rate():
    counts = {"waits": 60, "crosses": 30, "darts": 5, "implausible": 5}
    truth = {"waits": 0.6, "crosses": 0.35, "darts": 0.05}
    rows = branch_histogram(counts, truth, group="s")
    assert [r["label"] for r in rows] == ["waits", "crosses", "darts", "implausible"]
    assert rows[3]["truth"] == 0.0 and rows[3]["rate"] == 0.05 and rows[0]["n"] == 100
    assert all(r["lo"] <= r["rate"] <= r["hi"] for r in rows)
    assert total_variation(counts, truth) == pytest.approx(0.5 * (0.05 + 0.05))
    rate, lo, hi = tail_rate(counts, "darts")
    assert rate == 0.05 and lo < 0.05 < hi


def _features(r):
    return r[:, 1:].reshape(len(r), -1)


def test_branch_intervals_catch_a_halved_tail_that_global_precision_recall_miss():
    """Why the per-branch check exists: halve the darting tail and global P/R hardly move."""
    scene = get_scene("red_light_jaywalker")
    truth = branch_probabilities(scene, "keep", 6)
    n = 3000
    real = simulate(scene, "keep", n, 6, generator=torch.Generator().manual_seed(10))
    good, code = simulate(scene, "keep", n, 6, generator=torch.Generator().manual_seed(11), with_branch=True)
    spare, spare_code = simulate(scene, "keep", 4 * n, 6, generator=torch.Generator().manual_seed(12),
                                 with_branch=True)
    # halved tail: every second darting rollout becomes a waiting one (the modal future)
    halved = good.clone()
    dart_rows = (code == 2).nonzero().squeeze(1)[::2]
    halved[dart_rows] = spare[spare_code == 0][: len(dart_rows)]
    p_good, r_good = precision_recall(_features(real), _features(good), k=5)
    p_half, r_half = precision_recall(_features(real), _features(halved), k=5)
    assert abs(p_good - p_half) < 0.05 and abs(r_good - r_half) < 0.05  # global metrics: a few percent
    _, lo, hi = tail_rate(branch_counts(good, scene), "darts")
    assert lo <= truth["darts"] <= hi  # the perfect sample set passes the tail check
    _, lo, hi = tail_rate(branch_counts(halved, scene), "darts")
    assert hi < truth["darts"]  # the halved tail is caught
