"""The first screen: one example per regime, each runnable (its world supports it and the run guard lets
it through at the conservative prior, what a fresh installation estimates), loaded by one click."""

from __future__ import annotations

from app.examples import EXAMPLES
from fastdiff_core import budget, catalog
from tests.apptest_support import page


def test_one_runnable_example_per_regime():
    assert [ex.regime for ex in EXAMPLES] == list(catalog.REGIMES)
    for ex in EXAMPLES:
        assert ex.spec.regime == ex.regime and ex.spec.refusal() is None, ex.title
        bill = budget.bill_for(ex.spec)
        estimate = budget.runtime_prior(ex.spec.world).estimate(budget.work_of(ex.spec, bill))
        assert budget.run_guard(estimate) is None, (ex.title, estimate.describe())


def test_the_planning_example_opens_runnable(home):
    at = page("explore").run()
    assert "fastdiff answers one question" in " ".join(m.value for m in at.markdown)
    at.button(key="ex.example.planning.go").click().run()
    assert not at.exception
    assert at.selectbox(key="ex.world").value == "driving" and at.number_input(key="ex.plans").value == 10
    assert not at.button(key="ex.run").disabled
    assert any("Loaded the example 'In-the-loop planning'" in i.value for i in at.info)
