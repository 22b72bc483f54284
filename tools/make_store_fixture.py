"""Write the store fixture ``tests/data/store-v1/`` with the store code of the commit this runs at.

The fixture is what the migration test (tests/test_store_migration.py) upgrades: a store as the
per-record JSON format (experiments/, runs/, results/) left it, holding single-run experiments (one
renamed), a 4-run sweep, a failed run, a cancelled run, a queued run, and one unreadable record (a
result file truncated on disk). The runs are real: ``fastdiff_core.run.execute`` of tiny mixture
specs. Run it from the repository root::

    PYTHONPATH=$PWD python tools/make_store_fixture.py tests/data/store-v1

It refuses to write into a directory that exists. The generated store is committed with a
README.md naming the commit whose code wrote it, and beside it ``<out>-expected/``: what that\ncode read from it (records.json, Parquet frames).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec
from store import Store


def write_expected(s: Store, out: pathlib.Path) -> None:
    """What this code reads from the store: every run and experiment record (JSON), unreadable(), and
    the frames (Parquet) -- the migration test compares the migrated store's reads with these."""
    out.mkdir()
    exps = s.experiments()
    runs = s.runs()
    run_ids = [r for e in exps["exp_id"] for r in s.experiment(e)["run_ids"]]
    doc = {"experiments": {e: s.experiment(e) for e in exps["exp_id"]},
           "runs": {r: s.run(r) for r in run_ids}, "unreadable": sorted(s.unreadable())}
    (out / "records.json").write_text(json.dumps(doc, sort_keys=True, indent=1))
    readable = runs["run_id"].to_list()  # (metrics() of the unreadable run raises in this code)
    for name, df in {"experiments": exps, "runs": runs, "metrics": s.metrics(readable),
                     "histograms": s.histograms(readable), "latency": s.latency(readable),
                     "sweeps": s.sweeps()}.items():
        df.write_parquet(out / f"{name}.parquet")


def main(out: pathlib.Path) -> None:
    expected = out.with_name(out.name + "-expected")
    if out.exists() or expected.exists():
        raise SystemExit(f"{out} or {expected} exists; remove it first")
    s = Store(out)
    base = RunSpec(samples=16, steps=2, solver="euler", regime="offline", device="cpu")
    # single-run experiments, finished
    for k, solver in enumerate(("euler", "dpmpp_2m")):
        spec = base.replace(solver=solver, steps=2 + k, seed=k, name=f"single {k}")
        _, (rid,) = s.new_experiment(f"single {solver}", spec)
        s.record_result(rid, "done", execute(spec), worker="fixture@local")
    renamed, _ = s.new_experiment("to be renamed", base.replace(seed=5))  # stays queued
    s.rename_experiment(renamed, "renamed (queued)")
    # a sweep: 2 done, 1 failed, 1 cancelled
    axes = {"steps": [2, 3], "seed": [0, 1]}
    specs = [base.replace(steps=st, seed=sd) for st in axes["steps"] for sd in axes["seed"]]
    _, run_ids = s.new_experiment("sweep steps x seed", specs, axes)
    for rid, spec in zip(run_ids[:2], specs[:2]):
        s.record_result(rid, "done", execute(spec), worker="fixture@local")
    s.record_result(run_ids[2], "failed", error="RuntimeError: out of memory\nTraceback (most recent call last): ...",
                    worker="fixture@local")
    s.record_result(run_ids[3], "cancelled", worker=None)
    # one unreadable record: a finished run whose result file was truncated on disk
    spec = base.replace(seed=9, name="damaged")
    _, (bad,) = s.new_experiment("damaged result", spec)
    s.record_result(bad, "done", execute(spec), worker="fixture@local")
    path = s.results_dir / f"{bad}.json"
    path.write_bytes(path.read_bytes()[:60])
    write_expected(Store(out), expected)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (out / "README.md").write_text(
        f"# A store in the per-record JSON format\n\nWritten by `tools/make_store_fixture.py` with the store code "
        f"of commit {commit}.\nSingle-run experiments (one renamed and still queued), a 4-run sweep (2 done, 1 failed, "
        f"1 cancelled) and one\nunreadable record: the result of run {bad} truncated on disk. The compacted cache "
        "(db/) is not\nkept: that format rebuilt it from these records. tests/test_store_migration.py migrates a copy and\ncompares its reads with ../store-v1-expected/ (what this commit's code read).\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
