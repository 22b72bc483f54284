"""Migration of a store written by the per-record format (tests/data/store-v1, written by
tools/make_store_fixture.py with that format's code): every run and experiment reads back identical,
field by field, to what that code read (tests/data/store-v1-expected); the unreadable record stays on
disk, listed; and a migration killed at any step is finished by the next start with nothing lost."""

import json
import pathlib
import shutil
import subprocess
import sys

import polars as pl
import pytest

from store import Store

DATA = pathlib.Path(__file__).parent / "data"
FIXTURE = DATA / "store-v1"
EXPECTED = DATA / "store-v1-expected"
REPO = pathlib.Path(__file__).resolve().parents[1]


def expected_records() -> dict:
    return json.loads((EXPECTED / "records.json").read_text())


def assert_migrated(root: pathlib.Path) -> None:
    s = Store(root)
    want = expected_records()
    for exp_id, exp in want["experiments"].items():
        assert s.experiment(exp_id) == exp, exp_id
    for run_id, run in want["runs"].items():
        assert s.run(run_id) == run, run_id
    (bad,) = want["unreadable"]
    assert bad in s.unreadable()
    assert (root / "results" / f"{bad}.json").read_bytes() == (FIXTURE / "results" / f"{bad}.json").read_bytes()
    readable = [r for r, run in want["runs"].items() if run is not None]
    got = {"experiments": s.experiments(), "runs": s.runs(), "metrics": s.metrics(readable),
           "histograms": s.histograms(readable), "latency": s.latency(readable), "sweeps": s.sweeps()}
    for name, frame in got.items():
        expected = pl.read_parquet(EXPECTED / f"{name}.parquet")
        if name in ("metrics", "histograms", "latency"):
            order = {r: i for i, r in enumerate(expected["run_id"].unique(maintain_order=True))}
            frame = frame.sort(pl.col("run_id").replace_strict(order, return_dtype=pl.Int64), maintain_order=True)
        assert frame.select(expected.columns).equals(expected), (name, frame, expected)  # + format 5's columns
    assert not (root / "db").exists()
    left = sorted(p.name for d in ("experiments", "runs", "results") if (root / d).exists() for p in (root / d).iterdir())
    assert left == [f"{bad}.json", f"{bad}.json"]  # its submission and its unreadable outcome, as they were


def test_a_store_written_by_the_per_record_format_migrates_with_nothing_lost(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    assert_migrated(root)
    assert_migrated(root)  # a second start: nothing to do, nothing changes
    s = Store(root)  # and the store goes on: a new run next to the migrated ones
    _, (rid,) = s.new_experiment("after", json.loads(s.runs()["spec"][0]))
    assert s.compact() == 1 and s.run(rid)["status"] == "queued" and s.experiments().height == 6


CRASH = """
import sys
from store import Store, legacy
real = legacy.migrate
legacy.migrate = lambda store: real(store, crash_after=int(sys.argv[2]))
Store(sys.argv[1])
"""


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 8, 12, 17, 21, 24])
def test_a_migration_killed_half_way_is_finished_by_the_next_start(tmp_path, steps):
    """The migrating process dies abruptly (os._exit, no cleanup) after ``steps`` file operations; the
    next start finishes the migration and every record reads back as the old format read it."""
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(root), str(steps)], check=False, cwd=REPO, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 9, proc.stderr  # it was killed (the migration has more steps than 24)
    assert_migrated(root)
