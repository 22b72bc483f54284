"""Speed-up toggles: feature caching (fixed and PI-controlled), precision, compile, Picard as a frame
sampler (the RunSpec fields are tested in test_spec_speedups.py)."""

import pytest
import torch

from fastdiff_core.denoiser import Denoiser, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.models.feature_cache import FeatureCache
from fastdiff_core.rollout import SharedContextNet, fan_out
from fastdiff_core.speedups import frame_sampler, prepare_network
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.model import DrivingWorldModel
from fastdiff_core.worlds.driving.sampling import PATH
from fastdiff_core.worlds.driving.scenes import SCENES
from fastdiff_core.worlds.driving.simulator import waiting_frame
from tests.test_rollout import random_net


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors on a shared, loaded CPU: one intra-op thread avoids OpenMP oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SCENE = SCENES["commuter_late"]
WORLD = DrivingWorldModel(None, SCENE)  # the engine reads the world; the network is passed alongside


def frame_inputs(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    prev = waiting_frame(SCENE, n, g)
    cond = encoding.condition(prev, SCENE, torch.randint(0, 3, (n,), generator=g))
    return prev, cond, torch.randn(n, encoding.FRAME_DIM, generator=g)


def solve(net, cond, noise, steps=8, solver="dpmpp_2m"):
    sigmas = build_grid("karras", steps, PATH)
    ctx = net.net.context(cond) if isinstance(net, FeatureCache) else net.context(cond)
    den = Denoiser(net, PATH, net.prediction, cond=ctx, counter=NFECounter())
    with torch.no_grad():
        return frame_sampler(solver)(den, noise * sigmas[0], sigmas), den.counter


def test_cache_interval_one_is_the_network_and_interval_two_halves_deep_work():
    base = SharedContextNet(random_net())
    _, cond, noise = frame_inputs()
    ref, _ = solve(base, cond, noise)
    every = FeatureCache(base, "fixed", interval=1)
    out, _ = solve(every, cond, noise)
    assert torch.equal(out, ref) and every.stats.deep_fraction == 1.0
    half = FeatureCache(base, "fixed", interval=2)
    out2, counter = solve(half, cond, noise)
    assert half.stats.calls == 8 and half.stats.refreshes == 4
    assert counter.nfe == 8  # a cached step is still a network evaluation
    assert not torch.equal(out2, ref) and torch.isfinite(out2).all()


def test_cache_refreshes_at_each_new_trajectory():
    base = SharedContextNet(random_net())
    _, cond, noise = frame_inputs()
    cache = FeatureCache(base, "fixed", interval=100)
    solve(cache, cond, noise, steps=5)
    solve(cache, cond, noise, steps=5)  # t jumps back up: a new frame, a forced refresh
    assert cache.stats.refreshes == 2 and cache.stats.calls == 10


@pytest.mark.parametrize("budget", [0.3, 0.6])
def test_controlled_cache_holds_its_compute_budget(budget):
    base = SharedContextNet(random_net())
    cache = FeatureCache(base, "controlled", budget=budget, threshold=0.05)
    for frame in range(30):
        _, cond, noise = frame_inputs(seed=frame)
        solve(cache, cond, noise, steps=10)
        if frame == 9:
            settled = cache.stats.refreshes
    assert cache.stats.calls == 300
    assert abs(cache.stats.deep_fraction - budget) < 0.08, cache.stats.deep_fraction
    assert abs((cache.stats.refreshes - settled) / 200 - budget) < 0.05  # after the transient
    assert len(cache.stats.drift) > 0 and min(cache.stats.thresholds) > 0


def test_cache_options_are_validated():
    base = SharedContextNet(random_net(depth=3))
    with pytest.raises(ValueError, match="from_block"):
        FeatureCache(base, "fixed", from_block=3)
    with pytest.raises(ValueError, match="budget"):
        FeatureCache(base, "controlled", budget=0.0)
    with pytest.raises(ValueError, match="feature_cache"):
        FeatureCache(base, "sometimes")


@pytest.mark.parametrize("precision,tol", [("bfloat16", 0.05), ("int8", 0.05)])
def test_reduced_precision_stays_close_to_float32(precision, tol):
    net = random_net()
    _, cond, noise = frame_inputs()
    ref, _ = solve(prepare_network(net), cond, noise)
    low, _ = solve(prepare_network(net, precision=precision), cond, noise)
    assert low.dtype == ref.dtype
    rel = float((low - ref).norm() / ref.norm())
    assert 0 < rel < tol, rel
    with pytest.raises(ValueError, match="precision"):
        prepare_network(net, precision="fp8")


def test_compiled_network_matches():
    net = random_net(width=16, depth=2)
    _, cond, noise = frame_inputs(n=4)
    ref, _ = solve(prepare_network(net), cond, noise, steps=2)
    out, _ = solve(prepare_network(net, compile=True), cond, noise, steps=2)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_picard_frame_sampler_in_the_fan_out_matches_sequential():
    net = prepare_network(random_net())
    sigmas = build_grid("karras", 6, PATH)
    plans = torch.tensor([[0, 1], [2, 2]])
    noise = torch.randn(4, 2, encoding.FRAME_DIM, generator=torch.Generator().manual_seed(1))
    ctx = waiting_frame(SCENE, 1, torch.Generator().manual_seed(2))[0]
    c_seq, c_par = NFECounter(), NFECounter()
    seq = fan_out(net, WORLD, plans, 2, sampler=frame_sampler("euler"), sigmas=sigmas, noise=noise, context=ctx,
                  counter=c_seq)
    par = fan_out(net, WORLD, plans, 2, sampler=frame_sampler("euler", parallel="picard",
                                                              parallel_options={"window": 6, "tol": 0.0}),
                  sigmas=sigmas, noise=noise, context=ctx, counter=c_par)
    assert float((par - seq).abs().max()) <= 1e-4 * float(seq.abs().max())
    assert c_par.rows >= c_seq.rows  # Picard spends compute...
    with pytest.raises(ValueError, match="picard"):
        frame_sampler("heun", parallel="picard")
