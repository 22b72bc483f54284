import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdiff_core import catalog
from fastdiff_core.grids import GRID_FUNCTIONS, build_grid, check_sigmas
from fastdiff_core.paths import PATHS, get_path, sigma_range, t_from_sigma_ve


def test_catalog_and_implementations_agree():
    assert set(GRID_FUNCTIONS) == set(catalog.GRIDS)


@pytest.mark.parametrize("path_name", sorted(PATHS))
@pytest.mark.parametrize("grid", ["karras", "uniform_t", "uniform_logsnr", "quadratic"])
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 100, 1000])
def test_every_grid_is_n_plus_1_strictly_decreasing_ending_in_zero(path_name, grid, steps):
    path = get_path(path_name)
    s = build_grid(grid, steps, path)
    assert len(s) == steps + 1 and s[-1] == 0.0
    assert all(a > b for a, b in zip(s, s[1:]))
    smin, smax = sigma_range(path)
    assert s[0] == pytest.approx(smax)
    if steps > 1:
        assert s[-2] == pytest.approx(smin)


def test_grid_shapes_follow_their_definitions():
    path = get_path("vp_linear")
    s = build_grid("uniform_logsnr", 5, path, {"sigma_min": 0.01, "sigma_max": 100.0})
    assert [math.log(v) for v in s[:-1]] == pytest.approx([math.log(100) - i * math.log(1e4) / 4 for i in range(5)])
    k = build_grid("karras", 4, path, {"sigma_min": 0.01, "sigma_max": 100.0, "rho": 1.0})
    assert k[:-1] == pytest.approx([100, 100 - 99.99 / 3, 100 - 2 * 99.99 / 3, 0.01])
    t = build_grid("uniform_t", 5, path)
    ts = [float(t_from_sigma_ve(path, v)) for v in t[:-1]]
    assert [b - a for a, b in zip(ts, ts[1:])] == pytest.approx([ts[1] - ts[0]] * 4, rel=1e-6)
    q = build_grid("quadratic", 6, path)
    tq = [float(t_from_sigma_ve(path, v)) for v in q[:-1]]
    gaps = [a - b for a, b in zip(tq, tq[1:])]
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])), "quadratic grids are dense near the data"


def test_custom_grid():
    path = get_path("vp_linear")
    assert build_grid("custom", 3, path, {"sigmas": [10.0, 1.0, 0.1]}) == [10.0, 1.0, 0.1, 0.0]
    assert build_grid("custom", 3, path, {"sigmas": [10.0, 1.0, 0.1, 0.0]}) == [10.0, 1.0, 0.1, 0.0]
    with pytest.raises(ValueError, match="steps=4"):
        build_grid("custom", 4, path, {"sigmas": [10.0, 1.0, 0.1]})


@pytest.mark.parametrize(
    "sigmas, match",
    [([10.0, 10.0, 0.0], "strictly decreasing"), ([1.0, 5.0, 0.0], "strictly decreasing"),
     ([10.0, float("nan"), 0.0], "finite"), ([10.0, 1.0], r"\[-1\]"), ([0.0], "at least 2"), ("abc", "list")],
)
def test_bad_full_grids_name_the_field(sigmas, match):
    with pytest.raises(ValueError, match=match):
        check_sigmas(sigmas)


@pytest.mark.parametrize(
    "name, steps, options, field",
    [("nope", 5, {}, "grid"), ("karras", 0, {}, "steps"), ("karras", 5, {"rho": -1.0}, "grid_options.rho"),
     ("karras", 5, {"bogus": 1}, "grid_options"), ("karras", 5, {"sigma_min": 10.0, "sigma_max": 1.0}, "sigma_min"),
     ("custom", 2, {"sigmas": [1.0, 3.0]}, "grid_options.sigmas")],
)
def test_bad_grid_input(name, steps, options, field):
    with pytest.raises(ValueError, match=field):
        build_grid(name, steps, get_path("vp_cosine"), options)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8))
def test_custom_validation_property(values):
    ok = all(math.isfinite(v) and v > 0 for v in values) and all(a > b for a, b in zip(values, values[1:]))
    try:
        out = build_grid("custom", len(values), get_path("vp_linear"), {"sigmas": values})
    except ValueError:
        assert not ok
    else:
        assert ok and out[:-1] == values and out[-1] == 0.0
