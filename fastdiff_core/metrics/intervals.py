"""Binomial confidence intervals, shared by every histogram fastdiff draws (torch-free)."""

from __future__ import annotations

import math
from statistics import NormalDist


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
