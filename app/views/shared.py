"""A shared experiment, read-only: what anyone with a ``?exp=ID`` link sees (no navigation, no actions)."""

from __future__ import annotations

import streamlit as st

from app import connection, run_view, sweep_view
from app.spec_form import spec_rows
from fastdiff_core.spec import RunSpec

exp_id = connection.url_id("exp", "exp_id")  # app.access has checked the id (and the key) already
if exp_id is None:
    st.stop()
s, why = connection.store()
if s is None:
    connection.empty_state(why)
    st.stop()
exp = s.experiment(exp_id)
if exp is None:
    st.title("Experiment not found")
    st.error(f"exp={exp_id} is not in this dashboard's store (deleted, or a link from another installation).")
    st.stop()
st.title(connection.plain(exp["name"]) or exp_id)
st.caption(f"Shared experiment `{exp_id}` · created {exp['created']} · {len(exp['run_ids'])} run(s) · read-only")
st.subheader("Configuration")
axes = (exp.get("sweep") or {}).get("axes") if len(exp["run_ids"]) > 1 else None
st.table(spec_rows(RunSpec.from_dict(exp["spec"], enforce_limits=False), axes))
st.subheader("Results")
if len(exp["run_ids"]) == 1:
    run = s.run(exp["run_ids"][0])
    if run is not None:
        run_view.render_run(run, key="shared.run")
else:
    sweep_view.sweep_results(s, exp_id, key="shared.sweep", read_only=True)
