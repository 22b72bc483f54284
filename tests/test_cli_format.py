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


def test_training_progress_lines(capsys):
    """One step line for every trainer; each command's stages printed from its own table, others silent."""
    from fastdiff_cli import train_digits, train_moving_digits
    from fastdiff_cli.progress import print_step

    print_step(12, 0.123456, 3.21)
    train_digits._stage("classifier_done", {"heldout_accuracy": 0.91234, "heldout_n": 300})
    train_moving_digits._stage("card", {"rollouts": 4, "plans": 3})
    train_moving_digits._stage("classifier_done", {"heldout_accuracy": 0.9, "heldout_n": 1})  # not its stage
    assert capsys.readouterr().out.splitlines() == [
        "  step     12  loss 0.1235      3.2s", "  held-out accuracy 0.9123 on 300 digits",
        "measuring the card: 4 rollouts x 3 plans"]
