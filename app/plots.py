"""Drawing a figure on a page: in the viewer's theme (``charts.themed``), without plotly's mode bar."""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app import charts


def theme() -> str | None:
    """'light' or 'dark' as the browser reported it (None before it has: Streamlit's own colours then)."""
    try:
        return st.context.theme.type
    except Exception:  # noqa: BLE001 - outside a session (AppTest, bare mode) there is no theme
        return None


def plot(where: Any, fig: go.Figure, *, key: str | None = None, **kwargs: Any) -> Any:
    """``where.plotly_chart`` of ``fig`` themed; returns what plotly_chart returns (a selection event)."""
    return where.plotly_chart(charts.themed(fig, theme()), key=key, config={"displayModeBar": False}, **kwargs)


@functools.lru_cache(maxsize=1)
def plotly_chunk() -> str | None:
    """The file name of Streamlit's Plotly chunk (``PlotlyChart.<hash>.js``: plotly.js itself, ~4.7 MB),
    or None when this Streamlit ships none by that name."""
    found = sorted((pathlib.Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return found[0].name if len(found) == 1 else None


def preload_plotly() -> str:
    """A script that starts loading the Plotly chunk as soon as a page's first element arrives. The
    browser otherwise fetches, compiles and runs it only when the page's first chart arrives, after the
    server has built everything above that chart; this way it overlaps the server's work. The same
    URL the app imports lazily (relative to Streamlit's own index script), so it is loaded once."""
    chunk = plotly_chunk()
    if chunk is None:
        return ""
    return ("<script>(() => { const s = document.querySelector('script[type=module][src*=\"/static/js/index.\"]');"
            f" if (s) import(new URL('{chunk}', s.src).href).catch(() => {{}}); }})();</script>")
