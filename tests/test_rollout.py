"""The rollout engine: batched P x R fan-out == a loop over candidates, shared context == the plain
network, the NFE bill S x C x H x P·R == the counter, exact plan probabilities, importance sampling
of the tail (unbiased, lower variance at equal NFE), warm start."""

import math

import pytest
import torch

from fastdiff_core.budget import NFEBill, guided_fraction_from_sigmas
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.models.world_model import WorldModelConfig, WorldModelNet
from fastdiff_core.paths import get_path
from fastdiff_core.rollout import (
    Planner, SharedContextNet, TailProposal, candidate_plans, fan_out, loop_over_candidates, weighted_rates,
)
from fastdiff_core.speedups import frame_sampler
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.model import DrivingWorldModel
from fastdiff_core.worlds.driving.sampling import PATH
from fastdiff_core.worlds.driving.scenes import ACTIONS, SCENES, branch_probabilities, plan_branch_probabilities
from fastdiff_core.worlds.driving.simulator import waiting_frame


def random_net(seed=0, width=48, depth=3):
    """A world-model network with every weight random (the adaLN-zero init would output zeros)."""
    torch.manual_seed(seed)
    net = WorldModelNet(WorldModelConfig(width=width, depth=depth))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net.eval()


SCENE = SCENES["child_at_curb"]
WORLD = DrivingWorldModel(None, SCENE)  # the engine reads the world; the network is passed alongside


def fan_setup(P, R, H, S, seed):
    """Grid, candidate plans, initial noise, observed frame and sampler for a P x R fan-out of H frames."""
    sigmas = build_grid("karras", S, PATH)
    plans = candidate_plans(P, H, actions=3)
    noise = torch.randn(P * R, H, encoding.FRAME_DIM, generator=torch.Generator().manual_seed(seed))
    ctx = waiting_frame(SCENE, 1, torch.Generator().manual_seed(seed + 1))[0]
    return sigmas, plans, noise, ctx, frame_sampler("dpmpp_2m")


def test_shared_context_net_equals_the_network():
    net = random_net()
    shared = SharedContextNet(net)
    prev = waiting_frame(SCENE, 16, torch.Generator().manual_seed(1))
    cond = encoding.condition(prev, SCENE, torch.tensor([i % 3 for i in range(16)]))
    x = torch.randn(16, encoding.FRAME_DIM)
    t = torch.full((16,), 0.37)
    with torch.no_grad():
        assert torch.allclose(shared(x, t, shared.context(cond)), net(x, t, cond), atol=1e-5, rtol=1e-5)


def test_per_row_actions_match_single_action_conditions():
    prev = waiting_frame(SCENE, 6, torch.Generator().manual_seed(2))
    idx = torch.tensor([0, 1, 2, 2, 1, 0])
    rows = encoding.condition(prev, SCENE, idx)
    for i, a in enumerate(idx.tolist()):
        assert torch.equal(rows[i], encoding.condition(prev[i:i + 1], SCENE, ACTIONS[a])[0])
    with pytest.raises(ValueError, match="action"):
        encoding.condition(prev, SCENE, torch.tensor([0, 1, 5, 0, 0, 0]))


@pytest.mark.parametrize("guidance", [Guidance(), Guidance(2.0, (0.1, 20.0))])
def test_fan_out_equals_loop_and_counts_the_bill(guidance):
    net = SharedContextNet(random_net())
    P, R, H, S = 3, 2, 3, 5
    sigmas, plans, noise, ctx, sampler = fan_setup(P, R, H, S, seed=3)
    c_fan, c_loop = NFECounter(), NFECounter()
    a = fan_out(net, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx,
                guidance=guidance, counter=c_fan)
    b = loop_over_candidates(net, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx,
                             guidance=guidance, counter=c_loop)
    assert a.shape == (P, R, H + 1, 4, 2)
    plain = fan_out(net.net, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx,
                    guidance=guidance)  # the condition path recomputed at every step: same rollouts
    assert float((a - plain).abs().max()) <= 1e-5 * float(a.abs().max())
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())  # float32 rounding of batched matmuls
    # the bill: S x C x H x P·R, C fractional under a guidance interval
    frac = 0.0 if guidance.scale == 1.0 else guided_fraction_from_sigmas(sigmas[:-1], guidance.interval)
    bill = NFEBill(S=S, C=1.0 + frac, H=H, P=P, R=R)
    assert c_fan.rows == pytest.approx(bill.per_cycle) == c_loop.rows
    # batched: S x H forwards for the whole fan-out; the loop needs P·R times as many
    assert c_fan.forwards == S * H and c_loop.forwards == S * H * P * R
    if guidance.scale != 1.0:
        assert 1.0 < bill.C < 2.0


def test_plan_probabilities_are_exact_for_constant_plans_and_sum_to_one():
    for scene in SCENES.values():
        for a in range(3):
            got = plan_branch_probabilities(scene, [a] * 6)
            want = branch_probabilities(scene, ACTIONS[a], 6)
            for k in want:
                assert got[k] == pytest.approx(want[k], abs=1e-12)
        mixed = plan_branch_probabilities(scene, [0, 0, 1, 2, 2, 1])
        assert sum(mixed.values()) == pytest.approx(1.0, abs=1e-12)


def test_candidate_plans_warm_start_and_validation():
    plans = candidate_plans(10, 4, actions=3)
    assert plans.shape == (10, 4) and len({tuple(p) for p in plans.tolist()}) == 10
    assert plans[:3].tolist() == [[0] * 4, [1] * 4, [2] * 4]
    warm = candidate_plans(10, 4, previous=[2, 1, 1, 0], actions=3)
    assert warm[0].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="previous"):
        candidate_plans(4, 4, previous=[0, 1], actions=3)
    with pytest.raises(ValueError, match="plans"):
        candidate_plans(0, 4, actions=3)


def test_proposal_weights_are_exact_density_ratios():
    mu = torch.tensor([[1.5, -0.5, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0], [-1.0, 0.0, 0.5, 0.5]])
    pi = torch.tensor([0.5, 0.3, 0.2])
    q = TailProposal(mu, pi, beta=0.4)
    z = torch.randn(7, 3, 4, dtype=torch.float64)
    # direct: log p - log q with the Gaussian densities written out (normalising constants cancel)
    log_phi = -0.5 * (z ** 2).sum(-1)  # (n, H)
    log_phi_shift = -0.5 * ((z - mu.double()) ** 2).sum(-1)
    p = log_phi.sum(-1).exp()
    shifted = sum(pi[h] * (log_phi_shift[:, h] + log_phi.sum(-1) - log_phi[:, h]).exp() for h in range(3))
    qd = 0.6 * p + 0.4 * shifted
    assert torch.allclose(q.log_weights(z), (p / qd).log(), atol=1e-9)
    # E_q[p/q] = 1 and weights are bounded by 1 / (1 - beta)
    big = q.sample(200_000, 3, generator=torch.Generator().manual_seed(0))
    w = q.log_weights(big).exp()
    assert float(w.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(w.max()) <= 1 / 0.6 + 1e-9
    with pytest.raises(ValueError, match="horizon"):
        q.sample(3, 5)


def test_importance_sampling_is_unbiased_and_cuts_tail_variance_at_equal_nfe():
    # the mixture world: exact denoiser, rare mode of known probability; one frame (H = 1)
    from fastdiff_core.denoiser import Denoiser
    from fastdiff_core.worlds.mixture import MixtureNetwork, get_mixture

    mix = get_mixture("rare2d")
    path = get_path("vp_linear")
    net = MixtureNetwork(mix, path, "eps")
    sigmas = build_grid("karras", 6, path)
    sampler = frame_sampler("dpmpp_2m")

    def tail_of(z):
        den = Denoiser(net, path, "eps")
        x0 = sampler(den, z[:, 0].double() * sigmas[0], sigmas)
        return (mix.assign(x0) == mix.rare).long()

    gen = torch.Generator().manual_seed(0)
    # pilot (uniform): learn where the tail comes from
    pilot = torch.randn(4000, 1, mix.dim, generator=gen)
    code = tail_of(pilot)
    q = TailProposal.fit(pilot, torch.zeros(4000, dtype=torch.long), code == 1, beta=0.5)
    assert q is not None
    truth = float(mix.weights[mix.rare])
    n, reps = 300, 30
    uni, imp = [], []
    for _ in range(reps):
        z = torch.randn(n, 1, mix.dim, generator=gen)
        uni.append(float(weighted_rates(tail_of(z)[None], None, 2)[0, 1]))
        zq = q.sample(n, 1, generator=gen)
        imp.append(float(weighted_rates(tail_of(zq)[None], q.log_weights(zq)[None], 2)[0, 1]))
    uni, imp = torch.tensor(uni, dtype=torch.float64), torch.tensor(imp, dtype=torch.float64)
    # unbiased for the sampler's own tail rate (6 steps under-sample the rare mode: the plain sampler's
    # pooled rate is the reference, not the mixture weight): means agree within 3 joint standard errors
    se = math.sqrt((float(imp.var()) + float(uni.var())) / reps)
    assert abs(float(imp.mean()) - float(uni.mean())) < 3 * se
    assert float(uni.mean()) < truth  # the deficit the tail check exists to catch
    # equal NFE (same n, same solver): markedly lower variance of the tail estimate
    assert float(imp.var()) < 0.5 * float(uni.var()), (float(imp.var()), float(uni.var()))


def test_planner_warm_starts_from_the_previous_best_plan():
    net = SharedContextNet(random_net())
    sigmas = build_grid("karras", 2, PATH)
    planner = Planner(net, DrivingWorldModel(net, SCENE), plans=5, futures=2, horizon=3, sampler=frame_sampler("euler"), sigmas=sigmas)
    ctx = waiting_frame(SCENE, 1, torch.Generator().manual_seed(5))[0]
    first = planner.cycle(ctx, torch.Generator().manual_seed(6))
    best = first.chosen_plan()
    second = planner.cycle(ctx, torch.Generator().manual_seed(7))
    assert second.plans[0].tolist() == best[1:] + best[-1:]
    assert first.nfe == 2 * 3 * 5 * 2 and first.forwards == 2 * 3
    assert torch.allclose(first.rates.sum(1), torch.ones(5, dtype=torch.float64))


def test_fan_out_uses_a_wrappers_own_context_and_replays_from_stored_outputs():
    """A wrapper that defines ``context`` (the bench's RecordedNet) is asked for the context instead of
    being bypassed; replaying its stored outputs gives the real fan-out exactly, with every network
    call recorded once (H contexts and S x H forwards)."""
    from fastdiff_core.bench.rollout import RecordedNet

    net = SharedContextNet(random_net(seed=3))
    P, R, H, S = 2, 3, 4, 3
    sigmas, plans, noise, ctx, sampler = fan_setup(P, R, H, S, seed=8)
    real = fan_out(net, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx)
    rec = RecordedNet(net)
    recorded = fan_out(rec, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx)
    kinds = [k for k, _, _ in rec.calls]
    assert kinds.count("context") == H and kinds.count("forward") == S * H
    rec.mode = "stored"
    stored = fan_out(rec, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx)
    assert torch.equal(recorded, real) and torch.equal(stored, real)
    rec.calls.reverse()  # out of order: refused, not silently wrong
    rec._i = 0
    with pytest.raises(RuntimeError, match="out of order"):
        fan_out(rec, WORLD, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx)
