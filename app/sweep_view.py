"""A sweep's results: progress, the X/Y grid (Z as tabs) and the Pareto frontier of cost against
error or coverage; clicking a point opens its run. Used by Sweep, Experiments and the shared view."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from app import charts, connection, run_view, runs_table, runs_view, sweep_axes
from app.plots import plot
from fastdiff_core import budget
from store import run_columns


def axis_order(runs: pl.DataFrame, fields: list[str]) -> list[str]:
    """The sweep's axes from slowest to fastest, read off the runs' order (the last axis varies fastest);
    the store keeps the axes as a mapping whose order is not guaranteed."""
    specs = [connection.parse_json(t) or {} for t in runs.sort("idx")["spec"].to_list()]
    if not specs:
        return fields

    def stride(f: str) -> int:
        first = sweep_axes.spec_value(specs[0], f)
        return next((i for i, sp in enumerate(specs) if sweep_axes.spec_value(sp, f) != first), len(specs))

    return sorted(fields, key=stride, reverse=True)


NFE_AXIS = "NFE per planning cycle (counted)"
LATENCY_AXIS = "projected cycle latency (ms)"
FIRST_METRICS = tuple(m for m in runs_table.FIRST_METRICS if m != "tail_rate")
MAXIMISE = ("recall", "precision", "coverage", "density")


def tail_rate_error(hist: pl.DataFrame, tails: dict[str, str | None]) -> pl.DataFrame:
    """|generated - truth| of each run's declared tail branch (``budget.world_tail``), from its stored
    histogram: the default metric of a sweep, for every world that declares a tail and reports its truth.
    Columns run_id, tail_rate_error."""
    return run_columns.tail_rates(hist, tails).select("run_id", "tail_rate_error").drop_nulls()


def results_frame(s, done: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """The done runs with their metrics (tail_rate_error first) and the metric names, best first."""
    metrics = s.metrics(done["run_id"].to_list()).pivot(on="name", index="run_id", values="value")
    table = done.join(metrics, on="run_id", how="left") if metrics.width > 1 else done
    tails = {r["run_id"]: budget.world_tail(r["world"]) for r in done.select("run_id", "world").iter_rows(named=True)}
    err = tail_rate_error(s.histograms(done["run_id"].to_list()), tails)
    if err.height:
        table = table.join(err, on="run_id", how="left")
    names = [c for c in table.columns if c in FIRST_METRICS]
    names.sort(key=FIRST_METRICS.index)
    names += [c for c in metrics.columns if c != "run_id" and c not in FIRST_METRICS]
    return table, names


def with_cost(table: pl.DataFrame, axis: str) -> pl.DataFrame:
    """``table`` with one cost column named ``axis`` (NFE_AXIS or LATENCY_AXIS): the chart's x and the
    table's column are this one column, so they cannot disagree on the unit."""
    xs = []
    drawn = table["cycles"].to_list() if "cycles" in table.columns else [None] * table.height
    for (spec_text, counted, formula), cycles in zip(table.select("spec", "nfe_counted", "nfe_formula").iter_rows(),
                                                     drawn):
        sp = connection.stored_spec(spec_text)
        if axis == NFE_AXIS:  # a gated run's cycles are the ones it drew, not spec.samples
            xs.append(budget.counted_per_cycle(sp, counted, formula, cycles))
        else:  # a guidance interval's share comes from the run's sigmas; without them, bill it fully guided
            b = budget.bill_for(sp, guided_fraction=1.0)
            xs.append(budget.project_latency(b, budget.production_model(sp.regime or "offline")).per_cycle_s * 1000)
    return table.with_columns(pl.Series(axis, xs, dtype=pl.Float64))


def who(r: dict) -> str:
    """The sampler of a row: the solver's or the student's name."""
    return str(r["solver"] if r["sampler"] == "solver" else f"student {r['student']}")


def with_axis_columns(table: pl.DataFrame, axis_fields: list[str]) -> pl.DataFrame:
    for f in axis_fields:
        if f not in table.columns:
            table = table.with_columns(pl.Series(f, [str(sweep_axes.spec_value(connection.parse_json(t) or {}, f))
                                                     for t in table["spec"].to_list()]))
    return table


def grid_frames(table: pl.DataFrame, axis_fields: list[str], y: str) -> list[tuple[str | None, pl.DataFrame]]:
    """The X/Y grid of metric ``y`` (X across, Y down), one per Z value: [(tab title or None, frame)]."""
    xf = axis_fields[-1]
    yf = axis_fields[-2] if len(axis_fields) >= 2 else None
    zf = axis_fields[-3] if len(axis_fields) >= 3 else None
    cells = table.with_columns(pl.col(y).round(5))
    out = []
    for z in (cells[zf].unique(maintain_order=True).to_list() if zf else [None]):
        sub = cells.filter(pl.col(zf) == z) if zf else cells
        frame = sub.pivot(on=xf, index=yf, values=y, aggregate_function="first") if yf else sub.select(xf, y)
        out.append((f"{zf} = {z}" if zf else None, frame))
    return out


def parallel_figure(table: pl.DataFrame, axis_fields: list[str], cost: str, y: str) -> go.Figure:
    """Parallel coordinates over a sweep: one axis per swept field (choices as their names), then the
    cost and the metric; each line a run, coloured by the metric."""
    dims = []
    for f in axis_fields:
        values = [str(v) for v in table[f].to_list()]
        try:
            dims.append(dict(label=f, values=[float(v) for v in values]))
        except ValueError:  # a choice axis (solver, grid): its names as tick labels
            names = list(dict.fromkeys(values))
            dims.append(dict(label=f, values=[names.index(v) for v in values], tickvals=list(range(len(names))),
                             ticktext=names))
    dims += [dict(label=cost, values=table[cost].to_list()), dict(label=y, values=table[y].to_list())]
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=table[y].to_list(), colorscale="Viridis",
                                                            showscale=True, colorbar=dict(title=y))))
    fig.update_layout(height=360, margin=dict(l=60, r=60, t=60, b=20),
                      title=f"Every run of the sweep: swept fields, {cost} and {y}")
    return fig


def _views(runs: pl.DataFrame, table: pl.DataFrame, axis_fields: list[str], x_axis: str, y: str, *,
           key: str) -> str | None:
    """The sweep's views as tabs: the Pareto frontier, the parallel coordinates, the grid of the metric.
    One at a time: a view is sent when its tab is chosen (a rerun), so a page load draws the Pareto chart
    only. Returns the run id of a clicked point."""
    views = ["Pareto frontier", *(["Parallel coordinates", "Grid of the metric"] if axis_fields else [])]
    tabs = st.tabs(views, key=f"{key}.view", on_change="rerun")
    picked = None
    if tabs[0].open is not False:
        rows = list(table.select("solver", "student", "sampler", "grid", "steps", "guidance_scale").iter_rows(named=True))
        hover = [f"{who(r)} · {r['grid']} · {r['steps']} steps · w={r['guidance_scale']:g}" for r in rows]
        fig = charts.pareto_figure(table[x_axis].to_list(), table[y].to_list(), table["run_id"].to_list(), hover,
                                   x_title=x_axis, y_title=y, maximize_y=y in MAXIMISE,
                                   groups=[who(r) for r in rows], shapes=[str(r["grid"]) for r in rows])
        event = plot(tabs[0], fig, key=f"{key}.pareto", on_select="rerun", selection_mode="points")
        for p in (event.selection.points if event and getattr(event, "selection", None) else []) or []:
            if p.get("customdata"):
                picked = p["customdata"] if isinstance(p["customdata"], str) else p["customdata"][0]
    if not axis_fields or not (tabs[1].open or tabs[2].open):
        return picked
    axis_fields = axis_order(runs, axis_fields)
    table = with_axis_columns(table, axis_fields)
    if tabs[1].open:
        plot(tabs[1], parallel_figure(table, axis_fields, x_axis, y), key=f"{key}.parallel")
    else:  # the grid: one table per Z value (the browser mounts a table even in a hidden tab)
        with tabs[2]:
            grids = grid_frames(table, axis_fields, y)
            zs = st.tabs([t for t, _ in grids]) if grids[0][0] is not None else [st.container()]
            for tab, (title, frame) in zip(zs, grids):
                tab.dataframe(frame, hide_index=True, key=f"{key}.grid.{title}")
    return picked


def sweep_results(s, exp_id: str, *, key: str, read_only: bool = False) -> None:
    """Progress, the grid and the Pareto frontier of one experiment (also used by the shared view)."""
    runs = s.runs(exp_id=exp_id)
    if runs.height == 0:
        connection.empty_state(f"Experiment {exp_id} has no runs.")
        return
    pending = runs.filter(~pl.col("status").is_in(connection.FINAL))
    if pending.height and not read_only:
        run_view.follow_runs(pending["run_id"].to_list(), key=f"{key}.follow")
    elif pending.height:
        st.info(f"{pending.height} of {runs.height} runs still running.")
    done = runs.filter(pl.col("status") == "done")
    if done.height == 0:
        return
    exp = s.experiment(exp_id) or {}
    axis_fields = list(((exp.get("sweep") or {}).get("axes") or {}).keys())  # ordered by ``axis_order`` when drawn
    table, metric_names = results_frame(s, done)
    if not metric_names:
        connection.empty_state("The runs reported no metrics.")
        return
    c1, c2 = st.columns(2)
    y = c1.selectbox("Error / coverage metric", metric_names, key=f"{key}.y",
                     help="tail_rate_error: |generated - truth| of the world's declared tail branch.")
    x_axis = c2.radio("Cost axis", [NFE_AXIS, LATENCY_AXIS], horizontal=True, key=f"{key}.x")
    table = with_cost(table.filter(pl.col(y).is_not_null()), x_axis)
    picked = _views(runs, table, axis_fields, x_axis, y, key=key)
    st.markdown(f"**Every run of the sweep** (cost as *{x_axis}* is the chart's x axis)")
    runs_view.render(s, runs, key=f"{key}.runs", exp_names={exp_id: exp.get("name", "")}, read_only=read_only,
                     extra=table.select("run_id", x_axis))
    if picked:
        st.subheader(f"Run {picked}")
        run = s.run(picked)
        if run is not None:
            run_view.render_run(run, key=f"{key}.picked")
            if not read_only and st.button("Open in Explore", key=f"{key}.open"):
                st.session_state["ex.run_id"] = picked
                st.switch_page("views/explore.py", query_params={"run": picked})
