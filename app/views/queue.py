"""Queue: every queued and running run across users, in the order the workers take them (app/queue_view.py)."""

from __future__ import annotations

import streamlit as st

from app import connection, queue_view

st.title("Queue")
cli = connection.client_or_say()
if cli is not None:
    queue_view.render_queue(cli.owner)
