"""Brownian-consistent noise (solvers/brownian.py): the tree is one Brownian motion (values independent
of query order, Brownian covariances), fixed by the run's generator, and with it the stochastic samplers
converge to one SDE solution per seed as steps grow, where i.i.d. noise does not."""

import math

import pytest
import torch

from fastdiff_core.grids import build_grid
from fastdiff_core.paths import get_path
from fastdiff_core.solvers import sample
from fastdiff_core.solvers.brownian import BrownianNoise, BrownianTree, noise_source
from fastdiff_core.worlds.mixture import get_mixture

F64 = torch.float64


def test_tree_values_do_not_depend_on_query_order_and_have_brownian_covariances():
    like = torch.zeros(40_000, dtype=F64)
    pts = [4.0, -5.5, 1.0, 0.3, -2.0, 4.9, 1.0 + 1e-3]
    first = BrownianTree(like, -6.0, 5.0, seed=1234)
    vals = {u: first.value(u).clone() for u in pts}
    again = BrownianTree(like, -6.0, 5.0, seed=1234)
    for u in reversed(pts):  # another order, another path through the cache: the same motion
        assert torch.equal(again.value(u), vals[u]), u
    assert not torch.equal(BrownianTree(like, -6.0, 5.0, seed=1235).value(1.0), vals[1.0])
    assert torch.equal(first.value(-6.0), torch.zeros_like(like))

    n = like.numel()
    sd = 5.0 * math.sqrt(2.0 / n)  # five standard errors of a sample variance / correlation
    assert abs(float(vals[-5.5].var()) - 0.5) < 5.0 * 0.5 * math.sqrt(2.0 / n)  # Var W(u) = u - u0
    a, b, c = (vals[4.0] - vals[1.0]) / math.sqrt(3.0), (vals[1.0] - vals[-2.0]) / math.sqrt(3.0), \
        (vals[4.0] - vals[-2.0]) / math.sqrt(6.0)
    for inc in (a, b, c):
        assert abs(float(inc.var()) - 1.0) < sd and abs(float(inc.mean())) < 5.0 / math.sqrt(n)
    corr = torch.corrcoef(torch.stack([a, b, c]))
    assert abs(float(corr[0, 1])) < sd  # disjoint increments: independent
    assert abs(float(corr[0, 2]) - math.sqrt(0.5)) < sd  # nested: sqrt(3 / 6)
    # a tiny step (1e-3 wide, ten leaves of the default tol) still has unit variance
    tiny = (vals[1.0 + 1e-3] - vals[1.0]) / math.sqrt(1e-3)
    assert abs(float(tiny.var()) - 1.0) < sd


def test_noise_is_fixed_by_the_generator_and_refuses_bad_input():
    x = torch.zeros(64, 3)
    sig = build_grid("karras", 10, get_path("vp_linear"))
    draws = []
    for seed in (7, 7, 8):
        bn = BrownianNoise(x, sig, torch.Generator().manual_seed(seed))
        draws.append(torch.cat([bn(sig[i], sig[i + 1]) for i in range(len(sig) - 2)]))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    assert draws[0].dtype == torch.float32 and draws[0].shape == (64 * (len(sig) - 2), 3)
    with pytest.raises(ValueError, match="noise='pink'"):
        noise_source("pink", x, sig, None)
    with pytest.raises(ValueError, match="solver_options.noise"):
        sample("ddpm", lambda x, s: 0.5 * x, x, sig, options={"noise": "pink"})
    with pytest.raises(ValueError, match="outside"):
        BrownianTree(x, 0.0, 1.0, seed=1).value(1.5)
    with pytest.raises(ValueError, match="interval"):
        BrownianTree(x, 1.0, 1.0, seed=1)


@pytest.mark.slow  # 384-step SDE references, both noise kinds
@pytest.mark.parametrize("name, options", [("dpmpp_2m_sde", {}), ("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_stochastic_samplers_converge_to_one_sde_solution_with_brownian_noise(name, options):
    """Same seed, grids of 12 to 384 steps: with Brownian noise the error against the 384-step sample
    falls as steps grow (strong convergence); with i.i.d. noise each grid samples another path and the
    error stays at the size of the samples' spread."""
    mix, path = get_mixture("rare2d"), get_path("vp_linear")
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
    den = lambda y, s: mix.denoise(y, s)  # noqa: E731  exact, float64

    def run(steps: int, kind: str) -> torch.Tensor:
        return sample(name, den, x, build_grid("karras", steps, path), options={**options, "noise": kind},
                      generator=torch.Generator().manual_seed(11))

    for kind, converges in (("brownian", True), ("iid", False)):
        ref = run(384, kind)
        err = {n: float((run(n, kind) - ref).square().mean().sqrt()) for n in (12, 48, 192)}
        if converges:
            assert err[12] > err[48] > err[192], (kind, err)
            assert err[192] < 0.25 * err[12], (kind, err)
        else:
            assert err[192] > 0.5 * err[12], (kind, err)
