"""Every page in the light and the dark theme (AppTest's context['theme'], what the browser reports as
st.context.theme.type): no exception, and every chart's text in that theme's colour (charts.themed),
with the colours that carry meaning checked against both backgrounds in tests/test_app_charts.py."""

from __future__ import annotations

import json

import pytest

from app import charts
from fastdiff_core.spec import RunSpec
from tests.apptest_support import page
from tests.test_app_results import record_done


@pytest.fixture
def stored(home):
    """One single-run experiment and one 2 x 2 sweep, run by the real mixture world."""
    from store import Store

    s = Store()
    single, (run_id,) = record_done(s, "one run", [RunSpec(samples=200, steps=6, regime="offline")])
    base = RunSpec(samples=200, regime="offline")
    specs = [base.replace(solver=solver, steps=steps) for solver in ("euler", "heun") for steps in (3, 6)]
    sweep, run_ids = record_done(s, "two solvers", specs, sweep={"solver": ["euler", "heun"], "steps": [3, 6]})
    return {"run": run_id, "single": single, "sweep": sweep, "runs": run_ids}


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_in_both_themes(stored, theme):
    pages = [("explore", {"run": stored["run"]}), ("sweep", {"sweep": stored["sweep"]}),
             ("compare", {"runs": f"{stored['runs'][0]},{stored['runs'][3]}"}),
             ("experiments", {"sel": stored["sweep"]}), ("budget_calculator", {}), ("shared", {"exp": stored["single"]}),
             ("queue", {})]
    for name, params in pages:
        at = page(name, **params)
        at.context["theme"] = theme
        at.run()
        assert not at.exception, (theme, name, at.exception)
        figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        assert figures or name in ("experiments", "queue"), (theme, name, "no chart drawn")
        for fig in figures:
            assert fig["layout"]["font"]["color"] == charts.TEXT[theme], (theme, name)
            if fig["data"][0]["type"] == "parcoords":  # its axes are its dimensions, each labelled
                assert all(d["label"] for d in fig["data"][0]["dimensions"]), (theme, name)
                continue
            for axis in ("xaxis", "yaxis"):
                assert fig["layout"][axis]["title"]["text"], (theme, name, axis)
