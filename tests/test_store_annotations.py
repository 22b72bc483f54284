"""Tags and notes on runs and experiments (store.annotations through Store): stored as their own small
records, replaced on edit, checked where they enter, gone with their experiment, shared by processes."""

import json
import multiprocessing as mp
import zipfile

import polars as pl
import pytest

from fastdiff_core.spec import RunSpec
from store import Store


def _tag_many(root: str, run_id: str, k: int) -> None:
    s = Store(root)
    for i in range(20):
        s.set_note(run_id, f"writer {k} edit {i}")


def test_tags_and_notes_round_trip_and_are_checked(tmp_path):
    s = Store(tmp_path)
    exp, (r1, r2) = s.new_experiment("exp", [RunSpec(samples=16, seed=i) for i in range(2)])
    assert s.annotations().height == 0
    assert s.set_tags(r1, ["ship", "baseline", "ship", " fast "]) == ["baseline", "fast", "ship"]
    s.set_note(r1, "the one we compare against\nsecond line")
    s.set_tags(exp, ["sweep:oct"])
    a = {r["id"]: r for r in s.annotations().iter_rows(named=True)}
    assert set(a) == {r1, exp}
    assert a[r1]["tags"] == ["baseline", "fast", "ship"] and a[r1]["note"].endswith("second line")
    assert a[exp]["tags"] == ["sweep:oct"] and a[exp]["note"] == ""
    assert s.annotations([r2]).height == 0 and s.annotations([r1])["id"].to_list() == [r1]
    s.set_tags(r1, [])  # the note keeps the record
    assert s.annotations([r1])["tags"].to_list() == [[]]
    s.set_note(r1, "")  # nothing left: no record
    assert s.annotations([r1]).height == 0
    for bad, field in ((["two words"], "tag='two words'"), (["a,b"], "tag='a,b'"), ("ship", "tags='ship'"),
                       ([""], "tag=''"), ([7], "tag=7"), ([f"t{i}" for i in range(40)], "at most 32")):
        with pytest.raises(ValueError, match=field.replace("(", r"\(")):
            s.set_tags(r2, bad)
    with pytest.raises(ValueError, match="note="):
        s.set_note(r2, "x" * 10_001)
    with pytest.raises(ValueError, match="not a stored run or experiment"):
        s.set_tags("r0123456789ab", ["x"])
    with pytest.raises(ValueError, match="not a run or experiment id"):
        s.set_tags("../etc", ["x"])
    assert s.annotations([r2]).height == 0  # nothing was written by a refused edit


def test_deleting_an_experiment_deletes_its_annotations(tmp_path):
    s = Store(tmp_path)
    exp, (r1,) = s.new_experiment("exp", RunSpec(samples=16))
    keep, (r2,) = s.new_experiment("keep", RunSpec(samples=16))
    for t in (exp, r1, r2):
        s.set_tags(t, ["x"])
    s.delete_experiment(exp)
    assert s.annotations()["id"].to_list() == [r2]


def test_edits_from_several_processes_leave_one_readable_record(tmp_path):
    s = Store(tmp_path)
    _, (r1,) = s.new_experiment("exp", RunSpec(samples=16))
    s.set_tags(r1, ["kept"])
    procs = [mp.get_context("spawn").Process(target=_tag_many, args=(str(tmp_path), r1, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    row = s.annotations([r1]).row(0, named=True)
    assert row["tags"] == ["kept"]  # no note edit undid the tag
    assert row["note"].startswith("writer ") and row["note"].endswith("edit 19")


def test_a_bundle_carries_the_tags_and_notes_and_import_restores_them(tmp_path):
    s = Store(tmp_path / "a")
    exp, (r1, r2) = s.new_experiment("shared", [RunSpec(samples=16, seed=i) for i in range(2)])
    s.set_tags(r1, ["baseline", "ship"])
    s.set_note(r1, "the one we compare against")
    s.set_tags(exp, ["review"])
    s.set_note(exp, "for Tuesday's design review")
    path = s.export_bundle(exp, tmp_path / "b.zip")
    t = Store(tmp_path / "b")
    new = t.import_bundle(path)
    new_runs = t.experiment(new)["run_ids"]
    got = {r["id"]: (r["tags"], r["note"]) for r in t.annotations().iter_rows(named=True)}
    assert got == {new: (["review"], "for Tuesday's design review"),
                   new_runs[0]: (["baseline", "ship"], "the one we compare against")}  # r2 had none: none
    with zipfile.ZipFile(path) as z:  # the Parquet view carries them too
        table = pl.read_parquet(z.read("annotations.parquet"))
        doc = json.loads(z.read("experiment.json"))
    assert sorted(table["id"].to_list()) == sorted([exp, r1])
    # Checked before anything is written: a tag that is not one, or an id that is not the bundle's.
    for bad, says in (({r2: {"tags": ["two words"]}}, "tag='two words'"),
                      ({"r0123456789ab": {"note": "x"}}, "is not the bundle's experiment or one of its runs")):
        broken = tmp_path / "broken.zip"
        with zipfile.ZipFile(broken, "w") as z:
            z.writestr("experiment.json", json.dumps({**doc, "annotations": bad}))
        before = t.experiments().height
        with pytest.raises(ValueError, match=says):
            t.import_bundle(broken)
        assert t.experiments().height == before
    old = tmp_path / "old.zip"  # a bundle written before tags travelled still imports
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("experiment.json", json.dumps({k: v for k, v in doc.items() if k != "annotations"}))
    assert t.annotations(t.experiment(t.import_bundle(old))["run_ids"]).height == 0
