"""Coverage metrics: did the generated futures keep every branch, at the right rate?

Branch level (per scene, against the ground truth): the histogram with Wilson intervals, total
variation distance, and the tail rate with its interval. Sample level (against simulator samples of
the same scene): k-NN precision / recall (Kynkäänniemi et al. 2019), density / coverage (Naeem et
al. 2020), the Vendi diversity score with an RBF kernel (Friedman & Dieng 2023), the RBF-kernel MMD
(Gretton et al. 2012, unbiased) and the sliced Wasserstein-1 distance.

Sample-level metrics see the whole trajectory but not the branch structure: a tail that is halved
moves them by about the tail's mass, which is within their noise, so branch intervals are the
check that catches it (tests/test_coverage.py proves it on a halved tail).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from fastdiff_core.metrics.intervals import wilson_interval


# ---------------------------------------------------------------------------------------------
# Branch level
# ---------------------------------------------------------------------------------------------


def _total(counts: Mapping[str, int]) -> int:
    n = sum(int(c) for c in counts.values())
    if n <= 0:
        raise ValueError(f"counts={dict(counts)!r} must contain at least one sample")
    return n


def branch_histogram(counts: Mapping[str, int], truth: Mapping[str, float], *, group: str = "",
                     confidence: float = 0.95) -> list[dict]:
    """Rows {group, label, count, n, rate, lo, hi, truth} for every label in counts or truth
    (a label missing from ``truth`` has true rate 0: e.g. 'implausible')."""
    n = _total(counts)
    rows = []
    for label in list(truth) + [k for k in counts if k not in truth]:
        c = int(counts.get(label, 0))
        lo, hi = wilson_interval(c, n, confidence)
        rows.append({"group": group, "label": label, "count": c, "n": n, "rate": c / n, "lo": lo, "hi": hi,
                     "truth": float(truth.get(label, 0.0))})
    return rows


def total_variation(counts: Mapping[str, int], truth: Mapping[str, float]) -> float:
    """0.5 * sum |generated rate - true rate| over every label (mass on a label with no truth counts)."""
    n = _total(counts)
    labels = dict.fromkeys([*counts, *truth])  # in a fixed order: a set's order (string hashing) changes the sum's last bit
    return 0.5 * sum(abs(int(counts.get(k, 0)) / n - float(truth.get(k, 0.0))) for k in labels)


def tail_rate(counts: Mapping[str, int], tail: str, confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, lo, hi) of the tail branch with its Wilson interval."""
    n = _total(counts)
    c = int(counts.get(tail, 0))
    lo, hi = wilson_interval(c, n, confidence)
    return c / n, lo, hi


# ---------------------------------------------------------------------------------------------
# Sample level: k-NN manifolds
# ---------------------------------------------------------------------------------------------


def _check_sets(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real shape={tuple(real.shape)} and fake shape={tuple(fake.shape)} must be (N, d), (M, d)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k={k!r} must be an integer in [1, {min(len(real), len(fake)) - 1}]")
    return real.to(torch.float64), fake.to(torch.float64)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row: (N,)."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # k + 1: the row itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    precision = share of fake samples inside the real manifold (union of balls around each real
    sample with its k-NN radius among reals); recall = share of real samples inside the fake manifold.
    """
    real, fake = _check_sets(real, fake, k)
    d = torch.cdist(fake, real)  # (M, N)
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    precision = (d <= r_real[None, :]).any(1).double().mean().item()
    recall = (d.T <= r_fake[None, :]).any(1).double().mean().item()
    return precision, recall


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020).

    density = 1/(k M) * sum_j sum_i 1[fake_j in B(real_i, r_i)]  (can exceed 1);
    coverage = 1/N * sum_i 1[some fake_j in B(real_i, r_i)], r_i the k-NN radius of real_i among reals.
    """
    real, fake = _check_sets(real, fake, k)
    inside = torch.cdist(fake, real) <= knn_radii(real, k)[None, :]  # (M, N)
    density = inside.double().sum().item() / (k * len(fake))
    coverage = inside.any(0).double().mean().item()
    return density, coverage


# ---------------------------------------------------------------------------------------------
# Diversity and distribution distances
# ---------------------------------------------------------------------------------------------


def median_bandwidth(x: torch.Tensor) -> float:
    """Median pairwise distance (the usual RBF bandwidth heuristic)."""
    d = torch.cdist(x.double(), x.double())
    iu = torch.triu_indices(len(x), len(x), 1)
    return float(d[iu[0], iu[1]].median())


def vendi_score(x: torch.Tensor, bandwidth: float) -> float:
    """Vendi score with the RBF kernel exp(-|a-b|^2 / (2 h^2)): exp(entropy of eig(K / n)).
    1 for identical samples, n for samples that are all far apart (Friedman & Dieng 2023)."""
    if not (isinstance(bandwidth, (int, float)) and bandwidth > 0 and math.isfinite(bandwidth)):
        raise ValueError(f"bandwidth={bandwidth!r} must be a finite number > 0")
    x = x.to(torch.float64)
    k = torch.exp(-torch.cdist(x, x).pow(2) / (2 * bandwidth**2)) / len(x)
    ev = torch.linalg.eigvalsh(k).clamp(min=0)
    ev = ev[ev > 1e-12]
    return float(torch.exp(-(ev * ev.log()).sum()))


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Unbiased squared MMD with the RBF kernel (Gretton et al. 2012); ~0 for equal distributions."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd_rbf needs at least 2 samples in each set")
    x, y = x.to(torch.float64), y.to(torch.float64)
    g = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))  # noqa: E731
    kxx, kyy, kxy = g(x, x), g(y, y), g(x, y)
    m, n = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance: mean over random unit directions of the 1-D W1 of the
    projections (quantile matching on a common grid of 256 levels)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    g = torch.Generator(device="cpu").manual_seed(seed)
    dirs = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(x.device)
    q = torch.linspace(0, 1, 256, dtype=torch.float64, device=x.device)
    px, py = torch.quantile(x @ dirs, q, dim=0), torch.quantile(y @ dirs, q, dim=0)
    return float((px - py).abs().mean())
