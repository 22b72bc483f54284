"""Parallel sampling by Picard iteration (ParaDiGMS): converges to the sequential solver from the same
noise on the mixture world, and its NFE / rounds accounting is exact."""

import math

import pytest
import torch

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.paths import get_path
from fastdiff_core.solvers import get_solver
from fastdiff_core.solvers.picard import picard
from fastdiff_core.worlds.mixture import MixtureNetwork, get_mixture


F64 = torch.float64


def mixture_setup(steps=24, n=256, dtype=F64, guidance=Guidance(), cond=None, uncond=None, seed=0):
    mix = get_mixture("rare2d")
    path = get_path("vp_linear")
    net = MixtureNetwork(mix, path, "eps")
    sigmas = build_grid("karras", steps, path)
    x = torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sigmas[0]

    def den():
        return Denoiser(net, path, "eps", guidance=guidance, cond=cond, uncond=uncond, counter=NFECounter())

    return mix, sigmas, x, den


def test_stacked_equals_separate_calls_with_guidance_interval():
    mix = get_mixture("rare2d")
    n = 8
    cond = mix.one_hot(mix.rare, n)
    uncond = torch.zeros_like(cond)
    g = Guidance(3.0, (0.5, 5.0))
    _, sigmas, x, den = mixture_setup(steps=6, n=n, guidance=g, cond=cond, uncond=uncond)
    d = den()
    sig = sigmas[:4]  # some inside the guidance interval, some outside
    assert {g.passes(s) for s in sig} == {1, 2}
    xs = torch.cat([x * (1 + 0.1 * k) for k in range(4)])
    together = d.stacked(xs, sig)
    assert d.counter.forwards == 1 and d.counter.nfe == sum(g.passes(s) for s in sig) and d.counter.calls == 4
    ref = den()
    separate = torch.cat([ref(x * (1 + 0.1 * k), s) for k, s in enumerate(sig)])
    assert torch.allclose(together, separate, atol=1e-10, rtol=1e-10)
    assert ref.counter.nfe == d.counter.nfe


@pytest.mark.parametrize("base", ["euler", "dpmpp_2m"])
def test_window_one_is_the_sequential_solver(base):
    _, sigmas, x, den = mixture_setup(steps=12)
    d_seq, d_par = den(), den()
    seq = get_solver(base).function(d_seq, x, sigmas)
    par = picard(d_par, x, sigmas, base=base, window=1, tol=0.0)
    assert torch.allclose(par, seq, atol=1e-12, rtol=0)
    assert d_par.counter.nfe == d_seq.counter.nfe == 12
    assert d_par.counter.forwards == 12


@pytest.mark.parametrize("base", ["euler", "dpmpp_2m"])
def test_converges_to_sequential_answer_with_fewer_rounds(base):
    steps = 24
    _, sigmas, x, den = mixture_setup(steps=steps)
    seq = get_solver(base).function(den(), x, sigmas)
    errors, rounds_by_tol = {}, {}
    for tol in (1e-1, 1e-2, 1e-3, 0.0):
        d = den()
        out = picard(d, x, sigmas, base=base, window=8, tol=tol)
        errors[tol] = float((out - seq).abs().max())
        rounds_by_tol[tol] = d.counter.forwards
    # tol = 0 iterates to the fixed point: the sequential answer up to float64 summation order
    assert errors[0.0] < 1e-9
    # tighter tolerance, closer answer
    assert errors[1e-3] <= errors[1e-1] + 1e-12
    assert errors[1e-3] < 1e-2
    # a usable tolerance takes fewer sequential rounds than the 24 sequential steps
    assert rounds_by_tol[1e-2] < steps


def test_nfe_accounting_is_exact():
    steps, window = 20, 6
    _, sigmas, x, den = mixture_setup(steps=steps)
    d = den()
    rounds = []
    picard(d, x, sigmas, window=window, tol=1e-3, callback=rounds.append)
    # every round is one batched forward; the NFE is the sum of the windows it evaluated
    assert d.counter.forwards == len(rounds)
    assert d.counter.nfe == sum(len(r.eval_sigmas) for r in rounds)
    assert rounds[-1].nfe == d.counter.nfe
    assert d.counter.rows == d.counter.nfe * x.shape[0]
    assert steps <= d.counter.nfe <= steps * window
    # every step is accepted exactly once, in order, ending at sigma = 0
    assert rounds[-1].sigma_next == 0.0 and rounds[-1].i == steps - 1
    # infinite tolerance: every window accepted at once -> NFE = steps, rounds = ceil(steps / window)
    d_inf = den()
    picard(d_inf, x, sigmas, window=window, tol=math.inf)
    assert d_inf.counter.nfe == steps and d_inf.counter.forwards == math.ceil(steps / window)


def test_guided_nfe_counts_two_passes_inside_the_interval():
    mix = get_mixture("rare2d")
    n = 32
    cond = mix.one_hot(mix.rare, n)
    g = Guidance(2.0, (0.3, 3.0))
    _, sigmas, x, den = mixture_setup(steps=10, n=n, guidance=g, cond=cond, uncond=torch.zeros_like(cond))
    d = den()
    rounds = []
    out = picard(d, x, sigmas, window=4, tol=0.0, callback=rounds.append)
    expected = sum(g.passes(s) for r in rounds for s in r.eval_sigmas)
    assert d.counter.nfe == expected
    seq = get_solver("euler").function(den(), x, sigmas)
    assert torch.allclose(out, seq, atol=1e-9)


def test_bad_options_raise_value_errors():
    _, sigmas, x, den = mixture_setup(steps=4, n=4)
    with pytest.raises(ValueError, match="window"):
        picard(den(), x, sigmas, window=0)
    with pytest.raises(ValueError, match="tol"):
        picard(den(), x, sigmas, tol=-1.0)
    with pytest.raises(ValueError, match="base"):
        picard(den(), x, sigmas, base="heun")


@pytest.mark.parametrize("window,tol", [(1, 0.0), (4, 0.0), (4, 1e-3), (8, math.inf)])
def test_re_evaluations_are_counted_apart_so_the_sequential_count_is_exact(window, tol):
    # with a guidance interval, so a re-evaluated step costs 1 or 2 passes depending on its sigma
    mix = get_mixture("rare2d")
    n, steps = 16, 12
    g = Guidance(3.0, (0.5, 5.0))
    cond = mix.one_hot(mix.rare, n)
    _, sigmas, x, den = mixture_setup(steps=steps, n=n, guidance=g, cond=cond, uncond=torch.zeros_like(cond))
    d, seq = den(), den()
    rounds = []
    picard(d, x, sigmas, window=window, tol=tol, callback=rounds.append)
    get_solver("euler").function(seq, x, sigmas)
    # what is left after the re-evaluations is exactly the sequential solver's count (one per step)
    assert d.counter.rows - d.counter.repeat_rows == seq.counter.rows == n * sum(g.passes(s) for s in sigmas[:-1])
    # re-evaluations: every window position below the furthest step evaluated so far, at its passes
    reached, expected, t = 0, 0, 0
    for info in rounds:
        window_sigmas = list(info.eval_sigmas)
        start = t
        expected += n * sum(g.passes(s) for s in window_sigmas[:max(0, reached - start)])
        reached = max(reached, start + len(window_sigmas))
        t = info.i + 1
    assert d.counter.repeat_rows == expected
    # a window of one, or a tolerance that accepts every window at once, re-evaluates nothing
    assert (d.counter.repeat_rows > 0) == (window > 1 and tol != math.inf)
    with pytest.raises(ValueError, match="repeated=5"):
        d.stacked(torch.cat([x] * 2), sigmas[:2], repeated=5)
