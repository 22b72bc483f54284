"""Store-backed pages through AppTest (empty states, experiment actions), against a real Store.

Runs that finish are produced by the real ``fastdiff_core.run.execute`` on the mixture world (tiny
sample counts) and recorded the way the collector records them.
"""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from fastdiff_core.spec import RunSpec
from tests.apptest_support import APP, VIEWS, page, texts


def test_pages_show_empty_states_without_data(home):
    for name, needle in [("experiments", "No experiments yet"), ("compare", "No finished runs yet"),
                         ("sweep", "No sweep yet")]:
        at = page(name).run()
        assert not at.exception, name
        assert needle in texts(at), name


def test_experiments_search_rename_delete(home):
    from store import Store

    s = Store()
    keep = s.create_experiment("heun vs euler", [RunSpec(solver="heun"), RunSpec(solver="euler")])
    gone = s.create_experiment("to delete", RunSpec())
    fail_exp, (fail_run,) = s.new_experiment("broken", RunSpec(steps=3))
    s.record_result(fail_run, "failed", error=(  # as workers/tasks.py stores a failure: message, then traceback
        "ValueError: steps=3 too few for this test\nTraceback (most recent call last):\n"
        '  File "/srv/fastdiff/fastdiff_core/run.py", line 42, in execute\nValueError: steps=3 too few for this test'))

    at = page("experiments").run()
    assert not at.exception
    at.text_input(key="xp.q").set_value("heun").run()
    assert at.query_params["q"] in ("heun", ["heun"])
    at = page("experiments", sel=gone).run()
    assert "to delete" in texts(at)
    at.button(key=f"xp.delete.{gone}").click().run()
    assert s.experiment(gone) is None
    at = page("experiments", sel=keep).run()
    at.text_input(key=f"xp.rename.{keep}").set_value("heun vs euler, renamed")
    at.button(key=f"xp.rename.go.{keep}").click().run()
    assert s.experiment(keep)["name"] == "heun vs euler, renamed"
    at = page("experiments", sel=fail_exp).run()
    shown = texts(at).replace("\\", "")  # markdown escapes of the plain-text rendering
    assert "failed: ValueError: steps=3 too few for this test" in shown
    assert "Traceback" not in shown and "/srv/fastdiff" not in shown  # no traceback or server path on a page


def test_shared_view_unknown_id_says_so(home):
    at = AppTest.from_file(str(VIEWS / "shared.py"), default_timeout=30)
    at.query_params["exp"] = "e000000000000"
    at.run()
    assert "Experiment not found" in texts(at)


def _edit_in_explore(spec: RunSpec) -> AppTest:
    """Save ``spec`` as an experiment and press its Edit-in-Explore button; the app is then on Explore."""
    from store import Store

    exp = Store().create_experiment("saved", spec)
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=60)
    at.switch_page("views/experiments.py")
    at.query_params["sel"] = exp
    at.run()
    at.button(key=f"xp.edit.{exp}").click().run()
    assert not at.exception
    return at


def test_edit_in_explore_loads_the_saved_spec(home):
    at = _edit_in_explore(RunSpec(solver="heun", steps=7, guidance_scale=2.5, samples=123))
    assert at.selectbox(key="ex.solver").value == "heun"
    assert at.number_input(key="ex.steps").value == 7 and at.number_input(key="ex.samples").value == 123
    assert {m.label: m.value for m in at.metric}["per frame"] == str((2 * 7 - 1) * 2)


def test_edit_in_explore_loads_the_saved_solver_options(home):
    at = _edit_in_explore(RunSpec(solver="ddim", solver_options={"eta": 0.3}, steps=9))
    assert at.selectbox(key="ex.solver").value == "ddim" and at.number_input(key="ex.opt.ddim.eta").value == 0.3
    assert at.query_params["opt.eta"] in ("0.3", ["0.3"])


def test_experiment_exports_a_self_contained_html_report(home):
    """Item 9: one HTML file with the configuration, the verdicts, the branch rates with intervals, the
    charts as interactive plotly with plotly.js inside (offline), and the link back."""
    from app import report
    from store import Store
    from tests.test_app_results import record_done

    s = Store()
    exp_id, _ = record_done(s, "report <me>", [RunSpec(samples=200, steps=6, regime="offline")])
    text = report.experiment_report(s, exp_id, f"http://dash.example/?exp={exp_id}")
    assert text.startswith("<!doctype html>") and "report &lt;me&gt;" in text  # names escaped
    assert "<th>field</th>" in text and "<td>steps</td><td>6</td>" in text
    assert "<th>measured how</th>" in text and "<td>overall</td>" in text  # the verdict table
    assert "<th>95% interval</th>" in text  # the branch rates with their intervals
    assert text.count("Plotly.newPlot") >= 2 and "plotly.js" in text.lower()  # figures, library inlined
    assert "<script src=" not in text  # nothing fetched from the network
    assert f"href='http://dash.example/?exp={exp_id}'" in text
    at = page("experiments", sel=exp_id).run()
    at.button(key=f"xp.report.build.{exp_id}").click().run()
    assert not at.exception and at.session_state[f"xp.report.{exp_id}"].startswith(b"<!doctype html>")


def test_edit_in_explore_loads_the_sequential_gate_and_the_form_builds_it(home):
    spec = RunSpec(world="driving", scene="child_at_curb", horizon=2, samples=100, steps=4, solver="euler",
                   gate_cap=400, gate_alpha=0.02)
    at = _edit_in_explore(spec)
    assert at.number_input(key="ex.gate_cap").value == 400 and at.number_input(key="ex.gate_alpha").value == 0.02
    assert not at.number_input(key="ex.gate_cap").disabled
    at.selectbox(key="ex.world").set_value("mixture").run()
    assert not at.exception
    gate = [n for n in at.number_input if n.key == "ex.gate_cap"]
    assert all(n.disabled or n.value for n in gate)  # the mixture has no sequential gate: off, or kept to refuse
