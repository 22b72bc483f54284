"""Modes without ground truth: found in a model's own reference samples, then counted in any sample.

When nobody knows a model's true mode rates, the reference is the model's own sampling at a converged
setting (many steps of an accurate solver) and the modes are either a user's classifier or found
automatically here:

1. features: the samples flattened and projected on the reference's first ``max_dims`` principal
   components (fitted on the reference only, so every sample is measured in the same coordinates);
2. clusters: a full-covariance Gaussian mixture fitted by EM for k = 1 .. ``max_clusters``, the best of
   ``restarts`` k-means++ starts and one greedy start (the k - 1 fit plus the sample it explains worst,
   which finds a small far mode that random starts miss); the number of clusters is the k of least BIC
   (BIC = -2 log L + p log n, p = (k - 1) + k d + k d (d + 1) / 2; Schwarz 1978), and the whole BIC
   table is reported so the choice can be checked;
3. tails: clusters whose reference weight is below ``tail_rate`` are flagged as tails (the rare modes
   a fast sampler may lose); the rarest is the gate's tail;
4. outliers: a sample whose density under the fitted mixture is below the reference's own
   ``outlier_quantile`` (0.1%) is counted as ``OUTLIER`` -- the gate's leak label (off every mode the
   reference has, like the driving world's 'implausible').

A sample's mode is otherwise its most probable cluster. ``convergence_tv`` compares the reference at its two
highest NFE settings (same noise): the total variation between their mode histograms, reported with
every run (a reference that moves between them has not converged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_triangular

OUTLIER = "outlier"


@dataclass(frozen=True)
class ModeModel:
    """The clusters found in a reference: projection, mixture parameters, names, the BIC table."""

    mean: np.ndarray  # (D,) feature mean of the reference
    components: np.ndarray  # (D, d) principal axes
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covs: np.ndarray  # (k, d, d)
    bic: dict[int, float] = field(default_factory=dict)
    tail_rate: float = 0.05
    threshold: float = -math.inf  # log density below which a sample is an outlier

    @property
    def k(self) -> int:
        return len(self.weights)

    @property
    def labels(self) -> tuple[str, ...]:
        """Cluster names, most frequent first ('mode 1', 'mode 2', ...)."""
        return tuple(f"mode {i + 1}" for i in range(self.k))

    @property
    def tails(self) -> tuple[str, ...]:
        return tuple(name for name, w in zip(self.labels, self.weights) if w < self.tail_rate)

    def project(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1).astype(np.float64) - self.mean) @ self.components

    def assign(self, x: np.ndarray) -> np.ndarray:
        """(n,) cluster index of each sample (rows of any shape; flattened); -1 for an outlier."""
        lj = _log_joint(self.project(x), self.weights, self.means, self.covs)
        return np.where(_log_norm(lj)[:, 0] < self.threshold, -1, lj.argmax(1))

    def counts(self, x: np.ndarray) -> dict[str, int]:
        idx = self.assign(x)
        return {**{name: int((idx == i).sum()) for i, name in enumerate(self.labels)}, OUTLIER: int((idx < 0).sum())}

    def summary(self) -> dict:
        return {"k": self.k, "criterion": "least BIC of a full-covariance Gaussian mixture over k = 1.."
                f"{max(self.bic) if self.bic else self.k} on {self.components.shape[1]} principal components",
                "bic": {str(k): round(v, 2) for k, v in self.bic.items()},
                "weights": {n: float(w) for n, w in zip(self.labels, self.weights)},
                "tail_rate": self.tail_rate, "tails": list(self.tails), "outlier_log_density": self.threshold}


def _log_gauss(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    chol = np.linalg.cholesky(cov)
    z = solve_triangular(chol, (x - mean).T, lower=True, check_finite=False)
    return -0.5 * (z * z).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)


def _log_joint(x, weights, means, covs) -> np.ndarray:
    return np.stack([math.log(w) + _log_gauss(x, m, c) for w, m, c in zip(weights, means, covs)], axis=1)


def _log_norm(lj: np.ndarray) -> np.ndarray:
    """log sum_j exp(lj[:, j]), per row (n, 1)."""
    top = lj.max(1, keepdims=True)
    return top + np.log(np.exp(lj - top).sum(1, keepdims=True))


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))])
    return np.array(centres)


def _em(x: np.ndarray, centres: np.ndarray, iters: int, reg: float):
    """One EM fit from hard assignments to ``centres``: (log-likelihood, weights, means, covs)."""
    n, d = x.shape
    k = len(centres)
    resp = np.zeros((n, k))
    resp[np.arange(n), ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)] = 1.0
    ll_prev = -np.inf
    eye = np.eye(d) * reg
    for _ in range(iters):
        nk = resp.sum(0) + 1e-12
        weights = nk / n
        means = resp.T @ x / nk[:, None]
        covs = np.stack([(resp[:, j, None] * (x - means[j])).T @ (x - means[j]) / nk[j] + eye for j in range(k)])
        lj = _log_joint(x, np.maximum(weights, 1e-300), means, covs)
        norm = _log_norm(lj)
        ll = float(norm.sum())
        resp = np.exp(lj - norm)
        if ll - ll_prev < 1e-4 * n:  # converged: under 1e-4 nats per sample gained
            break
        ll_prev = ll
    return ll, weights, means, covs


def fit_modes(reference: np.ndarray, *, max_clusters: int = 8, max_dims: int = 8, tail_rate: float = 0.05,
              restarts: int = 3, iters: int = 100, seed: int = 0, outlier_quantile: float = 0.001) -> ModeModel:
    """Clusters of the reference samples (n, ...) with k chosen by least BIC (see the module doc)."""
    if not 1 <= max_clusters <= 32:
        raise ValueError(f"max_clusters={max_clusters!r} must be in [1, 32]")
    if not 0.0 < tail_rate < 0.5:
        raise ValueError(f"tail_rate={tail_rate!r} must be in (0, 0.5)")
    flat = reference.reshape(len(reference), -1).astype(np.float64)
    n = len(flat)
    if n < 10 * max_clusters:
        raise ValueError(f"reference samples={n} are too few to fit up to {max_clusters} clusters; "
                         f"need at least {10 * max_clusters}")
    mean = flat.mean(0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    d = int(min(max_dims, (s > 1e-9 * s[0]).sum())) if s[0] > 0 else 1
    components = vt[:d].T
    x = (flat - mean) @ components
    reg = 1e-6 * float(x.var(0).mean() + 1e-12)
    rng = np.random.default_rng(seed)
    best, bic, prev = None, {}, None
    for k in range(1, max_clusters + 1):
        starts = [_kmeans_pp(x, k, rng) for _ in range(restarts if k > 1 else 1)]
        if prev is not None:  # greedy: the k - 1 fit's means plus the sample it explains worst
            _, w0, m0, c0 = prev
            starts.append(np.vstack([m0, x[_log_norm(_log_joint(x, w0, m0, c0))[:, 0].argmin()]]))
        fits = [_em(x, s, iters, reg) for s in starts]
        ll, w, m, c = prev = max(fits, key=lambda f: f[0])
        p = (k - 1) + k * d + k * d * (d + 1) / 2
        bic[k] = -2 * ll + p * math.log(n)
        if best is None or bic[k] < best[0]:
            best = (bic[k], w, m, c)
    _, w, m, c = best
    order = np.argsort(-w)
    threshold = float(np.quantile(_log_norm(_log_joint(x, w, m, c))[:, 0], outlier_quantile))
    return ModeModel(mean, components, w[order], m[order], c[order], bic, tail_rate, threshold)
