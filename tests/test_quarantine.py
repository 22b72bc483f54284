"""What the store cannot take is quarantined, never crash-looped on (issue 13 item 2), fuzzed.

Hypothesis writes results-channel items (task outcomes as workers push them) straight to the collector's
storing function with a real store in a temporary directory, and bundles straight to ``import_bundle``:
no exception escapes, no file is written outside the store's results (collector) or beside a new
experiment (bundle), nothing already stored changes, and whatever was accepted reads back through every
page's store call. One real redis-server then shows the dead-letter path of the running collector.
"""

from __future__ import annotations

import copy
import json
import pathlib
import tempfile
import threading
import time
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastdiff_core.spec import RunResult, RunSpec
from store import Store, ids
from tests.fuzzing import FUZZ
from workers import outcomes
from workers.collector import collect, store_item

SHM = "/dev/shm" if pathlib.Path("/dev/shm").is_dir() else None  # a real filesystem whose fsync is cheap

SPEC = RunSpec(samples=64, steps=2, solver="euler")


def result_dict(spec: RunSpec = SPEC, k: int = 1) -> dict:
    """A RunResult as a worker pushes it (input data for the store; workers produce real ones)."""
    n = spec.samples
    return RunResult(
        spec=spec, device="cpu", wall_s=0.01 * k, nfe_counted=float(spec.steps), nfe_formula=float(spec.steps),
        metrics={"tv": 0.1 * k, "rare_rate": 0.02},
        histograms=({"group": "mode", "label": "rare", "count": k, "n": n, "rate": k / n, "lo": 0.0, "hi": 0.1,
                     "truth": 0.02, "ess": 3.5},),
        latency=({"what": "step", "seconds": 0.001, "batch": n, "device": "cpu"},),
        samples=((0.0, 1.0), (1.0, 0.0)), verdict={"regime": "offline", "outcome": "pass"}, info={"x": 1},
    ).to_dict()


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def read_everything(s: Store, exp_id: str | None = None) -> None:
    """What the Experiments, Explore, Sweep and Compare pages ask the store (``experiments()`` reads every run)."""
    s.experiments()
    if exp_id is not None:
        s.experiment(exp_id), s.sweeps(exp_id)
    run_ids = s.runs(exp_id=exp_id)["run_id"].to_list()
    for run_id in run_ids:
        s.run(run_id)
    s.metrics(run_ids), s.histograms(run_ids), s.latency(run_ids)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
BAD_ID = st.sampled_from(["../experiments/eEVIL", "../runs/r0123456789ab", "/tmp/x", "r0123456789ab\x00",
                          "r" * 300, "r٠١٢٣٤٥٦٧٨٩ab", "R0123456789AB", 12345, None, ["r0123456789ab"]]) | JSON


def mutate(doc, path, value, delete):
    """``doc`` with the value at ``path`` replaced (or deleted); a path that does not exist is ignored."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return doc
    try:
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass
    return doc


RESULT_PATHS = [("device",), ("wall_s",), ("nfe_counted",), ("nfe_formula",), ("metrics",), ("metrics", "tv"),
                ("histograms",), ("histograms", 0), ("histograms", 0, "count"), ("histograms", 0, "label"),
                ("histograms", 0, "rate"), ("latency",), ("latency", 0, "batch"), ("latency", 0, "what"),
                ("samples",), ("samples", 0), ("samples", 0, 1), ("spec",), ("spec", "steps"), ("spec", "solver"),
                ("verdict",), ("info",), ("schema_version",)]


@st.composite
def channel_items(draw) -> tuple[bytes, str]:
    """(raw item, which run it names: 'queued' | 'done' | 'fresh' | 'bad')."""
    kind = draw(st.sampled_from(["queued", "done", "fresh", "bad"]))
    run_id = draw(BAD_ID) if kind == "bad" else kind  # the test puts in the real id
    status = draw(st.sampled_from(["done", "failed", "cancelled"]) | st.sampled_from(["queued", ""]) | JSON)
    result = draw(st.sampled_from(["valid", "mutated", "none"]) | JSON)
    item = {"run_id": run_id, "status": status, "result": result,
            "error": draw(st.none() | st.text(max_size=50) | JSON), "worker": draw(st.none() | st.text(max_size=20) | JSON)}
    if result == "mutated":
        item["mutation"] = (draw(st.sampled_from(RESULT_PATHS)), draw(JSON), draw(st.booleans()))
    for key in draw(st.sets(st.sampled_from(["status", "result", "error", "worker"]), max_size=2)):
        del item[key]
    shape = draw(st.sampled_from(["item"] * 8 + ["bytes", "list", "deep"]))
    if shape == "bytes":
        return draw(st.binary(max_size=64)), "bad"
    if shape == "list":
        return json.dumps([item]).encode(), "bad"
    if shape == "deep":
        return ("[" * 100_000 + "]" * 100_000).encode(), "bad"
    return item, kind


def make_raw(item, kind, ids_by_kind) -> bytes:
    item = dict(item)
    if kind != "bad":
        item["run_id"] = ids_by_kind[kind]
    if item.get("result") == "valid":
        item["result"] = result_dict()
    elif item.get("result") == "none":
        item["result"] = None
    elif item.get("result") == "mutated":
        item["result"] = mutate(result_dict(), *item.pop("mutation"))
    return json.dumps(item).encode()


@pytest.mark.slow  # ~40 s for 2,000 examples on a quiet machine
@FUZZ
@given(drawn=channel_items())
def test_fuzz_collector_items(drawn):
    item, kind = drawn
    with tempfile.TemporaryDirectory(dir=SHM) as d:
        base = pathlib.Path(d)
        s = Store(base / "store")
        _, (queued, done) = s.new_experiment("victim", [SPEC, SPEC.replace(seed=1)])
        assert s.record_result(done, "done", result_dict(k=2))
        ids_by_kind = {"queued": queued, "done": done, "fresh": ids.new_id("r")}
        raw = item if isinstance(item, bytes) else make_raw(item, kind, ids_by_kind)
        before = tree(base)

        outcome = store_item(s, raw)  # raises nothing

        after = tree(base)
        journal = "store/inbox/journal.jsonl"
        changed = {p for p in before if after.get(p) != before[p] and p != journal}
        assert not changed, changed  # nothing already stored changed
        assert after[journal].startswith(before[journal])  # the journal only grew
        added = after[journal][len(before[journal]):].splitlines()
        assert set(after) == set(before) and all(r.split(b" ")[1] == b"outcome" for r in added)
        run_id = ids_by_kind.get(kind)
        assert len(added) <= 1 and all(json.loads(r.split(b" ", 2)[2])["run_id"] == run_id for r in added)
        if kind in ("bad", "done"):
            assert not added  # at most the named run's outcome, nowhere else
        if outcome.status == "quarantined" and kind in ("queued", "fresh"):
            rec = json.loads(added[0].split(b" ", 2)[2])
            assert rec["status"] == "failed" and rec["error"].startswith("quarantined: ")
        if outcome.status in ("stored", "duplicate"):
            assert kind != "bad"
        if added:
            read_everything(s)


def test_collector_quarantines_poison_items_to_the_dead_letter_list_and_goes_on(tmp_path):
    """A real redis-server and the real collector loop: poison items (the issue's findings) go to the
    dead-letter list with their reason, a valid run named by one is stored failed, the good item after
    them is stored, nothing stays in the processing list, and the collector never stops."""
    from workers.broker import RedisServer

    server = RedisServer(tmp_path / "broker", unix_socket=tmp_path / "broker" / "r.sock").start()
    s = Store(tmp_path / "store")
    _, (bad_run, good_run) = s.new_experiment("poison", [SPEC, SPEC.replace(seed=1)])
    r = server.client()
    poison = [json.dumps({"run_id": 12345, "status": "done", "result": None}).encode(),
              json.dumps({"run_id": "../experiments/eEVIL", "status": "failed", "error": "x"}).encode(),
              json.dumps({"run_id": bad_run, "status": "done", "result": dict(result_dict(), device=[])}).encode(),
              b"\xff not json"]
    r.lpush(outcomes.PROCESSING, poison[0])  # left by a collector that died on it: found on (re)start
    for raw in poison[1:]:
        r.lpush(outcomes.RESULTS, raw)
    stop = threading.Event()
    thread = threading.Thread(target=collect, args=(s, server.url, stop, 0.2), daemon=True)
    thread.start()
    try:
        assert outcomes.finish(r, good_run, "done", result_dict())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (s.run(good_run)["status"] == "queued" or r.llen(outcomes.DEAD) < 4):
            time.sleep(0.1)
        assert thread.is_alive()
        dead = outcomes.dead_letters(r)
        assert sorted(d["item"] for d in dead) == sorted(p.decode("utf-8", "backslashreplace") for p in poison)
        reasons = " | ".join(d["reason"] for d in dead)
        assert "run_id=12345 is not a valid run id" in reasons and "'../experiments/eEVIL'" in reasons
        assert "result.device=[]" in reasons and "not a JSON object" in reasons
        assert r.llen(outcomes.PROCESSING) == 0 and r.llen(outcomes.RESULTS) == 0
        assert s.run(good_run)["status"] == "done"
        bad = s.run(bad_run)
        assert bad["status"] == "failed" and "result.device=[]" in bad["error"]
        assert s.experiments().height == 1 and not list(s.root.rglob("*eEVIL*"))
    finally:
        stop.set()
        thread.join(30)
        r.close()
        server.stop()


# ------------------------------------------------------------------------------------------------
# bundles
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle_doc(tmp_path_factory) -> dict:
    """experiment.json of a real export: a 3-run sweep, one done, one failed, one queued."""
    d = tmp_path_factory.mktemp("bundle")
    s = Store(d / "store")
    exp, (a, b, _) = s.new_experiment("sweep", [SPEC, SPEC.replace(steps=3), SPEC.replace(steps=4)],
                                      sweep={"steps": [2, 3, 4]})
    s.record_result(a, "done", result_dict(SPEC))
    s.record_result(b, "failed", error="boom")
    with zipfile.ZipFile(s.export_bundle(exp, d / "b.zip")) as z:
        return json.loads(z.read("experiment.json"))


BUNDLE_PATHS = [("bundle_format",), ("experiment",), ("experiment", "name"), ("experiment", "created"),
                ("experiment", "exp_id"), ("experiment", "spec"), ("experiment", "spec", "steps"),
                ("experiment", "sweep"), ("experiment", "sweep", "axes"), ("experiment", "sweep", "axes", "steps"),
                ("experiment", "sweep", "sweep_id"), ("experiment", "run_ids"), ("experiment", "run_ids", 0),
                ("experiment", "imported_from"), ("runs",), ("runs", 0), ("runs", 1, "run"),
                ("runs", 0, "run", "idx"), ("runs", 2, "run", "idx"), ("runs", 0, "run", "submitted"),
                ("runs", 1, "run", "run_id"), ("runs", 0, "run", "exp_id"), ("runs", 0, "run", "spec"),
                ("runs", 0, "run", "spec", "samples"), ("runs", 0, "result"), ("runs", 0, "result", "status"),
                ("runs", 1, "result", "status"), ("runs", 0, "result", "finished"), ("runs", 0, "result", "worker"),
                ("runs", 1, "result", "error"), ("runs", 0, "result", "result")]
BUNDLE_PATHS += [("runs", 0, "result", "result") + p for p in RESULT_PATHS]
TIMES = st.sampled_from(["2026-01-01T00:00:00", "2026-01-01T00:00:00+05:00", "not a time", "", "9" * 100])


@st.composite
def bundles(draw) -> bytes | dict:
    shape = draw(st.sampled_from(["mutated"] * 8 + ["json", "bytes", "entry"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "entry":  # a zip whose experiment.json is not JSON
        return {"raw": draw(st.binary(max_size=200))}
    if shape == "json":
        return {"doc": draw(JSON)}
    mutations = draw(st.lists(st.tuples(st.sampled_from(BUNDLE_PATHS), JSON | BAD_ID | TIMES, st.booleans()),
                              min_size=1, max_size=3))
    return {"mutations": mutations}


def write_bundle(path: pathlib.Path, drawn, doc) -> None:
    if isinstance(drawn, bytes):
        path.write_bytes(drawn)
        return
    with zipfile.ZipFile(path, "w") as z:
        if "raw" in drawn:
            z.writestr("experiment.json", drawn["raw"])
            return
        if "doc" in drawn:
            doc = drawn["doc"]
        for m in drawn.get("mutations", ()):
            doc = mutate(doc, *m)
        z.writestr("experiment.json", json.dumps(doc))


COMPACT_EVERY = 25  # accepted imports also go through compaction (DuckDB) once in this many
_accepted = [0]


@pytest.mark.slow  # ~40 s for 2,000 examples on a quiet machine
@FUZZ
@given(drawn=bundles())
def test_fuzz_bundle_import(drawn, bundle_doc):
    with tempfile.TemporaryDirectory(dir=SHM) as d:
        base = pathlib.Path(d)
        s = Store(base / "store")
        _, (vrun,) = s.new_experiment("victim", SPEC)
        s.record_result(vrun, "done", result_dict())
        path = base / "in.zip"
        write_bundle(path, drawn, bundle_doc)
        before = tree(base / "store")
        try:
            new = s.import_bundle(path)
        except ValueError as e:
            assert "Traceback" not in str(e)
            assert tree(base / "store") == before  # refused: nothing written
            return
        after = tree(base / "store")
        journal = "inbox/journal.jsonl"
        assert {p: after[p] for p in before if p != journal} == {p: v for p, v in before.items() if p != journal}
        assert after[journal].startswith(before[journal])  # nothing already stored changed: the journal grew
        exp = s.experiment(new)
        (line,) = after[journal][len(before[journal]):].splitlines()  # one line: the experiment, runs, outcomes
        entry = json.loads(line.split(b" ", 2)[2])
        assert [r["run_id"] for r in entry["runs"]] == exp["run_ids"] and set(entry.get("outcomes", {})) <= set(
            exp["run_ids"])
        read_everything(s, new)
        _accepted[0] += 1
        if _accepted[0] % COMPACT_EVERY == 1:
            s.compact()
            read_everything(s, new)


def test_bundle_findings_are_refused_with_the_field_named(tmp_path, bundle_doc):
    """The issue's findings: a bad created / submitted / idx field is refused before anything is written."""
    s = Store(tmp_path / "store")
    cases = [(("experiment", "created"), "yesterday", "experiment.created='yesterday'"),
             (("runs", 0, "run", "submitted"), 5, "runs[0].run.submitted=5"),
             (("runs", 0, "run", "idx"), "0", "runs[0].run.idx='0'"),
             (("runs", 1, "run", "idx"), 0, "must number the runs"),
             (("runs", 0, "run", "run_id"), "../experiments/eEVIL", "run_id='../experiments/eEVIL'"),
             (("runs", 0, "result", "result", "histograms", 0, "count"), -1, "histograms[0].count=-1")]
    for path, value, needle in cases:
        write_bundle(tmp_path / "b.zip", {"mutations": [(path, value, False)]}, bundle_doc)
        with pytest.raises(ValueError, match=None) as e:
            s.import_bundle(tmp_path / "b.zip")
        assert needle in str(e.value), (needle, str(e.value))
    assert tree(tmp_path / "store") == {}
    write_bundle(tmp_path / "b.zip", {"mutations": []}, bundle_doc)
    new = s.import_bundle(tmp_path / "b.zip")
    assert s.runs(new)["status"].to_list() == ["done", "failed", "queued"]


def test_a_task_message_with_an_invalid_run_id_is_dead_lettered_not_run(tmp_path):
    """The worker's side of a poison message: the task checks the run id before anything (no Redis key,
    no run), acknowledges the message and leaves it on the dead-letter list."""
    from workers import tasks
    from workers.broker import RedisServer

    server = RedisServer(tmp_path / "broker", unix_socket=tmp_path / "broker" / "r.sock").start()
    old = tasks.app.conf.broker_url
    tasks.app.conf.broker_url = server.url
    tasks._redis.cache_clear()
    r = server.client()
    try:
        for bad in (12345, "../experiments/eEVIL", "r" * 300, None):
            out = tasks.run.apply(args=(bad, SPEC.to_json())).get(timeout=30)
            assert out["status"] == "rejected" and "is not a valid run id" in out["error"]
        dead = outcomes.dead_letters(r)
        assert len(dead) == 4 and all(d["reason"].startswith("task message: run_id=") for d in dead)
        assert r.keys("fastdiff:finished:*") == [] and r.llen(outcomes.RESULTS) == 0
    finally:
        tasks.app.conf.broker_url = old
        tasks._redis.cache_clear()
        r.close()
        server.stop()
