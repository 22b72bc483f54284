"""Explore: one configuration — its NFE bill and projection live, then queue it and read its results.

The current run's id lives in the URL (``?run=ID``) so a refresh keeps it; the form's non-default
values are in the URL too.
"""

from __future__ import annotations

import streamlit as st

from app import bill_view, connection, run_view
from app.spec_form import spec_form, spec_summary, world_refusal
from fastdiff_core import budget

st.title("Explore")
left, right = st.columns([1, 2], gap="large")
with left:
    form = spec_form("ex")
with right:
    if form.spec is None:
        st.error(form.error)
        st.stop()
    spec = form.spec
    try:
        bill = budget.bill_for(spec, guided_fraction=form.guided_fraction)
    except ValueError as e:
        st.error(str(e))
        st.stop()
    st.subheader("NFE bill (before anything runs)")
    preview = bill_view.projection_panel(bill, form.model, spec.regime or "offline",
                                         distilled=spec.sampler == "student", key="ex")
    bill_view.verdict_card(preview, heading="Projected verdict")

    rate, rate_source = connection.seconds_per_nfe(spec.world)
    refusal = world_refusal(spec) or budget.run_guard(bill.per_run, rate)
    est = bill.per_run * rate
    st.caption(f"Estimated run time on the workers: {bill_view.fmt_s(est)} "
               f"({bill.per_run:,.0f} NFE x {rate:.2g} s/NFE, {rate_source}).")
    if refusal:
        st.error(refusal, icon=":material/block:")
    if st.button("Run", type="primary", disabled=refusal is not None, icon=":material/play_arrow:", key="ex.run"):
        cli, why = connection.client()
        if cli is None:
            st.error(why)
        else:
            try:
                exp_id, run_ids = cli.submit(spec, spec.name or spec_summary(spec))
            except (ValueError, RuntimeError) as e:
                st.error(str(e))
            else:
                st.session_state["ex.run_id"] = run_ids[0]
                st.query_params["run"] = run_ids[0]
                st.session_state["ex.run_id.finished"] = False

run_id = st.session_state.get("ex.run_id") or st.query_params.get("run")
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
        exp = run["exp_id"]
        st.subheader("Result")
        st.markdown(f"Share: [`?exp={exp}`](/?exp={exp}) opens this experiment read-only for anyone with the link.")
        if run["status"] not in connection.FINAL:
            run_view.follow_runs([run_id], key="ex.run_id")
        else:
            run_view.render_run(run, key="ex.result", model=form.model)
