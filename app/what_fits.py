"""The budget calculator's inverse: given the other factors, the largest value of one factor (per-NFE
latency, S, H or the fan-out P·R) whose projection still meets a regime's budget. Pure: no Streamlit.

The latency projection (``budget.project_latency``) and the cost (``budget.cost_per_1000_scenarios``)
only grow with each of these factors, so the largest value that fits is found by bisection over the
same functions the verdicts use; nothing is re-derived here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from fastdiff_core import budget
from fastdiff_core.budget import NFEBill, ProductionModel, RegimeBudget

INT_LIMIT = 10_000_000  # the largest S, H or P·R searched


@dataclass(frozen=True)
class Fit:
    """The largest ``factor`` that meets ``limit`` (None: not even the smallest value does)."""

    factor: str
    limit: str  # "latency 100 ms" or "cost $0.15 / 1,000 scenarios"
    largest: float | None
    current: float
    unbounded: bool = False  # meets the budget at every value searched

    def describe(self) -> str:
        if self.largest is None:
            return "nothing fits: even the smallest value is over"
        if self.unbounded:
            return f"any value (≥ {_num(INT_LIMIT)} searched)"
        return _num(self.largest)


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.3g}"


def _largest_int(fits: Callable[[int], bool], lo: int = 1, hi: int = INT_LIMIT) -> tuple[int | None, bool]:
    """The largest n in [lo, hi] with fits(n), for a fits that turns false once and stays false."""
    if not fits(lo):
        return None, False
    if fits(hi):
        return hi, True
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, False


@dataclass(frozen=True)
class Limit:
    """One projected limit: ``measure(bill, model) <= threshold`` (seconds per cycle, or USD)."""

    text: str
    measure: Callable[[NFEBill, ProductionModel], float]
    threshold: float

    def ok(self, bill: NFEBill, model: ProductionModel) -> bool:
        return self.measure(bill, model) <= self.threshold


def limits(rb: RegimeBudget, budget_s: float | None, cost_usd: float | None) -> list[Limit]:
    """The regime's limits a projection decides (latency, cost), at the given thresholds."""
    out = []
    if budget_s is not None and rb.latency_budget_s is not None:
        out.append(Limit(f"latency {budget_s * 1000:,.0f} ms per cycle",
                         lambda b, m: budget.project_latency(b, m, budget_s).per_cycle_s, budget_s))
    if cost_usd is not None and rb.cost_budget_usd is not None:
        out.append(Limit(f"cost ${cost_usd:,.3g} / 1,000 scenarios",
                         lambda b, m: budget.cost_per_1000_scenarios(b, m)[0], cost_usd))
    return out


def what_fits(bill: NFEBill, model: ProductionModel, rb: RegimeBudget, *, budget_s: float | None = None,
              cost_usd: float | None = None) -> list[Fit]:
    """For each limit of the regime that a projection decides, the largest S, H, fan-out P·R and
    per-NFE latency that meets it, the other factors as given (the fan-out as one number: the
    projections depend on P·R only)."""
    out = []
    for limit in limits(rb, rb.latency_budget_s if budget_s is None else budget_s,
                        rb.cost_budget_usd if cost_usd is None else cost_usd):
        for factor, current, build in (
                ("S (NFE per frame)", bill.S, lambda n: replace(bill, S=float(n))),
                ("H (frames)", bill.H, lambda n: replace(bill, H=n)),
                ("P·R (fan-out)", bill.fan_out, lambda n: replace(bill, P=n, R=1))):
            largest, unbounded = _largest_int(lambda n: limit.ok(build(n), model))
            out.append(Fit(factor, limit.text, largest, current, unbounded))
        # Both projections are proportional to the per-NFE latency: solve it directly.
        per_second = limit.measure(bill, replace(model, per_nfe_s=1.0))
        largest_s = limit.threshold / per_second if per_second > 0 else None
        out.append(Fit("per-NFE latency (ms)", limit.text, None if largest_s is None else largest_s * 1000,
                       model.per_nfe_s * 1000))
    return out
