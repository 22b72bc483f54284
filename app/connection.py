"""The dashboard's one door to the store (reads) and the service's submission client (queue, cancel).

Both are created once per server process (``st.cache_resource``). When either is unavailable —
the service not started, the broker down — the functions return ``None`` together with the reason,
and pages show that reason as an empty state instead of failing.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
import streamlit as st

FINAL = ("done", "failed", "cancelled")


@st.cache_resource(show_spinner=False)
def _store() -> Any:
    from store import Store

    return Store()


@st.cache_resource(show_spinner=False)
def _client() -> Any:
    from workers.client import ServiceClient

    return ServiceClient()


def store() -> tuple[Any | None, str | None]:
    """(Store, None) or (None, why not)."""
    try:
        return _store(), None
    except Exception as e:  # noqa: BLE001 - any failure to open the store is shown to the user
        return None, f"The experiment store is not available: {type(e).__name__}: {e}"


def client() -> tuple[Any | None, str | None]:
    """(ServiceClient, None) or (None, why not). Needs the broker that `fastdiff up` starts."""
    try:
        return _client(), None
    except Exception as e:  # noqa: BLE001
        return None, (f"The run queue is not reachable ({type(e).__name__}: {e}). Start the dashboard with its "
                      "workers: `./dev up` (or `fastdiff up`).")


def empty_state(message: str) -> None:
    st.info(message, icon=":material/inbox:")


def seconds_per_nfe(world: str) -> tuple[float, str]:
    """Wall seconds per per-sample NFE on these workers: the median of done runs of this world.

    Falls back to an assumption (stated as such) when nothing has been measured yet.
    """
    s, _ = store()
    if s is not None:
        try:
            runs = s.runs()
            done = runs.filter((pl.col("status") == "done") & (pl.col("world") == world)
                               & (pl.col("nfe_counted") > 0) & (pl.col("wall_s") > 0))
            if done.height:
                per = done.select((pl.col("wall_s") / (pl.col("nfe_counted") * pl.col("samples"))).median()).item()
                if per is not None and math.isfinite(per) and per > 0:
                    return float(per), f"measured: median of {done.height} done {world} run(s)"
        except Exception:  # noqa: BLE001 - the guard then uses the stated assumption
            pass
    return DEFAULT_SECONDS_PER_NFE, "assumed (no run of this world measured yet)"


# Until a run of the world has been measured: a 2,000-sample, 8-step mixture run took 28 s on this
# 2-CPU machine (1.8e-3 s per per-sample NFE, the exact reference solve dominating). Replaced by the
# median of stored runs as soon as there is one.
DEFAULT_SECONDS_PER_NFE = 1e-3


def parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return None
