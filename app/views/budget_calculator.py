"""Budget calculator: the seed's NFE table for any S, C, H, P, R and a per-NFE latency, the verdict of
each regime, and what would fit (the largest S, H, P·R or ms/NFE within each budget) — no workers.

Values in the link are checked against ``form_fields.BUDGET_FIELDS``: a value out of range is refused
with its field and range named, never coerced.
"""

from __future__ import annotations

from typing import Any, Mapping

import streamlit as st

from app.bill_view import fmt_nfe, fmt_s, projection_panel
from app.form_fields import BUDGET_FIELDS, checked
from app.spec_form import number_field, refusal_notice, refusals
from app.verdict_view import card as verdict_card
from app.what_fits import what_fits
from fastdiff_core import budget, catalog


def regime_budgets(values: Mapping[str, Any]) -> list[tuple[str, budget.RegimeBudget]]:
    """Each regime's budget with the thresholds typed on the page."""
    out = []
    for name in catalog.REGIMES:
        rb = budget.regime_budget(name)
        if rb.latency_budget_s is not None:
            rb = rb.with_thresholds(latency_budget_s=values["budget_ms"] / 1000)
        if rb.cost_budget_usd is not None:
            rb = rb.with_thresholds(cost_budget_usd=float(values["cost_budget"]))
        out.append((name, rb))
    return out


def fits_rows(bill: budget.NFEBill, model: budget.ProductionModel,
              budgets: list[tuple[str, budget.RegimeBudget]]) -> list[dict[str, str]]:
    """The 'what would fit' table: per regime limit and factor, the current value and the largest that fits."""
    rows = []
    for name, rb in budgets:
        for fit in what_fits(bill, model, rb):
            rows.append({"regime": catalog.REGIMES[name].title, "limit": fit.limit, "factor": fit.factor,
                         "now": f"{fit.current:,.4g}", "largest that fits": fit.describe(),
                         "fits now": "yes" if fit.largest is not None and fit.current <= fit.largest else "no"})
    return rows


SEED_ROWS = [
    ("vanilla, one rollout", budget.NFEBill(S=1000, C=2, H=20, P=1, R=1)),
    ("vanilla, a plan", budget.VANILLA),
    ("optimised, a plan", budget.NFEBill(S=4, C=1, H=12, P=8, R=1)),
    ("distilled 4-NFE planning cycle, P·R = 10·4", budget.NFEBill(S=4, C=1, H=12, P=10, R=4)),
]


def seed_table(bill: budget.NFEBill, model: budget.ProductionModel) -> list[dict[str, Any]]:
    return [{"configuration": n, "S": fmt_nfe(b.S), "C": f"{b.C:g}", "H": b.H, "P·R": b.fan_out,
             "NFE per cycle": fmt_nfe(b.per_cycle), "projected cycle": fmt_s(budget.project_latency(b, model).per_cycle_s)}
            for n, b in [*SEED_ROWS, ("this configuration", bill)]]


def init_state() -> None:
    """Defaults, then the link's values (each checked; refused ones named on the page)."""
    s = st.session_state
    if s.get("bc._init"):
        return
    values, refused = checked(BUDGET_FIELDS, dict(st.query_params.items()))
    for name, field in BUDGET_FIELDS.items():
        s[f"bc.{name}"] = values.get(name, field.default)
    s["bc._refused"] = refused
    s["bc._init"] = True


def draw_fields() -> dict[str, Any]:
    c = st.columns(5)
    for col, name in zip(c, ("S", "C", "H", "P", "R")):
        number_field(col, "bc", name, step=0.05 if name == "C" else 1, fields=BUDGET_FIELDS,
                     help="2 = CFG, 1 = guidance-distilled or scale 0/1, in between = guidance interval."
                     if name == "C" else None)
    c = st.columns(5)
    for col, name, step in zip(c, ("ms", "lanes", "usd", "budget_ms", "cost_budget"), (1.0, 1, 0.5, 10.0, 0.05)):
        number_field(col, "bc", name, step=step, fields=BUDGET_FIELDS)
    st.checkbox(BUDGET_FIELDS["distilled"].label + " (the waterfall passes through a 20-NFE solver first)",
                key="bc.distilled")
    s = st.session_state
    values = {name: s[f"bc.{name}"] for name in BUDGET_FIELDS}
    st.query_params.update({n: str(int(v) if isinstance(v, bool) else v) for n, v in values.items()})
    return values


st.title("Budget calculator")
st.caption("NFE = S (evaluations per frame) x C (guidance passes) x H (frames) x P·R (plans x futures). "
           "Nothing runs here: this is the bill and its projection for a production-size model.")
init_state()
refusal_notice("bc")
v = draw_fields()
if refusals("bc"):
    st.stop()
bill = budget.NFEBill(S=float(v["S"]), C=float(v["C"]), H=int(v["H"]), P=int(v["P"]), R=int(v["R"]))
model = budget.ProductionModel(per_nfe_s=v["ms"] / 1000, parallelism=int(v["lanes"]), usd_per_hour=v["usd"])
budgets = regime_budgets(v)

projection_panel(bill, model, "planning", distilled=bool(v["distilled"]), regime_budget=budgets[2][1], key="bc")
st.subheader("Verdicts by regime")
for name, rb in budgets:
    lat = budget.project_latency(bill, model, rb.latency_budget_s or budget.PLANNING_BUDGET_S)
    usd, _ = budget.cost_per_1000_scenarios(bill, model)
    verdict_card(budget.verdict(name, bill, latency_s=lat.per_cycle_s, latency_source=f"at {model.describe()}",
                                cost_usd=usd, budget=rb, model=model.describe()), heading=catalog.REGIMES[name].title)
st.caption("Coverage is measured by runs (Explore), never projected: offline generation and closed-loop "
           "simulation stay 'not yet measured' here.")

st.subheader("What would fit")
st.caption("The largest value of one factor that meets each regime's projected limit, the others as typed "
           "above (offline generation has no projected limit: its binding check is coverage).")
st.dataframe(fits_rows(bill, model, budgets), hide_index=True, width="stretch", key="bc.fits")

st.subheader("The seed's table")
st.dataframe(seed_table(bill, model), hide_index=True, width="stretch", key="bc.seed")
