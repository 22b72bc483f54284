"""The driving world's ground truth: closed-form branch probabilities, the simulator, the classifier."""

import math

import pytest
import torch

from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.branches import branch_counts, classify_codes
from fastdiff_core.worlds.driving.scenes import (
    ACTIONS, BRANCHES, SCENES, Scene, branch_probabilities, frame_hazards, get_scene,
)
from fastdiff_core.worlds.driving.simulator import simulate


def test_probabilities_are_a_distribution_and_span_easy_to_multimodal():
    assert len(SCENES) >= 6
    for scene in SCENES.values():
        for action in ACTIONS:
            p = branch_probabilities(scene, action, 6)
            assert set(p) == set(BRANCHES)
            assert math.isclose(sum(p.values()), 1.0, abs_tol=1e-12)
            assert all(v >= 0 for v in p.values())
    keep = {s: branch_probabilities(sc, "keep") for s, sc in SCENES.items()}
    assert max(max(p.values()) for p in keep.values()) > 0.99  # an unambiguous scene
    assert any(min(p["waits"], p["crosses"]) > 0.3 for p in keep.values())  # a strongly multimodal one
    assert any(0.01 <= p["darts"] <= 0.05 for p in keep.values())  # a tail between 1% and 5%


def test_tail_reacts_to_the_ego_action():
    s = get_scene("red_light_jaywalker")
    darts = [branch_probabilities(s, a)["darts"] for a in ACTIONS]
    assert darts[0] > darts[1] > darts[2]  # braking invites the dart, accelerating deters it
    assert darts[0] > 1.5 * darts[2]


def test_horizon_one_equals_the_frame_hazards():
    s = get_scene("child_at_curb")
    pc, pd = frame_hazards(s, "keep")
    p = branch_probabilities(s, "keep", 1)
    assert p["crosses"] == pytest.approx(pc) and p["darts"] == pytest.approx(pd)


@pytest.mark.parametrize("name", ["hesitant_no_signal", "child_at_curb", "red_light_jaywalker"])
def test_simulator_frequencies_match_the_closed_form(name):
    scene = get_scene(name)
    n = 60_000
    r = simulate(scene, "keep", n, 6, generator=torch.Generator().manual_seed(1))
    counts = branch_counts(r, scene)
    truth = branch_probabilities(scene, "keep", 6)
    assert counts["implausible"] == 0
    for b in BRANCHES:
        lo, hi = wilson_interval(counts[b], n, 0.9999)
        assert lo <= truth[b] <= hi, (b, counts[b] / n, truth[b])


def test_classifier_recovers_the_true_branch_exactly():
    for scene in SCENES.values():
        for action in ACTIONS:
            r, true = simulate(scene, action, 2000, 8, generator=torch.Generator().manual_seed(2), with_branch=True)
            assert torch.equal(classify_codes(r, scene), true)


def _one(scene, branch, seed=0, horizon=6):
    r, true = simulate(scene, "brake", 20000, horizon, generator=torch.Generator().manual_seed(seed),
                       with_branch=True)
    return r[true == BRANCHES.index(branch)][:200]


def test_blurred_averages_of_two_branches_are_implausible():
    scene = get_scene("child_at_curb")
    walk, wait = _one(scene, "crosses"), _one(scene, "waits")
    m = min(len(walk), len(wait))
    assert m > 20
    # the mean of a waiting and a walking future: half-speed drift off the curb
    blend_wait_walk = 0.5 * (wait[:m] + walk[:m])
    assert (classify_codes(blend_wait_walk, scene) == 3).float().mean() > 0.9
    # the mean of walking and running speeds (the gap between the two modes): a jog at 2.3-2.5 m/s
    jog = wait[:m].clone()
    tau = torch.arange(1, 4 * (jog.shape[1] - 2) + 1, dtype=jog.dtype) * 0.25
    speed = torch.linspace(2.3, 2.5, m)[:, None]
    jog[:, 2:, :, 0] = (jog[:, 1, -1:, 0] + speed * tau).reshape(m, -1, 4)
    jog[:, 2:, :, 1] = jog[:, 1, -1:, 1, None]
    assert (classify_codes(jog, scene) == 3).all()


def test_broken_or_wobbling_lines_are_implausible():
    scene = get_scene("walk_signal")
    r = _one(scene, "crosses")
    jump = r.clone()
    jump[:, 4:, :, 0] += 1.0  # teleport one metre mid-rollout
    assert (classify_codes(jump, scene) == 3).all()
    wobble = r.clone()
    wobble[:, 3, 1::2, 0] += 0.3
    assert (classify_codes(wobble, scene) == 3).all()


def test_encoding_round_trips_and_condition_layout():
    scene = get_scene("commuter_late")
    r = simulate(scene, "keep", 64, 4, generator=torch.Generator().manual_seed(3))
    prev, nxt = r[:, 1], r[:, 2]
    z = encoding.encode_frame(nxt, prev)
    assert z.shape == (64, encoding.FRAME_DIM)
    assert torch.allclose(encoding.decode_frame(z, prev), nxt, atol=1e-6)
    c = encoding.condition(prev, scene, "brake")
    assert c.shape == (64, encoding.COND_DIM)
    u = encoding.drop_condition(c)
    assert torch.equal(u[:, :8], c[:, :8]) and (u[:, 8:] == 0).all() and (c[:, -1] == 1).all()


def test_bad_input_names_field_value_and_allowed():
    with pytest.raises(ValueError, match="action='swerve'"):
        branch_probabilities(get_scene("walk_signal"), "swerve")
    with pytest.raises(ValueError, match="scene='nowhere'"):
        get_scene("nowhere")
    with pytest.raises(ValueError, match="horizon=0"):
        branch_probabilities(get_scene("walk_signal"), "keep", 0)
    with pytest.raises(ValueError, match="signal='amber'"):
        Scene("x", "x", 1.0, 1.3, "amber", 10.0, 40.0, 0.0)
    with pytest.raises(ValueError, match="hurry=2"):
        Scene("x", "x", 1.0, 1.3, "none", 10.0, 40.0, 2)


def test_condition_columns_match_their_definition():
    """The condition, built from its precomputed static columns, is the documented layout: the frame
    relative to its last state, tanh((last - waiting spot) / OFFSET_SCALE), scene features, action
    one-hot, flag — checked against a direct computation, for a float and a per-row curb distance."""
    scene = get_scene("child_at_curb")
    r = simulate(scene, "keep", 32, 3, generator=torch.Generator().manual_seed(5))
    prev = r[:, 2]
    actions = torch.tensor([i % 3 for i in range(32)])
    c = encoding.condition(prev, scene, actions)
    last = prev[:, -1]
    spot = torch.tensor([-scene.curb_distance, 0.0])
    want = torch.cat([(prev[:, :-1] - last[:, None]).reshape(32, -1), torch.tanh((last - spot) / encoding.OFFSET_SCALE),
                      torch.tensor(scene.features()).expand(32, -1),
                      torch.eye(3)[actions], torch.ones(32, 1)], 1)
    assert torch.allclose(c, want, atol=1e-6)
    static = encoding.static_condition(scene, actions[:, None].expand(32, 5))  # per frame of a plan
    assert static.shape == (32, 5, encoding.STATIC_DIM)
    assert torch.equal(encoding.condition_from_static(prev, scene.curb_distance, static[:, 3]), c)
    per_row = encoding.state_features(prev, torch.full((32,), scene.curb_distance))
    assert torch.allclose(per_row, c[:, :8], atol=1e-6)
    with pytest.raises(ValueError, match="integer indices"):
        encoding.static_condition(scene, torch.tensor([0, 3]))
