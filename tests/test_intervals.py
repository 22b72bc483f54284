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
