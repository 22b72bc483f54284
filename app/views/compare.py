"""Compare: runs side by side — the spec diff (only what differs), each run's verdicts as stored,
overlaid histograms with each run's own truth, a metric table.

The selection lives in the URL (``?runs=ID,ID``) so a refresh keeps it.
"""

from __future__ import annotations

import json

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from app import charts, connection, verdict_view
from app.plots import plot

st.title("Compare")
s, why = connection.store()
if s is None:
    connection.empty_state(why)
    st.stop()

runs = s.runs(status="done", columns=["run_id", "exp_id", "sampler", "solver", "student", "grid", "steps", "submitted"])
if runs.height == 0:
    connection.empty_state("No finished runs yet. Run something in Explore or Sweep, then compare here.")
    st.stop()
runs = runs.sort("submitted", descending=True)
exps = s.experiments(columns=["exp_id", "name"])
exp_names = dict(zip(exps["exp_id"].to_list(), exps["name"].to_list()))
labels = {r["run_id"]: f"{r['run_id']} · {exp_names.get(r['exp_id'], r['exp_id'])} · "
                       f"{r['solver'] if r['sampler'] == 'solver' else r['student']} {r['grid']} {r['steps']} steps"
          for r in runs.select("run_id", "exp_id", "sampler", "solver", "student", "grid", "steps").iter_rows(named=True)}

if "cmp.runs" not in st.session_state:
    st.session_state["cmp.runs"] = [r for r in st.query_params.get("runs", "").split(",") if r in labels]
c1, c2 = st.columns([3, 2])
c1.multiselect("Runs", list(labels), key="cmp.runs", format_func=labels.get, max_selections=12)
pick_exp = c2.multiselect("…or every run of experiments", list(exp_names), format_func=lambda e: f"{exp_names[e]} ({e})",
                          key="cmp.exps")
selected = list(dict.fromkeys(st.session_state["cmp.runs"] + runs.filter(pl.col("exp_id").is_in(pick_exp))
                              ["run_id"].to_list()))[:24]
st.query_params["runs"] = ",".join(st.session_state["cmp.runs"])
if len(selected) < 2:
    connection.empty_state("Pick at least two runs (or an experiment with several).")
    st.stop()

sel = s.runs(run_ids=[r for r in selected if r in labels]).sort("submitted", descending=True)
specs = {r["run_id"]: json.loads(r["spec"]) for r in sel.select("run_id", "spec").iter_rows(named=True)}

st.subheader("Spec diff (only what differs)")
fields = sorted({k for d in specs.values() for k in d})
diff_rows = []
for f in fields:
    vals = [json.dumps(specs[r].get(f), sort_keys=True) for r in selected if r in specs]
    if len(set(vals)) > 1:
        diff_rows.append({"field": f, **{r: json.dumps(specs[r].get(f), sort_keys=True) for r in selected if r in specs}})
if diff_rows:
    st.dataframe(diff_rows, hide_index=True)
else:
    st.info("The specs are identical (a re-run): any difference below is run-to-run noise.")

short = {r["run_id"]: f"{r['solver'] if r['sampler'] == 'solver' else r['student']} {r['grid']} "
                     f"{r['steps']} steps ({r['run_id'][:7]})"
         for r in sel.select("run_id", "sampler", "solver", "student", "grid", "steps").iter_rows(named=True)}
st.subheader("Verdicts (as each run's worker judged it)")
verdicts = {rid: verdict_view.verdicts_of((s.run(rid) or {}).get("result")) for rid in selected}
st.table([{"run": short[rid], **verdict_view.summary(*verdicts[rid])} for rid in selected if rid in short])

st.subheader("Branch rates, overlaid")
hist = s.histograms(selected).filter(pl.col("group") != "reference")
if hist.height:
    fig = go.Figure()
    for i, rid in enumerate(r for r in selected if r in short):
        h = hist.filter(pl.col("run_id") == rid)
        if h.height == 0:
            continue
        rate, lo, hi = h["rate"].to_list(), h["lo"].to_list(), h["hi"].to_list()
        fig.add_trace(go.Bar(name=short[rid], x=h["label"].to_list(), y=rate, offsetgroup=str(i),
                             error_y=dict(type="data", array=[b - a for a, b in zip(rate, hi)],
                                          arrayminus=[a - b for a, b in zip(rate, lo)])))
        # each run's own truth, over its own bar: runs of different scenes or horizons have different truths
        fig.add_trace(go.Scatter(name="truth (each run's own)", x=h["label"].to_list(), y=h["truth"].to_list(),
                                 mode="markers", offsetgroup=str(i), legendgroup="truth", showlegend=i == 0,
                                 marker=dict(symbol="line-ew-open", size=22, color=charts.TRUTH_COLOR,
                                             line=dict(width=3, color=charts.TRUTH_COLOR)),
                                 hovertemplate=f"{short[rid]}<br>%{{x}}: truth %{{y:.2%}}<extra></extra>"))
    tails = sorted({v.tail for p, m in verdicts.values() for v in (m or p,) if v is not None and v.tail})
    fig.update_layout(barmode="group", scattermode="group", height=380, margin=dict(l=10, r=10, t=30, b=10),
                      title=f"Generated rates with 95% Wilson intervals (tail: {', '.join(tails) or 'none'})")
    fig.update_yaxes(tickformat=".1%")
    fig.update_xaxes(title="branch")
    fig.update_yaxes(title="rate (share of samples)")
    plot(st, fig, key="cmp.hist")
else:
    connection.empty_state("These runs reported no branch histograms.")

st.subheader("Metrics")
m = s.metrics(selected)
table = sel.select("run_id", "solver", "grid", "steps", "guidance_scale", "nfe_counted", "nfe_formula", "wall_s",
                   "device")
if m.height:
    table = table.join(m.pivot(on="name", index="run_id", values="value"), on="run_id", how="left")
st.dataframe(table, hide_index=True)
