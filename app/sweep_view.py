"""A sweep's results: progress, the X/Y grid (Z as tabs) and the Pareto frontier of cost against
error or coverage; clicking a point opens its run. Used by Sweep, Experiments and the shared view."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import charts, connection, run_view, sweep_axes
from fastdiff_core import budget
from fastdiff_core.spec import RunSpec


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
    axis_fields = axis_order(runs, list(((exp.get("sweep") or {}).get("axes") or {}).keys()))
    metrics = s.metrics(done["run_id"].to_list()).pivot(on="name", index="run_id", values="value")
    table = done.join(metrics, on="run_id", how="left")
    if "rare_rate" in table.columns and "rare_rate_truth" in table.columns:
        table = table.with_columns((pl.col("rare_rate") - pl.col("rare_rate_truth")).abs().alias("tail_rate_error"))
    metric_names = [c for c in ("tail_rate_error", "mode_tv", "rmse", "recall", "precision", "coverage")
                    if c in table.columns] + [c for c in metrics.columns if c != "run_id" and c not in (
                        "tail_rate_error", "mode_tv", "rmse", "recall", "precision", "coverage")]
    if not metric_names:
        connection.empty_state("The runs reported no metrics.")
        return
    c1, c2 = st.columns(2)
    y = c1.selectbox("Error / coverage metric", metric_names, key=f"{key}.y")
    x_choice = c2.radio("Cost axis", ["NFE per planning cycle (counted)", "projected cycle latency"], horizontal=True,
                        key=f"{key}.x")
    table = table.filter(pl.col(y).is_not_null())
    xs = []
    drawn = table["cycles"].to_list() if "cycles" in table.columns else [None] * table.height
    for (spec_text, counted, formula), cycles in zip(table.select("spec", "nfe_counted", "nfe_formula").iter_rows(),
                                                     drawn):
        sp = RunSpec.from_json(spec_text, enforce_limits=False)
        # A guidance interval's share comes from the run's sigmas; without them, bill it as fully guided.
        b = budget.bill_for(sp, guided_fraction=1.0)
        if x_choice.startswith("NFE"):
            xs.append(budget.counted_per_cycle(sp, counted, formula, cycles))
        else:
            xs.append(budget.project_latency(b, budget.production_model(sp.regime or "offline")).per_cycle_s * 1000)
    ys = table[y].to_list()
    ids = table["run_id"].to_list()
    hover = [f"{r['solver'] if r['sampler'] == 'solver' else r['student']} · {r['grid']} · {r['steps']} steps · "
             f"w={r['guidance_scale']:g}" for r in table.select("solver", "student", "sampler", "grid", "steps",
                                                                "guidance_scale").iter_rows(named=True)]
    maximize = y in ("recall", "precision", "coverage", "density")
    fig = charts.pareto_figure(xs, ys, ids, hover, x_title="NFE per planning cycle" if x_choice.startswith("NFE")
                               else "projected cycle latency (ms)", y_title=y, maximize_y=maximize)
    event = st.plotly_chart(fig, key=f"{key}.pareto", on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False})
    picked = None
    points = (event.selection.points if event and getattr(event, "selection", None) else []) or []
    for p in points:
        if p.get("customdata"):
            picked = p["customdata"] if isinstance(p["customdata"], str) else p["customdata"][0]
    # The grid: X across, Y down (Z as tabs), the chosen metric in the cells.
    for f in axis_fields:
        if f not in table.columns:
            table = table.with_columns(pl.Series(f, [str(sweep_axes.spec_value(connection.parse_json(t) or {}, f))
                                                     for t in table["spec"].to_list()]))
    if axis_fields:
        xf = axis_fields[-1]
        yf = axis_fields[-2] if len(axis_fields) >= 2 else None
        zf = axis_fields[-3] if len(axis_fields) >= 3 else None
        cells = table.with_columns(pl.col(y).round(5))
        zvals = cells[zf].unique(maintain_order=True).to_list() if zf else [None]
        tabs = st.tabs([f"{zf} = {z}" for z in zvals]) if zf else [st.container()]
        for tab, z in zip(tabs, zvals):
            sub = cells.filter(pl.col(zf) == z) if zf else cells
            if yf:
                grid_df = sub.pivot(on=xf, index=yf, values=y, aggregate_function="first")
            else:
                grid_df = sub.select(xf, y)
            tab.dataframe(grid_df, hide_index=True, key=f"{key}.grid.{z}")
    st.dataframe(table.select([c for c in ("run_id", "solver", "grid", "steps", "guidance_scale", "horizon", "plans",
                                           "futures", "nfe_counted", "nfe_formula", "wall_s", "device", y)
                               if c in table.columns]).sort("nfe_counted"), hide_index=True, key=f"{key}.table")
    if picked:
        st.subheader(f"Run {picked}")
        run = s.run(picked)
        if run is not None:
            run_view.render_run(run, key=f"{key}.picked")
            if not read_only and st.button("Open in Explore", key=f"{key}.open"):
                st.session_state["ex.run_id"] = picked
                st.switch_page("views/explore.py", query_params={"run": picked})
