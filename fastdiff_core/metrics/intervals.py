"""Binomial confidence intervals, shared by every histogram fastdiff draws (torch-free).

Wilson for display; Clopper-Pearson (exact, one look) and a beta-binomial confidence sequence
(anytime-valid, any number of looks) for the coverage gate's decisions (``metrics.gate``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike


def z_for(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level in (0, 1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate count/n (Wilson 1927).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and does not collapse to a point at
    count = 0, which is exactly the case of a tail branch that a fast sampler deleted.
    """
    if n <= 0:
        raise ValueError(f"n={n!r} must be a positive number of samples")
    if not 0 <= count <= n:
        raise ValueError(f"count={count!r} must be in [0, n={n}]")
    return rate_interval(count / n, n, confidence)


def rate_interval(rate: float, n_eff: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a rate estimated from ``n_eff`` effective samples: count/n for plain
    sampling, a self-normalised importance-weighted rate with Kish's effective sample size otherwise
    (Kish 1965; the usual plug-in for weighted proportions). Always contains ``rate``."""
    if not n_eff > 0:
        raise ValueError(f"n_eff={n_eff!r} must be a positive effective number of samples")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate={rate!r} must be in [0, 1]")
    z = z_for(confidence)
    p, n = float(rate), float(n_eff)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


# A label's own variance estimate is trusted only with at least this many rollouts in it and out of it:
# with fewer, the plug-in variance can be near 0 by chance (docs/importance.md measures the rest).
MIN_LABEL_ROLLOUTS = 10


def snis_rate_variance(weight_k, weight_sq_k, weight, weight_sq):
    """Delta-method variance of a self-normalised importance-weighted rate r_k = S_k / S (Owen 2013,
    Monte Carlo theory, methods and examples, sec. 9.2, eq. 9.8), elementwise over numpy arrays or torch
    tensors: from per label S_k = sum of w, Q_k = sum of w^2 and their totals S, Q over all rollouts,

        var_k = [(1 - r_k)^2 Q_k + r_k^2 (Q - Q_k)] / S^2     (= r_k (1 - r_k) / n when every w = 1)."""
    r = weight_k / weight
    return ((1 - r) ** 2 * weight_sq_k + r * r * (weight_sq - weight_sq_k)) / (weight * weight)


def label_effective_n(rate, var, count, n, kish):
    """The effective sample size of each label's own rate, r (1 - r) / var (numpy, elementwise): the n at
    which a plain binomial rate would have this variance. More than Kish's global (sum w)^2 / sum w^2
    for a label the proposal oversamples (the tail it targets), less for one it undersamples, where
    Kish's n overstates the precision (docs/importance.md: simulated family-wise miss rates).

    Used where it is valid: at least ``MIN_LABEL_ROLLOUTS`` raw rollouts in the label and outside it
    and a positive variance; else Kish's ``kish``. With every weight 1 it is n."""
    rate, var, count = np.asarray(rate, float), np.asarray(var, float), np.asarray(count, float)
    n = np.asarray(n, float)
    valid = (count >= MIN_LABEL_ROLLOUTS) & (n - count >= MIN_LABEL_ROLLOUTS) & (var > 0)
    return np.where(valid, rate * (1 - rate) / np.where(valid, var, 1.0), np.asarray(kish, float))


def clopper_pearson(successes: ArrayLike, n: ArrayLike, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided (1 - alpha) binomial interval (Clopper & Pearson 1934), elementwise.

    Fixed-n: valid for one look at a sample size chosen in advance. ``successes`` may be fractional
    (an importance-weighted effective count rate * n_eff); the beta quantiles are then those of the
    continuous extension, which is the usual effective-sample-size approximation.

    A run's verdict asks for the same small intervals again and again (the gate's 71-step grid of
    larger n, every run of the same size and counts): the last ``CP_KEEP`` answers for inputs of up to
    ``CP_CACHED_SIZE`` elements are kept, keyed by the exact inputs, and each bound is computed only
    where it is not 0 or 1 by definition. Both give exactly what the plain formula gives.
    """
    s, m = _checked_counts(successes, n)
    _check_alpha(alpha)
    if s.size > CP_CACHED_SIZE:
        return _clopper_pearson(s, m, alpha)
    key = (s.shape, s.tobytes(), m.tobytes(), float(alpha))
    got = _CP_ANSWERS.get(key)
    if got is None:
        got = _clopper_pearson(s, m, alpha)
        if len(_CP_ANSWERS) >= CP_KEEP:
            _CP_ANSWERS.pop(next(iter(_CP_ANSWERS), None), None)
        _CP_ANSWERS[key] = got
    return got[0].copy(), got[1].copy()


CP_KEEP = 256
CP_CACHED_SIZE = 4096
_CP_ANSWERS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _clopper_pearson(s: np.ndarray, m: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The beta quantiles where they are needed: lo = 0 where s = 0, hi = 1 where s = n. Every argument
    passed is valid (q in (0, 1), shapes > 0), for which ``beta.ppf`` is ``beta._ppf`` (its argument
    checks and broadcasting cost ~0.1 ms a call)."""
    from scipy.stats import beta

    ppf = getattr(beta, "_ppf", beta.ppf)
    lo, hi = np.zeros(s.shape), np.ones(s.shape)
    some, short = s > 0, s < m
    if some.any():
        lo[some] = ppf(alpha / 2, np.maximum(s[some], 1e-12), m[some] - s[some] + 1)
    if short.any():
        hi[short] = ppf(1 - alpha / 2, s[short] + 1, np.maximum(m[short] - s[short], 1e-12))
    return lo, hi


def beta_binomial_cs(successes: ArrayLike, n: ArrayLike, alpha: float, prior: tuple[float, float] = (0.5, 0.5),
                     iterations: int = 34) -> tuple[np.ndarray, np.ndarray]:
    """Anytime-valid (1 - alpha) confidence sequence for a Bernoulli rate, elementwise.

    The beta-binomial conjugate mixture martingale (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon
    2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist., section 3
    and Table 2; Waudby-Smith & Ramdas 2020):

        M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S))

    is a nonnegative martingale with M_0 = 1 under rate p, so by Ville's inequality
    P(exists n: M_n(p) >= 1/alpha) <= alpha, and {p : M_n(p) < 1/alpha} covers p at every n at once:
    a run may look after every batch and stop whenever it likes. log M_n is convex in p with its
    minimum at S/n (where M_n <= 1), so the set is an interval around S/n; each end is found by
    bisection (``iterations`` halvings of [0, S/n] and [S/n, 1]). ``prior`` = (a, b): Jeffreys by
    default. Intersecting the intervals over time (``SequentialGate`` does) stays valid.
    """
    s, m = _checked_counts(successes, n)
    _check_alpha(alpha)
    from scipy.special import betaln, xlog1py, xlogy

    a, b = prior
    if not (a > 0 and b > 0):
        raise ValueError(f"prior={prior!r} must be two positive numbers")
    # log of the mixture's marginal likelihood minus log(1/alpha): M_n(p) < 1/alpha  <=>  excess(p) > 0
    excess = betaln(a + s, b + m - s) - betaln(a, b) + math.log(alpha)

    def inside(p: np.ndarray) -> np.ndarray:
        return xlogy(s, p) + xlog1py(m - s, -p) > excess  # p^S (1-p)^(n-S) > B(..)/B(a,b) * alpha

    centre = np.divide(s, m, out=np.full_like(s, 0.5), where=m > 0)
    lo_out, lo_in = np.zeros_like(centre), centre.copy()  # lo_out excluded (or 0), lo_in included
    hi_in, hi_out = centre.copy(), np.ones_like(centre)
    lo_zero, hi_one = inside(np.zeros_like(centre)), inside(np.ones_like(centre))
    for _ in range(iterations):
        mid = 0.5 * (lo_out + lo_in)
        ok = inside(mid)
        lo_in, lo_out = np.where(ok, mid, lo_in), np.where(ok, lo_out, mid)
        mid = 0.5 * (hi_in + hi_out)
        ok = inside(mid)
        hi_in, hi_out = np.where(ok, mid, hi_in), np.where(ok, hi_out, mid)
    # report the outer ends of the bracket: conservative by at most 2^-iterations
    return np.where(lo_zero, 0.0, lo_out), np.where(hi_one, 1.0, hi_out)


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")


def _checked_counts(successes: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s, m = np.broadcast_arrays(np.asarray(successes, dtype=float), np.asarray(n, dtype=float))
    if np.any(~np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"n={m[(~np.isfinite(m)) | (m < 0)].ravel()[:3].tolist()} must be finite and >= 0")
    bad = ~np.isfinite(s) | (s < 0) | (s > m)
    if np.any(bad):
        raise ValueError(f"successes={s[bad].ravel()[:3].tolist()} must be in [0, n]")
    return s.astype(float), m.astype(float)


def quantile(values: ArrayLike, q: float) -> float:
    """The ``q``-quantile of ``values`` by linear interpolation between order statistics (numpy's default,
    ``statistics.quantiles(method='inclusive')``): the one definition every percentile fastdiff reports
    uses (latency percentiles, quartiles over worlds)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q={q!r} must be a number in [0, 1]")
    ordered = sorted(float(v) for v in np.ravel(values))
    if not ordered:
        raise ValueError("values=[] must hold at least one value")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_interval(values: list[float] | tuple[float, ...], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval for the median of repeated timings: order statistics (x_(k), x_(n+1-k))
    with the largest k whose binomial(n, 1/2) coverage is still >= ``confidence`` (Hahn & Meeker,
    Statistical Intervals, sec. 5.2). Timings on a shared machine are skewed and jumpy, so no normal
    approximation. Returns (lo, hi, achieved confidence); with fewer timings than the level allows
    (n < 6 at 95%) the widest interval (min, max) and its lower confidence; None for n < 2.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n < 2:
        return None

    def coverage(k: int) -> float:  # P(x_(k) <= median <= x_(n+1-k)) = 1 - 2 P(Bin(n, 1/2) < k)
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0 ** n

    k = 1
    while k + 1 <= n // 2 and coverage(k + 1) >= confidence:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def t_interval(values: list[float] | tuple[float, ...], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, lo, hi): the Student-t interval for the mean of a few independent repeats (seeds); no
    interval (None, None) from one value. With 3 seeds the t quantile is 4.30: intervals are wide."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    xs = np.asarray(values, dtype=float)
    if xs.size == 0:
        raise ValueError("values is empty: an interval needs at least one value")
    mean = float(xs.mean())
    if xs.size < 2:
        return mean, None, None
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, xs.size - 1) * xs.std(ddof=1) / math.sqrt(xs.size))
    return mean, mean - half, mean + half


def difference_interval(a: ArrayLike, a_lo: ArrayLike, a_hi: ArrayLike, b: ArrayLike, b_lo: ArrayLike,
                        b_hi: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a - b, lo, hi): an interval for the difference of two independent estimates from their own
    intervals, by MOVER (Zou & Donner 2008; with Wilson intervals this is Newcombe's 1998 hybrid score
    interval for a difference of proportions, method 10):
        lo = d - sqrt((a - a_lo)^2 + (b_hi - b)^2),  hi = d + sqrt((a_hi - a)^2 + (b - b_lo)^2).
    Elementwise over arrays; NaN where an input is missing."""
    a, a_lo, a_hi, b, b_lo, b_hi = (np.asarray(v, dtype=float) for v in (a, a_lo, a_hi, b, b_lo, b_hi))
    d = a - b
    return d, d - np.hypot(a - a_lo, b_hi - b), d + np.hypot(a_hi - a, b - b_lo)
