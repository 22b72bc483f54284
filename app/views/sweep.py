"""Sweep: an X/Y/Z grid over RunSpec fields with range syntax, the total NFE before queueing, then
results as a grid and a Pareto frontier; clicking a point opens its run.

The sweep's experiment id lives in the URL (``?sweep=ID``) so a refresh keeps it.
"""

from __future__ import annotations

import streamlit as st

from app import access, bill_view, connection, sweep_axes, sweep_view
from app.spec_form import spec_form
from fastdiff_core import budget
from fastdiff_core.sweep import grid

st.title("Sweep")
st.caption("X/Y/Z over any RunSpec field. Values: `euler, heun` · `1-10` · `1-10 (+2)` · `10-1 (-3)` · `1-2 [5]`.")

AXIS_DEFAULTS = [("solver", "euler, heun, dpmpp_2m, unipc"), ("steps", "4-16 (+4)"), ("", "")]
for i, (f, v) in enumerate(AXIS_DEFAULTS):
    st.session_state.setdefault(f"sw.axis{i}.field", st.query_params.get(f"ax{i}", f))
    st.session_state.setdefault(f"sw.axis{i}.values", st.query_params.get(f"av{i}", v))

def swept_fields() -> dict[str, str]:
    """The form fields the axes set (field -> 'X axis: its values'), read before the form is drawn."""
    out = {}
    for i, name in enumerate(("X", "Y", "Z")):
        field = st.session_state.get(f"sw.axis{i}.field") or ""
        if field and not field.startswith(sweep_axes.OPTION_PREFIX):
            out[field] = f"{name} axis ({st.session_state.get(f'sw.axis{i}.values', '')})"
    return out


def auto_name(axes: dict) -> str:
    return f"sweep over {', '.join(axes)}" if axes else "sweep"


form_col, axes_col = st.columns([1, 2], gap="large")
with form_col:
    # A popover: the browser mounts its ~30 fields when it opens, an expander's even while collapsed (the
    # largest share of this page's load in the browser; docs/bench-dashboard.md).
    with st.popover("Base configuration", icon=":material/tune:", width="stretch"):
        form = spec_form("sw", swept=swept_fields())
with axes_col:
    axes: dict[str, list] = {}
    problems = []
    base_solver = st.session_state.get("sw.solver") if st.session_state.get("sw.sampler") == "solver" else None
    fields = [""] + list(sweep_axes.sweepable(base_solver))
    for i, name in enumerate(("X", "Y", "Z")):
        c1, c2 = st.columns([1, 3])
        if st.session_state.get(f"sw.axis{i}.field") not in fields:  # an option of a solver no longer chosen
            st.session_state[f"sw.axis{i}.field"] = ""
        c1.selectbox(f"{name} field", fields, key=f"sw.axis{i}.field", format_func=lambda f: f or "(none)")
        c2.text_input(f"{name} values", key=f"sw.axis{i}.values")
        field = st.session_state[f"sw.axis{i}.field"]
        text = st.session_state[f"sw.axis{i}.values"]
        st.query_params[f"ax{i}"], st.query_params[f"av{i}"] = field, text
        if not field:
            continue
        try:
            values = sweep_axes.parse_axis(field, text, base_solver)
        except ValueError as e:
            problems.append(str(e))
            continue
        if field in axes:
            problems.append(f"{name}: field {field!r} is already an axis")
            continue
        axes[field] = values
        c2.caption(f"{len(values)} value(s): {', '.join(map(str, values[:12]))}{' …' if len(values) > 12 else ''}")

    for p in problems:
        st.error(p)
    specs = []
    if form.spec is None:
        st.error(f"Base configuration: {form.error}")
    elif axes and not problems:
        try:
            specs = grid(form.spec, axes)  # refuses more than FASTDIFF_MAX_SWEEP_RUNS runs before building them
        except ValueError as e:
            st.error(str(e))
    if specs:
        bills = []
        for sp in specs:
            try:
                bills.append(budget.bill_for(sp, guided_fraction=form.guided_fraction))
            except ValueError as e:
                st.error(str(e))
                st.stop()
        total = sum(b.per_run for b in bills)
        stored = {w: connection.stored_runtime_rows(w) for w in {sp.world for sp in specs}}
        est = connection.sum_estimates([connection.runtime_estimate(sp, b, stored[sp.world])
                                        for sp, b in zip(specs, bills)])
        c = st.columns(3)
        c[0].metric("runs", f"{len(specs):,}")
        c[1].metric("total NFE", f"{total:,.0f}")
        c[2].metric("estimated time", bill_view.fmt_s(est.seconds), help=est.describe())
        refusal = next((r for r in (sp.refusal() for sp in specs) if r), None) or budget.run_guard(est)
        if refusal:
            st.error(refusal, icon=":material/block:")
        # The name follows the axes until the user types one of their own.
        if st.session_state.get("sw.exp_name") in (None, "", st.session_state.get("sw._auto_name")):
            st.session_state["sw.exp_name"] = auto_name(axes)
        st.session_state["sw._auto_name"] = auto_name(axes)
        name = st.text_input("Experiment name", key="sw.exp_name")
        if st.button("Queue sweep", type="primary", disabled=refusal is not None, key="sw.queue",
                     icon=":material/play_arrow:"):
            cli = connection.client_or_say(st.error)
            if cli is not None:
                try:
                    # Z slowest, X fastest: X becomes the grid's columns.
                    exp_id, run_ids = cli.submit(form.spec, name, sweep=dict(reversed(list(axes.items()))))
                except (ValueError, RuntimeError) as e:
                    st.error(str(e))
                else:
                    st.session_state["sw.exp"] = exp_id
                    st.session_state["sw.exp.finished"] = False

exp_id = st.session_state.get("sw.exp") or connection.url_id("sweep", "exp_id")
st.divider()
if not exp_id:
    connection.empty_state("No sweep yet: set the axes and queue it; its results appear here as a grid and a "
                           "Pareto frontier.")
    st.stop()
st.session_state["sw.exp"] = exp_id
st.query_params["sweep"] = exp_id
s, why = connection.store()
if s is None:
    connection.empty_state(why)
    st.stop()


exp = s.experiment(exp_id)
if exp is None:
    st.warning(f"experiment {exp_id} is not in the store")
    st.stop()
st.subheader(f"{connection.plain(exp['name'])}  ·  `{exp_id}`")
access.share_panel(exp_id)
sweep_view.sweep_results(s, exp_id, key="sw.res")
