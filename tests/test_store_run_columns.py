"""The runs table's per-run columns, derived once when the store compacts a run (store.run_columns) and
read with one projection (``Store.run_columns``): equal to what the dashboard derived from the store's
frames on its page before (``result_columns``) over the same runs, through compactions, merges and the
journal; a store of segment format 4 (tests/data/store-v4, written by that format's code) gains them and the
experiments' regime, world and sampler when opened, and shows identical tables."""

import json
import pathlib
import shutil

import polars as pl
import pytest

from app import runs_table
from fastdiff_core.spec import RunSpec
from store import Store, segments, upgrade
from store.run_columns import result_columns
from tests.apptest_support import page, table_with, texts

DATA = pathlib.Path(__file__).parent / "data"
FIXTURE = DATA / "store-v4"
EXPECTED = DATA / "store-v4-expected"


def same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """The same columns (any order) with the same types and values, row for row by run_id."""
    assert sorted(a.columns) == sorted(b.columns), set(a.columns) ^ set(b.columns)
    a, b = a.select(sorted(a.columns)).sort("run_id"), b.select(sorted(b.columns)).sort("run_id")
    for c in a.columns:
        assert a[c].dtype == b[c].dtype and a[c].equals(b[c]), (c, a[c], b[c])


def derived_by_the_page(s: Store, run_ids=None) -> tuple[pl.DataFrame, list[str]]:
    runs = s.runs(run_ids=run_ids)
    ids = runs["run_id"].to_list()
    return result_columns(runs, s.metrics(ids), s.histograms(ids))


def spec_columns(spec_json: str) -> tuple[str, str, str]:
    """What the Experiments page derived from an experiment's spec before the catalog held it."""
    sp = json.loads(spec_json)
    sampler = sp.get("student") if sp.get("sampler") == "student" else sp.get("solver")
    return sp.get("regime") or "offline", sp.get("world") or "", sampler or ""


def test_stored_columns_equal_the_pages_derivation_over_the_same_runs(tmp_path, monkeypatch):
    from fastdiff_core.run import execute

    monkeypatch.setattr(segments, "FANOUT", 2)  # merge early: merged segments hold the columns too
    s = Store(tmp_path)
    specs = [RunSpec(samples=32, solver=solver, steps=steps, seed=2) for solver in ("euler", "dpmpp_2m")
             for steps in (3, 6)]
    _, sweep = s.new_experiment("sweep", specs, sweep={"solver": ["euler", "dpmpp_2m"], "steps": [3, 6]})
    s.compact()  # queued rows first; their outcomes arrive in later batches
    for batch in (sweep[:2], sweep[2:]):
        with s.batched_writes():
            for rid in batch:
                s.record_result(rid, "done", execute(specs[sweep.index(rid)]), worker="test")
        s.compact()
    guided = RunSpec(samples=32, solver="heun", steps=4, guidance_scale=2.0, world_options={"condition": "rare"})
    _, (g,) = s.new_experiment("guided", guided)
    s.record_result(g, "done", execute(guided), worker="test")
    _, (f, c) = s.new_experiment("failed and cancelled", [RunSpec(samples=16, seed=i) for i in range(2)])
    s.record_result(f, "failed", error="RuntimeError: out of memory")
    s.record_result(c, "cancelled")
    gone, _ = s.new_experiment("deleted", RunSpec(samples=16))
    s.compact()
    s.delete_experiment(gone)
    _, (queued,) = s.new_experiment("queued in the journal", RunSpec(samples=16, solver="dpmpp_2m", steps=5))
    late = RunSpec(samples=32, solver="euler", steps=5, seed=9)
    _, (done_late,) = s.new_experiment("done in the journal", late)
    s.record_result(done_late, "done", execute(late), worker="test")
    assert any(seg.level > 0 for seg in segments.load(s.root)[0].segments)

    for store in (s, Store(tmp_path)):  # this process (its caches) and a new one (the files)
        got, names = store.run_columns()
        want, want_names = derived_by_the_page(store)
        assert got.height == 9 and set(got["run_id"].to_list()) == set(store.runs()["run_id"].to_list())
        same(got, want)
        assert sorted(names) == sorted(want_names) and {"rmse", "tail_rate_error"} <= set(names)
        some = [sweep[1], g, queued, done_late]
        got, _ = store.run_columns(some)
        same(got, derived_by_the_page(store, some)[0])
    s.compact()  # the journal folded: the same columns, now from the segments
    same(Store(tmp_path).run_columns()[0], derived_by_the_page(s)[0])


def test_a_format_4_store_gains_the_columns_and_shows_identical_tables(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    assert upgrade.needed(root)
    s = Store(root)
    manifest, _ = segments.load(root)
    assert not upgrade.needed(root) and all("run_columns" in seg.tables for seg in manifest.segments)
    want = json.loads((EXPECTED / "records.json").read_text())
    for exp_id, exp in want["experiments"].items():
        assert s.experiment(exp_id) == exp
    for run_id, run in want["runs"].items():
        assert s.run(run_id) == run
    readable = s.runs()["run_id"].to_list()
    got = {"experiments": s.experiments(), "runs": s.runs(), "metrics": s.metrics(readable),
           "histograms": s.histograms(readable), "latency": s.latency(readable), "sweeps": s.sweeps()}
    for name, frame in got.items():
        expected = pl.read_parquet(EXPECTED / f"{name}.parquet")
        assert frame.select(expected.columns).equals(expected), name
    exps = got["experiments"]
    assert exps.select("regime", "world", "sampler").rows() == [spec_columns(t) for t in exps["spec"]]
    # The runs table: the columns the format-4 dashboard derived on its page, and the table it built
    columns, names = s.run_columns()
    expected = pl.read_parquet(EXPECTED / "run_columns.parquet")
    same(columns, expected)
    assert names == json.loads((EXPECTED / "metrics.json").read_text())
    runs, exp_names = got["runs"], dict(exps.select("exp_id", "name").iter_rows())
    same(runs_table.build(runs, columns, exp_names, s.annotations()),  # columns in order of first appearance
         runs_table.build(runs, expected, exp_names, s.annotations()))
    # and it goes on: a second start has nothing to do; a new run is compacted beside the upgraded ones
    assert upgrade.upgrade(Store(root)) is None
    s.new_experiment("after", RunSpec(samples=16))
    assert s.compact() == 2  # the journal's queued run and the new one
    same(s.run_columns()[0], derived_by_the_page(s)[0])


def test_an_upgrade_killed_before_it_published_is_done_again_by_the_next_start(tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)

    def killed(*_):
        raise SystemExit("killed")

    with monkeypatch.context() as m:
        m.setattr(segments, "publish", killed)
        with pytest.raises(SystemExit):
            Store(root)
    assert upgrade.needed(root)  # the files written so far are named by no manifest of format 5
    s = Store(root)
    same(s.run_columns()[0], pl.read_parquet(EXPECTED / "run_columns.parquet"))
    expected = pl.read_parquet(EXPECTED / "experiments.parquet")
    assert s.experiments().select(expected.columns).equals(expected)


def test_the_experiments_page_shows_an_upgraded_store(home):
    shutil.copytree(FIXTURE, home / "store")
    at = page("experiments").run()
    assert not at.exception
    listed = table_with(at, "name", "regime", "world", "sampler")
    exps = pl.read_parquet(EXPECTED / "experiments.parquet")
    want = dict(zip(exps["name"], (spec_columns(t) for t in exps["spec"])))
    assert {n: (r, w, x) for n, r, w, x in listed[["name", "regime", "world", "sampler"]].itertuples(index=False)} == want
    runs = next(d.value for d in at.dataframe if "status" in d.value.columns and "rmse" in d.value.columns)
    assert len(runs) == 10 and "10 of 10 runs" in texts(at)


def test_a_verdict_the_code_cannot_read_leaves_its_columns_empty_and_the_compaction_goes_on(tmp_path):
    from fastdiff_core.run import execute

    s = Store(tmp_path)
    spec = RunSpec(samples=16, solver="euler", steps=3)
    _, (bad, good) = s.new_experiment("two", [spec, spec.replace(seed=1)])
    result = execute(spec).to_dict()
    s.record_result(bad, "done", dict(result, verdict={"measured": {"status": "pass"}}))  # a form no code reads
    s.record_result(good, "done", execute(spec.replace(seed=1)))
    assert s.compact() == 2
    columns, _ = s.run_columns()
    rows = {r["run_id"]: r for r in columns.iter_rows(named=True)}
    assert rows[bad]["verdict"] is None and rows[good]["verdict"] in ("PASS", "FAIL", "UNDECIDED")
    assert rows[bad]["rmse"] == s.metrics([bad]).filter(pl.col("name") == "rmse")["value"][0]


def test_a_page_passes_its_run_ids_as_a_column_checked_at_once(tmp_path):
    s = Store(tmp_path)
    _, run_ids = s.new_experiment("three", [RunSpec(samples=16, seed=i) for i in range(3)])
    s.compact()
    s.set_tags(run_ids[1], ["keep"])
    column = s.runs(columns=["run_id"])["run_id"]
    same(s.run_columns(column[:2])[0], s.run_columns(run_ids[:2])[0])
    assert s.annotations(column)["id"].to_list() == [run_ids[1]]
    for bad, field in ((pl.Series([run_ids[0], "r../../etc"]), "run_id='r../../etc'"),
                       (pl.Series([run_ids[0], None]), "run_id=None"), (pl.Series([1, 2]), "String Series")):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            s.run_columns(bad)
    with pytest.raises(ValueError, match="id='s0123456789ab'"):
        s.annotations(pl.Series([run_ids[0], "s0123456789ab"]))
