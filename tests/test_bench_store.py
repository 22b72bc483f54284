"""``fastdiff bench store`` at a tiny N: it runs end to end through the command, writes the JSON fields
the issue names, and the store's files grow with its batches, not with its runs."""

import json
import pathlib
import subprocess
import sys

from store import schema

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.cli", "bench", "store", *args], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=600)


def test_bench_store_command_at_a_tiny_n(tmp_path):
    out = tmp_path / "store.json"
    proc = bench("--runs", "400", "--sweep-size", "100", "--repeat", "1", "--rounds", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    for field in ("runs", "experiments_ms", "explore_ms", "compare_ms", "sweep_ms", "first_query_ms", "process_ms",
                  "compaction_ms", "experiments_after_compaction_ms", "files", "files_per_1000_runs"):
        assert isinstance(rows[field], (int, float)) and rows[field] >= 0, field
    assert rows["runs"] == 400 and rows["sweeps"] == 2 and rows["single_experiments"] == 200
    # One file per table per batch (merged as they accumulate), never one per run or per experiment:
    # 200 single-run experiments and 400 outcomes went through ceil(400 / 64) = 7 collector batches.
    assert rows["batches"] == 7
    tables = len(schema.SEGMENT_TABLES)
    assert rows["files"] <= tables * rows["batches"] + 8 < rows["single_experiments"], rows["files"]
    # Segments merged away wait GRACE_S before they are deleted; they are on disk, not kept.
    assert 0 <= rows["files_merged_away"] <= rows["files"]
    assert rows["files_per_1000_runs"] == 1000 * (rows["files"] - rows["files_merged_away"]) / rows["runs"]
    assert "| Compare |" in proc.stdout and "files per 1,000 runs" not in proc.stderr


def test_bench_store_refuses_bad_arguments_before_any_work(tmp_path):
    proc = bench("--runs", "0")
    assert proc.returncode == 2 and "--runs" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    proc = bench("--runs", "10", "--root", str(tmp_path / "full"))
    assert proc.returncode == 2 and "not empty" in proc.stderr
