"""The driving world through RunSpec/execute: counted NFE equals the formula, the result is complete."""

import pytest
import torch

from fastdiff_core import catalog
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.models.teacher import DEFAULT_TEACHER, load_teacher
from fastdiff_core.run import execute
from fastdiff_core.spec import RunResult, RunSpec
from fastdiff_core.worlds.driving.evaluation import solver_and_grid
from fastdiff_core.worlds.driving.sampling import rollout
from fastdiff_core.worlds.driving.scenes import LABELS, SCENES, get_scene


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_catalog_lists_every_scene():
    assert catalog.WORLDS["driving"].scenes == tuple(SCENES)


@pytest.mark.parametrize("solver,steps,guidance,interval", [
    ("euler", 4, 1.0, None), ("heun", 3, 3.0, None), ("dpmpp_2m", 5, 3.0, (0.3, 5.0)),
])
def test_execute_counts_exactly_the_formula(solver, steps, guidance, interval):
    spec = RunSpec(world="driving", scene="child_at_curb", solver=solver, steps=steps, samples=24, horizon=3,
                   plans=1, futures=2, guidance_scale=guidance, guidance_interval=interval,
                   world_options={"action": "brake", "k": 3})
    progress = []
    res = execute(spec, progress.append)
    assert res.nfe_counted == res.nfe_formula > 0
    assert [r["label"] for r in res.histograms] == list(LABELS)
    assert sum(r["count"] for r in res.histograms) == 48
    for key in ("tv", "tail_rate", "tail_lo", "tail_hi", "precision", "recall", "density", "coverage", "vendi",
                "implausible_rate", "gate_pass"):
        assert key in res.metrics
    assert res.latency[0]["device"] == "cpu" and res.samples and len(res.samples[0]) == 6
    assert progress[-1].phase == "metrics" and progress[0].total == 3
    assert RunResult.from_json(res.to_json()).to_json() == res.to_json()


def test_horizon_multiplies_nfe_exactly():
    net = load_teacher("flow")
    solver, sigmas = solver_and_grid("heun", 4)
    scene = get_scene("hesitant_no_signal")
    for horizon in (1, 3):
        counter = NFECounter()
        r = rollout(net, scene, "keep", 10, horizon, solver=solver, sigmas=sigmas, guidance=Guidance(2.0),
                    generator=torch.Generator().manual_seed(0), counter=counter)
        assert r.shape == (10, horizon + 1, 4, 2)
        assert counter.nfe == (2 * 4 - 1) * 2 * horizon


def test_rollouts_are_deterministic_under_a_seed():
    net = load_teacher("flow")
    solver, sigmas = solver_and_grid("dpmpp_2m", 4)
    scene = get_scene("commuter_late")
    a, b = (rollout(net, scene, "keep", 8, 2, solver=solver, sigmas=sigmas,
                    generator=torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b)


def test_bad_driving_spec_names_the_field():
    with pytest.raises(ValueError, match="scene='mars'"):
        RunSpec(world="driving", scene="mars")
    with pytest.raises(ValueError, match="action"):
        RunSpec(world="driving", scene="walk_signal", world_options={"action": "swerve"})


def test_float64_run_leaves_the_cached_float32_teacher_alone():
    spec = RunSpec(world="driving", scene="walk_signal", solver="euler", steps=3, samples=16, horizon=2,
                   dtype="float64", world_options={"k": 3})
    res = execute(spec)
    assert res.nfe_counted == res.nfe_formula
    assert next(load_teacher(DEFAULT_TEACHER).parameters()).dtype == torch.float32
