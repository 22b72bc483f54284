"""The runs table on a page (Experiments, a sweep's results): the widgets over ``runs_table.TableState``,
kept in the URL so that a shared link shows the same table; the table; a scatter of any two columns
coloured by the colour column; and the selected run's actions (open, pin as baseline, tags, note).

A run's spec and result never change, so its columns (spec fields, metrics, tail rate, verdicts) are
derived once, when the store compacts the run, and read here with one projection (``Store.run_columns``).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import streamlit as st

from app import charts, connection, runs_table
from app.plots import plot
from app.runs_table import TableState

MAX_ROWS = 2000  # rows sent to the browser; the filter and sort apply to every run first
# The store's run columns the table shows (``runs_table.build``): what a page reads with ``Store.runs``.
STORE_COLUMNS = ["run_id", "exp_id", "status", "device", "wall_s", "nfe_counted", "submitted"]
NONE = "(none)"


def _url_state(key: str, frame: pl.DataFrame) -> None:
    """Seed the widgets from the URL once per session and page (later the widgets are the truth); what
    names a column or run this table lacks is refused, with a message naming it."""
    if f"{key}.filter" in st.session_state:  # a widget's state: gone when the user was on another page
        return
    url, refused = TableState.from_params({p: st.query_params.get(p, "") for p in runs_table.PARAMS}).checked(
        frame.columns, frame["run_id"].to_list())
    for msg in refused:
        st.warning(msg, icon=":material/link_off:")
    st.session_state[f"{key}.filter"] = url.filter
    st.session_state[f"{key}.tags"] = list(url.tags)
    st.session_state[f"{key}.sort"] = url.sort[0] if url.sort else NONE
    st.session_state[f"{key}.desc"] = bool(url.sort and url.sort[1])
    st.session_state[f"{key}.color"] = url.color or NONE
    st.session_state[f"{key}.base"] = url.base
    if url.cols is not None:
        st.session_state[f"{key}.cols"] = list(url.cols)


def _controls(key: str, frame: pl.DataFrame, default: list[str]) -> TableState:
    """The widgets; returns the state they hold, checked against this table (what it refuses is said)."""
    columns = frame.columns
    used = frame["tags"].explode().drop_nulls().unique().to_list()  # not a Python list per run: 100,000 of them
    all_tags = sorted(set(used) | set(st.session_state.get(f"{key}.tags", [])))
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    c1.text_input("Filter", key=f"{key}.filter", placeholder="steps>=10; solver=euler,heun; name~dpm",
                  help="Clauses 'column op value' joined by ';', all must hold. op: = != (a comma-separated list), "
                       "> >= < <=, ~ (contains). Any column of the table, e.g. tail_rate_error<0.01, verdict=PASS.")
    if all_tags:
        c2.multiselect("Tags (any of)", all_tags, key=f"{key}.tags")
    else:  # an empty multiselect is drawn disabled, its label below the contrast a reader needs
        c2.caption("Tags: none yet. Select a run to tag it; then filter by its tags here.")
    c3.selectbox("Sort by", [NONE, *columns], key=f"{key}.sort")
    c4.toggle("Descending", key=f"{key}.desc")
    d1, d2 = st.columns([4, 1])
    st.session_state.setdefault(f"{key}.cols", default)
    d1.multiselect("Columns", columns, key=f"{key}.cols")
    d2.selectbox("Colour by", [NONE, *columns], key=f"{key}.color")
    sort = st.session_state[f"{key}.sort"]
    chosen = st.session_state[f"{key}.cols"]
    state = TableState(filter=st.session_state[f"{key}.filter"], sort=(sort, st.session_state[f"{key}.desc"])
                       if sort != NONE else None, cols=None if chosen == default else tuple(chosen),
                       color=None if st.session_state[f"{key}.color"] == NONE else st.session_state[f"{key}.color"],
                       base=st.session_state.get(f"{key}.base"), tags=tuple(st.session_state.get(f"{key}.tags", [])))
    state, refused = state.checked(columns, frame["run_id"].to_list())
    for msg in refused:
        st.warning(msg, icon=":material/link_off:")
    return state


def _write_url(state: TableState) -> None:
    params = state.to_params()
    for p in runs_table.PARAMS:
        if p in params and st.query_params.get(p) != params[p]:
            st.query_params[p] = params[p]
        elif p not in params and p in st.query_params:
            del st.query_params[p]


def _styled(shown: pl.DataFrame, groups: list[str] | None, colour: str | None):
    """The frame for st.dataframe: the colour column's cells (and the run id) tinted by their group."""
    df = shown.to_pandas()
    if not groups or colour not in df.columns:
        return df
    order = list(dict.fromkeys(groups))
    tint = [f"background-color: {charts.GROUP_COLORS[order.index(g) % len(charts.GROUP_COLORS)]}55" for g in groups]
    return df.style.apply(lambda _: tint, subset=[c for c in ("run_id", colour) if c in df.columns], axis=0)


def render(s, runs: pl.DataFrame, *, key: str, exp_names: Mapping[str, str], read_only: bool = False,
           extra: pl.DataFrame | None = None) -> str | None:
    """The runs table over ``runs`` (the store's rows; ``extra``: more columns by run_id, shown after the
    run's own, e.g. a sweep's cost axis); returns the run id the user selected, if any."""
    if runs.height == 0:
        return None
    results, metrics = s.run_columns(runs["run_id"])
    frame = runs_table.build(runs, results, exp_names, s.annotations(runs["run_id"]))
    spec_cols = [c for c in results.columns if c != "run_id" and c not in metrics and not c.startswith("verdict")]
    default = runs_table.default_columns(frame, spec_cols, metrics)
    if extra is not None:
        frame = frame.join(extra, on="run_id", how="left")
        default[5:5] = [c for c in extra.columns if c != "run_id"]
    _url_state(key, frame)
    state = _controls(key, frame, default)
    _write_url(state)
    chosen = list(state.cols) if state.cols is not None else default
    if state.base:
        frame = runs_table.with_baseline(frame, state.base, [m for m in metrics if m in frame.columns])
        chosen = runs_table.with_delta_columns(chosen, frame.columns)
        st.caption(f"Baseline: run `{state.base}` (Δ = run − baseline; for a metric with an interval, its 95% "
                   "interval by MOVER and 'higher'/'lower' only when it excludes 0).")
    try:
        shown = runs_table.apply(frame, state)
    except ValueError as e:
        st.error(str(e), icon=":material/filter_alt_off:")
        shown = runs_table.apply(frame, TableState(sort=state.sort, tags=state.tags))
    st.caption(f"{shown.height:,} of {frame.height:,} runs" + (f"; the first {MAX_ROWS:,} shown" if shown.height >
                                                                 MAX_ROWS else "") + ". Select a row for its actions.")
    shown = shown.head(MAX_ROWS)
    groups = runs_table.colour_groups(shown, state.color) if state.color else None
    cols = list(dict.fromkeys(["run_id", *(c for c in chosen if c in shown.columns)]))
    event = st.dataframe(_styled(shown.select(cols), groups, state.color), hide_index=True, key=f"{key}.table",
                         on_select="rerun", selection_mode="single-row",
                         column_config={"tags": st.column_config.ListColumn("tags"),
                                        **{c: st.column_config.NumberColumn(c, format="%.4g") for c, t in
                                           shown.select(cols).schema.items() if t == pl.Float64}})
    picked = shown["run_id"][event.selection.rows[0]] if event is not None and event.selection.rows else None
    picked = _scatter(shown, groups, state.color, metrics, key) or picked
    if picked:
        _run_actions(s, picked, key, state, read_only)
    return picked


def _scatter(shown: pl.DataFrame, groups: list[str] | None, colour: str | None, metrics: list[str], key: str) -> str | None:
    """Any two numeric columns of the shown runs as points, coloured by the colour column."""
    numeric = [c for c, t in shown.schema.items() if t.is_numeric()]
    if not numeric or shown.height == 0:
        return None
    # Drawn only while open (a rerun when it opens): a collapsed expander's chart still costs the browser a
    # Plotly draw of every shown run on each page load (docs/bench-dashboard.md).
    box = st.expander("Chart: any two columns, points coloured as the rows", expanded=False, key=f"{key}.chart",
                      on_change="rerun")
    if not box.open:
        return None
    with box:
        c1, c2 = st.columns(2)
        xs = [c for c in ("nfe_counted", "wall_s", "steps") if c in numeric] + numeric
        ys = [m for m in ("tail_rate_error", *metrics) if m in numeric] + numeric
        x = c1.selectbox("x", list(dict.fromkeys(xs)), key=f"{key}.x")
        y = c2.selectbox("y", list(dict.fromkeys(ys)), key=f"{key}.y")
        pts = shown.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null() & (pl.col(x) > 0))
        if pts.height == 0:
            st.caption(f"No run has both {x} (> 0, log axis) and {y}.")
            return None
        keep = set(pts["run_id"].to_list())
        g = [gr for gr, rid in zip(groups, shown["run_id"].to_list()) if rid in keep] if groups else None
        hover = [f"{r['run_id']} · {connection.plain(r['experiment'])}" for r in pts.select("run_id", "experiment")
                 .iter_rows(named=True)]
        fig = charts.pareto_figure(pts[x].to_list(), pts[y].to_list(), pts["run_id"].to_list(), hover, x_title=x,
                                   y_title=y, groups=[f"{colour}: {v}" for v in g] if g else None, frontier=False)
        event = plot(st, fig, key=f"{key}.scatter", on_select="rerun", selection_mode="points")
        for p in (event.selection.points if event and getattr(event, "selection", None) else []) or []:
            if p.get("customdata"):
                return p["customdata"] if isinstance(p["customdata"], str) else p["customdata"][0]
    return None


def _run_actions(s, run_id: str, key: str, state: TableState, read_only: bool) -> None:
    """Open the run, pin it as the baseline, edit its tags and note (stored at once)."""
    ann = s.annotations([run_id])
    tags, note = (ann["tags"][0].to_list(), ann["note"][0]) if ann.height else ([], "")
    st.markdown(f"**Run `{run_id}`**" + (f" — tags: {', '.join(tags)}" if tags else ""))
    a1, a2, a3 = st.columns(3)
    if a1.button("Open in Explore", key=f"{key}.open.{run_id}", icon=":material/open_in_new:"):
        st.session_state["ex.run_id"] = run_id
        st.switch_page("views/explore.py", query_params={"run": run_id})
    if state.base == run_id:
        if a2.button("Unpin baseline", key=f"{key}.unpin", icon=":material/push_pin:"):
            st.session_state[f"{key}.base"] = None
            st.rerun()
    elif a2.button("Pin as baseline", key=f"{key}.pin.{run_id}", icon=":material/push_pin:"):
        st.session_state[f"{key}.base"] = run_id
        st.rerun()
    if read_only:
        if note:
            st.caption(f"Note: {connection.plain(note)}")
        return
    annotate(s, run_id, key=f"{key}.ann.{run_id}", tags=tags, note=note, where=a3)


def annotate(s, target: str, *, key: str, tags: list[str], note: str, where=None) -> None:
    """Tags and a note of a run or experiment, saved through the store (``Store.set_tags``/``set_note``)."""
    with (where or st).popover("Tags and note", icon=":material/sell:"):
        new_tags = st.multiselect("Tags", sorted(set(tags)), default=tags, key=f"{key}.tags", accept_new_options=True,
                                  help="Type a new tag and press Enter. Letters, digits and _ . : + = -.")
        new_note = st.text_area("Note", value=note, key=f"{key}.note", max_chars=10_000)
        if st.button("Save", key=f"{key}.save", type="primary"):
            try:
                s.set_tags(target, new_tags)
                s.set_note(target, new_note)
            except ValueError as e:
                st.error(str(e))
            else:
                st.rerun()
