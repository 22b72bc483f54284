"""The learned few-step discretisation (issue 16 item 4): fitted on the model's own samples only, never
worse than where it started on its training noise, spending exactly the NFE asked for, and usable as a
RunSpec through execute."""

import math

import pytest
import torch

from fastdiff_core.learned_grid import fit_discretisation, rare_check_accepts, teacher_samples
from fastdiff_core.metrics.solver_error import paired_rate_difference
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.run import execute
from fastdiff_core.solvers import sample
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


def test_a_fit_that_moves_samples_out_of_the_rare_region_is_replaced_by_the_shipped_setting():
    """The rare-mode acceptance check, on the 16-D world (samples far apart): a region that the learned
    setting's held-out samples leave and the shipped setting's keep (balls around some of the teacher's
    samples, radius between the two settings' errors and under half the distance to any other teacher
    sample) makes the same fit fail its check, and the shipped setting comes back at the same NFE."""
    world = get_mixture("rare16d")
    x_train, x_held = _noise(world, 96, 1), _noise(world, 400, 5)
    fit = fit_discretisation("unipc", world.denoise, PATH, 4, x_train, x_held, budget=25)
    teacher, _ = teacher_samples(world.denoise, x_held, PATH)
    learned = sample(fit.solver, world.denoise, x_held, fit.sigmas(), options=fit.solver_options)
    shipped = sample(fit.solver, world.denoise, x_held, fit.start_sigmas, options=fit.start_options)
    e_learned, e_shipped = (learned - teacher).norm(dim=1), (shipped - teacher).norm(dim=1)
    radius = (e_learned * e_shipped).sqrt()  # between the two settings' errors where the learned one is worse
    apart = torch.cdist(teacher, teacher).fill_diagonal_(math.inf).min(dim=1).values  # no other row's teacher inside
    rows = torch.nonzero((e_learned > 1.2 * e_shipped) & (radius < 0.5 * apart)).flatten()
    assert len(rows) >= 8, "the fit must be worse than the shipped grid on some held-out rows for this test"
    centres, radii = teacher[rows], radius[rows]

    def region(x):
        return (torch.cdist(x, centres) < radii[None, :]).any(dim=1)

    checked = fit_discretisation("unipc", world.denoise, PATH, 4, x_train, x_held, budget=25, rare=region)
    check = checked.rare_check
    assert not checked.accepted and not check["accepted"]
    assert check["learned"]["rare_diff"] < 0 and not check["learned"]["rare_within_2se"]
    assert abs(check["shipped"]["rare_diff"]) < abs(check["learned"]["rare_diff"])
    assert checked.sigmas() == pytest.approx(fit.start_sigmas) and checked.solver_options == fit.start_options
    assert checked.train_loss == fit.start_train_loss and checked.nfe == 4
    # the same fit with the world's own rare mode as the region: it keeps it as the teacher does, and is kept
    kept = fit_discretisation("unipc", world.denoise, PATH, 4, x_train, x_held, budget=25,
                              rare=lambda x: world.assign(x) == world.rare)
    assert kept.accepted and kept.rare_check["learned"]["rare_within_2se"]
    assert kept.sigmas() == pytest.approx(fit.sigmas())


def test_the_rare_check_false_alarm_rate_is_about_five_percent_and_it_catches_a_lost_mode():
    """Simulated: paired moves in and out at equal rates (no difference) are flagged about 5% of the time by
    the 2-SE rule; a setting that loses a fifth of a 2% mode over 4,000 samples is flagged about 9 times in 10."""
    g = torch.Generator().manual_seed(0)
    n, sims = 4000, 2000

    def flagged(p_in, p_out):
        moves = torch.multinomial(torch.tensor([p_in, p_out, 1 - p_in - p_out]), n * sims, replacement=True,
                                  generator=g).reshape(sims, n)
        return sum(not paired_rate_difference(int((m == 0).sum()), int((m == 1).sum()), n)["rare_within_2se"]
                   for m in moves)

    assert 0.025 <= flagged(0.004, 0.004) / sims <= 0.08
    assert flagged(0.001, 0.005) / sims >= 0.85  # normal approximation: power 0.92
    shipped = paired_rate_difference(3, 1, n)
    assert rare_check_accepts(paired_rate_difference(2, 3, n), shipped)  # within 2 SE
    assert not rare_check_accepts(paired_rate_difference(0, 30, n), shipped)  # outside, and strays more
    assert rare_check_accepts(paired_rate_difference(0, 30, n), paired_rate_difference(0, 40, n))  # strays less
