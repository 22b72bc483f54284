"""Drawing a figure on a page: in the viewer's theme (``charts.themed``), without plotly's mode bar."""

from __future__ import annotations

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

