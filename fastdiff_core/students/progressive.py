"""Progressive distillation (Salimans & Ho 2022, Alg. 2): a student learns to take in ONE DDIM step
what its teacher takes in TWO; the trained student becomes the next round's teacher, halving the
step count each round. Rounds here: teacher -> 8 -> 4 -> 2 -> 1 steps.

Round 1's teacher is the trained network integrated with Heun substeps (its probability-flow ODE,
``teacher_substeps`` per half step), so the 8-step student distils the ODE, not a coarse DDIM of it;
later rounds follow the paper exactly (two DDIM steps of the previous student). On the student's
uniform grid t_i = T (1 - i/N), a training row picks i, noises a training x0 to t_i, runs the two
teacher half-steps to t_{i+1}, and regresses the student's x0 onto the x0 whose single DDIM step
lands on the same point (``x0_for_step``), weighted in velocity units. Each student starts from the
previous one's weights (the paper's initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from fastdiff_core.students.distill import (
    Clock, Optimiser, Pairs, Teacher, check_config, ddim_step, loss_weight, noised, teacher_ode, uniform_times,
    x0_for_step, x0_of,
)
from fastdiff_core.students.network import StudentNet


@dataclass(frozen=True)
class ProgressiveConfig:
    start_steps: int = 8
    final_steps: int = 1
    steps_per_round: int = 800
    batch: int = 512
    lr: float = 2e-4
    warmup: int = 30
    teacher_substeps: int = 2

    def __post_init__(self) -> None:
        check_config(self, {"start_steps": (1, 1024), "final_steps": (1, 1024), "steps_per_round": (1, 10**6),
                            "batch": (1, 10**6), "lr": (1e-7, 1.0), "warmup": (0, 10**6),
                            "teacher_substeps": (1, 64)})
        n = self.start_steps
        while n > self.final_steps and n % 2 == 0:
            n //= 2
        if n != self.final_steps:
            raise ValueError(f"ProgressiveConfig final_steps={self.final_steps!r} must be start_steps="
                             f"{self.start_steps!r} halved a whole number of times")


def distil_round(teacher: Teacher, previous: nn.Module | None, steps: int, pairs: Pairs, config: ProgressiveConfig,
                 generator: torch.Generator, on_step: Callable[[int, float], None] | None = None
                 ) -> tuple[StudentNet, dict[str, Any]]:
    """One halving: a ``steps``-step student from the teacher ODE (previous=None) or from the
    previous student's 2 * steps DDIM steps."""
    path = teacher.path
    student = StudentNet(previous.body if isinstance(previous, StudentNet) else teacher.net)
    opt = Optimiser(student, config.lr, config.steps_per_round, config.warmup)
    clock = Clock()
    times = torch.tensor(uniform_times(teacher.t_max, steps), dtype=torch.float32)
    for step in range(config.steps_per_round):
        x0, cond = pairs(config.batch, generator)
        eps = torch.randn(x0.shape, generator=generator)
        i = torch.randint(steps, (config.batch,), generator=generator)
        t, s = times[i], times[i + 1]
        mid = 0.5 * (t + s)
        x_t = noised(path, x0, eps, t)
        with torch.no_grad():
            if previous is None:
                x_s = teacher_ode(teacher, x_t, t, s, cond, 2 * config.teacher_substeps)
            else:
                x_mid = ddim_step(path, x_t, x0_of(previous(x_t, t, cond), teacher.prediction, path, x_t, t), t, mid)
                x_s = ddim_step(path, x_mid, x0_of(previous(x_mid, mid, cond), teacher.prediction, path, x_mid, mid),
                                mid, s)
            target = x0_for_step(path, x_t, x_s, t, s)
        pred = x0_of(student(x_t, t, cond), teacher.prediction, path, x_t, t)
        loss = ((pred - target).pow(2).mean(1) * loss_weight(path, t)).mean()
        opt.step(loss)
        clock.record(loss)
        if on_step is not None:
            on_step(step, clock.loss)
    return opt.result(), clock.stats(steps=config.steps_per_round, batch=config.batch, student_steps=steps)


def train_progressive(teacher: Teacher, pairs: Pairs, config: ProgressiveConfig, generator: torch.Generator,
                      on_step: Callable[[int, float], None] | None = None
                      ) -> dict[int, tuple[StudentNet, dict[str, Any]]]:
    """All rounds: {steps: (student, stats)} for start_steps, start_steps / 2, ..., final_steps."""
    out: dict[int, tuple[StudentNet, dict[str, Any]]] = {}
    previous: nn.Module | None = None
    n = config.start_steps
    while True:
        student, stats = distil_round(teacher, previous, n, pairs, config, generator, on_step)
        out[n] = (student, stats)
        if n == config.final_steps:
            return out
        previous, n = student, n // 2
