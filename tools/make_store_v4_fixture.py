"""Write the store fixture ``tests/data/store-v4/`` (segment format 4) with the store code of the commit
this runs at (a commit whose ``store.schema.SCHEMA_VERSION`` is 4).

The fixture is what the upgrade test (tests/test_store_run_columns.py) upgrades to format 5: the
per-record fixture ``tests/data/store-v1`` migrated by that code (one segment), a second segment (a
2-run sweep of real mixture runs, both done) and a single-run experiment left queued in the journal.
Beside it ``<out>-expected/``: what that code read (``tools/make_store_fixture.write_expected``) and
the runs table's columns that code's dashboard derived from the store's frames
(``app.runs_table.result_columns``: run_columns.parquet, and their metric names in metrics.json).
Run it from the repository root, with the format-4 code on the path::

    PYTHONPATH=/path/to/format-4-checkout python tools/make_store_v4_fixture.py tests/data/store-v4
"""

from __future__ import annotations

import json
import pathlib
import runpy
import shutil
import subprocess
import sys

from app import runs_table
from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec
from store import SCHEMA_VERSION, Store

HERE = pathlib.Path(__file__).resolve().parent


def main(out: pathlib.Path) -> None:
    expected = out.with_name(out.name + "-expected")
    if out.exists() or expected.exists():
        raise SystemExit(f"{out} or {expected} exists; remove it first")
    if SCHEMA_VERSION != 4:
        raise SystemExit(f"this code writes store format {SCHEMA_VERSION}; run it with format-4 code on PYTHONPATH")
    shutil.copytree(HERE.parent / "tests" / "data" / "store-v1", out, ignore=shutil.ignore_patterns("README.md"))
    s = Store(out)  # migrates the per-record files: segment 1
    specs = [RunSpec(samples=32, solver="heun", steps=steps, seed=3) for steps in (3, 5)]
    _, run_ids = s.new_experiment("heun sweep", specs, sweep={"steps": [3, 5]})
    with s.batched_writes():
        for rid, spec in zip(run_ids, specs):
            s.record_result(rid, "done", execute(spec), worker="fixture")
    s.compact()  # segment 2
    s.new_experiment("queued in the journal", RunSpec(samples=32, solver="euler", steps=4))
    for p in {*out.rglob("*.lock"), *out.rglob(".*.lock")}:  # lock files: made again by whoever opens it
        p.unlink()
    s = Store(out)
    runpy.run_path(str(HERE / "make_store_fixture.py"))["write_expected"](s, expected)
    runs = s.runs()
    ids = runs["run_id"].to_list()
    frame, names = runs_table.result_columns(runs, s.metrics(ids), s.histograms(ids))
    frame.write_parquet(expected / "run_columns.parquet")
    (expected / "metrics.json").write_text(json.dumps(names))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True,
                            cwd=pathlib.Path(sys.modules["store"].__file__).parent).stdout.strip()
    (out / "README.md").write_text(
        f"# A store in segment format 4\n\nWritten by `tools/make_store_v4_fixture.py` with the store code of commit "
        f"{commit}: tests/data/store-v1 migrated (segment 1), a 2-run heun sweep (segment 2), one run queued in "
        "the journal. tests/test_store_run_columns.py upgrades a copy to format 5 and compares its reads with "
        "../store-v4-expected/ (what that commit's code read, and its dashboard's runs-table columns).\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
