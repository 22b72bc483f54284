"""The grid optimiser and the measured fact it rests on: high-noise steps decide the mode, low-noise
steps decide the precision."""

import math

import pytest
import torch

from fastdiff_core.bench.solvers import Setup, zone_study
from fastdiff_core.grid_search import optimise_grid
from fastdiff_core.grids import build_grid, check_sigmas
from fastdiff_core.metrics.solver_error import terminal_rmse
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.solvers import sample
from fastdiff_core.worlds.mixture import get_mixture

PATH = get_path("vp_discrete")


@pytest.fixture(scope="module")
def world():
    m = get_mixture("rare2d")
    smin, smax = sigma_range(PATH)
    noise = torch.randn(400, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    return Setup(m, smin, smax, noise * smax, noise, {}, {})


def test_optimiser_improves_on_the_best_fixed_grid_and_returns_a_valid_grid(world):
    x, ref = world.x_start[:100], world.reference(world.sigma_max)[0][:100]
    start = build_grid("karras", 5, PATH)
    res = optimise_grid("dpmpp_2m", world.mixture.denoise, x, ref, start, sigma_floor=world.sigma_min, budget=40)
    assert check_sigmas(res.sigmas) == res.sigmas and len(res.sigmas) == 6 and res.sigmas[0] == start[0]
    assert res.sigmas[-2] >= world.sigma_min * (1 - 1e-9)
    assert res.evaluations <= 40
    assert res.objective < 0.8 * res.start_objective
    # the objective it reports is what the grid gives
    assert terminal_rmse(sample("dpmpp_2m", world.mixture.denoise, x, res.sigmas), ref) == pytest.approx(res.objective)
    # and it carries over to noise it never saw
    x2, ref2 = world.x_start[100:], world.reference(world.sigma_max)[0][100:]
    held_out = terminal_rmse(sample("dpmpp_2m", world.mixture.denoise, x2, res.sigmas), ref2)
    assert held_out < terminal_rmse(sample("dpmpp_2m", world.mixture.denoise, x2, start), ref2)


def test_optimiser_input_is_checked(world):
    x, ref = world.x_start[:10], world.reference(world.sigma_max)[0][:10]
    with pytest.raises(ValueError, match="start"):
        optimise_grid("euler", world.mixture.denoise, x, ref, [1.0, 2.0, 0.0], sigma_floor=0.01)
    with pytest.raises(ValueError, match="sigma_floor"):
        optimise_grid("euler", world.mixture.denoise, x, ref, [10.0, 1.0, 0.0], sigma_floor=5.0)


def test_high_noise_steps_decide_the_mode_low_noise_steps_the_precision(world):
    rows = {r["zone"]: r for r in zone_study(world, split=1.0, solver="dpmpp_2m")}
    base, high, low = rows["base"], rows["+3 steps at high noise"], rows["+3 steps at low noise"]
    assert high["nfe"] == low["nfe"] == base["nfe"] + 3
    # the same 3 extra steps: spent at high noise they keep more samples in their mode than spent at
    # low noise; spent at low noise they make the typical sample more precise than at high noise
    assert high["mode_flip_rate"] < 0.6 * base["mode_flip_rate"]
    assert high["mode_flip_rate"] < low["mode_flip_rate"]
    assert low["median_err"] < 0.5 * base["median_err"]
    assert low["median_err"] < 0.5 * high["median_err"]
