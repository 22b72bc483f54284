"""A reader that keeps its store open updates its in-memory index from the batches published since its
last read (``store.segments.goes_on_from``, ``after``, ``updated``): what it holds and what it reads
must equal what a new reader of the same manifest builds from every segment, through random submissions,
results, renames, deletions, merges and manifests it never saw."""

import json
import random
import shutil

import polars as pl
import pytest

from fastdiff_core.spec import RunSpec
from store import Store, segments
from tests.test_store import result_for


def _same(kept: Store, root) -> None:
    fresh = Store(root)
    a, b = kept._snapshot(), fresh._snapshot()
    assert a.manifest == b.manifest
    assert a.index.equals(b.index), (a.index, b.index)
    assert a.catalog.equals(b.catalog), (a.catalog, b.catalog)
    assert kept._wide(a).equals(fresh._wide(b))
    assert kept.experiments().equals(fresh.experiments())
    assert kept.runs().equals(fresh.runs())
    assert kept.run_columns()[0].equals(fresh.run_columns()[0])
    # experiments() (the snapshot's rows, once per manifest, with the inbox's changes) against the counts of runs()
    exps = kept.experiments()
    counts = kept.runs(columns=["exp_id", "status"]).group_by("exp_id").agg(
        [(pl.col("status") == s).sum().cast(pl.Int32).alias(f"n_{s}") for s in ("done", "failed", "cancelled", "queued")])
    want = kept._catalog()[0].select("exp_id", "name", "n_runs").join(counts, on="exp_id", how="left").fill_null(0)
    assert exps.select(want.columns).sort("exp_id").equals(want.sort("exp_id"))
    assert exps["created"].is_sorted(descending=True)


def _step(rng: random.Random, s: Store, live: list[str]) -> None:
    op = rng.random()
    if op < 0.35 or not live:
        n = rng.choice([1, 1, 3, 5])
        sp = [RunSpec(samples=16, steps=1 + rng.randrange(4), seed=rng.randrange(1000)) for _ in range(n)]
        exp, _ = s.new_experiment(f"e{rng.randrange(99)}", sp, sweep={"seed": [x.seed for x in sp]} if n > 1 else None)
        live.append(exp)
    elif op < 0.75:  # results of some queued runs (their rows are re-recorded in a later batch)
        queued = s.runs(status="queued", columns=["run_id", "spec"])
        for rid, spec in rng.sample(list(queued.iter_rows()), min(queued.height, rng.randrange(1, 6))):
            status = rng.choice(["done", "done", "failed", "cancelled"])
            s.record_result(rid, status, result_for(RunSpec.from_json(spec), rng.randrange(8))
                            if status == "done" else None)
    elif op < 0.85:
        s.rename_experiment(rng.choice(live), f"renamed{rng.randrange(99)}")
    else:
        exp = live.pop(rng.randrange(len(live)))
        s.delete_experiment(exp)


@pytest.mark.parametrize("seed", [0, 1])
def test_an_index_updated_from_new_batches_equals_one_built_from_every_segment(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(segments, "FANOUT", 3)  # merges every few compactions, some of batches a reader never saw
    rng = random.Random(seed)
    writer, kept = Store(tmp_path), Store(tmp_path)
    live: list[str] = []
    merged = False
    for i in range(40):
        _step(rng, writer, live)
        if rng.random() < 0.6:
            writer.compact()
            merged |= any(s.level > 0 for s in segments.load(writer.root)[0].segments)
        if rng.random() < 0.5 or i == 39:
            _same(kept, tmp_path)
    assert merged and kept._snapshot().index.height > 10


def test_a_store_replaced_under_a_reader_is_read_again_whole(tmp_path):
    root = tmp_path / "s"
    first = Store(root)
    exp, _ = first.new_experiment("a", [RunSpec(samples=16, seed=i) for i in range(4)], sweep={"seed": [0, 1, 2, 3]})
    for _ in range(3):
        first.new_experiment("b", RunSpec(samples=16))
        first.compact()
    kept = Store(root)
    assert kept.experiments().height == 4
    seen = kept._snapshot().manifest
    shutil.rmtree(root)
    other = Store(root)  # a new store at the same place: its manifest does not go on from the one kept read
    other.new_experiment("c", RunSpec(samples=16))
    other.compact()
    assert not segments.goes_on_from(segments.load(root)[0], seen)
    assert kept.experiments()["name"].to_list() == ["c"]
    _same(kept, root)


def test_experiments_of_some_columns_are_those_of_all_and_the_spec_is_read_only_when_asked(tmp_path):
    s = Store(tmp_path)
    a, _ = s.new_experiment("a", RunSpec(samples=16, seed=1))
    s.compact()
    s.new_experiment("b", RunSpec(samples=16, seed=2))  # in the journal only
    s.rename_experiment(a, "a2")
    cols = ["exp_id", "name", "created", "n_runs", "status", "n_queued"]
    some = s.experiments(columns=cols)
    assert s._snapshot().specs is None and "spec" not in s._snapshot().catalog.columns
    everything = s.experiments()
    assert some.equals(everything.select(cols)) and everything["name"].to_list() == ["b", "a2"]
    assert [json.loads(x)["seed"] for x in everything["spec"]] == [2, 1]
    assert s.experiments(search="A2", columns=["name", "spec"]).rows() == [("a2", everything["spec"][1])]
    with pytest.raises(ValueError, match=r"columns=\['nope'\] are not experiment columns"):
        s.experiments(columns=["name", "nope"])
