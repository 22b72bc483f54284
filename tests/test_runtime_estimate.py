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


# Before any run of a kind the page shows the world's prior (budget.RUNTIME_PRIORS). Real runs spanning 100x
# in work, warm (the network loaded by a first run, as on a worker after its first run of a kind).
PRIOR_SPECS = {
    "driving": [RunSpec(world="driving", scene="red_light_jaywalker", solver="heun", regime="closed_loop",
                        steps=s, samples=n, horizon=h, futures=2, seed=100 + i)
                for i, (s, n, h) in enumerate([(2, 200, 2), (4, 400, 4), (8, 1000, 8)])],
    "mixture": [RunSpec(solver="euler", steps=s, samples=n, seed=100 + i, regime="offline")
                for i, (s, n) in enumerate([(4, 400), (8, 2000), (16, 10_000)])],
}  # seeds no other test here uses: the mixture caches its reference solve per noise (seed and samples)
# The prior is the quiet machine's measured terms lifted above every run, x 20 (the slowdown at load ~20;
# docs/verdicts.md): its work terms were 14-26x these runs' wall time at load 0.4 and 2.9-4.6x at load ~19.
# The priors before it were 119-356x on these specs and fail.
PRIOR_ABOVE = 40.0


@pytest.mark.slow
@pytest.mark.parametrize("world", sorted(PRIOR_SPECS))
def test_prior_is_conservative_with_the_right_shape_and_one_run_rescales_it(world):
    """The whole prior is above each run's wall time (conservative up to load ~20); its work terms (what grows with
    the spec: per NFE, rollout and forward) are at most PRIOR_ABOVE x it, on specs 100x apart, so the guard does
    not refuse runs of a few minutes; and rescaled by one run, as the page does, it estimates a run 10x larger
    within a factor of 3."""
    from fastdiff_core import budget

    specs = PRIOR_SPECS[world]
    execute(specs[0].replace(seed=99))  # loads the network; the runs below are warm
    prior = budget.runtime_prior(world)
    works, walls = [], []
    for spec in specs:
        works.append(budget.work_of(spec, budget.bill_for(spec)))
        t0 = time.perf_counter()
        execute(spec)
        walls.append(time.perf_counter() - t0)
    assert works[-1].nfe >= 100 * works[0].nfe
    above = [(prior.seconds(w) - prior.coef[0]) / s for w, s in zip(works, walls)]
    print(f"{world}: walls {walls}; prior / wall {[prior.seconds(w) / s for w, s in zip(works, walls)]}; "
          f"work terms / wall {above}")
    for w, s, r in zip(works, walls, above):
        assert prior.seconds(w) > s and r <= PRIOR_ABOVE, (w, s, prior.estimate(w).describe())
    one = budget.fit_runtime([(works[1], walls[1])], world, prior)
    ratio = one.seconds(works[-1]) / walls[-1]
    print(f"{world}: after the middle run, estimate / measured of the largest {ratio:.2f}")
    assert 1 / FACTOR <= ratio <= FACTOR, (walls, one.estimate(works[-1]).describe())
