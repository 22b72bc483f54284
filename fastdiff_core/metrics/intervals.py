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
    z = z_for(confidence)
    p = count / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
