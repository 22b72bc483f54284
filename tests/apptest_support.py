"""What the AppTest page tests share: a page loader and the page's text (the ``home`` fixture, a fresh
FASTDIFF_HOME, is in conftest.py)."""

from __future__ import annotations

import pathlib

from streamlit.testing.v1 import AppTest

APP = pathlib.Path(__file__).resolve().parents[1] / "app"
VIEWS = APP / "views"


def page(name: str, **params) -> AppTest:
    at = AppTest.from_file(str(VIEWS / f"{name}.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at


def texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "error", "warning", "success", "title", "subheader")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def table_with(at, *columns: str):
    """The page's one table (``st.table``) or dataframe that has these columns, as a pandas frame."""
    found = [e.value for e in [*at.table, *at.dataframe] if set(columns) <= set(e.value.columns)]
    assert len(found) == 1, f"{len(found)} tables with columns {columns}"
    return found[0]
