"""The three regimes, defined once: each one's title, dashboard defaults, binding constraint and thresholds.

``catalog.REGIMES`` (what the form offers) and ``budget.REGIME_BUDGETS`` (what a verdict is judged against)
are both views of ``REGIMES`` below, so a regime cannot exist in one and not the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping

PLANNING_BUDGET_S = 0.100  # 10 Hz planning: one decision per 100 ms

Binding = Literal["coverage", "cost", "latency"]


@dataclass(frozen=True)
class RegimeBudget:
    """A regime's binding constraint and thresholds (the dashboard lets users edit them).

    latency_budget_s: per planning cycle, None where latency is irrelevant. cost_budget_usd: per
    1,000 simulated scenarios, None where cost does not bind. coverage_gate: whether the coverage gate
    is part of the verdict. nfe_per_frame: the seed's typical target band (advice, not a gate). lanes:
    the parallel lanes the regime's production model assumes (closed-loop sim batches; planning is serial).
    """

    regime: str
    binding: Binding
    latency_budget_s: float | None
    cost_budget_usd: float | None
    coverage_gate: bool
    nfe_per_frame: tuple[int, int]
    lanes: int = 1

    def with_thresholds(self, **changes: Any) -> "RegimeBudget":
        d = asdict(self)
        d.update(changes)
        return RegimeBudget(**d)


@dataclass(frozen=True)
class RegimeInfo:
    """A regime preset: its title, dashboard defaults and budget."""

    name: str
    title: str
    defaults: Mapping[str, Any]
    budget: RegimeBudget = field(repr=False)


def _regime(name: str, title: str, defaults: Mapping[str, Any], binding: Binding, **budget: Any) -> RegimeInfo:
    return RegimeInfo(name, title, defaults, RegimeBudget(name, binding, **budget))


REGIMES: dict[str, RegimeInfo] = {r.name: r for r in (
    _regime("offline", "Offline scenario generation",
            {"solver": "dpmpp_2m", "steps": 20, "guidance_scale": 1.0},
            "coverage", latency_budget_s=None, cost_budget_usd=None, coverage_gate=True, nfe_per_frame=(20, 50)),
    # $0.15 per 1,000 scenarios at the default production model (10 ms/NFE, 8 batched lanes, $2/h):
    # a 4-8 NFE/frame student at H = 20 fits, a 30-NFE solver does not (the seed's ~7-8x).
    _regime("closed_loop", "Closed-loop simulation at scale",
            {"solver": "dpmpp_2m", "steps": 6, "guidance_scale": 1.0, "horizon": 20},
            "cost", latency_budget_s=None, cost_budget_usd=0.15, coverage_gate=True, nfe_per_frame=(4, 8), lanes=8),
    _regime("planning", "In-the-loop planning at 10 Hz",
            {"solver": "dpmpp_2m", "steps": 4, "guidance_scale": 1.0, "horizon": 12, "plans": 10, "futures": 4},
            "latency", latency_budget_s=PLANNING_BUDGET_S, cost_budget_usd=None, coverage_gate=False,
            nfe_per_frame=(1, 4)),
)}
