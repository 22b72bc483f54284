"""Distillation recipes on a tiny teacher (trained in seconds on a 2-D conditional world with a rare
mode, ``students_toy``): each recipe must do what its paper says it does, measured against the
teacher it distils, plus checkpoints, samplers, NFE and config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import students_toy as toy
from fastdiff_core import catalog
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.students import get_recipe, recipes
from fastdiff_core.students.consistency import ConsistencyConfig, train_consistency
from fastdiff_core.students.distill import (
    SAMPLER_KINDS, ddim_step, noised, sample_student, teacher_ode, teacher_x0, uniform_times, x0_of,
)
from fastdiff_core.students.dmd import DMDConfig, dmd_loss
from fastdiff_core.students.guidance import GuidanceConfig, train_guidance
from fastdiff_core.students.network import StudentNet, load_student, save_student
from fastdiff_core.students.progressive import ProgressiveConfig, distil_round
from fastdiff_core.students.rcm import RCMConfig, train_rcm
from fastdiff_core.students.reflow import ReflowConfig, couplings, train_reflow
from fastdiff_core.students.shortcut import ShortcutConfig, train_shortcut


pytestmark = pytest.mark.xdist_group("students_recipes")  # one worker trains the tiny teacher once


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(1)
    return toy.tiny_teacher()


def _noise(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), toy.conditions(torch.randint(2, (n,), generator=g))


def _ode_endpoint(teacher, z, cond, substeps=24):
    T = teacher.t_max
    n = len(z)
    return teacher_ode(teacher, z * float(teacher.path.sigma(T)), torch.full((n,), T), torch.zeros(n), cond, substeps)


def test_tiny_teacher_reproduces_the_rare_mode(teacher):
    z, _ = _noise(6000, 1)
    cond = toy.conditions(torch.zeros(6000, dtype=torch.long))
    with torch.no_grad():
        x0 = sample_student(teacher.net, "ddim", teacher.path, "flow", cond, z, 32, t_max=teacher.t_max)
    rate = (toy.mode_of(x0) == 2).float().mean().item()
    assert 0.025 < rate < 0.08  # truth 0.05: the tail exists for the students to keep or lose


def test_guidance_student_matches_the_cfg_teacher_in_one_pass(teacher):
    student, stats = train_guidance(teacher, toy.pairs, GuidanceConfig(steps=400, batch=256, lr=1e-3),
                                    torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    x0, cond = toy.pairs(2000, g)
    t = 0.05 + 0.9 * torch.rand(2000, generator=g)
    x_t = noised(teacher.path, x0, torch.randn(x0.shape, generator=g), t)
    for w in (1.5, 3.0, 5.0):
        with torch.no_grad():
            cfg = teacher_x0(teacher, x_t, t, cond, w)  # 2 passes
            plain = teacher_x0(teacher, x_t, t, cond, 1.0)  # what ignoring w would give
            out = x0_of(student(x_t, t, cond, torch.full((2000, 1), w)), "flow", teacher.path, x_t, t)  # 1 pass
        err, base = (out - cfg).pow(2).mean().item(), (plain - cfg).pow(2).mean().item()
        assert err < 0.25 * base, (w, err, base)
    assert stats["guidance_range"] == [1.0, 6.0]


def test_progressive_student_takes_two_teacher_steps_in_one(teacher):
    cfg = ProgressiveConfig(steps_per_round=300, batch=256, lr=1e-3, start_steps=4, final_steps=4)
    student, _ = distil_round(teacher, None, 4, toy.pairs, cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(4)
    x0, cond = toy.pairs(3000, g)
    times = torch.tensor(uniform_times(teacher.t_max, 4))
    i = torch.randint(4, (3000,), generator=g)
    t, s = times[i], times[i + 1]
    x_t = noised(teacher.path, x0, torch.randn(x0.shape, generator=g), t)
    with torch.no_grad():
        two = teacher_ode(teacher, x_t, t, s, cond, 2 * cfg.teacher_substeps)
        one_teacher = ddim_step(teacher.path, x_t, teacher_x0(teacher, x_t, t, cond), t, s)
        one_student = ddim_step(teacher.path, x_t, x0_of(student(x_t, t, cond), "flow", teacher.path, x_t, t), t, s)
    err, base = (one_student - two).pow(2).mean().item(), (one_teacher - two).pow(2).mean().item()
    assert err < 0.3 * base, (err, base)


def test_consistency_student_jumps_along_the_teacher_trajectory(teacher):
    student, _ = train_consistency(teacher, toy.pairs, ConsistencyConfig(steps=400, batch=256, lr=1e-3),
                                   torch.Generator().manual_seed(0))
    z, cond = _noise(2000, 5)
    with torch.no_grad():
        ode = _ode_endpoint(teacher, z, cond)
        one = sample_student(student, "consistency", teacher.path, "flow", cond, z, 1, t_max=teacher.t_max)
        teacher_one = sample_student(teacher.net, "ddim", teacher.path, "flow", cond, z, 1, t_max=teacher.t_max)
    err, base = (one - ode).pow(2).mean().item(), (teacher_one - ode).pow(2).mean().item()
    assert err < 0.5 * base, (err, base)
    # multistep consistency sampling re-noises with the generator: same seed same draw, new seed new draw
    draw = lambda seed: sample_student(student, "consistency", teacher.path, "flow", cond, z, 4,  # noqa: E731
                                       t_max=teacher.t_max, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_dmd_gradient_is_the_score_difference(teacher):
    g = torch.Generator().manual_seed(0)
    x0, cond = toy.pairs(512, g)
    x0 = x0.clone().requires_grad_(True)
    # a critic identical to the teacher: fake score == real score, the generator gets no push
    same = StudentNet(teacher.net)
    dmd_loss(x0, same, teacher, cond, (0.02, 0.98), torch.Generator().manual_seed(1)).backward()
    assert x0.grad.abs().max().item() < 1e-5
    # a critic that believes samples sit 0.5 to the right pushes them left (towards the real score)
    shifted = StudentNet(teacher.net)
    with torch.no_grad():
        shifted.body.out.bias += torch.tensor([-0.5, 0.0])  # flow u = eps - x0: lower u = x0 further right
    x1 = x0.detach().clone().requires_grad_(True)
    dmd_loss(x1, shifted, teacher, cond, (0.02, 0.98), torch.Generator().manual_seed(1)).backward()
    assert x1.grad[:, 0].mean().item() > 0 and abs(x1.grad[:, 1].mean().item()) < x1.grad[:, 0].mean().item()


def test_reflow_couplings_are_the_teacher_ode_and_straighten_it(teacher):
    g = torch.Generator().manual_seed(0)
    z, x1, cond = couplings(teacher, toy.pairs, 64, 8, 32, g)
    with torch.no_grad():
        again = _ode_endpoint(teacher, z, cond, substeps=8)
    assert torch.allclose(x1, again, atol=1e-5)
    student, stats = train_reflow(teacher, toy.pairs, ReflowConfig(couplings=6000, coupling_substeps=8, steps=400,
                                                                   batch=256, lr=1e-3), torch.Generator().manual_seed(0))
    z, cond = _noise(2000, 6)
    with torch.no_grad():
        ode = _ode_endpoint(teacher, z, cond)
        s1 = sample_student(student, "ddim", teacher.path, "flow", cond, z, 2, t_max=teacher.t_max)
        t1 = sample_student(teacher.net, "ddim", teacher.path, "flow", cond, z, 2, t_max=teacher.t_max)
    assert (s1 - ode).pow(2).mean() < 0.6 * (t1 - ode).pow(2).mean()
    assert stats["couplings"] == 6000


def test_shortcut_student_uses_its_step_size_input(teacher):
    student, _ = train_shortcut(teacher, toy.pairs, ShortcutConfig(steps=400, batch=256, lr=1e-3, levels=5),
                                torch.Generator().manual_seed(0))
    z, cond = _noise(2000, 7)
    T, n = teacher.t_max, 2000
    x_T = z * float(teacher.path.sigma(T))
    t = torch.full((n,), T)
    with torch.no_grad():
        ode = _ode_endpoint(teacher, z, cond)
        one = sample_student(student, "shortcut", teacher.path, "flow", cond, z, 1, t_max=T)
        # the same network told d = 0 (an instantaneous velocity) and stepped all the way: plain Euler
        as_d0 = x0_of(student(x_T, t, cond, torch.zeros(n, 1)), "flow", teacher.path, x_T, t)
    err, base = (one - ode).pow(2).mean().item(), (as_d0 - ode).pow(2).mean().item()
    assert err < 0.5 * base, (err, base)


def test_rcm_trains_both_objectives(teacher):
    student, stats = train_rcm(teacher, toy.pairs, RCMConfig(steps=150, batch=256, lr=1e-3),
                               torch.Generator().manual_seed(0))
    z, cond = _noise(2000, 8)
    with torch.no_grad():
        ode = _ode_endpoint(teacher, z, cond)
        two = sample_student(student, "consistency", teacher.path, "flow", cond, z, 1, t_max=teacher.t_max)
        t2 = sample_student(teacher.net, "ddim", teacher.path, "flow", cond, z, 1, t_max=teacher.t_max)
    assert (two - ode).pow(2).mean() < (t2 - ode).pow(2).mean()
    assert stats["lambda_dmd"] == 0.003 and stats["final_loss"] > 0


def test_checkpoint_round_trip(teacher, tmp_path):
    student = StudentNet(teacher.net, ("guidance",))
    with torch.no_grad():
        student.extra[-1].weight.normal_(0, 0.1)
    file = tmp_path / "s.safetensors"
    save_student(student, file, {"recipe": "guidance", "steps": None})
    loaded, facts = load_student(file)
    x, cond = _noise(64, 9)
    t, w = torch.full((64,), 0.5), torch.full((64, 1), 2.0)
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, cond, w), student(x, t, cond, w), atol=5e-3)
    assert facts == {"recipe": "guidance", "steps": None} and loaded.inputs == ("guidance",)
    with pytest.raises(ValueError, match="does not exist"):
        load_student(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
@pytest.mark.parametrize("steps", [1, 3])
def test_student_samplers_count_exactly_steps_nfe(teacher, kind, steps):
    inputs = ("step",) if kind == "shortcut" else ()
    student = StudentNet(teacher.net, inputs).eval()
    z, cond = _noise(100, 10)
    counter = NFECounter()
    with torch.no_grad():
        x = sample_student(student, kind, teacher.path, "flow", cond, z, steps, t_max=teacher.t_max,
                           generator=torch.Generator().manual_seed(0), counter=counter)
    assert counter.nfe == steps and counter.rows == 100 * steps
    assert x.shape == z.shape and x.dtype == z.dtype and torch.isfinite(x).all()


def test_bad_input_names_field_value_and_allowed(teacher):
    z, cond = _noise(4, 0)
    with pytest.raises(ValueError, match="kind='euler'.*ddim"):
        sample_student(teacher.net, "euler", teacher.path, "flow", cond, z, 2, t_max=0.9)
    with pytest.raises(ValueError, match="steps=0"):
        sample_student(teacher.net, "ddim", teacher.path, "flow", cond, z, 0, t_max=0.9)
    with pytest.raises(ValueError, match=r"GuidanceConfig.steps=0 must be an integer in \[1"):
        GuidanceConfig(steps=0)
    with pytest.raises(ValueError, match="w_min"):
        GuidanceConfig(w_min=3.0, w_max=2.0)
    with pytest.raises(ValueError, match=r"DMDConfig.lr=-1"):
        DMDConfig(lr=-1)
    with pytest.raises(ValueError, match="final_steps=3"):
        ProgressiveConfig(start_steps=8, final_steps=3)
    with pytest.raises(ValueError, match="student input='size'"):
        StudentNet(teacher.net, ("size",))
    with pytest.raises(ValueError, match="student='nope'"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="extra shape=None"):
        StudentNet(teacher.net, ("guidance",))(z, torch.ones(4), cond)


def test_catalog_and_recipes_agree():
    table = recipes()
    assert set(table) == set(catalog.STUDENTS)
    for name, r in table.items():
        info = catalog.STUDENTS[name]
        assert r.sampler in SAMPLER_KINDS
        assert info.guidance_passes == 1  # every student is one pass per step (C = 1)
        assert info.guidance_input == (name == "guidance")
        assert all(isinstance(s, int) and s >= 1 for s in info.steps)
        assert dataclasses.is_dataclass(r.config())  # defaults are valid


def test_runspec_checks_student_steps():
    from fastdiff_core.spec import RunSpec

    RunSpec(sampler="student", student="progressive", steps=4)
    RunSpec(sampler="student", student="guidance", steps=13)  # any step count: it is sampled by a solver
    with pytest.raises(ValueError, match=r"steps=3 is not available for student='progressive'; allowed: \[8, 4, 2, 1\]"):
        RunSpec(sampler="student", student="progressive", steps=3)


def test_the_optimisers_ema_warms_up_its_decay():
    """EMA decay min(d, (1 + k) / (10 + k)) after step k: the first update keeps 1/10 of the initial weights
    (fixed from step 0 it kept d = 0.995 of them), and the decay reaches d once (1 + k) / (10 + k) does."""
    from fastdiff_core.students.distill import Optimiser, ema_decay_at

    assert ema_decay_at(0, 0.995) == pytest.approx(0.1) and ema_decay_at(5000, 0.995) == 0.995
    for warm, kept in ((True, 0.1), (False, 0.995)):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        init = [p.detach().clone() for p in net.parameters()]
        opt = Optimiser(net, lr=0.1, steps=10, warmup=1, ema=0.995, ema_warmup=warm)
        opt.step(net(torch.ones(4, 3)).pow(2).mean())
        for pe, p0, p1 in zip(opt.result().parameters(), init, net.parameters()):
            assert not torch.allclose(p0, p1)
            assert torch.allclose(pe, kept * p0 + (1 - kept) * p1.detach(), atol=1e-6)
