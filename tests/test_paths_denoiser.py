import math

import pytest
import torch

from fastdiff_core.denoiser import (
    PREDICTIONS, Denoiser, Guidance, NFECounter, prediction_from_x0_eps, x0_from_prediction,
)
from fastdiff_core.paths import PATHS, get_path, sigma_ve, t_from_sigma_ve

TS = [0.02, 0.2, 0.5, 0.8, 0.95]


@pytest.mark.parametrize("name", sorted(PATHS))
def test_log_snr_inverse_and_definitions(name):
    p = get_path(name)
    for t in TS:
        lam = p.log_snr(t)
        assert p.t_from_log_snr(lam) == pytest.approx(t, abs=1e-9)
        assert lam == pytest.approx(2 * math.log(p.alpha(t) / p.sigma(t)), abs=1e-9)
        assert t_from_sigma_ve(p, sigma_ve(p, t)) == pytest.approx(t, abs=1e-9)
    tt = torch.tensor(TS, dtype=torch.float64)
    assert torch.allclose(p.t_from_log_snr(p.log_snr(tt)), tt, atol=1e-9)
    lams = [p.log_snr(t) for t in TS]
    assert all(a > b for a, b in zip(lams, lams[1:])), "logSNR must decrease with t"


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "rectified_flow"])
def test_derivatives_match_finite_differences(name):
    p = get_path(name)
    h = 1e-6
    for t in TS:
        assert p.d_alpha(t) == pytest.approx((p.alpha(t + h) - p.alpha(t - h)) / (2 * h), rel=1e-5, abs=1e-6)
        assert p.d_sigma(t) == pytest.approx((p.sigma(t + h) - p.sigma(t - h)) / (2 * h), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_prediction_conversions_round_trip(name, prediction):
    p = get_path(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 3, generator=g, dtype=torch.float64)
    for t in TS:
        a, s, da, ds = p.alpha(t), p.sigma(t), p.d_alpha(t), p.d_sigma(t)
        x_t = a * x0 + s * eps
        target = prediction_from_x0_eps(prediction, x0, eps, a, s, da, ds)
        back = x0_from_prediction(prediction, target, x_t, a, s, da, ds)
        assert torch.allclose(back, x0, atol=1e-8, rtol=1e-8)


class Recorder(torch.nn.Module):
    """A network that predicts x0 = cond-dependent constant; records its forwards."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x_t, t, cond):
        self.batches.append(x_t.shape[0])
        return cond.expand_as(x_t).to(x_t.dtype)


def test_cfg_is_one_batched_forward_and_counts_two():
    net = Recorder()
    cond, uncond = torch.full((5, 2), 1.0), torch.full((5, 2), 0.0)
    c = NFECounter()
    d = Denoiser(net, get_path("vp_linear"), "x0", cond=cond, uncond=uncond, guidance=Guidance(3.0), counter=c)
    out = d(torch.randn(5, 2), 2.0)
    assert net.batches == [10]
    assert torch.allclose(out, torch.full((5, 2), 3.0))  # 0 + 3 * (1 - 0)
    assert (c.nfe, c.calls, c.forwards, c.rows) == (2, 1, 1, 10)


def test_guidance_interval_gives_single_pass_outside():
    net = Recorder()
    cond, uncond = torch.ones(4, 1), torch.zeros(4, 1)
    c = NFECounter()
    d = Denoiser(net, get_path("rectified_flow"), "x0", cond=cond, uncond=uncond,
                 guidance=Guidance(2.0, interval=(0.5, 5.0)), counter=c)
    for sigma in [10.0, 3.0, 1.0, 0.1]:
        d(torch.zeros(4, 1), sigma)
    assert net.batches == [4, 8, 8, 4]
    assert c.nfe == 6


def test_changing_guidance_on_a_denoiser_takes_effect_at_once():
    """The per-sigma constants are cached (passes included); a new guidance must not reuse them."""
    net = Recorder()
    cond, uncond = torch.ones(4, 1), torch.zeros(4, 1)
    c = NFECounter()
    d = Denoiser(net, get_path("vp_linear"), "x0", cond=cond, uncond=uncond, guidance=Guidance(2.0), counter=c)
    d(torch.zeros(4, 1), 1.0)
    d.guidance = Guidance(1.0)
    out = d(torch.zeros(4, 1), 1.0)
    d.guidance = Guidance(2.0, interval=(2.0, 5.0))
    d(torch.zeros(4, 1), 1.0)
    assert net.batches == [8, 4, 4] and c.nfe == 4
    assert torch.allclose(out, torch.ones(4, 1))  # the conditional model alone


def test_negative_conditioning_replaces_uncond():
    net = Recorder()
    cond, negative = torch.ones(3, 1), torch.full((3, 1), -1.0)
    d = Denoiser(net, get_path("vp_cosine"), "x0", cond=cond, uncond=negative, guidance=Guidance(2.0))
    assert torch.allclose(d(torch.zeros(3, 1), 1.0), torch.full((3, 1), 3.0))  # -1 + 2 * (1 - -1)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_guidance_scale(bad):
    with pytest.raises(ValueError, match="guidance scale"):
        Guidance(bad)


def test_guidance_without_uncond_is_refused():
    with pytest.raises(ValueError, match="uncond"):
        Denoiser(Recorder(), get_path("vp_linear"), "x0", cond=torch.ones(1, 1), guidance=Guidance(2.0))


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_folded_x0_coefficients_equal_the_conversions(name, prediction):
    from fastdiff_core.denoiser import x0_coefficients

    p = get_path(name)
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 3, generator=g, dtype=torch.float64)
    for t in TS:
        a, s, da, ds = p.alpha(t), p.sigma(t), p.d_alpha(t), p.d_sigma(t)
        c_x, c_out = x0_coefficients(prediction, a, s, da, ds)
        assert torch.allclose(c_x * x + c_out * out, x0_from_prediction(prediction, out, x * a, a, s, da, ds),
                              atol=1e-10, rtol=1e-10)
