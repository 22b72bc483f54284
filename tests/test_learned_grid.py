"""The learned few-step discretisation (issue 16 item 4): fitted on the model's own samples only, never
worse than where it started on its training noise, spending exactly the NFE asked for, and usable as a
RunSpec through execute."""

import math

import pytest
import torch

from fastdiff_core.learned_grid import fit_discretisation
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec
from fastdiff_core.worlds.mixture.world import get_mixture

PATH = get_path("vp_discrete")


def _noise(world, n, seed):
    _, smax = sigma_range(PATH)
    return torch.randn(n, world.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * smax


@pytest.fixture(scope="module")
def fitted():
    world = get_mixture("rare2d")
    return world, fit_discretisation("unipc", world.denoise, PATH, 4, _noise(world, 96, 1), _noise(world, 96, 2),
                                     budget=25)


def test_the_fit_never_worsens_its_training_loss_and_reports_its_teacher(fitted):
    _, fit = fitted
    assert fit.train_loss <= fit.start_train_loss and math.isfinite(fit.held_out_loss)
    assert fit.nfe == 4 and fit.teacher.solver == "dpmpp_3m" and fit.teacher.half_steps_rmse < fit.train_loss
    assert fit.teacher.converged == (fit.teacher.half_steps_rmse <= 0.1 * fit.train_loss)
    sig = fit.sigmas()
    assert sig[-1] == 0 and all(a > b for a, b in zip(sig, sig[1:])) and len(sig) == fit.steps + 1
    assert fit.evaluations >= 2 and fit.fit_seconds > 0
    assert {t["final"] for t in fit.tried} == {"solver", "denoise", "sigma_min"}


def test_the_learned_setting_runs_as_a_runspec_and_spends_exactly_its_nfe(fitted):
    _, fit = fitted
    spec = RunSpec.from_dict({"world": "mixture", "world_options": {"preset": "rare2d", "path": "vp_discrete"},
                              "samples": 64, "seed": 3, **fit.spec_fields()})
    res = execute(spec)
    assert res.nfe_counted == res.nfe_formula == 4 * 64
    assert res.metrics["rmse"] < 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(nfe=0), "nfe=0 must be an integer in"),
    (dict(nfe=4, budget=0), "budget=0 must be >= 1"),
    (dict(nfe=4, finals=["nope"]), "final='nope' is not one of"),
])
def test_bad_input_names_the_field(kwargs, match):
    world = get_mixture("rare2d")
    x = _noise(world, 8, 0)
    with pytest.raises(ValueError, match=match):
        fit_discretisation("dpmpp_2m", world.denoise, PATH, x_train=x, x_held_out=x, **kwargs)
