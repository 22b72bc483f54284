"""`fastdiff run`'s table of a result: rows without ground truth (a world model with no exact truth, a
user's model) print '-' rather than failing on a None."""

from __future__ import annotations

from fastdiff_cli.run import format_result
from fastdiff_core.spec import RunResult, RunSpec


def _result(truth, lo=0.1, hi=0.3) -> RunResult:
    row = {"group": "walk", "label": "left", "count": 20, "n": 100, "rate": 0.2, "lo": lo, "hi": hi, "truth": truth}
    return RunResult(RunSpec(), "cpu", 0.5, 100.0, 100.0, metrics={"tv": 0.01}, histograms=(row,))


def test_rows_with_and_without_truth_print():
    with_truth = format_result(_result(0.25)).splitlines()[-1]
    assert with_truth.split()[-1] == "0.2500" and "[0.1000, 0.3000]" in with_truth
    without = format_result(_result(None, lo=None, hi=None)).splitlines()[-1]
    assert without.split()[-2:] == ["-", "-"] and "0.2000" in without
