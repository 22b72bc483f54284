"""The moving-digits world as the product runs it: the shipped frame denoiser (sha256 checked against its card),
H x P x R rollouts through ``execute`` and ``fastdiff run`` with counted NFE == the bill, the tail gate's
verdict against the exact truth, and what the plugin refuses (one message wherever a spec is made)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from fastdiff_core import budget, catalog
from fastdiff_core.run import execute
from fastdiff_core.spec import RunResult, RunSpec
from fastdiff_core.worlds.moving_digits import (
    ACTIONS, CARD_FILE, LABELS, TAIL, WEIGHTS_DIR, WEIGHTS_FILE, branch_probabilities, load_weights,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("moving_digits")


def spec(**changes) -> dict:
    """H x P x R = 4 x 3 x 40 rollouts, 2 planning cycles, Heun on 4 steps (7 evaluations per frame)."""
    return {"world": "moving_digits", "solver": "heun", "steps": 4, "horizon": 4, "plans": 3, "futures": 40,
            "samples": 2, "seed": 0, **changes}


def test_plugin_declares_what_the_world_model_is():
    info = catalog.WORLDS["moving_digits"]
    assert info.tail == TAIL and info.options["action"].choices == ACTIONS
    assert info.options["start"].min == 0 and info.options["start"].max == 8


def test_shipped_weights_are_small_match_their_card_and_tampering_is_refused(tmp_path):
    card = json.loads((WEIGHTS_DIR / CARD_FILE).read_text())
    assert (WEIGHTS_DIR / WEIGHTS_FILE).stat().st_size < 2_000_000
    assert card["command"].startswith("fastdiff train moving_digits ") and card["stats"]["train_seconds"] > 0
    load_weights(WEIGHTS_DIR)  # the card's sha256 is the file's
    copy = tmp_path / "moving_digits"
    shutil.copytree(WEIGHTS_DIR, copy)
    raw = bytearray((copy / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0x01  # one bit of one weight
    (copy / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256 .* not the .* its card card.json records"):
        load_weights(copy)


def test_planning_run_bills_exactly_and_the_tail_gate_gives_a_verdict():
    """P x R fan-out over H frames through the worker's entry point: counted NFE == S x C x H x P x R x cycles;
    every plan's rows carry the exact truth of that plan; the measured verdict judges the tail against it with
    the three-outcome gate."""
    result = execute(json.dumps(spec()))
    assert result.nfe_counted == result.nfe_formula == 7 * 4 * 3 * 40 * 2
    # the run says which weights produced it (the store's model_checksum column reads this)
    assert result.info["model_checksum"] == json.loads((WEIGHTS_DIR / CARD_FILE).read_text())["sha256"]
    groups = {r["group"] for r in result.histograms}
    assert len(groups) >= 3 and {r["label"] for r in result.histograms} == set(LABELS)
    for r in result.histograms:
        plan = [ACTIONS.index(next(a for a in ACTIONS if a.startswith(c))) for c in r["group"].split("-")]
        assert r["truth"] == pytest.approx(branch_probabilities(4, plan)[r["label"]], abs=1e-12)
    coverage = next(c for c in budget.stored_verdicts(result.verdict)[1].checks if c.name == "coverage")
    assert coverage.status in ("pass", "fail", "undecided") and coverage.basis == "measured"


def test_fastdiff_run_rolls_out_a_constant_plan_guided():
    """``fastdiff run --spec``: P = 1, R futures under 'right' from column 2, guidance 2 (C = 2): the bill holds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    one = spec(plans=1, futures=100, samples=1, guidance_scale=2.0, world_options={"action": "right", "start": 2})
    out = subprocess.run([sys.executable, "-m", "workers.cli", "run", "--spec", json.dumps(one), "--json"], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = RunResult.from_dict(json.loads(out.stdout))
    assert result.nfe_counted == result.nfe_formula == 7 * 2 * 4 * 100
    assert result.metrics["tail_truth_mean"] == pytest.approx(branch_probabilities(2, [2] * 4)["jumps"])


@pytest.mark.parametrize("changes, message", [
    ({"precision": "bfloat16"}, "precision='bfloat16' is not supported by world='moving_digits'"),
    ({"feature_cache": "fixed"}, "feature_cache='fixed' is not supported by world='moving_digits'"),
    ({"sampler": "student", "student": "dmd", "steps": 1}, "sampler='student' is not supported by world='moving_digits'"),
])
def test_what_the_plugin_does_not_support_is_refused_before_any_work(changes, message):
    s = RunSpec.from_dict(spec(**changes))
    assert message in s.refusal()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        execute(s.to_json())


def test_bad_world_options_are_refused_naming_the_option():
    with pytest.raises(ValueError, match="start"):
        RunSpec.from_dict(spec(world_options={"start": 9}))
    with pytest.raises(ValueError, match="action"):
        RunSpec.from_dict(spec(world_options={"action": "up"}))


def test_shipped_model_rolls_out_clean_frames():
    """The shipped denoiser's frames are shifted copies of the digit (the classifier's match error under its
    tolerance) at DPM-Solver++(2M) x 4 steps: at most 2% of 300 six-frame rollouts implausible."""
    import torch

    from fastdiff_core.grids import build_grid
    from fastdiff_core.rollout import fan_out
    from fastdiff_core.speedups import frame_sampler
    from fastdiff_core.worlds.moving_digits import MovingDigitsWorldModel, classify_codes

    world = MovingDigitsWorldModel(load_weights(WEIGHTS_DIR), start=4, action="right")
    gen = torch.Generator().manual_seed(0)
    plan = torch.full((1, 6), world.action)
    frames = fan_out(world.net, world, plan, 300, sampler=frame_sampler("dpmpp_2m"),
                     sigmas=build_grid("karras", 4, world.path), noise=torch.randn(300, 6, world.frame_dim, generator=gen),
                     context=world.observe(1, gen)[0])
    codes = classify_codes(frames.reshape(300, 7, *world.frame_shape))
    assert int((codes == LABELS.index("implausible")).sum()) <= 6
