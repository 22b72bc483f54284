"""One verdict on every page (issue 12 item 6, issue 18's `?run=` and compare defects), through AppTest
against a real Store holding runs made by the real ``execute``:

- the result page, a share link and compare show the same projected and measured verdict, field by
  field (cost, tail, every rate), and they are the worker's stored verdicts;
- the tail is the world's declared one (red_light_jaywalker under 'keep': 'crosses' is rarer than 'darts',
  the tail, so "the smallest true rate" would name the wrong branch);
- a `?run=` link loads that run's spec into the form;
- compare draws each run's own truth.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app.verdict_view import LABEL
from fastdiff_core import budget
from fastdiff_core.spec import RunSpec
from tests.apptest_support import VIEWS, page, table_with, texts
from tests.test_app_results import record_done

DRIVING = RunSpec(world="driving", scene="red_light_jaywalker", solver="heun", steps=3, samples=40, horizon=3,
                  futures=2, regime="closed_loop", world_options={"action": "keep"}, name="jaywalker heun")


def verdict_fields(at: AppTest) -> dict:
    """What the result page says: the verdict table's rows and the branch table's tail and rates."""
    rows = {r["check"]: r for r in table_with(at, "check", "projected", "measured").to_dict("records")}
    table = table_with(at, "branch", "95% interval").to_dict("records")
    return {"verdicts": rows, "branches": table,
            "tail": [r["branch"] for r in table if str(r["branch"]).endswith("(tail)")]}


@pytest.mark.slow
def test_result_page_share_link_and_compare_agree_on_the_stored_verdicts(home):
    from store import Store

    s = Store()
    other = DRIVING.replace(scene="walk_signal", horizon=2, name="walk euler", solver="euler")
    exp_id, (rid,) = record_done(s, "jaywalker", [DRIVING])
    _, (rid2,) = record_done(s, "walk", [other])
    stored = s.run(rid)["result"]
    projected, measured = budget.stored_verdicts(stored["verdict"])

    result = page("explore", run=rid).run()
    assert not result.exception
    mine = verdict_fields(result)
    # the worker's verdicts, rendered: cost (one definition), projected == measured since counted == billed
    cost = f"${measured.check('cost').value:,.3f}"
    assert mine["verdicts"]["cost (binding)"]["projected"] == f"{LABEL[projected.check('cost').status]} {cost}"
    assert mine["verdicts"]["cost (binding)"]["measured"] == f"{LABEL[measured.check('cost').status]} {cost}"
    assert projected.check("cost").value == measured.check("cost").value
    # the tail is the world's declared branch, in the table and in both verdicts
    assert mine["tail"] == ["darts (tail)"] and projected.tail == measured.tail == "darts"
    truths = {r["label"]: r["truth"] for r in measured.rates}
    assert 0 < truths["crosses"] < truths["darts"]  # 'smallest truth' would have named crosses
    # every rate on the page is the rate the verdict judged
    page_rates = {str(r["branch"]).removesuffix(" (tail)"): (r["rate"], r["95% interval"]) for r in mine["branches"]}
    for r in measured.rates:
        assert page_rates[r["label"]] == (f"{r['rate']:.2%}", f"[{r['lo']:.2%}, {r['hi']:.2%}]")
    # one verdict box, no second contradicting one
    body = texts(result)
    assert body.count("Measured verdict") == 1 and "Worker's verdict" not in body
    assert "Projected verdict (before the run)" in body
    # the `?run=` link loaded that run's spec into the form (not the default mixture / dpmpp_2m / 20 steps)
    assert result.selectbox(key="ex.world").value == "driving"
    assert result.selectbox(key="ex.solver").value == "heun"
    assert result.number_input(key="ex.steps").value == 3 and result.number_input(key="ex.horizon").value == 3
    assert result.selectbox(key="ex.regime").value == "closed_loop"
    # the form's projected verdict is the stored projected one (same spec, same production model)
    assert projected.sentence in body

    shared = AppTest.from_file(str(VIEWS / "shared.py"), default_timeout=60)
    shared.query_params["exp"] = exp_id
    shared.run()
    assert not shared.exception
    assert verdict_fields(shared) == mine

    cmp = page("compare", runs=f"{rid},{rid2}").run()
    assert not cmp.exception
    summary = {r["run"]: r for r in table_with(cmp, "cost", "tail", "tail rate").to_dict("records")}
    row = next(v for k, v in summary.items() if rid[:7] in k)
    tail = next(r for r in measured.rates if r["label"] == "darts")
    assert row["cost"] == cost and row["tail"] == "darts"
    assert row["tail rate"] == f"{tail['rate']:.2%} [{tail['lo']:.2%}, {tail['hi']:.2%}]"
    assert row["tail rate"].split(" ")[0] == page_rates["darts"][0]
    assert row["measured"] == mine["verdicts"]["overall"]["measured"]
    assert row["projected"] == mine["verdicts"]["overall"]["projected"]
    # each run's own truth over its own bars (two scenes, two horizons: two different truths)
    fig = json.loads(cmp.get("plotly_chart")[0].proto.spec)
    truth_traces = [t for t in fig["data"] if t.get("type") == "scatter"]
    assert len(truth_traces) == 2
    want = [{r["label"]: r["truth"] for r in budget.stored_verdicts(s.run(x)["result"]["verdict"])[1].rates}
            for x in (rid, rid2)]
    got = [dict(zip(t["x"], t["y"])) for t in truth_traces]
    assert got == want and got[0] != got[1]
