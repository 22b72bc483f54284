"""Explore: one configuration — its NFE bill and projection live, then queue it and read its results.

The current run's id lives in the URL (``?run=ID``) so a refresh keeps it; the form's non-default
values are in the URL too. A ``?run=`` link opened in a new session loads that run's own spec into
the form, so the form above a result always shows the run below it.
"""

from __future__ import annotations

import streamlit as st

from app import access, bill_view, connection, run_view, verdict_view
from app.examples import EXAMPLES, INTRO
from app.spec_form import load_spec, spec_form, spec_summary
from fastdiff_core import budget
from fastdiff_core.spec import RunSpec

def _load_example(i: int) -> None:
    """An example's spec into the form (before the widgets are drawn: a button callback)."""
    ex = EXAMPLES[i]
    load_spec("ex", ex.spec)
    st.session_state.pop("ex.run_id", None)
    st.session_state["ex.loaded_run"] = None
    st.session_state["ex._changed"] = {"text": f"Loaded the example '{ex.title}': {spec_summary(ex.spec)}.",
                                       "undo": {}}
    st.session_state["ex._rerun_app"] = True  # the result below belongs to the previous form: redraw it
    if "run" in st.query_params:
        del st.query_params["run"]


def examples_row() -> None:
    """One ready example per regime, each a button that loads it runnable."""
    cols = st.columns(len(EXAMPLES))
    for i, (col, ex) in enumerate(zip(cols, EXAMPLES)):
        col.button(f"Example: {ex.title}", key=f"ex.example.{ex.regime}.go", on_click=_load_example, args=(i,),
                   icon=":material/play_circle:", help=ex.question, width="stretch")


def bill_line(bill: budget.NFEBill, model: budget.ProductionModel, regime: str) -> str:
    """The bill in one line, shown beside Run (the full panel follows the form)."""
    rb = budget.regime_budget(regime)
    lat = budget.project_latency(bill, model, rb.latency_budget_s or budget.PLANNING_BUDGET_S)
    usd, _ = budget.cost_per_1000_scenarios(bill, model)
    return (f"**{bill_view.fmt_nfe(bill.per_cycle)} NFE per cycle** ({bill.formula()}) x {bill.cycles:,} rollouts = "
            f"{bill_view.fmt_nfe(bill.per_run)} NFE · cycle {bill_view.fmt_s(lat.per_cycle_s)} vs "
            f"{bill_view.fmt_s(lat.budget_s)} · ${usd:,.3f} per 1,000 scenarios")


def submit(spec: RunSpec) -> None:
    """Queue ``spec``; on success the page reruns with Run disabled while the run is in flight."""
    cli = connection.client_or_say(st.error)
    if cli is None:
        return
    try:
        _, run_ids = cli.submit(spec, spec.name or spec_summary(spec))
    except (ValueError, RuntimeError) as e:
        st.error(str(e))
        return
    st.session_state["ex.run_id"] = run_ids[0]
    st.session_state["ex.loaded_run"] = run_ids[0]  # the form already shows its spec
    st.query_params["run"] = run_ids[0]
    st.session_state["ex.run_id.finished"] = False
    st.rerun(scope="app")  # the whole page: the result section follows the new run


def run_bar(where, spec: RunSpec, bill: budget.NFEBill, form) -> None:
    """Run first in the page's tab order, with the bill in one line, the estimate and any refusal."""
    estimate = connection.runtime_estimate(spec, bill)
    refusal = spec.refusal() or budget.run_guard(estimate)
    in_flight = connection.in_flight(st.session_state.get("ex.run_id"))
    c1, c2 = where.columns([1, 6], vertical_alignment="center")
    clicked = c1.button("Run", type="primary", disabled=refusal is not None or in_flight is not None,
                        icon=":material/play_arrow:", key="ex.run")
    c2.markdown(bill_line(bill, form.model, spec.regime or "offline"))
    where.caption(f"Estimated run time on the workers: {estimate.describe()}.")
    if refusal:
        where.error(refusal, icon=":material/block:")
    if in_flight:
        where.caption(f"Run is disabled while this form's run `{in_flight}` is in flight: wait for it or cancel it below.")
    # A second click that reached the server before the button was redrawn disabled finds the run in flight.
    if clicked and connection.in_flight(st.session_state.get("ex.run_id")) is None:
        with where:
            submit(spec)


@st.fragment
def workbench(show_examples: bool) -> None:
    """Run, the examples, the form and its live bill. A fragment: a widget change reruns this part only,
    not the result below it (the bill answers faster); Run and the examples rerun the whole page."""
    if st.session_state.pop("ex._rerun_app", False):
        st.rerun(scope="app")
    bar = st.container()
    if show_examples:
        examples_row()
    left, right = st.columns([1, 2], gap="large")
    with left:
        form = spec_form("ex")
    with right:
        if form.spec is None:
            st.error(form.error)
            return
        spec = form.spec
        try:
            bill = budget.bill_for(spec, guided_fraction=form.guided_fraction)
        except ValueError as e:
            st.error(str(e))
            return
        run_bar(bar, spec, bill, form)
        st.subheader("NFE bill (before anything runs)")
        regime = spec.regime or "offline"
        bill_view.projection_panel(bill, form.model, regime, distilled=spec.sampler == "student", key="ex")
        stated = budget.production_model(regime)
        if form.model != stated:
            st.caption(f"The charts above are a what-if at your production model ({form.model.describe()}); "
                       f"verdicts are stated at the regime's ({stated.describe()}, ${stated.usd_per_hour:g}/h).")
        verdict_view.card(budget.judge(spec, guided_fraction=form.guided_fraction),
                          heading="Projected verdict (before the run)")


st.title("Explore", anchor=False)  # no heading link: Run is the next Tab stop
_linked = connection.url_id("run", "run_id")
if _linked and st.session_state.get("ex.loaded_run") != _linked:
    _store, _ = connection.store()
    _run = _store.run(_linked) if _store is not None else None
    if _run is not None:
        load_spec("ex", RunSpec.from_dict(_run["spec"], enforce_limits=False))  # the form re-checks
    st.session_state["ex.loaded_run"] = _linked
_fresh = not (_linked or st.session_state.get("ex.run_id"))
if _fresh:
    st.markdown(INTRO)
workbench(show_examples=_fresh)

run_id = st.session_state.get("ex.run_id") or connection.url_id("run", "run_id")
if run_id:
    st.session_state["ex.run_id"] = run_id
    if st.query_params.get("run") != run_id:
        st.query_params["run"] = run_id
    st.divider()
    s, why = connection.store()
    run = s.run(run_id) if s is not None else None
    if s is None:
        connection.empty_state(why)
    elif run is None:
        st.warning(f"run {run_id} is not in the store")
    else:
        st.subheader("Result")
        access.share_panel(run["exp_id"])
        if run["status"] not in connection.FINAL:
            run_view.follow_runs([run_id], key="ex.run_id")
        else:
            run_view.render_run(run, key="ex.result")
