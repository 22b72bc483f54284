"""Explore: one configuration — its NFE bill and projection live, then queue it and read its results."""

from __future__ import annotations

import streamlit as st

from app import bill_view
from app.spec_form import spec_form
from fastdiff_core import budget

st.title("Explore")
left, right = st.columns([2, 3], gap="large")
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
