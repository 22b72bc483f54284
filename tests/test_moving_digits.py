"""The moving-digits world: its dynamics and exact branch probabilities, the branch classifier (exact on
ground-truth rollouts, blur refused), and the world model on the rollout engine (H x P x R fan-out, guidance,
importance sampling) with counted NFE == the bill."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.spec import RunSpec
from fastdiff_core.worlds.moving_digits import (
    ACTIONS, JUMP, LABELS, MAX_X, P_JUMP, FrameDenoiser, MovingDigitsWorldModel, NetConfig, branch_probabilities,
    classify_codes, digit_images, frame_jump_probabilities, observed_moves, onset, place, shifted, simulate,
)
from fastdiff_core.worlds.moving_digits.network import condition

STAY, LEFT, RIGHT = ACTIONS.index("stay"), ACTIONS.index("left"), ACTIONS.index("right")


def test_place_and_shift_move_a_digit_without_changing_it():
    images = digit_images()[1][:5]
    at2 = place(images, torch.full((5,), 2))
    assert at2.shape == (5, 8, 16) and torch.equal(at2[:, :, 2:10], images)
    assert (at2[:, :, :2] == -1).all() and (at2[:, :, 10:] == -1).all()
    assert torch.equal(shifted(at2, 3), place(images, torch.full((5,), 5)))
    assert torch.equal(shifted(at2, -2), place(images, torch.full((5,), 0)))


@pytest.mark.parametrize("start, action, jumps", [
    (4, STAY, P_JUMP[STAY]),  # both jump directions land 3 columns away
    (0, STAY, P_JUMP[STAY] / 2),  # a jump left is stopped by the wall: it looks like staying
    (1, LEFT, P_JUMP[LEFT] / 2),  # left jump clipped to 1 column (looks like the move); right jump seen
    (MAX_X, RIGHT, P_JUMP[RIGHT] / 2),
])
def test_one_frame_probabilities_by_hand(start, action, jumps):
    p = branch_probabilities(start, [action])
    assert p["jumps"] == pytest.approx(jumps, abs=1e-15)
    assert p["steady"] == pytest.approx(1 - jumps, abs=1e-15) and p["implausible"] == 0.0


def test_constant_plans_are_rare_and_react_to_the_action():
    stay, right = branch_probabilities(4, [STAY] * 6), branch_probabilities(4, [RIGHT] * 6)
    assert 0.02 < stay["jumps"] < right["jumps"] < 0.05  # a rare branch at 2-5% of rollouts
    for p in (stay, right):
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("start, plan", [(4, [RIGHT] * 6), (1, [LEFT, LEFT, STAY, RIGHT, RIGHT])])
def test_classifier_is_exact_on_ground_truth_and_rates_match_the_probabilities(start, plan):
    """Every simulated move is read exactly (error 0), the label is what the hidden columns say, and the rate over
    10,000 rollouts lies within 4 standard errors of the dynamic programme (walls included)."""
    gen = torch.Generator().manual_seed(3)
    n = 10_000
    images = digit_images()[1]
    r, columns, jumped = simulate(images[torch.randint(0, len(images), (n,), generator=gen)], start, plan,
                                  generator=gen, with_state=True)
    moves, errors = observed_moves(r)
    assert torch.equal(moves, columns.diff(dim=1)) and float(errors.max()) == 0.0
    codes = classify_codes(r)
    truly = (columns.diff(dim=1).abs() >= 2).any(1)
    assert torch.equal(codes, truly.long())  # steady 0 / jumps 1, never implausible
    assert bool((jumped.any(1) & ~truly).any()) or start == 4  # a wall hides some jumps (not from the centre)
    p = branch_probabilities(start, plan)["jumps"]
    assert abs(float(truly.double().mean()) - p) <= 4 * (p * (1 - p) / n) ** 0.5
    first = onset(r)
    assert torch.equal(first[truly], (columns.diff(dim=1).abs() >= 2).float().argmax(1)[truly])
    per_frame = (columns.diff(dim=1).abs() >= 2).double().mean(0)
    for rate, q in zip(per_frame.tolist(), frame_jump_probabilities(start, plan), strict=True):
        assert abs(rate - q) <= 4 * (q * (1 - q) / n) ** 0.5, (rate, q)


def test_per_frame_jump_probabilities_by_hand():
    """From column 4 under right: columns 5, 6, 7, 8, 8, 8 before frames 2..6; a jump is seen with probability 1%
    until column 7, where the right jump is clipped to one column and only the left one (0.5%) shows (to first
    order: a jump before moves the digit)."""
    q = frame_jump_probabilities(4, [RIGHT] * 6)
    assert q[0] == pytest.approx(0.01, abs=1e-12)
    assert q == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.005], abs=3e-4)


def test_blurred_or_faded_frames_are_implausible_not_a_branch():
    """What too few solver steps produce - the average of a normal move and a jump, a faded digit, noise - is
    labelled implausible, never steady or jumps."""
    gen = torch.Generator().manual_seed(0)
    r = simulate(digit_images()[1][:200], 4, [STAY, STAY], generator=gen)
    blur = r.clone()
    blur[:, 2] = 0.5 * (shifted(r[:, 1], 1) + shifted(r[:, 1], JUMP))
    faded = r.clone()
    faded[:, 2] = 0.5 * r[:, 2] - 0.5
    noisy = r.clone()
    noisy[:, 1] = (r[:, 1] + 0.5 * torch.randn(r[:, 1].shape, generator=gen)).clamp(-1, 1)
    for bad in (blur, faded, noisy):
        assert (classify_codes(bad) == LABELS.index("implausible")).all()


def test_world_model_refuses_bad_options():
    with pytest.raises(ValueError, match="start=9 must be a column in 0..8"):
        MovingDigitsWorldModel(FrameDenoiser(), start=9)
    with pytest.raises(ValueError, match="action='up' is not one of"):
        MovingDigitsWorldModel(FrameDenoiser(), action="up")


def test_engine_rolls_out_the_frame_denoiser_with_the_exact_bill():
    """H x P x R = 3 x 3 x 4 over 2 planning cycles, guided (C = 2), with importance sampling of the tail: the
    counted NFE equals the bill S x C x H x P x R x cycles; the frames are canvases; every plan carries its
    exact truth. The network has the shipped architecture with freshly initialised weights: the bill does not
    depend on what it has learnt."""
    from fastdiff_core.rollout_runner import run_world_model

    torch.manual_seed(0)
    world = MovingDigitsWorldModel(FrameDenoiser(NetConfig()).eval(), start=4, action="stay")
    spec = _spec(solver="heun", steps=4, horizon=3, plans=3, futures=4, samples=2, guidance_scale=2.0,
                 importance="tail")
    result = run_world_model(spec, torch.device("cpu"), None, world)
    bill = budget.bill_for(spec)
    assert result.nfe_counted == result.nfe_formula == bill.per_run == 7 * 2 * 3 * 3 * 4 * 2
    labels = {r["label"] for r in result.histograms}
    assert labels == set(LABELS) and all(r["truth"] is not None for r in result.histograms)
    assert len({r["group"] for r in result.histograms}) >= 3


def test_single_plan_rollouts_each_observe_their_own_context():
    """A P = 1 run's samples x futures rollouts are independent, so each starts from its own observed digit (the
    driving world's own runner draws a context per row too): with one context per batch, every rate of the run
    was that one digit's, and the batch size (a memory option) changed what was measured. 2 x 48 rollouts of
    359 held-out digits: ~88 distinct contexts expected, one before the fix."""
    from fastdiff_core.rollout_runner import run_world_model

    seen = []

    class Recording(MovingDigitsWorldModel):
        def classify(self, rollouts: torch.Tensor) -> torch.Tensor:
            seen.append(rollouts[:, 0].reshape(rollouts.shape[0], -1))
            return super().classify(rollouts)

    torch.manual_seed(0)
    world = Recording(FrameDenoiser(NetConfig()).eval(), start=4, action="right")
    result = run_world_model(_spec(solver="euler", steps=1, horizon=1, plans=1, futures=48, samples=2),
                             torch.device("cpu"), None, world)
    contexts = torch.cat(seen)
    assert contexts.shape[0] == 96 and result.nfe_counted == 96
    assert torch.unique(contexts, dim=0).shape[0] >= 80
    assert bool((contexts.reshape(96, 8, 16)[:, :, :4] == -1).all())  # the digit at the start column, 4


def _spec(**fields) -> RunSpec:
    """A RunSpec carrying the sampler, the fan-out and the seed (its world is not read by ``run_world_model``)."""
    return RunSpec(world="mixture", **fields)


def test_training_batches_are_reweighted_to_the_dynamics_and_training_is_deterministic():
    """Jumps are drawn at 15% of a batch, but their weights make the objective the dynamics' own: per action the
    weighted share of jump rows is P_JUMP (within 3 standard errors over 20,000 rows); two runs of the same
    seed give the same weights, bit for bit."""
    from fastdiff_core.worlds.moving_digits import TrainConfig, train_denoiser, transitions

    gen = torch.Generator().manual_seed(0)
    prev, a, nxt, w = transitions(digit_images()[0], 20_000, 0.15, gen)
    moved = (observed_moves(torch.stack([prev, nxt], 1))[0][:, 0].abs() >= 2)  # a jump a wall did not hide
    jumped = torch.arange(20_000) < 3000
    assert bool((moved <= jumped).all())
    for i, p in enumerate(P_JUMP):
        rows = a == i
        share = float((w[rows] * jumped[rows]).sum() / w[rows].sum())
        assert abs(share - p) <= 3 * (p * 0.15 / 0.85 / int(rows.sum())) ** 0.5 + 1e-3 * p, (i, share, p)
    config = TrainConfig(net=NetConfig(channels=8, dilations=(1,)), steps=3, batch=16)
    one, two = train_denoiser(config)[0].state_dict(), train_denoiser(config)[0].state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    noisy = replace(config, context_noise=0.2)  # noise on the previous frame: still deterministic, and it acts
    three, four = train_denoiser(noisy)[0].state_dict(), train_denoiser(noisy)[0].state_dict()
    assert all(torch.equal(three[k], four[k]) for k in one) and not all(torch.equal(one[k], three[k]) for k in one)
    with pytest.raises(ValueError, match=r"context_noise=1.5 must be in \[0.0, 1.0\)"):
        TrainConfig(context_noise=1.5)


def test_match_features_read_the_move_the_noisy_frame_shows():
    """The network's match features are the posterior over the seven moves (uniform prior) of a noisy frame:
    at low noise they pick the move the frame was made with, at t -> 1 they carry almost no evidence, and they
    respond to x_t (the evidence the first shipped net ignored at t ~ 0.7, docs/moving_digits.md)."""
    gen = torch.Generator().manual_seed(0)
    prev = place(digit_images()[1][:64], torch.full((64,), 4))
    moves = [shifted(prev[:, None], d) for d in range(-JUMP, JUMP + 1)]
    for k, d in ((0, -JUMP), (4, 1), (6, JUMP)):
        x0 = shifted(prev, d).reshape(64, -1)
        for t, least in ((0.1, 0.99), (0.5, 0.9)):
            x_t = (1 - t) * x0 + t * torch.randn(x0.shape, generator=gen)
            u = FrameDenoiser.match_features(x_t, torch.full((64,), t), moves)
            assert u.shape == (64, 2 * JUMP + 1) and torch.allclose(u.sum(1), torch.ones(64))
            assert float(u[:, k].mean()) >= least, (d, t, float(u[:, k].mean()))
    u = FrameDenoiser.match_features(torch.randn(64, prev[0].numel(), generator=gen), torch.full((64,), 0.98), moves)
    assert float(u.max(1).values.mean()) < 0.6
    net = FrameDenoiser(NetConfig(channels=8, dilations=(1,), match=True))
    assert net(x_t, torch.full((64,), 0.5), condition(prev, torch.full((64,), 2))).shape == x_t.shape
