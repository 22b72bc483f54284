"""The run-time estimate Explore shows before a run (issue 12 item 7): fitted on stored runs of the same
kind, it is within a factor of 3 of the measured wall time once one run of the kind exists — on both
worlds, with real runs (``execute``) recorded in a real Store, the estimate read off the page.

The factor 3 is for a loaded, shared machine (the same run's wall time moves by 2x with the neighbours);
the runs are a few seconds each so that the fixed costs (imports, loading the teacher) do not dominate.
(The driving runs were 32-160 samples; once the engine got faster they took 0.06-0.4 s warm against ~1 s
for loading the teacher in the first, and the first run's fit then overestimated the next by up to 14x.)
"""

from __future__ import annotations

import re
import time

import pytest

from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec
from tests.apptest_support import page, texts

FACTOR = 3.0


def shown_estimate(spec: RunSpec) -> tuple[float, str]:
    """Seconds of the 'Estimated run time' caption on Explore for a form set to ``spec``, and the caption."""
    params = {"world": spec.world, "solver": spec.solver, "steps": str(spec.steps), "samples": str(spec.samples),
              "seed": str(spec.seed), "horizon": str(spec.horizon), "futures": str(spec.futures),
              "regime": spec.regime}
    if spec.scene:
        params["scene"] = spec.scene
    at = page("explore", **params).run()
    assert not at.exception, at.exception
    caption = next(line for line in texts(at).splitlines() if line.startswith("Estimated run time"))
    m = re.search(r"about ([\d,.]+) (ms|s|min|h) ", caption)
    assert m, caption
    value = float(m.group(1).replace(",", ""))
    return value * {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}[m.group(2)], caption


def record(store, spec: RunSpec) -> float:
    exp_id, (rid,) = store.new_experiment(spec.name or "run", [spec])
    t0 = time.perf_counter()
    result = execute(spec)
    wall = time.perf_counter() - t0
    store.record_result(rid, "done", result, worker="test")
    store.compact()
    return wall


WORLDS = {
    "mixture": [RunSpec(solver="euler", steps=s, samples=n, seed=i, regime="offline")
                for i, (s, n) in enumerate([(8, 400), (8, 1200), (16, 2400)])],
    "driving": [RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=s, samples=n, horizon=3,
                        futures=2, seed=i, regime="closed_loop")
                for i, (s, n) in enumerate([(4, 960), (4, 480), (8, 1600)])],
}


@pytest.mark.slow
@pytest.mark.parametrize("world", sorted(WORLDS))
def test_estimate_before_a_run_is_within_a_factor_of_3_after_the_first_run_of_its_kind(home, world):
    from store import Store

    s = Store()
    first, *later = WORLDS[world]
    prior_s, caption = shown_estimate(first)
    assert "conservative prior" in caption
    first_wall = record(s, first)
    assert prior_s > first_wall / FACTOR  # the prior errs on the slow side (measured at load 20: see docs/verdicts.md)
    ratios = []
    for spec in later:
        est, caption = shown_estimate(spec)
        assert "fitted on" in caption and world in caption
        wall = record(s, spec)
        ratios.append(est / wall)
        assert 1 / FACTOR <= est / wall <= FACTOR, f"{caption}: measured {wall:.2f} s"
    print(f"{world}: first run {first_wall:.2f} s (prior {prior_s:.1f} s); estimate / measured {ratios}")
