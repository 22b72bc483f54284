"""Cost at equal quality: where a reference's TV-vs-NFE curve reaches a sampler's TV, with an interval over seeds.

A student (or any cheap sampler) is compared with its teacher at equal branch TV: the teacher NFE per
frame at which the teacher's TV-vs-NFE curve reaches the student's TV, and the cost ratio there. The
curve is measured at a few settings only, so the NFE is interpolated between them, never rounded up
to the next measured setting (taking "the cheapest setting with TV <= the student's" is an upper bound
on the teacher's cost, not the figure).

Per seed s (teacher curve and student measured with the same seed):

- the curve is the teacher's Pareto frontier: its settings sorted by NFE, keeping a setting only if its
  TV is below that of every cheaper one (the best TV reachable with at most that NFE);
- x_s = the NFE at which the frontier, interpolated linearly in (log NFE, log TV), reaches the student's
  TV: exact for a power law TV = c NFE^-p, the usual shape of a solver's error (and exact at the
  measured settings for any monotone curve);
- the teacher's cost at x_s is interpolated linearly in NFE between the same two settings (cost per
  rollout is affine in NFE); speed-up_s = that cost / the student's cost, NFE ratio_s = x_s / student NFE.

Over seeds: the point is the geometric mean, the interval a Student-t interval on the log values (with
log-normal TV noise small against the log-TV gap between settings, log x_s is nearly affine in the noise,
so the interval is nearly exact: tests/test_equal_tv.py measures its coverage by simulation).
A student whose TV is below every frontier setting in some seed needs more teacher NFE than was
measured: x_s is clipped to the most accurate setting and the row is a lower bound (``bound="above"``,
no upper end); one above every setting (worse than the cheapest teacher setting) is an upper bound
(``bound="below"``, no lower end). Both in one row: no estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastdiff_core.metrics.intervals import t_interval


def frontier(points: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """The settings (``nfe``, ``tv``, ``cost``) sorted by NFE with strictly falling TV (Pareto frontier)."""
    out: list[Mapping[str, float]] = []
    for p in sorted(points, key=lambda p: (p["nfe"], p["tv"])):
        if not out or p["tv"] < out[-1]["tv"]:
            out.append(p)
    return out


def nfe_at_tv(points: Sequence[Mapping[str, float]], tv: float) -> tuple[float, float, str | None]:
    """(NFE, cost, bound) where the frontier of ``points`` reaches ``tv`` (see the module doc)."""
    front = frontier(points)
    if not front:
        raise ValueError("points is empty: the reference curve needs at least one measured setting")
    if front[0]["tv"] <= tv:
        return float(front[0]["nfe"]), float(front[0]["cost"]), "below" if front[0]["tv"] < tv else None
    if front[-1]["tv"] > tv:
        return float(front[-1]["nfe"]), float(front[-1]["cost"]), "above"
    i = next(k for k, p in enumerate(front) if p["tv"] <= tv)
    a, b = front[i - 1], front[i]
    # log x = log x_a + (log tv - log tv_a) * (log x_b - log x_a) / (log tv_b - log tv_a)
    floor = 1e-12  # a TV of exactly 0 (a perfect sample) has no logarithm
    la, lb, lt = (math.log(max(v, floor)) for v in (a["tv"], b["tv"], tv))
    frac = (lt - la) / (lb - la)
    nfe = math.exp(math.log(a["nfe"]) + frac * (math.log(b["nfe"]) - math.log(a["nfe"])))
    cost = a["cost"] + (nfe - a["nfe"]) / (b["nfe"] - a["nfe"]) * (b["cost"] - a["cost"])
    return nfe, cost, None


def log_t_interval(values: Sequence[float], confidence: float) -> tuple[float, float | None, float | None]:
    """(geometric mean, lo, hi): a Student-t interval on log values (no interval from one value)."""
    mean, lo, hi = t_interval([math.log(v) for v in values], confidence)
    return math.exp(mean), None if lo is None else math.exp(lo), None if hi is None else math.exp(hi)


def equal_tv_rows(curve: Mapping[Any, Sequence[Mapping[str, float]]],
                  settings: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per setting: the reference NFE at equal TV, the NFE ratio and the cost speed-up, each
    with a ``confidence`` interval over seeds.

    ``curve[seed]``: the reference's measured settings in that seed, each ``{"nfe", "tv", "cost"}``
    (optionally ``"label"``). ``settings``: ``{"label", "nfe", "per_seed": {seed: {"tv", "cost"}}}``;
    every seed of a setting must be in ``curve``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    rows = []
    for s in settings:
        missing = [seed for seed in s["per_seed"] if seed not in curve]
        if missing or not s["per_seed"]:
            raise ValueError(f"setting {s.get('label')!r}: seeds {missing or '[]'} have no reference curve "
                             f"(curve seeds: {sorted(curve)})")
        per_seed, bounds = [], set()
        for seed, m in s["per_seed"].items():
            nfe, cost, bound = nfe_at_tv(curve[seed], m["tv"])
            bounds.add(bound)
            per_seed.append({"seed": seed, "tv": m["tv"], "teacher_nfe": nfe, "teacher_cost": cost,
                             "speedup": cost / m["cost"], "nfe_ratio": nfe / s["nfe"], "bound": bound})
        bounds.discard(None)
        row: dict[str, Any] = {"label": s["label"], "nfe": s["nfe"], "seeds": len(per_seed), "per_seed": per_seed,
                               "confidence": confidence, "bound": bounds.pop() if len(bounds) == 1 else None,
                               "estimable": len(bounds) <= 1}
        for key in ("teacher_nfe", "nfe_ratio", "speedup"):
            point, lo, hi = log_t_interval([p[key] for p in per_seed], confidence)
            if not row["estimable"]:
                point = lo = hi = None
            elif row["bound"] == "above":  # clipped at the most accurate setting: only a lower bound
                hi = None
            elif row["bound"] == "below":
                lo = None
            row.update({key: point, f"{key}_lo": lo, f"{key}_hi": hi})
        rows.append(row)
    return rows
