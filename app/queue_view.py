"""The queue: every queued and running run across all users (``workers.client.ServiceClient.queue``),
in the order the workers will take them, with each queued run's position and estimated start, and
cancel for the viewer's own runs. Also the one-line "where is my run" text the progress panel shows.

The dashboard submits as one owner (the server's user@host, ``workers.client.check_owner``): its
viewers share that identity, so "one's own" here means the runs this dashboard submitted; runs
submitted from another machine or the API under another owner are listed but not cancellable here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from app import connection

POLL_S = 2.0


def waiting_text(position: int | None, est_start_s: float | None) -> str:
    """'position 3 · starts in about 12 s' for a queued run (what the run's progress bar and the
    queue table say); '' when the queue knows neither."""
    parts = []
    if position is not None:
        parts.append(f"position {position}")
    if est_start_s is not None:
        parts.append(f"starts in about {est_start_s:,.0f} s" if est_start_s < 120 else
                     f"starts in about {est_start_s / 60:,.0f} min")
    return " · ".join(parts)


def queue_rows(rows: Sequence[Mapping[str, Any]], owner: str) -> list[dict[str, Any]]:
    """The table the queue view draws (pure): one row per run, running first, then queued in order."""
    out = []
    for r in rows:
        progress = f"{r['done']}/{r['total']}" if r.get("done") is not None and r.get("total") else ""
        out.append({
            "state": r["state"],
            "where": (f"on {r.get('worker') or '?'}" + (f" · {progress}" if progress else "")
                      if r["state"] == "running" else "taken by a worker, starting" if r["state"] == "dispatched"
                      else waiting_text(r.get("position"), r.get("est_start_s"))),
            "experiment": connection.plain(r.get("experiment") or ""),
            "run": r["run_id"],
            "kind": r.get("kind") or "",
            "owner": (r.get("owner") or "") + (" (you)" if r.get("owner") == owner else ""),
        })
    return out


def render_queue(owner: str, key: str = "queue") -> None:
    """The live queue table (a fragment polled every ``POLL_S``) and cancel for ``owner``'s runs."""

    @st.fragment(run_every=POLL_S)
    def panel() -> None:
        cli = connection.client_or_say()
        if cli is None:
            return
        try:
            rows = cli.queue()
        except Exception:  # noqa: BLE001 - the broker is down: say so, the fragment polls again
            error_id = connection.logged_error("reading the queue")
            st.warning(f"The run queue is not reachable (error id `{error_id}` in the log).")
            return
        running = sum(r["state"] == "running" for r in rows)
        starting = sum(r["state"] == "dispatched" for r in rows)
        st.caption(f"{running} running · " + (f"{starting} starting · " if starting else "")
                   + f"{len(rows) - running - starting} queued · interactive runs (one run from "
                   "Explore) go ahead of sweeps; sweeps share the workers round robin")
        if not rows:
            connection.empty_state("Nothing is queued or running.")
            return
        st.dataframe(queue_rows(rows, owner), hide_index=True, key=f"{key}.table")
        mine = [r["run_id"] for r in rows if r.get("owner") == owner]
        if not mine:
            return
        chosen = st.multiselect("Your runs to cancel", mine, key=f"{key}.chosen")
        if chosen and st.button("Cancel selected", key=f"{key}.cancel", icon=":material/cancel:"):
            n = sum(bool(cli.cancel(rid, owner=owner)) for rid in chosen)
            st.toast(f"cancelled {n} run(s)")

    panel()
