"""Chunked fan-out: a planning cycle runs its P·R rollouts in chunks of at most FASTDIFF_CHUNK_ROLLOUTS, and
what it returns — every row's noise, the frames, the per-plan tallies and rates, the choice, the refitted
tail proposal and the NFE — does not depend on the chunk size (frames up to a batch's float rounding)."""

import pytest
import torch

from fastdiff_core import rollout
from fastdiff_core.grids import build_grid
from fastdiff_core.models.teacher import DEFAULT_TEACHER, load_teacher
from fastdiff_core.rollout import (
    BranchTally, NoiseStream, SharedContextNet, TailProposal, candidate_plans, chunk_rollouts, fan_out, planning_cycle,
)
from fastdiff_core.speedups import frame_sampler
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.model import DrivingWorldModel
from fastdiff_core.worlds.driving.sampling import PATH
from fastdiff_core.worlds.driving.scenes import SCENES
from fastdiff_core.worlds.driving.simulator import waiting_frame

SCENE = SCENES["child_at_curb"]
WORLD = DrivingWorldModel(None, SCENE)  # the engine reads the world; the network is passed alongside


def _proposal() -> TailProposal:
    return TailProposal(torch.randn(3, encoding.FRAME_DIM, generator=torch.Generator().manual_seed(9)),
                        torch.tensor([0.2, 0.3, 0.5]), 0.5)


@pytest.mark.parametrize("proposal", [None, _proposal()])
def test_noise_stream_gives_every_row_the_same_noise_whatever_the_chunk(monkeypatch, proposal):
    def drawn(rows, sizes):
        stream = NoiseStream(rows, 3, encoding.FRAME_DIM, proposal=proposal,
                             generator=torch.Generator().manual_seed(4), device="cpu")
        parts = [stream.take(n) for n in sizes]
        return torch.cat([z for z, _ in parts]), None if proposal is None else torch.cat([w for _, w in parts])

    # at most one block: exactly one draw of all rows, as an unchunked cycle makes it
    whole, log_w = drawn(40, [40])
    g = torch.Generator().manual_seed(4)
    direct = torch.randn(40, 3, encoding.FRAME_DIM, generator=g) if proposal is None else proposal.sample(40, 3, generator=g)
    assert torch.equal(whole, direct)
    if proposal is not None:
        assert torch.equal(log_w, proposal.log_weights(direct))
    # several blocks, handed out in chunks that straddle them
    monkeypatch.setattr(rollout, "NOISE_BLOCK", 16)
    ref = drawn(50, [50])
    for sizes in ([7] * 7 + [1], [1] * 50, [16, 16, 16, 2], [33, 17]):
        got = drawn(50, sizes)
        assert torch.equal(got[0], ref[0])
        assert (got[1] is None and ref[1] is None) or torch.equal(got[1], ref[1])
    with pytest.raises(ValueError, match="only"):
        drawn(5, [3, 3])


def test_chunked_cycles_equal_the_unchunked_cycle_on_the_teacher(monkeypatch):
    monkeypatch.setattr(rollout, "NOISE_BLOCK", 16)  # several noise blocks per cycle
    net = SharedContextNet(load_teacher(DEFAULT_TEACHER, torch.device("cpu")))
    sigmas = build_grid("karras", 4, PATH)
    plans = candidate_plans(3, 3, actions=3)
    ctx = waiting_frame(SCENE, 1, torch.Generator().manual_seed(1))[0]
    for proposal in (None, _proposal()):
        results = {}
        for chunk in (10 ** 6, 23, 1):
            results[chunk] = planning_cycle(net, WORLD, plans, 20, sampler=frame_sampler("dpmpp_2m"), sigmas=sigmas,
                                            context=ctx, proposal=proposal, generator=torch.Generator().manual_seed(3),
                                            fit_tail=True, chunk=chunk)
        ref = results[10 ** 6]
        assert ref.chunks == 1 and results[23].chunks == 3 and results[1].chunks == 60
        assert sum(int((t.count > 0).sum()) for t in ref.tallies) >= 4  # the teacher spreads over branches
        for res in results.values():
            assert res.nfe == ref.nfe == 4 * 3 * 3 * 20  # NFE counted identically
            assert res.chosen == ref.chosen
            for a, b in zip(res.tallies, ref.tallies):
                assert torch.equal(a.count, b.count)
            assert torch.allclose(res.rates, ref.rates, rtol=0, atol=1e-12)
            fitted, want = res.tail_fit.proposal(), ref.tail_fit.proposal()
            assert (fitted is None) == (want is None)
            if want is not None:
                assert torch.allclose(fitted.mu, want.mu, atol=1e-6) and torch.allclose(fitted.pi, want.pi, atol=1e-6)


def test_fan_out_rows_are_the_slices_of_the_whole_fan_out():
    net = SharedContextNet(load_teacher(DEFAULT_TEACHER, torch.device("cpu")))
    sigmas = build_grid("karras", 3, PATH)
    plans = candidate_plans(4, 2, actions=3)
    noise = torch.randn(4 * 5, 2, encoding.FRAME_DIM, generator=torch.Generator().manual_seed(2))
    ctx = waiting_frame(SCENE, 1, torch.Generator().manual_seed(3))[0]
    whole = fan_out(net, WORLD, plans, 5, sampler=frame_sampler("euler"), sigmas=sigmas, noise=noise, context=ctx)
    flat = whole.reshape(20, *whole.shape[2:])
    for lo, hi in ((0, 20), (3, 12), (7, 8), (19, 20)):
        part = fan_out(net, WORLD, plans, 5, sampler=frame_sampler("euler"), sigmas=sigmas, noise=noise[lo:hi],
                       context=ctx, rows=(lo, hi))
        assert torch.allclose(part, flat[lo:hi], atol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        fan_out(net, WORLD, plans, 5, sampler=frame_sampler("euler"), sigmas=sigmas, noise=noise[:3], context=ctx,
                rows=(18, 21))


def test_branch_tally_matches_the_direct_weighted_estimate_in_any_split():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (300,), generator=g)
    log_w = torch.randn(300, generator=g, dtype=torch.float64) * 0.7
    w = torch.softmax(log_w, 0)
    one_hot = torch.nn.functional.one_hot(codes, 4).double()
    rates = w @ one_hot
    var = (w[:, None] ** 2 * (one_hot - rates) ** 2).sum(0)
    whole = BranchTally(4).add(codes, log_w)
    split = BranchTally(4).add(codes[:123], log_w[:123]).merge(BranchTally(4).add(codes[123:], log_w[123:]))
    for t in (whole, split):
        assert torch.allclose(t.rates, rates, atol=1e-12) and torch.allclose(t.variances, var, atol=1e-12)
        assert t.n_eff == pytest.approx(float(1 / (w * w).sum()))
    plain = BranchTally(4).add(codes)
    p = plain.rates
    assert torch.allclose(plain.variances, p * (1 - p) / 300) and plain.n_eff == pytest.approx(300)


@pytest.mark.parametrize("raw, ok", [(None, True), ("64", True), ("0", False), ("-3", False), ("many", False)])
def test_chunk_setting_is_read_from_the_environment_and_checked(monkeypatch, raw, ok):
    if raw is None:
        monkeypatch.delenv("FASTDIFF_CHUNK_ROLLOUTS", raising=False)
    else:
        monkeypatch.setenv("FASTDIFF_CHUNK_ROLLOUTS", raw)
    if ok:
        from fastdiff_core.limits import RunLimits

        assert chunk_rollouts() == (RunLimits().chunk_rollouts if raw is None else int(raw))
    else:
        with pytest.raises(ValueError, match="FASTDIFF_CHUNK_ROLLOUTS"):
            chunk_rollouts()
