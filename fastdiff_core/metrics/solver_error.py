"""Solver error against an exact reference, and mode coverage against ground truth.

Every function takes the solver's terminal samples and the reference solution of the same ODE from
the same noise (rows paired), so what they measure is integration error alone, with no model error.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fastdiff_core.metrics.intervals import wilson_interval


def _paired(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape != ref.shape:
        raise ValueError(f"samples shape {tuple(x.shape)} != reference shape {tuple(ref.shape)}; rows must be paired")
    return (x.to(torch.float64) - ref.to(torch.float64)).reshape(x.shape[0], -1)


def terminal_rmse(x: torch.Tensor, ref: torch.Tensor) -> float:
    """sqrt(mean over samples of ||x - ref||^2 / dim): root mean squared error per coordinate."""
    return float(_paired(x, ref).square().mean().sqrt())


def per_sample_error(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample RMS error over coordinates."""
    return _paired(x, ref).square().mean(dim=1).sqrt()


def median_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Median over samples of the per-sample RMS error (robust to the few samples that flip mode)."""
    return float(per_sample_error(x, ref).median())


def convergence_order(nfes: Sequence[float], errors: Sequence[float]) -> float:
    """Empirical order p in error ~ C NFE^(-p): minus the least-squares slope of log error vs log NFE."""
    if len(nfes) != len(errors) or len(nfes) < 2:
        raise ValueError(f"need >= 2 paired (nfe, error) points, got {len(nfes)} and {len(errors)}")
    if any(e <= 0 or not math.isfinite(e) for e in errors) or any(n <= 0 for n in nfes):
        raise ValueError(f"errors={list(errors)!r} and nfes={list(nfes)!r} must be positive and finite")
    lx = [math.log(n) for n in nfes]
    ly = [math.log(e) for e in errors]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    return -slope


def mode_flip_rate(modes: torch.Tensor, ref_modes: torch.Tensor) -> float:
    """Fraction of samples assigned to a different mode than their own reference trajectory."""
    if modes.shape != ref_modes.shape:
        raise ValueError(f"modes shape {tuple(modes.shape)} != ref_modes shape {tuple(ref_modes.shape)}")
    return float((modes != ref_modes).to(torch.float64).mean())


def paired_rate_difference(moved_in: int, moved_out: int, n: int) -> dict[str, float | int | bool]:
    """A rate (of the rare mode, of the tail) on samples minus the same rate on their paired references:
    ``moved_in`` samples are in where their reference is not, ``moved_out`` the reverse, of ``n``.

    Returns the difference (in - out) / n, its standard error sqrt(in + out) / n (McNemar's variance
    under no difference: only the samples that moved carry information about it) and whether the
    difference lies within 2 SE (no moves: within). As a test of "no difference" the 2-SE rule rejects
    about 5% of the time when there is none (tests/test_metrics.py simulates it)."""
    if n < 1 or moved_in < 0 or moved_out < 0 or moved_in + moved_out > n:
        raise ValueError(f"moved_in={moved_in!r}, moved_out={moved_out!r} must be >= 0 with a sum <= n={n!r} >= 1")
    return {"rare_in": moved_in, "rare_out": moved_out, "n": n, "rare_diff": (moved_in - moved_out) / n,
            "rare_diff_se": math.sqrt(moved_in + moved_out) / n,
            "rare_within_2se": abs(moved_in - moved_out) <= 2 * math.sqrt(moved_in + moved_out)}


def mode_histogram(modes: torch.Tensor, truth: Sequence[float], labels: Sequence[str], group: str,
                   confidence: float = 0.95) -> list[dict]:
    """Rows {group, label, count, n, rate, lo, hi, truth}: each mode's rate with its Wilson interval
    next to its true weight."""
    if len(truth) != len(labels):
        raise ValueError(f"truth has {len(truth)} entries but labels has {len(labels)}")
    n = int(modes.numel())
    counts = torch.bincount(modes.reshape(-1).to(torch.int64).cpu(), minlength=len(labels)).tolist()
    rows = []
    for k, label in enumerate(labels):
        lo, hi = wilson_interval(counts[k], n, confidence)
        rows.append({"group": group, "label": label, "count": counts[k], "n": n, "rate": counts[k] / n,
                     "lo": lo, "hi": hi, "truth": float(truth[k])})
    return rows
