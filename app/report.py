"""An experiment as one self-contained HTML file for design reviews: its configuration table, each run's
verdicts with their numbers, the branch rates with 95% intervals, the charts as interactive plotly
(plotly.js inlined once, so the file opens offline), the NFE waterfall, and the link back.

Built from the same pure functions the pages draw (verdict_view, charts, bill_view, sweep_view), so the
report cannot say something the dashboard does not. No Streamlit here.
"""

from __future__ import annotations

import datetime
import html
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
import polars as pl

from app import bill_view, charts, sweep_view, verdict_view
from app.spec_form import spec_rows, spec_summary
from fastdiff_core import budget
from fastdiff_core.spec import RunResult, RunSpec

_CSS = """
body { font-family: system-ui, sans-serif; color: #31333f; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1, h2, h3 { line-height: 1.2; } table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #d0d3da; padding: 4px 8px; text-align: left; font-size: 14px; }
th { background: #f0f2f6; } .muted { color: #555867; } .chart { page-break-inside: avoid; }
@media print { a { color: inherit; } }
"""


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows (dicts with the same keys) as an escaped HTML table."""
    if not rows:
        return "<p class='muted'>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Charts:
    """Figures as HTML fragments; the first one carries plotly.js (inline: the file works offline)."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, fig: go.Figure | None) -> str:
        if fig is None:
            return ""
        out = charts.themed(fig, "light").to_html(full_html=False, include_plotlyjs=self.first,
                                                  config={"displayModeBar": False})
        self.first = False
        return f"<div class='chart'>{out}</div>"


def run_section(run: Mapping[str, Any], chart: _Charts) -> str:
    """One run: its verdicts, NFE, branch table and charts (what the result page shows)."""
    spec = RunSpec.from_dict(run["spec"], enforce_limits=False)
    head = f"<h3>{html.escape(spec.name or spec_summary(spec))} · run {html.escape(run['run_id'])}</h3>"
    if run["status"] != "done" or not run.get("result"):
        return head + f"<p>Status: {html.escape(run['status'])} (no results).</p>"
    res = RunResult.from_dict(run["result"])
    projected, measured = verdict_view.verdicts_of(run["result"])
    tail = (measured or projected).tail if (measured or projected) else budget.world_tail(spec.world)
    hist = [dict(r) for r in res.histograms]
    parts = [head, "<h4>Verdicts (projected before the run, measured by it)</h4>",
             table(verdict_view.verdict_rows(projected, measured))]
    bill = budget.bill_for(spec, sigmas=res.info.get("sigmas"))
    parts.append(f"<p>NFE = {html.escape(bill.formula())} per planning cycle; x {spec.samples:,} rollouts = "
                 f"{bill.per_run:,.0f} per run. Counted by the worker: {res.nfe_counted:,.0f} per run; wall clock "
                 f"{html.escape(bill_view.fmt_s(res.wall_s))} on {html.escape(str(res.device))}.</p>")
    if hist:
        parts += ["<h4>Branch rates with 95% intervals</h4>", table(verdict_view.branch_rows(hist, tail)),
                  chart(charts.histogram_figure(hist, tail=tail))]
    parts.append(chart(bill_view.waterfall_figure(budget.waterfall(bill, distilled=spec.sampler == "student"))))
    parts.append(chart(charts.samples_figure(res.samples, res.info.get("samples_columns")
                                             or res.info.get("preview_columns"),
                                             res.info.get("labels") or res.info.get("branch_codes"), tail)))
    return "\n".join(parts)


def sweep_section(s, exp_id: str, chart: _Charts) -> str:
    """A sweep: the Pareto chart and the results table (tail_rate_error first), as the Sweep page builds them."""
    done = s.runs(exp_id=exp_id).filter(pl.col("status") == "done")
    if done.height == 0:
        return "<p>No finished runs.</p>"
    table_df, metric_names = sweep_view.results_frame(s, done)
    if not metric_names:
        return "<p>The runs reported no metrics.</p>"
    y = metric_names[0]
    t = sweep_view.with_cost(table_df.filter(pl.col(y).is_not_null()), sweep_view.NFE_AXIS)
    rows = list(t.select("solver", "student", "sampler", "grid", "steps", "guidance_scale").iter_rows(named=True))
    fig = charts.pareto_figure(t[sweep_view.NFE_AXIS].to_list(), t[y].to_list(), t["run_id"].to_list(),
                               [sweep_view.who(r) for r in rows], x_title=sweep_view.NFE_AXIS, y_title=y,
                               maximize_y=y in sweep_view.MAXIMISE, groups=[sweep_view.who(r) for r in rows],
                               shapes=[str(r["grid"]) for r in rows])
    cols = [c for c in ("run_id", "solver", "grid", "steps", "guidance_scale", sweep_view.NFE_AXIS, y) if c in t.columns]
    return (f"<h3>Pareto frontier: {html.escape(y)} against NFE per planning cycle</h3>" + chart(fig)
            + table(t.select(cols).sort(sweep_view.NFE_AXIS).to_dicts()))


def experiment_report(s, exp_id: str, link: str) -> str:
    """The HTML report of experiment ``exp_id`` from store ``s``; ``link``: its share link (the way back)."""
    exp = s.experiment(exp_id)
    if exp is None:
        raise ValueError(f"exp_id={exp_id!r} is not in the store")
    chart = _Charts()
    axes = (exp.get("sweep") or {}).get("axes") if len(exp["run_ids"]) > 1 else None
    body = [f"<h1>{html.escape(exp['name'] or exp_id)}</h1>",
            f"<p class='muted'>fastdiff experiment {html.escape(exp_id)} · created {html.escape(str(exp['created']))}"
            f" · {len(exp['run_ids'])} run(s) · report written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
            f" · <a href='{html.escape(link, quote=True)}'>open in the dashboard</a></p>",
            "<h2>Configuration</h2>", table(spec_rows(RunSpec.from_dict(exp["spec"], enforce_limits=False), axes)),
            "<h2>Results</h2>"]
    if len(exp["run_ids"]) == 1:
        run = s.run(exp["run_ids"][0])
        body.append(run_section(run, chart) if run is not None else "<p>The run is not in the store.</p>")
    else:
        body.append(sweep_section(s, exp_id, chart))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(exp['name'] or exp_id)} · fastdiff</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
