"""Pages over finished runs through AppTest, against a real Store in a temporary FASTDIFF_HOME.

Runs that finish are produced by the real ``fastdiff_core.run.execute`` on the mixture world (tiny
sample counts) and recorded the way the collector records them.
"""

from __future__ import annotations


from streamlit.testing.v1 import AppTest

from fastdiff_core.spec import RunSpec
from tests.apptest_support import VIEWS, page, texts


def record_done(store, exp_name: str, specs: list[RunSpec], sweep=None) -> tuple[str, list[str]]:
    from fastdiff_core.run import execute

    exp_id, run_ids = store.new_experiment(exp_name, specs, sweep)
    for rid, spec in zip(run_ids, specs):
        store.record_result(rid, "done", execute(spec), worker="test")
    store.compact()
    return exp_id, run_ids


def test_done_run_renders_verdict_nfe_and_histogram(home):
    from store import Store

    s = Store()
    spec = RunSpec(solver="euler", steps=6, samples=300, regime="offline", name="tiny")
    exp_id, (rid,) = record_done(s, "tiny", [spec])
    at = page("explore", run=rid).run()
    assert not at.exception
    m = {x.label: x.value for x in at.metric}
    assert m["NFE counted / sample"] == "6" and m["formula (dashboard)"] == "6"
    body = texts(at)
    assert "Verdict — offline" in body and "coverage" in body
    assert len(at.table) == 1
    shared = AppTest.from_file(str(VIEWS / "shared.py"), default_timeout=60)
    shared.query_params["exp"] = exp_id
    shared.run()
    assert not shared.exception and "read-only" in texts(shared)
    assert shared.table[0].value.equals(at.table[0].value)


def test_sweep_compare_and_pareto(home):
    from store import Store

    s = Store()
    base = RunSpec(samples=200, regime="offline")
    specs = [base.replace(solver=solver, steps=steps) for solver in ("euler", "heun") for steps in (3, 6)]
    exp_id, run_ids = record_done(s, "two solvers", specs, sweep={"solver": ["euler", "heun"], "steps": [3, 6]})
    at = page("sweep", sweep=exp_id).run()
    assert not at.exception
    assert "two solvers" in texts(at)
    assert len(at.get("plotly_chart")) >= 1
    cmp = page("compare", runs=f"{run_ids[0]},{run_ids[2]}").run()
    assert not cmp.exception
    diff = cmp.dataframe[0].value
    assert set(diff["field"]) == {"solver"}  # euler vs heun at 3 steps: only the solver differs
