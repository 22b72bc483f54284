"""One stored run on screen: verdict card, latency against budget, NFE counted vs formula, branch
histograms with intervals (tail highlighted), precision/recall and other metrics, sampled points.

Also the progress panel (a polling ``st.fragment``) that follows queued runs without blocking the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import plotly.graph_objects as go
import streamlit as st

from app import bill_view, charts, connection, queue_view, verdict_view
from app.plots import plot
from app.spec_form import spec_json, spec_summary
from fastdiff_core import budget
from fastdiff_core.spec import RunResult, RunSpec

POLL_S = 1.0


def follow_runs(run_ids: Sequence[str], *, key: str, on_finished: Callable[[], None] | None = None,
                allow_cancel: bool = True) -> None:
    """A progress bar per run (aggregate for many), polled every second inside a fragment, with cancel.

    The page around it stays interactive; when every run is final the whole page reruns once to
    draw the results.
    """
    finished_key = f"{key}.finished"

    @st.fragment(run_every=POLL_S)
    def panel() -> None:
        cli = connection.client_or_say()
        if cli is None:
            return
        states = []
        for rid in run_ids:
            try:
                states.append(cli.progress(rid))
            except Exception as e:  # noqa: BLE001 - a transient broker error is shown, polling continues
                states.append({"run_id": rid, "status": "unknown", "error": str(e)})
        final = [s for s in states if s["status"] in connection.FINAL]
        if len(run_ids) == 1:
            s = states[0]
            done, total = s.get("done"), s.get("total")
            frac = 1.0 if s["status"] in connection.FINAL else (done / total if done and total else 0.0)
            eta = f" · ETA {s['eta_s']:.0f} s" if s.get("eta_s") else ""
            nfe = f" · {s['nfe']:,.0f} NFE counted" if s.get("nfe") else ""
            waiting = queue_view.waiting_text(s.get("position"), s.get("est_start_s")) if s["status"] == "queued" else ""
            st.progress(min(max(frac, 0.0), 1.0),
                        text=f"{s['status']}{' · ' + waiting if waiting else ''}"
                             f"{' · ' + s['phase'] if s.get('phase') else ''}{nfe}{eta}")
        else:
            counts: dict[str, int] = {}
            for s in states:
                counts[s["status"]] = counts.get(s["status"], 0) + 1
            st.progress(len(final) / len(run_ids),
                        text=f"{len(final)}/{len(run_ids)} finished · " + " · ".join(
                            f"{v} {k}" for k, v in sorted(counts.items())))
        errors = [s for s in states if s["status"] == "failed" and s.get("error")]
        for s in errors[:3]:
            st.error(f"run {s['run_id']} failed: {connection.error_headline(s['error'])}")
        if len(final) == len(run_ids) and not connection.stored_final(run_ids):
            st.caption("Finished; waiting for the store to record the outcome …")  # the collector lags the queue
            return
        if len(final) == len(run_ids):
            if not st.session_state.get(finished_key):
                st.session_state[finished_key] = True
                if on_finished:
                    on_finished()
                st.rerun()
            return
        st.session_state[finished_key] = False
        if allow_cancel and st.button("Cancel", key=f"{key}.cancel", icon=":material/cancel:"):
            n = sum(bool(cli.cancel(s["run_id"])) for s in states if s["status"] not in connection.FINAL)
            st.toast(f"Cancelled {n} run(s).", icon=":material/cancel:")

    panel()


def measured_latency_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    if not rows:
        return None
    fig = go.Figure(go.Bar(
        y=[f"{r['what']} (batch {r.get('batch')})" for r in rows], x=[float(r["seconds"]) * 1000 for r in rows],
        orientation="h", text=[bill_view.fmt_s(float(r["seconds"])) + f" on {r.get('device')}" for r in rows],
        textposition="auto", marker_color=charts.GOOD_COLOR))
    ms = [float(r["seconds"]) * 1000 for r in rows]
    fig.update_xaxes(type="log", title="measured time (ms, log)", range=charts.log_range(ms), **charts.log_ticks(ms))
    fig.update_yaxes(title="what was timed")
    fig.update_layout(height=60 + 40 * len(rows), margin=dict(l=10, r=10, t=30, b=10),
                      title="Measured on the worker")
    return fig


def dashboard_bill(spec: RunSpec, info: Mapping[str, Any]) -> budget.NFEBill | None:
    """The dashboard's own bill for a stored spec, exact when the run reports its grid's sigmas."""
    try:
        return budget.bill_for(spec, sigmas=info.get("sigmas"))
    except ValueError:
        return None


def cancel_reason(run: Mapping[str, Any]) -> str:
    """Who stopped a cancelled run, in words (the store records the worker's or client's last line)."""
    lines = [ln for ln in str(run.get("error") or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines and "cancel" in lines[-1].lower() else "cancelled by user"


def render_run(run: Mapping[str, Any], *, key: str) -> None:
    """Everything one run measured. ``run`` is ``Store.run(run_id)``. The verdicts are the ones the
    worker stored (``verdict_view.verdicts_of``); every projection here is at the regime's production
    model, the one those verdicts were judged at, so no number on this page contradicts another."""
    spec = RunSpec.from_dict(run["spec"], enforce_limits=False)  # a stored run, not a new one
    st.markdown(f"**{connection.plain(spec.name or spec_summary(spec))}** · run `{run['run_id']}` · "
                f"status **{run['status']}**")
    if run["status"] != "done" or not run.get("result"):
        render_unfinished(run)
        return
    res = RunResult.from_dict(run["result"])
    regime = spec.regime or "offline"
    bill = dashboard_bill(spec, res.info)

    # -- verdict --------------------------------------------------------------------------------
    projected, measured = verdict_view.verdicts_of(run["result"])
    verdict_view.render(projected, measured)
    tail = (measured or projected).tail if (measured or projected) else budget.world_tail(spec.world)

    # -- NFE, then the charts: one tab drawn at a time (each chart costs the browser a Plotly draw) ----
    render_nfe(nfe_figures(spec, res, bill))
    hist = [dict(r) for r in res.histograms]
    rates, latency, drawn = st.tabs(["Branch rates", "Latency: projected and measured", "Samples"],
                                    key=f"{key}.charts", on_change="rerun")
    if rates.open is not False:
        if hist:
            plot(rates, charts.histogram_figure(hist, tail=tail), key=f"{key}.hist")
        else:
            with rates:
                connection.empty_state("This run reported no branch histogram.")
    if latency.open:
        l1, l2 = latency.columns(2)
        if bill is not None:
            lat = budget.project_latency(bill, budget.production_model(regime),
                                         budget.regime_budget(regime).latency_budget_s or budget.PLANNING_BUDGET_S)
            plot(l1, bill_view.latency_figure(lat), key=f"{key}.proj")
        mfig = measured_latency_figure(res.latency)
        if mfig is not None:
            plot(l2, mfig, key=f"{key}.meas")
    if drawn.open:
        fig = charts.samples_figure(res.samples, res.info.get("samples_columns") or res.info.get("preview_columns"),
                                    res.info.get("labels") or res.info.get("branch_codes"), tail)
        if fig is not None:
            plot(drawn, fig, key=f"{key}.samples")
        else:
            drawn.caption("This world reports no samples to draw.")

    # -- coverage: the branch table, whichever chart is shown ----------------------------------------
    if hist:
        st.table(verdict_view.branch_rows(hist, tail))

    # -- metrics: precision/recall first ------------------------------------------------------------
    render_metrics(dict(res.metrics), key=key)
    # Sent when opened (a rerun): a code box loads Streamlit's 1.5 MB syntax highlighter, and a collapsed
    # expander's content is still mounted by the browser (docs/bench-dashboard.md).
    box = st.expander("Spec (JSON)", key=f"{key}.json", on_change="rerun")
    if box.open:
        box.code(spec_json(spec), language="json")


def render_unfinished(run: Mapping[str, Any]) -> None:
    """A run with no result: cancelled (the user's own action), failed (its error line), or still going."""
    if run["status"] == "cancelled":  # the user's own action, not a failure
        st.info(f"Cancelled: this run was stopped before it finished ({connection.plain(cancel_reason(run))}). "
                "Nothing it measured is shown; run it again to get results.", icon=":material/cancel:")
    elif run.get("error"):
        st.error(f"{run['status']}: {connection.error_headline(run['error'])}")
        if len(str(run["error"]).strip().splitlines()) > 1:  # the traceback stays in the record, off the page
            st.caption(f"The worker's full error is in the run's record: `Store().run('{run['run_id']}')['error']`.")
    else:
        connection.empty_state(f"No results yet (status: {run['status']}).")


@dataclass(frozen=True)
class NFEFigures:
    """The NFE row of a run: counted per planning cycle, the worker's and the dashboard's formula, the caption."""

    counted: float
    worker_formula: float
    dashboard_formula: float | None  # None: the dashboard cannot bill this spec
    matches: bool  # the dashboard's formula equals the counted NFE
    wall_s: float
    device: str
    caption: str | None


def nfe_figures(spec: RunSpec, res: RunResult, bill: budget.NFEBill | None) -> NFEFigures:
    """The NFE row's figures (pure): per planning cycle, as the counter saw it, beside both formulas."""
    counted = budget.counted_per_cycle(spec, res.nfe_counted, res.nfe_formula, res.metrics.get("cycles"))
    scale = counted / res.nfe_counted if res.nfe_counted else 1.0
    caption, billed = None, None
    if bill is not None:
        drawn = int(res.metrics.get("cycles") or spec.samples)
        repeats = float(res.metrics.get("nfe_repeats") or 0.0)  # Picard's re-evaluations, counted by the run
        billed = bill.per_cycle + repeats / drawn
        seq = res.info.get("sequential")
        caption = (f"NFE = {bill.formula()} per planning cycle; x {drawn:,} rollouts = "
                   f"{bill.per_cycle * drawn:,.0f} per run" + (
                       f" + {repeats:,.0f} Picard re-evaluations = {bill.per_cycle * drawn + repeats:,.0f}"
                       if repeats else "") + (
                       f" (sequential gate: {seq['looks']} look(s) of {seq['look']:,}, {seq['stopped']}; "
                       f"worst case {bill.per_run:,.0f} at the cap of {seq['cap']:,})" if seq else "") + ".")
    return NFEFigures(counted=counted, worker_formula=res.nfe_formula * scale, dashboard_formula=billed,
                      matches=billed is not None and abs(billed - counted) <= 1e-9 * max(1.0, billed),
                      wall_s=res.wall_s, device=res.device, caption=caption)


def render_nfe(f: NFEFigures) -> None:
    c = st.columns(5)
    c[0].metric("NFE counted / sample", bill_view.fmt_nfe(f.counted), help="per planning cycle, as the counter saw it")
    c[1].metric("formula (worker)", bill_view.fmt_nfe(f.worker_formula))
    if f.dashboard_formula is not None:
        c[2].metric("formula (dashboard)", bill_view.fmt_nfe(f.dashboard_formula),
                    delta="= counted" if f.matches else f"{f.counted - f.dashboard_formula:+,.2f} vs counted",
                    delta_color="normal" if f.matches else "inverse")
    c[3].metric("wall clock", bill_view.fmt_s(f.wall_s))
    c[4].metric("device", f.device)
    if f.caption is not None:
        st.caption(f.caption)


def precision_recall(metrics: Mapping[str, float]) -> dict[str, float]:
    """The sample-level metrics shown first (precision, recall, density, coverage), in the run's order."""
    return {k: v for k, v in metrics.items() if any(w in k for w in ("precision", "recall", "density", "coverage"))}


def render_metrics(metrics: dict[str, float], *, key: str) -> None:
    pr = precision_recall(metrics)
    if pr:
        cols = st.columns(min(len(pr), 5))
        for col, (k, v) in zip(cols * 10, pr.items()):
            col.metric(k, f"{v:.3f}")
    else:
        st.caption("Precision / recall: not reported by this world (it reports per-branch rates above).")
    with st.expander("All metrics", expanded=not pr):
        st.dataframe([{"metric": k, "value": v} for k, v in sorted(metrics.items())], hide_index=True,
                     key=f"{key}.metrics")
