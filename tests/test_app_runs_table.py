"""The runs table (app/runs_table.py): columns derived from the spec, the metrics and the verdicts;
filters, sort, tags, baseline deltas with intervals, the URL state; and the Experiments page drawing
it from a link. Runs are real: ``fastdiff_core.run.execute`` on the mixture world, recorded as the
collector records them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from app import runs_table
from app.runs_table import TableState
from fastdiff_core.metrics.intervals import difference_interval, wilson_interval
from fastdiff_core.spec import RunSpec
from store import run_columns
from tests.apptest_support import page, texts


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store of four finished mixture runs (two solvers x two step counts) and one queued run."""
    from fastdiff_core.run import execute
    from store import Store

    s = Store(tmp_path_factory.mktemp("runs-table"))
    specs = [RunSpec(samples=32, solver=solver, steps=steps, seed=1) for solver in ("euler", "dpmpp_2m")
             for steps in (3, 8)]
    exp, run_ids = s.new_experiment("four runs", specs, sweep={"solver": ["euler", "dpmpp_2m"], "steps": [3, 8]})
    for rid, spec in zip(run_ids, specs):
        s.record_result(rid, "done", execute(spec), worker="test")
    queued, _ = s.new_experiment("queued one", RunSpec(samples=32, solver="heun", steps=4))
    return s, exp, run_ids, queued


def table_of(s, exp_names=None) -> tuple[pl.DataFrame, list[str]]:
    runs = s.runs()
    results, metrics = run_columns.result_columns(runs, s.metrics(runs["run_id"].to_list()),
                                                 s.histograms(runs["run_id"].to_list()))
    names = exp_names or {e: n for e, n in s.experiments().select("exp_id", "name").iter_rows()}
    return runs_table.build(runs, results, names, s.annotations()), metrics


def test_columns_come_from_the_spec_the_metrics_and_the_verdicts(stored):
    s, exp, run_ids, _ = stored
    frame, metrics = table_of(s)
    assert frame.height == 5 and frame["run_id"].to_list()[:4] == run_ids
    spec_fields = dict(run_columns.flat({k: v for k, v in RunSpec().to_dict().items() if k != "schema_version"}))
    for f in spec_fields:  # every RunSpec field (nested options dotted), none listed by hand
        assert (f"spec.{f}" if f in run_columns.RUN_COLUMNS else f) in frame.columns, f
    assert "spec.device" in frame.columns and frame["device"][0] == "cpu"  # asked for vs where it ran
    stored_metrics = set(s.metrics(run_ids)["name"].to_list())
    assert stored_metrics <= set(metrics) <= set(frame.columns)
    assert {"tail_rate", "tail_rate_lo", "tail_rate_hi", "tail_rate_error"} <= set(metrics)
    assert frame["verdict"].to_list()[:4] != [None] * 4 and "verdict.coverage" in frame.columns
    assert frame["experiment"].to_list() == ["four runs"] * 4 + ["queued one"]
    row = frame.row(0, named=True)
    assert row["solver"] == "euler" and row["steps"] == 3 and row["solver_options.final"] is not None
    hist = s.histograms([run_ids[0]]).filter(pl.col("label") == "rare").row(0, named=True)
    assert row["tail_rate"] == hist["rate"] and row["tail_rate_error"] == pytest.approx(abs(hist["rate"] - hist["truth"]))


def test_a_new_spec_field_or_metric_becomes_a_column_by_itself():
    runs = pl.DataFrame({"run_id": ["r000000000001"], "world": ["mixture"], "verdict": [None],
                         "spec": ['{"solver": "euler", "brand_new": {"knob": 3}}']})
    metrics = pl.DataFrame({"run_id": ["r000000000001"], "name": ["new_metric"], "value": [0.5]})
    empty_hist = pl.DataFrame(schema={"run_id": pl.String, "group": pl.String, "label": pl.String,
                                      "rate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "truth": pl.Float64})
    frame, names = run_columns.result_columns(runs, metrics, empty_hist)
    assert frame.row(0, named=True) == {"run_id": "r000000000001", "solver": "euler", "brand_new.knob": 3,
                                        "new_metric": 0.5}
    assert names == ["new_metric"]


def test_filters_sort_and_tags(stored):
    s, exp, run_ids, queued = stored
    s.set_tags(run_ids[1], ["keep", "ship"])
    s.set_tags(run_ids[2], ["keep"])
    try:
        frame, _ = table_of(s)
        shown = runs_table.apply(frame, TableState(filter="steps>=8; solver=euler,dpmpp_2m"))
        assert shown["run_id"].to_list() == [run_ids[1], run_ids[3]]
        assert runs_table.apply(frame, TableState(filter="solver!=euler; status=done"))["run_id"].to_list() == run_ids[2:]
        assert runs_table.apply(frame, TableState(filter="experiment~QUEUED"))["status"].to_list() == ["queued"]
        assert runs_table.apply(frame, TableState(tags=("ship",)))["run_id"].to_list() == [run_ids[1]]
        assert runs_table.apply(frame, TableState(tags=("ship", "keep")))["run_id"].to_list() == run_ids[1:3]
        assert runs_table.apply(frame, TableState(filter="tags~ship"))["run_id"].to_list() == [run_ids[1]]
        by_err = runs_table.apply(frame, TableState(sort=("tail_rate_error", True)))
        errs = by_err["tail_rate_error"].to_list()
        assert errs[:4] == sorted(errs[:4], reverse=True) and errs[4] is None  # missing values last
        for bad, says in (("steps>>3", "'>3' is not a number"), ("nope=1", "'nope' is not a column"),
                          ("steps", "is not 'column op value'"), ("steps>=inf", "not a finite number")):
            with pytest.raises(ValueError, match=says):
                runs_table.apply(frame, TableState(filter=bad))
    finally:
        s.set_tags(run_ids[1], [])
        s.set_tags(run_ids[2], [])


def test_a_metric_named_like_the_tail_rate_columns_keeps_its_own_column(stored):
    """The model world reports a metric called tail_rate; the table's own tail_rate (from the histogram)
    keeps its name, the metric becomes metric.tail_rate, and a baseline over both works (it failed with
    'the name Δ tail_rate is duplicate' on the Experiments page once such a run was stored)."""
    s, exp, run_ids, _ = stored
    runs = s.runs().filter(pl.col("run_id").is_in(run_ids))
    metrics = pl.concat([s.metrics(run_ids), pl.DataFrame({"run_id": run_ids, "name": ["tail_rate"] * 4,
                                                          "value": [0.125] * 4})], how="diagonal_relaxed")
    results, names = run_columns.result_columns(runs, metrics, s.histograms(run_ids))
    assert len(names) == len(set(names)) and "metric.tail_rate" in names and "tail_rate" in names
    assert results["metric.tail_rate"].to_list() == [0.125] * 4
    assert results["tail_rate"].to_list() == table_of(s)[0].filter(pl.col("run_id").is_in(run_ids))["tail_rate"].to_list()
    frame = runs_table.build(runs, results, {exp: "four runs"}, s.annotations())
    out = runs_table.with_baseline(frame, run_ids[1], names)
    assert out.filter(pl.col("run_id") == run_ids[1])["Δ metric.tail_rate"].to_list() == [0.0]


def test_baseline_deltas_carry_the_interval_of_the_difference(stored):
    s, exp, run_ids, _ = stored
    frame, metrics = table_of(s)
    out = runs_table.with_baseline(frame, run_ids[3], metrics)
    base = out.filter(pl.col("run_id") == run_ids[3]).row(0, named=True)
    assert base["Δ rmse"] == 0.0 and base["Δ tail_rate"] == 0.0
    assert "Δ rmse_lo" not in out.columns  # rmse has no interval: a delta, no interval, no word
    r = out.filter(pl.col("run_id") == run_ids[0]).row(0, named=True)
    b = frame.filter(pl.col("run_id") == run_ids[3]).row(0, named=True)
    a = frame.filter(pl.col("run_id") == run_ids[0]).row(0, named=True)
    assert r["Δ rmse"] == pytest.approx(a["rmse"] - b["rmse"])
    lo = r["Δ tail_rate_lo"]
    hi = r["Δ tail_rate_hi"]
    assert lo <= r["Δ tail_rate"] <= hi
    assert r["tail_rate vs baseline"] == ("higher" if lo > 0 else "lower" if hi < 0 else "no difference shown")
    assert out.filter(pl.col("status") == "queued")["tail_rate vs baseline"].to_list() == [""]
    with pytest.raises(ValueError, match="is not a run of this table"):
        runs_table.with_baseline(frame, "r0123456789ab", metrics)


def test_difference_interval_is_newcombes_for_two_wilson_intervals():
    # Newcombe (1998), Table II, example (h): 56/70 vs 48/80 -> difference 0.2, 95% CI [0.0524, 0.3339].
    (l1, u1), (l2, u2) = wilson_interval(56, 70), wilson_interval(48, 80)
    d, lo, hi = difference_interval(56 / 70, l1, u1, 48 / 80, l2, u2)
    assert float(d) == pytest.approx(0.2) and float(lo) == pytest.approx(0.0524, abs=1e-4)
    assert float(hi) == pytest.approx(0.3339, abs=1e-4)
    assert np.isnan(difference_interval(np.nan, 0, 1, 0.5, 0.4, 0.6)[1])


def test_state_round_trips_through_the_url_and_refuses_what_the_table_lacks():
    st_ = TableState(filter="steps>=8", sort=("tail_rate_error", True), cols=("run_id", "steps"), color="solver",
                     base="r0123456789ab", tags=("keep", "ship"))
    params = st_.to_params()
    assert params == {"filter": "steps>=8", "sort": "-tail_rate_error", "cols": "run_id,steps", "color": "solver",
                      "base": "r0123456789ab", "tag": "keep,ship"}
    assert TableState.from_params(params) == st_
    assert TableState().to_params() == {}
    kept, said = st_.checked(["run_id", "steps", "solver"], ["r000000000001"])
    assert kept == TableState(filter="steps>=8", cols=("run_id", "steps"), color="solver", tags=("keep", "ship"))
    assert any("sort='tail_rate_error'" in m for m in said) and any("base='r0123456789ab'" in m for m in said)


def test_colour_groups_by_value_or_by_quantile_bin(stored):
    s, *_ = stored
    frame, _ = table_of(s)
    assert runs_table.colour_groups(frame, "solver") == ["euler", "euler", "dpmpp_2m", "dpmpp_2m", "heun"]
    wide = pl.DataFrame({"x": [float(i) for i in range(20)] + [None]})
    groups = runs_table.colour_groups(wide, "x", bins=4)
    assert len(set(groups[:20])) == 4 and groups[20] == "(none)"
    assert groups[0] == groups[1] and groups[0] != groups[19]


def test_experiments_page_draws_the_table_a_link_describes(home):
    from fastdiff_core.run import execute
    from store import Store

    s = Store()
    specs = [RunSpec(samples=16, solver="euler", steps=k) for k in (3, 5, 8)]
    exp, run_ids = s.new_experiment("three", specs, sweep={"steps": [3, 5, 8]})
    for rid, spec in zip(run_ids, specs):
        s.record_result(rid, "done", execute(spec), worker="test")
    s.set_tags(run_ids[0], ["base"])
    s.set_tags(run_ids[2], ["base", "long"])
    at = page("experiments", filter="steps>=4", sort="-steps", base=run_ids[1], cols="run_id,steps,rmse,tail_rate",
              tag="long,base").run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "rmse" in d.value.columns)
    assert table["run_id"].tolist() == [run_ids[2]]  # steps>=4 and a tag in (long, base)
    assert {"steps", "rmse", "Δ rmse", "Δ tail_rate", "Δ tail_rate_lo", "tail_rate vs baseline"} <= set(table.columns)
    assert "Baseline: run" in texts(at)
    # the scatter of any two columns is drawn only once its expander is opened (a page load draws none)
    assert not any(c.proto.spec and "scatter" in c.proto.spec for c in at.get("plotly_chart"))
    at.session_state["xp.runs.chart"] = True
    at.run()
    assert not at.exception and any('"scatter' in c.proto.spec for c in at.get("plotly_chart"))
    at = page("experiments", sort="nope", base="r0123456789ab").run()
    assert not at.exception
    warned = " ".join(w.value for w in at.warning)
    assert "sort='nope' is not a column" in warned and "base='r0123456789ab' is not a run" in warned
