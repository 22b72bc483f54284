"""The NFE bill, the waterfall and the latency projection as Streamlit elements (Explore, Budget)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import plotly.graph_objects as go
import streamlit as st

from app import charts
from app.plots import plot
from fastdiff_core import budget
from fastdiff_core.budget import NFEBill, ProductionModel, RegimeBudget, Verdict


def fmt_nfe(x: float) -> str:
    """1,920 · 12.50 · 4.00 M · 1.60 G: full digits up to a million, then compact (metrics are narrow)."""
    if x >= 1e9:
        return f"{x / 1e9:,.2f} G"
    if x >= 1e6:
        return f"{x / 1e6:,.2f} M"
    return f"{x:,.0f}" if float(x).is_integer() or x >= 100 else f"{x:,.2f}"


def fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:,.0f} ms"
    if seconds < 120:
        return f"{seconds:,.2f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def bill_table(bill: NFEBill) -> None:
    """The seed's table: per frame, per rollout, per planning cycle, per run."""
    c = st.columns(4)
    c[0].metric("per frame", fmt_nfe(bill.per_frame), help=f"S x C: S = {fmt_nfe(bill.S)}, C = {bill.C:g}")
    c[1].metric("per rollout", fmt_nfe(bill.per_rollout), help=f"x H = {bill.H} frames")
    c[2].metric("per cycle", fmt_nfe(bill.per_cycle), help=f"planning cycle: x P·R = {bill.P} x {bill.R}")
    c[3].metric("per run", fmt_nfe(bill.per_run),
                help=f"x {bill.cycles:,} planning cycles (rollouts) = {bill.per_run:,.0f} NFE")
    st.markdown(f"`NFE = S x C x H x P·R = {bill.formula()}`")  # not st.code: its highlighter is a 1.5 MB chunk
    st.caption(" · ".join(["exact" if bill.exact else "estimate", *bill.notes]))


def waterfall_figure(stages: list[budget.WaterfallStage]) -> go.Figure:
    """Vanilla -> each lever -> this configuration, on a log axis (the factors multiply)."""
    labels = [s.lever for s in stages]
    values = [s.bill.per_cycle for s in stages]
    text = [f"{fmt_nfe(v)}" + (f"  (÷{s.factor:,.3g})" if s.factor != 1.0 else "") for s, v in zip(stages, values)]
    colors = [charts.NEUTRAL_COLOR] + [charts.GOOD_COLOR if s.factor > 1 else (
        charts.TAIL_COLOR if s.factor < 1 else charts.NEUTRAL_COLOR) for s in stages[1:]]
    fig = go.Figure(go.Bar(x=labels, y=values, text=text, textposition="outside", marker_color=colors,
                           customdata=[s.change for s in stages],
                           hovertemplate="%{x}<br>%{customdata}<br>%{y:,.0f} NFE<extra></extra>"))
    fig.update_traces(cliponaxis=False)
    fig.update_yaxes(type="log", title="NFE per planning cycle (log)", range=charts.log_range(values),
                     **charts.log_ticks(values))
    fig.update_xaxes(title="lever applied (each bar: the bill after it)")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=50, b=10),
                      title="NFE per cycle, from a vanilla plan (S 1000 x C 2 x H 20 x P·R 40)")
    return fig


def latency_figure(lat: budget.LatencyProjection) -> go.Figure:
    rows = [("one frame", lat.per_frame_s), ("one rollout", lat.per_rollout_s),
            ("planning cycle", lat.per_cycle_s), ("cycle, unlimited lanes", lat.floor_cycle_s)]
    fig = go.Figure(go.Bar(y=[r[0] for r in rows], x=[r[1] * 1000 for r in rows], orientation="h",
                           text=[fmt_s(r[1]) for r in rows], textposition="auto", showlegend=False,
                           marker_color=[charts.GENERATED_COLOR, charts.GENERATED_COLOR,
                                         charts.GOOD_COLOR if lat.fits else charts.TAIL_COLOR, charts.NEUTRAL_COLOR]))
    # The budget as a trace, not a shape: shapes on a log axis take log10 coordinates.
    fig.add_trace(go.Scatter(x=[lat.budget_s * 1000] * 2, y=[rows[0][0], rows[-1][0]], mode="lines+text",
                             line=dict(color=charts.NEUTRAL_COLOR, dash="dash"),
                             text=["", f"budget {fmt_s(lat.budget_s)}"], textposition="top right", cliponaxis=False,
                             hoverinfo="skip", showlegend=False))
    fig.update_traces(cliponaxis=False, selector=dict(type="bar"))
    ms = [r[1] * 1000 for r in rows] + [lat.budget_s * 1000]
    fig.update_xaxes(type="log", title="projected time (ms, log)", range=charts.log_range(ms), **charts.log_ticks(ms))
    fig.update_yaxes(title="stage")
    fig.update_layout(height=260, margin=dict(l=10, r=40, t=50, b=10),
                      title=f"Projected latency: {lat.model.describe()}")
    return fig


def projection_panel(bill: NFEBill, model: ProductionModel, regime: str, *, distilled: bool,
                     histograms: Iterable[Mapping[str, Any]] = (), regime_budget: RegimeBudget | None = None,
                     key: str = "proj") -> Verdict:
    """Bill + waterfall + latency + cost at ``model`` + the regime's verdict at that model (a what-if:
    a run's verdicts are stated at ``budget.production_model``)."""
    rb = regime_budget or budget.regime_budget(regime)
    bill_table(bill)
    lat = budget.project_latency(bill, model, rb.latency_budget_s or budget.PLANNING_BUDGET_S)
    usd, acc_s = budget.cost_per_1000_scenarios(bill, model)
    # One chart at a time, sent when its tab is chosen: every chart costs the browser a Plotly draw
    # (docs/bench-dashboard.md), and the line below states the latency against its budget in numbers.
    wf_tab, lat_tab = st.tabs(["NFE waterfall", "Projected latency"], key=f"{key}.charts", on_change="rerun")
    if wf_tab.open is not False:
        plot(wf_tab, waterfall_figure(budget.waterfall(bill, distilled=distilled)), key=f"{key}.wf")
    if lat_tab.open:
        plot(lat_tab, latency_figure(lat), key=f"{key}.lat")
    st.markdown(
        f"Planning cycle **{fmt_s(lat.per_cycle_s)}** vs {fmt_s(lat.budget_s)} budget "
        f"(**{lat.over_budget:,.2f}x**) · {lat.sequential_waves:,.0f} sequential waves · "
        f"1,000 scenarios: **${usd:,.3f}** ({fmt_s(acc_s)} accelerator time)")
    return budget.verdict(regime, bill, latency_s=lat.per_cycle_s, latency_source=f"at {model.describe()}",
                          cost_usd=usd, histograms=histograms, budget=rb, model=model.describe())
