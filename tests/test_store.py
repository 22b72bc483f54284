"""The store: write-once results, compaction, reads identical before and after compaction, bundles,
migrations, and many processes writing and reading at once without a lock error or a lost row."""

import json
import multiprocessing as mp
import time
import zipfile

import polars as pl
import pytest

from fastdiff_core.spec import RunResult, RunSpec
from store import SCHEMA_VERSION, Store
from store import schema as store_schema


def result_for(spec: RunSpec, k: int = 0) -> RunResult:
    """A RunResult as the store receives it (input data for the store; workers produce real ones)."""
    n = spec.samples
    return RunResult(
        spec=spec, device="cpu", wall_s=0.01 * (k + 1), nfe_counted=float(spec.steps * n),
        nfe_formula=float(spec.steps * n), metrics={"rmse": 0.1 * k, "tv": 0.5},
        histograms=({"group": "mode", "label": "rare", "count": k, "n": n, "rate": k / n, "lo": 0.0,
                     "hi": 0.2, "truth": 0.02}, {"group": "mode", "label": "main", "count": n - k, "n": n,
                                                  "rate": 1 - k / n, "lo": 0.7, "hi": 1.0, "truth": 0.98}),
        latency=({"what": "step", "seconds": 0.001, "batch": n, "device": "cpu"},),
        samples=((0.0, 1.0), (1.0, 0.0)),
    )


def specs(n):
    return [RunSpec(samples=64, steps=1 + i % 8, seed=i) for i in range(n)]


def test_reads_are_the_same_before_and_after_compaction(tmp_path):
    s = Store(tmp_path)
    exp, run_ids = s.new_experiment("exp", specs(6), sweep={"seed": list(range(6))})
    for k, rid in enumerate(run_ids[:4]):
        assert s.record_result(rid, "done", result_for(RunSpec.from_dict(s.run(rid)["spec"]), k))
    assert s.record_result(run_ids[4], "failed", error="boom")

    def snapshot():
        return (s.runs(exp).drop("finished"), s.metrics(run_ids).sort(["run_id", "name"]),
                s.histograms(run_ids).sort(["run_id", "label"]), s.latency(run_ids).sort("run_id"),
                s.experiments().drop("created"))

    before = snapshot()
    assert s.compact() == 6
    after = snapshot()
    for a, b in zip(before, after):
        assert a.equals(b), (a, b)
    runs = after[0]
    assert runs["status"].to_list() == ["done"] * 4 + ["failed", "queued"]
    assert runs["idx"].to_list() == list(range(6))
    assert after[1].height == 8 and after[2].height == 8 and after[3].height == 4
    assert after[4]["status"].to_list() == ["running"] and after[4]["n_done"].to_list() == [4]
    assert s.compact() == 0  # nothing new: no new generation
    # a result arriving after compaction is visible at once, then compacted
    assert s.record_result(run_ids[5], "cancelled")
    assert s.runs(exp)["status"].to_list()[-1] == "cancelled"
    assert s.experiments()["status"].to_list() == ["failed"]
    assert s.compact() == 1 and s.runs(exp)["status"].to_list()[-1] == "cancelled"


def test_a_result_is_stored_once(tmp_path):
    s = Store(tmp_path)
    _, (rid,) = s.new_experiment("once", specs(1))
    spec = RunSpec.from_dict(s.run(rid)["spec"])
    assert s.record_result(rid, "done", result_for(spec, 1), worker="a") is True
    assert s.record_result(rid, "done", result_for(spec, 2), worker="b") is False
    assert s.record_result(rid, "failed", error="late") is False
    assert s.run(rid)["worker"] == "a" and s.run(rid)["result"]["wall_s"] == pytest.approx(0.02)
    s.compact()
    assert s.runs().height == 1 and s.metrics([rid]).height == 2


def test_what_runs_beside_a_writes_fsync_sees_it_and_its_failure_is_raised_after_it(tmp_path):
    """The service queues runs (and the collector announces results) while the store's journal line is
    being fsynced: by then the line must be readable from another reader, and an error raised there
    must reach the caller with the record kept."""
    s, other = Store(tmp_path), Store(tmp_path)
    seen = {}

    def queue_runs(exp_id, run_ids):
        seen.update(run=other.run(run_ids[0]), experiment=other.experiment(exp_id))

    _, (rid,) = s.new_experiment("one", specs(1), while_syncing=queue_runs)
    assert seen["run"]["status"] == "queued" and seen["experiment"]["name"] == "one"

    def broker_down(exp_id, run_ids):
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError, match="broker down"):
        s.new_experiment("two", specs(1), while_syncing=broker_down)
    assert sorted(other.experiments()["name"].to_list()) == ["one", "two"]  # recorded 'queued', kept
    announced = []
    with s.batched_writes(while_syncing=lambda: announced.append(other.run(rid)["status"])):
        assert s.record_result(rid, "done", result_for(specs(1)[0]))
    assert announced == ["done"]
    with s.batched_writes(while_syncing=lambda: announced.append("again")):
        assert not s.record_result(rid, "failed", error="late")  # nothing new written: no call
    assert announced == ["done"] and other.run(rid)["status"] == "done"



def test_a_reader_folds_only_the_new_journal_lines_and_sees_what_a_fresh_reader_sees(tmp_path):
    """A reader keeps what the journal's lines gave and folds only the lines appended since (a write, a
    rotation by a compaction, a hand-edited line); after every step its view equals a new reader's, which
    folds every line from the start."""
    import random

    from store import journal

    s = Store(tmp_path)
    rng = random.Random(5)
    exps: list[tuple[str, list[str]]] = []
    for step in range(60):
        what = rng.choice(["exp", "exp", "result", "result", "result", "rename", "delete", "compact", "bad"])
        if what == "exp" or not exps:
            exps.append(s.new_experiment(f"e{step}", specs(rng.randint(1, 3))))
        elif what == "result":
            rid = rng.choice(rng.choice(exps)[1])
            with s.batched_writes():
                if rng.random() < 0.5 and (run := s.run(rid)) is not None:
                    s.record_result(rid, "done", result_for(RunSpec.from_dict(run["spec"])), worker="w")
                else:
                    s.record_result(rid, "failed", error="boom")
        elif what == "rename":
            exp_id = rng.choice(exps)[0]
            if s.experiment(exp_id) is not None:
                s.rename_experiment(exp_id, f"renamed {step}")
        elif what == "delete":
            exp_id = rng.choice(exps)[0]
            if s.experiment(exp_id) is not None:
                s.delete_experiment(exp_id)
        elif what == "compact":
            s.compact()
        else:  # a line edited by hand: checked, refused, listed
            with open(s.inbox_dir / journal.JOURNAL, "ab") as f:
                f.write(b"0" * 64 + b' outcome {"run_id": "r000000000000", "status": "nope"}\n')
        mine, fresh = s._read_inbox(), Store(tmp_path)._read_inbox()
        assert (mine.exps, mine.subs, mine.outcomes, mine.deleted, mine.unreadable, mine.bad_lines,
                mine.outcome_lines.keys(), mine.bad_outcomes) == \
               (fresh.exps, fresh.subs, fresh.outcomes, fresh.deleted, fresh.unreadable, fresh.bad_lines,
                fresh.outcome_lines.keys(), fresh.bad_outcomes), (step, what)


def test_bad_input_names_the_field(tmp_path):
    s = Store(tmp_path)
    with pytest.raises(ValueError, match=r"specs\[1\]: steps=0"):
        s.new_experiment("x", [RunSpec().to_dict(), dict(RunSpec().to_dict(), steps=0)])
    with pytest.raises(ValueError, match="name=''"):
        s.new_experiment("", specs(1))
    with pytest.raises(ValueError, match="exp_id='nope'"):
        s.rename_experiment("nope", "y")
    _, (rid,) = s.new_experiment("x", specs(1))
    with pytest.raises(ValueError, match="status='finished'"):
        s.record_result(rid, "finished")
    assert s.runs().height == 1  # the refused experiment wrote nothing


def test_rename_delete_and_search(tmp_path):
    s = Store(tmp_path)
    a, _ = s.new_experiment("Alpha sweep", specs(2))
    b, b_runs = s.new_experiment("beta", specs(3))
    s.compact()
    s.rename_experiment(a, "gamma")
    assert s.experiments(search="GAM")["exp_id"].to_list() == [a]
    s.delete_experiment(b)
    assert s.experiments()["exp_id"].to_list() == [a]
    assert s.runs().height == 2 and s.run(b_runs[0]) is None
    s.compact()
    assert s.runs().height == 2 and s.experiments()["name"].to_list() == ["gamma"]


def test_bundle_round_trip(tmp_path):
    s = Store(tmp_path / "a")
    exp, run_ids = s.new_experiment("shared", specs(3), sweep={"seed": [0, 1, 2]})
    for k, rid in enumerate(run_ids):
        s.record_result(rid, "done", result_for(RunSpec.from_dict(s.run(rid)["spec"]), k))
    path = s.export_bundle(exp, tmp_path / "shared.zip")
    with zipfile.ZipFile(path) as z:
        assert {"experiment.json", "runs.parquet", "metrics.parquet", "histograms.parquet",
                "latency.parquet", "sweeps.parquet"} <= set(z.namelist())
        assert pl.read_parquet(z.open("metrics.parquet")).height == 6
    t = Store(tmp_path / "b")
    new = t.import_bundle(path)
    assert t.experiment(new)["imported_from"] == exp and t.experiments()["name"].to_list() == ["shared"]
    cols = ["idx", "solver", "steps", "seed", "status", "nfe_counted", "wall_s"]
    assert t.runs(new).select(cols).equals(s.runs(exp).select(cols))
    new_ids = t.runs(new)["run_id"].to_list()
    assert t.histograms(new_ids).drop("run_id").equals(s.histograms(run_ids).drop("run_id"))
    assert t.run(new_ids[0])["result"]["samples"] == [[0.0, 1.0], [1.0, 0.0]]
    assert json.loads(t.sweeps(new)["axes"][0]) == {"seed": [0, 1, 2]}
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a fastdiff bundle"):
        t.import_bundle(bad)


def test_a_compaction_writes_one_file_per_table_per_batch_and_a_versioned_manifest(tmp_path):
    s = Store(tmp_path)
    def files():
        return sorted(p.name for p in (tmp_path / "segments").iterdir())

    _, run_ids = s.new_experiment("batch", specs(40), sweep={"seed": list(range(40))})
    for k, rid in enumerate(run_ids):
        s.record_result(rid, "done", result_for(RunSpec.from_dict(s.run(rid)["spec"]), k % 3))
    assert s.compact() == 40
    assert len(files()) == len(store_schema.SEGMENT_TABLES)  # 40 runs, one batch: one file per table
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == [".rotate.lock"]  # the journal: folded
    manifest = json.loads((tmp_path / "MANIFEST").read_text())
    assert manifest["format"] == SCHEMA_VERSION and [g["runs"] for g in manifest["segments"]] == [40]
    assert s.record_result(run_ids[0], "failed", error="a late duplicate") is False  # found in the segment
    assert s.compact() == 0 and len(files()) == len(store_schema.SEGMENT_TABLES)
    (tmp_path / "MANIFEST").write_text(json.dumps(dict(manifest, format=SCHEMA_VERSION + 1)))
    with pytest.raises(ValueError, match=f"format={SCHEMA_VERSION + 1}"):
        Store(tmp_path).runs()


def test_segments_merge_and_reads_choose_only_what_they_need(tmp_path):
    from store import segments

    s = Store(tmp_path)
    exps = []
    for b in range(segments.FANOUT + 1):  # one batch each: the first FANOUT merge into one segment
        exp, (rid,) = s.new_experiment(f"single {b}", specs(1))
        s.record_result(rid, "done" if b % 2 else "failed", result_for(RunSpec.from_dict(s.run(rid)["spec"]), 1)
                        if b % 2 else None, error=None if b % 2 else "boom")
        exps.append((exp, rid))
        s.compact()
    manifest = json.loads((tmp_path / "MANIFEST").read_text())
    assert [g["level"] for g in manifest["segments"]] == [1, 0]
    s.delete_experiment(exps[1][0])
    s.rename_experiment(exps[2][0], "renamed")
    assert s.compact() == 1
    t = Store(tmp_path)  # a new process
    assert t.experiments().height == segments.FANOUT and t.experiment(exps[2][0])["name"] == "renamed"
    assert t.run(exps[1][1]) is None and t.run(exps[3][1])["status"] == "done"
    assert t.runs(status="failed", columns=["run_id", "status"]).columns == ["run_id", "status"]
    assert set(t.runs(status="failed")["run_id"]) == {r for k, (_, r) in enumerate(exps) if k % 2 == 0}
    assert t.metrics([exps[3][1]])["value"].to_list() == [0.1, 0.5]
    with pytest.raises(ValueError, match="columns=\\['nope'\\]"):
        t.runs(columns=["nope"])


# -- many processes at once ------------------------------------------------------------------------


def _writer(root: str, k: int, n_exps: int, runs_per_exp: int) -> None:
    s = Store(root)
    for e in range(n_exps):
        _, run_ids = s.new_experiment(f"w{k}-{e}", specs(runs_per_exp))
        for i, rid in enumerate(run_ids):
            spec = RunSpec.from_dict(s.run(rid)["spec"])
            s.record_result(rid, "done", result_for(spec, i))
            s.record_result(rid, "done", result_for(spec, i + 1))  # a duplicate delivery: ignored


def _compactor(root: str, seconds: float) -> None:
    s = Store(root)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.compact()


def test_reads_racing_writes_and_compaction_never_error(tmp_path):
    ctx = mp.get_context("spawn")
    root = str(tmp_path)
    writers = [ctx.Process(target=_writer, args=(root, k, 6, 10)) for k in range(3)]
    compactors = [ctx.Process(target=_compactor, args=(root, 6.0)) for _ in range(2)]  # one wins each time
    for p in writers + compactors:
        p.start()
    s = Store(root)
    reads = 0
    while any(p.is_alive() for p in writers + compactors):
        runs = s.runs()
        done = runs.filter(pl.col("status") == "done")["run_id"].to_list()
        assert s.metrics(done).height == 2 * len(done)
        assert s.histograms(done).height == 2 * len(done)
        s.experiments()
        reads += 1
    for p in writers + compactors:
        p.join()
        assert p.exitcode == 0
    assert reads > 5
    s.compact()
    runs = s.runs()
    assert runs.height == 180 and runs["run_id"].n_unique() == 180
    assert runs["status"].to_list() == ["done"] * 180
    assert s.metrics(runs["run_id"].to_list()).height == 360
    assert s.experiments().height == 18


def test_store_and_submission_client_import_no_torch():
    # The dashboard imports both; neither may pull torch in, even transitively.
    import pathlib
    import subprocess
    import sys

    code = ("import sys; import store, workers.client, workers.collector, workers.up; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'workers.tasks' not in sys.modules, 'workers.tasks was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).resolve().parents[1])


def journal_lines(s):
    return (s.inbox_dir / "journal.jsonl").read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("damage", ["experiment created", "run idx", "result status", "truncated experiment",
                                    "truncated result"])
def test_one_unreadable_stored_record_takes_nothing_down_and_is_kept(tmp_path, damage):
    """A journal line edited by hand or truncated on disk before the collector compacted it: every read
    and the compaction go on without it, it is listed by unreadable(), and its bytes stay on disk (in
    the journal, then in unreadable.jsonl). (A damaged experiment line hides the experiment and its
    runs; a damaged outcome hides its run.)"""
    s = Store(tmp_path)
    good, (g_rid,) = s.new_experiment("good", specs(1))
    s.record_result(g_rid, "done", result_for(RunSpec.from_dict(s.run(g_rid)["spec"]), 1), worker="w")
    s.compact()
    bad, (b_rid,) = s.new_experiment("bad", specs(1))
    s.record_result(b_rid, "done", result_for(RunSpec.from_dict(s.run(b_rid)["spec"]), 1), worker="w")
    in_experiment = "result" not in damage
    lines = journal_lines(s)
    k = 1 if in_experiment else 2  # (line 0 is the journal's header)
    if damage.startswith("truncated"):
        lines[k] = lines[k][:140] + b"\n"  # cut after the first id it names
    else:
        seal, kind, body = lines[k].split(b" ", 2)
        entry = json.loads(body)
        if damage == "experiment created":
            entry["experiment"]["created"] = "yesterday"
        elif damage == "run idx":
            entry["runs"][0]["idx"] = "x"
        else:
            entry["status"] = 12345
        lines[k] = b" ".join([seal, kind, json.dumps(entry).encode()]) + b"\n"  # no longer sealed: refused
    (s.inbox_dir / "journal.jsonl").write_bytes(b"".join(lines))
    damaged = lines[k].rstrip(b"\n")
    key = bad if in_experiment else b_rid
    for compacted in (False, True):
        fresh = Store(tmp_path)  # a new process: nothing cached
        if compacted:
            assert fresh.compact() is not None
            assert damaged in (tmp_path / "unreadable.jsonl").read_bytes()  # kept as it was: nothing lost
        else:
            assert damaged in (tmp_path / "inbox" / "journal.jsonl").read_bytes()
        assert fresh.runs()["run_id"].to_list() == [g_rid]
        assert (bad in fresh.experiments()["exp_id"].to_list()) == (not in_experiment)
        assert good in fresh.experiments()["exp_id"].to_list()
        assert fresh.run(g_rid)["status"] == "done" and fresh.run(b_rid) is None
        assert key in fresh.unreadable() and ".jsonl:" in fresh.unreadable()[key]
        assert fresh.metrics([g_rid]).height == 2 and fresh.metrics([b_rid]).height == 0


def test_a_reader_rebuilds_its_snapshot_only_when_a_new_manifest_is_published(tmp_path):
    import os

    from store import segments

    s = Store(tmp_path)
    exp, run_ids = s.new_experiment("exp", specs(3), sweep={"seed": list(range(3))})
    # Before the first compaction: the (empty) snapshot is kept, not rebuilt on every read.
    first = s._snapshot()
    assert s._snapshot() is first and segments.stamp(s.root) == segments.NO_MANIFEST
    assert s.compact() == 3
    second = s._snapshot()
    assert second is not first and len(second.manifest.segments) == 1 and s._snapshot() is second
    # A second publish within one tick of the file system's clock (the same mtime) is still seen: it is a new
    # file, renamed into place.
    before = os.stat(s.root / segments.MANIFEST)
    assert s.record_result(run_ids[0], "done", result_for(RunSpec.from_dict(s.run(run_ids[0])["spec"])))
    assert s.compact() == 1
    os.utime(s.root / segments.MANIFEST, ns=(before.st_atime_ns, before.st_mtime_ns))
    third = s._snapshot()
    assert third is not second and len(third.manifest.segments) == 2
    assert s.runs(exp)["status"].to_list()[0] == "done"
