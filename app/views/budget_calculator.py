"""Budget calculator: the seed's NFE table for any S, C, H, P, R and a per-NFE latency — no workers."""

from __future__ import annotations

import streamlit as st

from app.bill_view import fmt_nfe, fmt_s, projection_panel
from app.verdict_view import card as verdict_card
from fastdiff_core import budget, catalog

st.title("Budget calculator")
st.caption("NFE = S (evaluations per frame) x C (guidance passes) x H (frames) x P·R (plans x futures). "
           "Nothing runs here: this is the bill and its projection for a production-size model.")

_DEFAULTS = {"bc.S": 4, "bc.C": 1.0, "bc.H": 12, "bc.P": 10, "bc.R": 4, "bc.ms": 10.0, "bc.lanes": 1,
             "bc.usd": 2.0, "bc.budget_ms": 100.0, "bc.cost_budget": 0.15, "bc.distilled": True}
for key, value in _DEFAULTS.items():
    if key not in st.session_state:
        raw = st.query_params.get(key.split(".")[1])
        try:
            st.session_state[key] = type(value)(raw) if raw is not None and not isinstance(value, bool) else (
                raw in ("1", "true") if raw is not None else value)
        except ValueError:
            st.session_state[key] = value

c = st.columns(5)
c[0].number_input("S (NFE per frame)", min_value=1, max_value=100_000, step=1, key="bc.S")
c[1].number_input("C (guidance passes)", min_value=1.0, max_value=2.0, step=0.05, key="bc.C",
                  help="2 = CFG, 1 = guidance-distilled or scale 0/1, in between = guidance interval.")
c[2].number_input("H (frames)", min_value=1, max_value=10_000, step=1, key="bc.H")
c[3].number_input("P (plans)", min_value=1, max_value=100_000, step=1, key="bc.P")
c[4].number_input("R (futures per plan)", min_value=1, max_value=100_000, step=1, key="bc.R")
c = st.columns(5)
c[0].number_input("Per-NFE latency (ms)", min_value=0.01, max_value=100_000.0, step=1.0, key="bc.ms")
c[1].number_input("Parallel lanes", min_value=1, max_value=1_000_000, step=1, key="bc.lanes")
c[2].number_input("$ / accelerator-hour", min_value=0.0, step=0.5, key="bc.usd")
c[3].number_input("Latency budget (ms)", min_value=1.0, step=10.0, key="bc.budget_ms")
c[4].number_input("Cost budget ($ / 1,000 scenarios)", min_value=0.0, step=0.05, key="bc.cost_budget")
st.checkbox("S comes from a distilled student (the waterfall passes through a 20-NFE solver first)",
            key="bc.distilled")
s = st.session_state
st.query_params.update({k.split(".")[1]: str(int(s[k]) if isinstance(s[k], bool) else s[k]) for k in _DEFAULTS})

bill = budget.NFEBill(S=float(s["bc.S"]), C=float(s["bc.C"]), H=int(s["bc.H"]), P=int(s["bc.P"]), R=int(s["bc.R"]))
model = budget.ProductionModel(per_nfe_s=s["bc.ms"] / 1000, parallelism=int(s["bc.lanes"]), usd_per_hour=s["bc.usd"])
verdicts = []
for name in catalog.REGIMES:
    rb = budget.regime_budget(name)
    if rb.latency_budget_s is not None:
        rb = rb.with_thresholds(latency_budget_s=s["bc.budget_ms"] / 1000)
    if rb.cost_budget_usd is not None:
        rb = rb.with_thresholds(cost_budget_usd=float(s["bc.cost_budget"]))
    verdicts.append((name, rb))

v = projection_panel(bill, model, "planning", distilled=bool(s["bc.distilled"]), regime_budget=verdicts[2][1],
                     key="bc")
st.subheader("Verdicts by regime")
for name, rb in verdicts:
    lat = budget.project_latency(bill, model, rb.latency_budget_s or budget.PLANNING_BUDGET_S)
    usd, _ = budget.cost_per_1000_scenarios(bill, model)
    verdict_card(budget.verdict(name, bill, latency_s=lat.per_cycle_s,
                                latency_source=f"at {model.describe()}",
                                cost_usd=usd, budget=rb, model=model.describe()), heading=catalog.REGIMES[name].title)
st.caption("Coverage is measured by runs (Explore), never projected: offline generation and closed-loop "
           "simulation stay 'not yet measured' here.")

st.subheader("The seed's table")
rows = [
    ("vanilla, one rollout", budget.NFEBill(S=1000, C=2, H=20, P=1, R=1)),
    ("vanilla, a plan", budget.VANILLA),
    ("optimised, a plan", budget.NFEBill(S=4, C=1, H=12, P=8, R=1)),
    ("distilled 4-NFE planning cycle, P·R = 10·4", budget.NFEBill(S=4, C=1, H=12, P=10, R=4)),
    ("this configuration", bill),
]
st.dataframe(
    [{"configuration": n, "S": fmt_nfe(b.S), "C": f"{b.C:g}", "H": b.H, "P·R": b.fan_out,
      "NFE per cycle": fmt_nfe(b.per_cycle),
      "projected cycle": fmt_s(budget.project_latency(b, model).per_cycle_s)} for n, b in rows],
    hide_index=True, width="stretch")
