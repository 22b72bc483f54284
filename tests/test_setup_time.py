"""Setup seconds (``fastdiff_core.setup_time``): a run reports the seconds it spent loading networks its process
keeps, so the run-time model can fit a kind's cost without them (docs/verdicts.md)."""

from __future__ import annotations

import time

from fastdiff_core import setup_time


def test_one_off_counts_the_outermost_of_nested_calls_once():
    @setup_time.one_off
    def inner() -> str:
        time.sleep(0.02)
        return "in"

    @setup_time.one_off
    def outer() -> str:
        time.sleep(0.02)
        return inner()

    before = setup_time.spent()
    assert outer() == "in"
    spent = setup_time.spent() - before
    assert 0.04 <= spent < 0.08  # not 0.06 + 0.02 counted twice


def test_a_driving_run_reports_its_teacher_load_once(monkeypatch):
    from fastdiff_core.models import teacher
    from fastdiff_core.run import execute
    from fastdiff_core.spec import RunSpec

    monkeypatch.setattr(teacher, "_LOADED", {})  # this process has not loaded the teacher yet
    spec = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=2, samples=20, horizon=2,
                   futures=2, seed=3, regime="closed_loop")
    first = execute(spec)
    second = execute(spec.replace(seed=4))
    assert 0 < first.metrics["setup_s"] < first.wall_s
    assert second.metrics["setup_s"] < 0.01  # the teacher kept (looking up the world's runner: microseconds)
