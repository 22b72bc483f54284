"""`fastdiff bench coverage --sequential`: every configuration sampled until the gate decides, per seed."""

import json

import pytest

from workers.cli import main


@pytest.mark.slow  # samples 4 x 2,000 teacher rollouts: ~80 s on the loaded 2-core machine
def test_sequential_coverage_bench_stops_a_deleted_tail_at_the_first_look(tmp_path, capsys):
    out = tmp_path / "coverage.json"
    argv = ["bench", "coverage", "--solvers", "euler", "--nfe", "4", "--guidance", "1", "--guidance-solver", "euler",
            "--guidance-nfe", "4", "--sequential", "--cap", "500", "--seeds", "0,1", "--no-pr", "--threads", "1",
            "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["seed"] for r in rows if r["sweep"] == "solver"] == [0, 1]
    for r in rows:  # euler x 4 deletes the tail and blurs 20%: FAIL at the first look of 250 per scene
        assert r["mode"] == "sequential" and r["gate"] == "FAIL" and r["rollouts_per_scene"] == 250
        assert r["nfe_per_frame"] == 4 and sum(c["n"] for c in r["scenes"].values()) == 8 * 250
    summary = {(s["sweep"], s["solver"]): s for s in data["summary"]}
    assert summary[("solver", "euler")]["outcomes"] == ["FAIL", "FAIL"]
    assert "FAIL/FAIL" in capsys.readouterr().out
