import pytest

from fastdiff_core.metrics.intervals import wilson_interval


def test_wilson_against_hand_computed_values():
    # 10 of 100 at 95%: the textbook value (0.0552, 0.1744)
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.05523, abs=1e-4) and hi == pytest.approx(0.17437, abs=1e-4)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.07135, abs=1e-4)


@pytest.mark.parametrize("count, n", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_bad_input(count, n):
    with pytest.raises(ValueError):
        wilson_interval(count, n)


def test_quantile_is_the_one_linear_definition():
    """fastdiff's one quantile (latency percentiles, quartiles over worlds, the gate bench's p95): linear
    interpolation between order statistics, numpy's default and statistics' 'inclusive' method."""
    import random
    import statistics

    import numpy as np

    from fastdiff_core.metrics.intervals import quantile

    rng = random.Random(0)
    for n in (1, 2, 3, 7, 20):
        values = [rng.gauss(0, 1) for _ in range(n)]
        for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0):
            assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), abs=1e-12)
        if n >= 2:
            q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
            assert [quantile(values, q) for q in (0.25, 0.5, 0.75)] == pytest.approx([q1, q2, q3])
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0  # unsorted input is sorted here
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="q="):
            quantile([1.0], bad)
    with pytest.raises(ValueError, match="values"):
        quantile([], 0.5)
