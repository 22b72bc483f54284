"""Pages over finished runs through AppTest, against a real Store in a temporary FASTDIFF_HOME.

Runs that finish are produced by the real ``fastdiff_core.run.execute`` on the mixture world (tiny
sample counts) and recorded the way the collector records them.
"""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from fastdiff_core.spec import RunSpec
from tests.apptest_support import VIEWS, page, table_with, texts


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
    assert "Measured verdict — offline" in body and "coverage" in body
    branches = table_with(at, "branch", "95% interval")
    shared = AppTest.from_file(str(VIEWS / "shared.py"), default_timeout=60)
    shared.query_params["exp"] = exp_id
    shared.run()
    assert not shared.exception and "read-only" in texts(shared)
    assert table_with(shared, "branch", "95% interval").equals(branches)


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
    # one NFE unit: the table's cost column is the chart's x axis, named; the default metric is the
    # tail-rate error; the points are coloured by solver
    assert at.selectbox(key="sw.res.y").value == "tail_rate_error"
    table = table_with(at, "run_id", "NFE per planning cycle (counted)")
    assert sorted(table["NFE per planning cycle (counted)"]) == [3.0, 5.0, 6.0, 11.0]  # per sample: Heun 2n - 1
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    fig = figs[0]
    assert fig["layout"]["xaxis"]["title"]["text"] == "NFE per planning cycle (counted)"
    assert {"euler", "heun"} <= {t.get("name") for t in fig["data"]}
    # one view drawn at a time: the Pareto frontier first; the parallel coordinates when its tab is chosen
    assert [t.label for t in at.get("tab")][:3] == ["Pareto frontier", "Parallel coordinates", "Grid of the metric"]
    assert not any(f["data"][0]["type"] == "parcoords" for f in figs)
    at.session_state["sw.res.view"] = "Parallel coordinates"
    at.run()
    assert not at.exception
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert not any("Pareto frontier" in {t.get("name") for t in f["data"]} for f in figs)  # its tab is closed
    # parallel coordinates over the sweep: the swept fields, the cost and the metric
    par = next(f for f in figs if f["data"][0]["type"] == "parcoords")["data"][0]
    assert [d["label"] for d in par["dimensions"]] == ["solver", "steps", "NFE per planning cycle (counted)",
                                                      "tail_rate_error"]
    assert par["dimensions"][0]["ticktext"] == ["euler", "heun"]
    cmp = page("compare", runs=f"{run_ids[0]},{run_ids[2]}").run()
    assert not cmp.exception
    diff = cmp.dataframe[0].value
    # euler vs heun at 3 steps: the solver, and the options it carries (heun has single_stage_steps)
    assert set(diff["field"]) == {"solver", "solver_options"}


def test_sweep_over_a_solver_option_plans_runs_and_shows_its_grid(home):
    """The Sweep page offers the base solver's options as axes (solver_options.eta for DDIM); the runs are
    planned before queueing, and a finished option sweep lays its grid out by the option's values."""
    from store import Store

    at = page("sweep").run()
    assert "solver_options.eta" not in at.selectbox(key="sw.axis0.field").options  # base: dpmpp_2m
    # a form field that is an axis shows as such (disabled, saying which axis sets it)
    assert at.selectbox(key="sw.solver").disabled and "Swept: X axis" in at.selectbox(key="sw.solver").help
    assert at.number_input(key="sw.steps").disabled and "Swept: Y axis" in at.number_input(key="sw.steps").help
    assert at.text_input(key="sw.exp_name").value == "sweep over solver, steps"
    at.selectbox(key="sw.axis0.field").set_value("").run()
    assert not at.selectbox(key="sw.solver").disabled
    assert at.text_input(key="sw.exp_name").value == "sweep over steps"  # the name follows the axes
    at.selectbox(key="sw.solver").set_value("ddim").run()
    at.selectbox(key="sw.axis0.field").set_value("solver_options.eta").run()
    at.text_input(key="sw.axis0.values").set_value("0-1 [3]").run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["runs"] == "12"  # eta 3 values x steps 4-16 (+4)
    assert at.text_input(key="sw.exp_name").value == "sweep over solver_options.eta, steps"
    at.text_input(key="sw.exp_name").set_value("my eta study").run()
    at.text_input(key="sw.axis1.values").set_value("4-8 (+4)").run()
    assert at.text_input(key="sw.exp_name").value == "my eta study"  # a typed name is kept
    at.selectbox(key="sw.solver").set_value("euler").run()  # an option of a solver no longer chosen
    assert at.selectbox(key="sw.axis0.field").value == ""

    s = Store()
    base = RunSpec(solver="ddim", samples=200, regime="offline")
    specs = [base.replace(steps=steps, solver_options={"eta": eta}) for steps in (3, 6) for eta in (0.0, 1.0)]
    exp_id, _ = record_done(s, "eta", specs, sweep={"steps": [3, 6], "solver_options.eta": [0.0, 1.0]})
    done = page("sweep", sweep=exp_id).run()
    assert not done.exception
    assert len(done.dataframe) == 1  # the runs table: the grid is sent when its tab is chosen
    done.session_state["sw.res.view"] = "Grid of the metric"
    done.run()
    assert not done.exception
    grid = done.dataframe[0].value  # X = eta across, Y = steps down
    assert {"0.0", "1.0"} <= set(grid.columns) and sorted(grid["steps"].to_list()) == [3, 6]


def test_driving_run_renders_branches_bill_and_rollouts(home):
    """A run of the driving world (real teacher, real rollouts) on the run page: the NFE the counter
    saw equals the dashboard's S x C x H x P·R, the branch table lists every branch with the tail
    marked and its truth, and the sampled rollouts are drawn."""
    from store import Store

    from fastdiff_core.worlds.driving.scenes import LABELS, TAIL

    s = Store()
    spec = RunSpec(world="driving", scene="child_at_curb", solver="dpmpp_2m", steps=4, samples=24, horizon=3,
                   plans=1, futures=2, guidance_scale=2.0, guidance_interval=(0.3, 5.0), regime="closed_loop",
                   world_options={"action": "brake"}, name="driving tiny")
    _, (rid,) = record_done(s, "driving", [spec])
    at = page("explore", run=rid).run()
    assert not at.exception
    m = {x.label: x.value for x in at.metric}
    assert m["NFE counted / sample"] == m["formula (dashboard)"] == m["formula (worker)"]
    assert float(m["NFE counted / sample"].replace(",", "")) > 4 * 3 * 2  # the guidance interval: 1 < C < 2
    body = texts(at)
    assert "Measured verdict — closed_loop" in body
    rows = table_with(at, "branch", "95% interval")
    branches = [str(b) for b in rows["branch"]]
    assert f"{TAIL} (tail)" in branches and all(any(b.startswith(lab) for b in branches) for lab in LABELS)
    assert (rows["truth"] != "").any()
    # the charts, one tab at a time (a page load draws the bill's waterfall and the branch rates only)
    def titles(at) -> list[str]:
        return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]

    assert [t.label for t in at.get("tab")][2:5] == ["Branch rates", "Latency: projected and measured", "Samples"]
    assert [t.split(":")[0] for t in titles(at)] == ["NFE per cycle, from a vanilla plan (S 1000 x C 2 x H 20 x P·R 40)",
                                                     "Branch rates"]
    at.session_state["ex.result.charts"] = "Latency: projected and measured"
    assert [t.split(":")[0] for t in titles(at.run())][1:] == ["Projected latency", "Measured on the worker"]
    at.session_state["ex.result.charts"] = "Samples"
    assert titles(at.run())[1:] == ["Sampled rollouts (one line per future; tail branch in red)"]
    assert table_with(at, "branch", "95% interval").equals(rows)  # the branch table whichever tab is shown


def test_sequential_run_page_bills_the_drawn_rollouts_and_says_why_it_stopped(home):
    """A driving run with a sequential gate (RunSpec.gate_cap) on the run page and in the run-time model:
    NFE per sample is the counted one over the cycles drawn (not the cap's), the caption says how many
    looks it drew and why it stopped, and the run-time fit sees the rollouts drawn."""
    from store import Store

    from app import connection

    s = Store()
    spec = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=8, samples=25, horizon=6,
                   gate_cap=1000, regime="closed_loop", world_options={"k": 3}, name="sequential")
    _, (rid,) = record_done(s, "sequential", [spec])
    result = s.run(rid)["result"]
    drawn = result["metrics"]["rollouts_drawn"]
    assert drawn < 1000 and result["info"]["sequential"]["stopped"] == "decided"
    at = page("explore", run=rid).run()
    assert not at.exception
    m = {x.label: x.value for x in at.metric}
    assert m["NFE counted / sample"] == m["formula (dashboard)"] == m["formula (worker)"] == "48"
    body = texts(at)
    assert f"x {int(drawn):,} rollouts = {48 * int(drawn):,} per run (sequential gate: " in body
    assert "decided; worst case 48,000 at the cap of 1,000)" in body
    assert "Measured verdict — closed_loop" in body and "sequential: decided" in body
    (row,) = connection.stored_runtime_rows("driving")
    assert row["work"].rollouts == drawn and row["work"].nfe == 48 * drawn


def test_runtime_rows_are_read_once_and_follow_the_store(home, monkeypatch):
    """The run-time estimate beside Run reads each done run once per server process (not on every
    keystroke), and still sees a run that finished after the first read and drops a deleted one."""
    from store import Store

    from app import connection

    s = Store()
    spec = RunSpec(solver="euler", steps=3, samples=50, regime="offline")
    _, (first,) = record_done(s, "first", [spec])
    assert [r["run_id"] for r in connection.stored_runtime_rows("mixture")] == [first]
    parsed, real = [], connection.runtime_rows
    monkeypatch.setattr(connection, "runtime_rows", lambda runs, *a: parsed.append(runs.height) or real(runs, *a))
    assert [r["run_id"] for r in connection.stored_runtime_rows("mixture")] == [first]
    assert parsed == []  # nothing new: nothing read or parsed again
    exp2, (second,) = record_done(s, "second", [spec.replace(steps=4)])
    assert [r["run_id"] for r in connection.stored_runtime_rows("mixture")] == [first, second]
    assert parsed == [1]  # only the new run
    assert connection.stored_runtime_rows("mixture")[1]["setup_s"] < 0.01  # recorded (the mixture loads nothing)
    s.delete_experiment(exp2)
    assert [r["run_id"] for r in connection.stored_runtime_rows("mixture")] == [first]
    assert connection.stored_runtime_rows("driving") == []


def test_a_moving_digits_run_from_a_link_and_its_stored_result(home):
    """Issue 15 item 5 on the page: a moving_digits spec given by a link fills the form and is runnable,
    and its stored run shows its own spec, the world's branches (the rare jump) and a verdict."""
    from store import Store

    at = page("explore", world="moving_digits", solver="euler", steps="4", horizon="2", futures="8").run()
    assert not at.exception
    assert at.selectbox(key="ex.world").value == "moving_digits" and at.number_input(key="ex.horizon").value == 2
    assert not at.button(key="ex.run").disabled
    spec = RunSpec(world="moving_digits", solver="euler", steps=4, horizon=2, futures=8, samples=1,
                   world_options={"action": "right"}, name="digit moving right")
    _, (rid,) = record_done(Store(), "moving digits", [spec])
    at = page("explore", run=rid).run()
    assert not at.exception
    assert at.selectbox(key="ex.world").value == "moving_digits"  # the run's own spec in the form
    assert "verdict" in texts(at).lower()
    branches = " ".join(table_with(at, "branch", "95% interval")["branch"])
    assert "steady" in branches and "jumps (tail)" in branches  # the rare branch, marked as the tail
