"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, Alg. 2): a student f(x_t, t) -> x0
that gives the same answer at every point of one teacher ODE trajectory, so a single evaluation
jumps from noise to data; 2-4 evaluations refine by re-noising (multistep consistency sampling).

Objective: on a grid t_0 = T > ... > t_N = 0 (uniform in t), a training row picks n, noises a
training x0 to t_n, takes ONE teacher Heun step to t_{n+1} and minimises
    || f_theta(x_{t_n}, t_n) - f_target(x_hat_{t_{n+1}}, t_{n+1}) ||^2
with f_target an EMA of the student (mu = ``target_ema``) and f(x, 0) = x (the boundary condition,
which the flow/eps parameterisation x0 = x_t - t u also satisfies by construction). The student is
the teacher's network read as an x0-predictor, so training starts from the teacher's one-step
(posterior-mean) answer and sharpens it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff_core.students.distill import (
    Clock, Optimiser, Pairs, Teacher, check_config, ema_update, noised, teacher_ode, uniform_times, x0_of,
)
from fastdiff_core.students.network import StudentNet


@dataclass(frozen=True)
class ConsistencyConfig:
    steps: int = 1500
    batch: int = 512
    lr: float = 2e-4
    warmup: int = 50
    intervals: int = 24
    target_ema: float = 0.95
    ema: float = 0.0

    def __post_init__(self) -> None:
        check_config(self, {"steps": (1, 10**6), "batch": (1, 10**6), "lr": (1e-7, 1.0), "warmup": (0, 10**6),
                            "intervals": (1, 4096), "target_ema": (0.0, 0.99999), "ema": (0.0, 0.99999)})


def consistency_loss(student: StudentNet, target: StudentNet, teacher: Teacher, x0: torch.Tensor,
                     cond: torch.Tensor, intervals: int, generator: torch.Generator) -> torch.Tensor:
    """The CD loss of one batch (mean over rows), gradient through the student only."""
    path = teacher.path
    times = torch.tensor(uniform_times(teacher.t_max, intervals), dtype=x0.dtype)
    n = torch.randint(intervals, (x0.shape[0],), generator=generator)
    t, s = times[n], times[n + 1]
    eps = torch.randn(x0.shape, generator=generator)
    x_t = noised(path, x0, eps, t)
    with torch.no_grad():
        x_s = teacher_ode(teacher, x_t, t, s, cond, 1)
        at_data = (s <= 0)[:, None]
        s_safe = torch.where(s <= 0, t, s)  # the target is x_s itself where s = 0
        f_s = x0_of(target(x_s, s_safe, cond), teacher.prediction, path, x_s, s_safe)
        f_s = torch.where(at_data, x_s, f_s)
    f_t = x0_of(student(x_t, t, cond), teacher.prediction, path, x_t, t)
    return (f_t - f_s).pow(2).mean()


def train_consistency(teacher: Teacher, pairs: Pairs, config: ConsistencyConfig, generator: torch.Generator,
                      on_step: Callable[[int, float], None] | None = None) -> tuple[StudentNet, dict[str, Any]]:
    """Train a consistency-distilled student; returns (student in eval mode, training stats)."""
    student = StudentNet(teacher.net)
    target = copy.deepcopy(student).requires_grad_(False)
    opt = Optimiser(student, config.lr, config.steps, config.warmup, ema=config.ema)
    clock = Clock()
    for step in range(config.steps):
        x0, cond = pairs(config.batch, generator)
        loss = consistency_loss(student, target, teacher, x0, cond, config.intervals, generator)
        opt.step(loss)
        ema_update(target, student, config.target_ema)
        clock.record(loss)
        if on_step is not None:
            on_step(step, clock.loss)
    return opt.result(), clock.stats(steps=config.steps, batch=config.batch, intervals=config.intervals)
