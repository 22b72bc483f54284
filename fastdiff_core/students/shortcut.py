"""Shortcut model, distilled (Frans, Hafner, Levine & Abbeel 2024, "One Step Diffusion via Shortcut
Models"): the step size d is a network input, and one network serves every step count — 1, 2, 4, 8
Euler steps — by self-consistency: one step of size 2d must land where two steps of size d land.

Chosen over continuous-time consistency (sCM) because (1) it trains on the teacher's own
rectified-flow path with forward passes only — sCM needs a JVP of the network at every step and the
TrigFlow reparameterisation with tangent normalisation to be stable, more machinery than a few
minutes of CPU can tune; (2) one checkpoint gives every step count, so the card can show the
tail at 1, 2, 4 and 8 steps of the same model; (3) its d -> 0 level IS the teacher's flow, so it
cannot drift from the teacher where many steps are used.

Objective (on the uniform levels d_k = T / 2^k, k = 0..levels-1, plus d = 0):
    d = 0 rows:  x0_student(x_t, t, 0) -> the teacher's x0 (distillation replaces the paper's noisy
                 flow-matching target with the teacher, same expectation, less variance)
    d_k rows:    t on the d_k grid; two student steps of d_k / 2 (the smallest level's halves use
                 d = 0) give x_{t - d_k}; the student's one step of d_k must reach it:
                 x0_student(x_t, t, d_k) -> x0_for_step(x_t, x_{t - d_k})     (targets stop-grad)
Each step is a DDIM step (Euler on the linear path), weighted in velocity units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff_core.students.distill import (
    Clock, Optimiser, Pairs, Teacher, check_config, ddim_step, loss_weight, noised, teacher_x0, x0_for_step, x0_of,
)
from fastdiff_core.students.network import StudentNet


@dataclass(frozen=True)
class ShortcutConfig:
    steps: int = 2000
    batch: int = 512
    lr: float = 2e-4
    warmup: int = 50
    levels: int = 6
    consistency_fraction: float = 0.5

    def __post_init__(self) -> None:
        check_config(self, {"steps": (1, 10**6), "batch": (2, 10**6), "lr": (1e-7, 1.0), "warmup": (0, 10**6),
                            "levels": (1, 12), "consistency_fraction": (0.0, 1.0)})


def _x0(student: StudentNet, teacher: Teacher, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
        d: torch.Tensor) -> torch.Tensor:
    return x0_of(student(x, t, cond, d[:, None]), teacher.prediction, teacher.path, x, t)


def train_shortcut(teacher: Teacher, pairs: Pairs, config: ShortcutConfig, generator: torch.Generator,
                   on_step: Callable[[int, float], None] | None = None) -> tuple[StudentNet, dict[str, Any]]:
    """Train a distilled shortcut model; returns (student in eval mode, training stats)."""
    student = StudentNet(teacher.net, ("step",))
    opt = Optimiser(student, config.lr, config.steps, config.warmup)
    clock = Clock()
    path, T = teacher.path, teacher.t_max
    t_lo = float(path.t_min)
    nb = int(round(config.batch * config.consistency_fraction))
    for step in range(config.steps):
        x0, cond = pairs(config.batch, generator)
        eps = torch.randn(x0.shape, generator=generator)
        # rows [nb:]: the d = 0 level against the teacher
        tb = t_lo + (T - t_lo) * torch.rand(config.batch - nb, generator=generator)
        xb = noised(path, x0[nb:], eps[nb:], tb)
        with torch.no_grad():
            target_b = teacher_x0(teacher, xb, tb, cond[nb:])
        pred_b = _x0(student, teacher, xb, tb, cond[nb:], torch.zeros_like(tb))
        loss_b = ((pred_b - target_b).pow(2).mean(1) * loss_weight(path, tb))
        losses = [loss_b]
        if nb > 0:
            # rows [:nb]: self-consistency at level k: d = T / 2^k, t = T - j d
            k = torch.randint(config.levels, (nb,), generator=generator)
            d = T / torch.pow(2.0, k.to(torch.float32))
            j = (torch.rand(nb, generator=generator) * torch.pow(2.0, k.to(torch.float32))).floor()
            t = T - j * d
            half = torch.where(k == config.levels - 1, torch.zeros_like(d), d / 2)
            xa = noised(path, x0[:nb], eps[:nb], t)
            with torch.no_grad():
                mid = t - d / 2
                x_mid = ddim_step(path, xa, _x0(student, teacher, xa, t, cond[:nb], half), t, mid)
                s = (t - d).clamp(min=0.0)
                x_s = ddim_step(path, x_mid, _x0(student, teacher, x_mid, mid, cond[:nb], half), mid, s)
                target_a = x0_for_step(path, xa, x_s, t, s)
            pred_a = _x0(student, teacher, xa, t, cond[:nb], d)
            losses.append((pred_a - target_a).pow(2).mean(1) * loss_weight(path, t))
        loss = torch.cat(losses).mean()
        opt.step(loss)
        clock.record(loss)
        if on_step is not None:
            on_step(step, clock.loss)
    return opt.result(), clock.stats(steps=config.steps, batch=config.batch, levels=config.levels)
