"""Distribution matching distillation (Yin et al. 2024, DMD; DMD2 without its GAN term): a one-step
generator G(z) is pushed so that its output distribution matches the teacher's, by the difference
of two scores on noised generator samples — the teacher ("real" score) and a fake-score critic
trained online on the generator's own samples. This is the gradient of the reverse KL
KL(p_G || p_teacher), which is mode-seeking: where the generator puts no mass the gradient is
silent, so a rare mode, once lost, is not pulled back. fastdiff ships it as the documented
"fast but drops tails" case.

Per generator step (two time-scale rule of DMD2: ``critic_updates`` critic steps per generator step):
    x0 = G(z),  t ~ U[t_lo, t_hi],  x_t = alpha_t x0 + sigma_t eps
    grad = (x0_fake(x_t) - x0_real(x_t)) / mean|x0 - x0_real(x_t)|   (DMD's normalisation)
    loss = 1/2 || x0 - stopgrad(x0 - grad) ||^2
critic: the denoising (flow matching) loss on fresh generator samples, in velocity units.
Generator and critic both start from the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastdiff_core.students.distill import (
    Clock, Optimiser, Pairs, Teacher, check_config, loss_weight, noised, teacher_x0, x0_of,
)
from fastdiff_core.students.network import StudentNet


@dataclass(frozen=True)
class DMDConfig:
    steps: int = 600
    batch: int = 512
    lr: float = 1e-4
    critic_lr: float = 4e-4
    critic_updates: int = 3
    warmup: int = 20
    t_lo: float = 0.02
    t_hi: float = 0.98

    def __post_init__(self) -> None:
        check_config(self, {"steps": (1, 10**6), "batch": (1, 10**6), "lr": (1e-7, 1.0), "critic_lr": (1e-7, 1.0),
                            "critic_updates": (1, 100), "warmup": (0, 10**6), "t_lo": (0.0, 1.0),
                            "t_hi": (0.0, 1.0)})
        if not self.t_lo < self.t_hi:
            raise ValueError(f"DMDConfig t_lo={self.t_lo!r} must be < t_hi={self.t_hi!r}")


def generate(student: StudentNet, teacher: Teacher, x_in: torch.Tensor, t_in: torch.Tensor,
             cond: torch.Tensor) -> torch.Tensor:
    """The generator's x0 from inputs at per-row times (t = T: pure noise, the one-step sample)."""
    return x0_of(student(x_in, t_in, cond), teacher.prediction, teacher.path, x_in, t_in)


def _times(config_t: tuple[float, float], t_max: float, n: int, generator: torch.Generator) -> torch.Tensor:
    lo, hi = config_t[0] * t_max, config_t[1] * t_max
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def critic_loss(critic: StudentNet, teacher: Teacher, x0_gen: torch.Tensor, cond: torch.Tensor,
                t_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Denoising loss of the fake-score critic on (detached) generator samples."""
    path = teacher.path
    t = _times(t_range, teacher.t_max, x0_gen.shape[0], generator)
    x_t = noised(path, x0_gen, torch.randn(x0_gen.shape, generator=generator), t)
    pred = x0_of(critic(x_t, t, cond), teacher.prediction, path, x_t, t)
    return ((pred - x0_gen).pow(2).mean(1) * loss_weight(path, t)).mean()


def dmd_loss(x0_gen: torch.Tensor, critic: StudentNet, teacher: Teacher, cond: torch.Tensor,
             t_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """The distribution-matching loss whose gradient in x0 is the normalised score difference."""
    path = teacher.path
    t = _times(t_range, teacher.t_max, x0_gen.shape[0], generator)
    with torch.no_grad():
        x_t = noised(path, x0_gen.detach(), torch.randn(x0_gen.shape, generator=generator), t)
        real = teacher_x0(teacher, x_t, t, cond)
        fake = x0_of(critic(x_t, t, cond), teacher.prediction, path, x_t, t)
        norm = (x0_gen.detach() - real).abs().mean(1, keepdim=True).clamp(min=1e-4)
        grad = (fake - real) / norm
    return 0.5 * (x0_gen - (x0_gen.detach() - grad)).pow(2).mean()


def train_dmd(teacher: Teacher, pairs: Pairs, config: DMDConfig, generator: torch.Generator,
              on_step: Callable[[int, float], None] | None = None) -> tuple[StudentNet, dict[str, Any]]:
    """Train a one-step DMD generator; returns (generator in eval mode, training stats)."""
    gen_net = StudentNet(teacher.net)
    critic = StudentNet(teacher.net)
    opt = Optimiser(gen_net, config.lr, config.steps, config.warmup)
    copt = Optimiser(critic, config.critic_lr, config.steps * config.critic_updates, config.warmup)
    clock = Clock()
    t_range = (config.t_lo, config.t_hi)
    T = teacher.t_max
    sig_T = float(teacher.path.sigma(T))
    for step in range(config.steps):
        for _ in range(config.critic_updates):
            shape_of, cond = pairs(config.batch, generator)
            z = torch.randn(shape_of.shape, generator=generator) * sig_T
            with torch.no_grad():
                x0_gen = generate(gen_net, teacher, z, torch.full((cond.shape[0],), T), cond)
            copt.step(critic_loss(critic, teacher, x0_gen, cond, t_range, generator))
        shape_of, cond = pairs(config.batch, generator)
        z = torch.randn(shape_of.shape, generator=generator) * sig_T
        x0_gen = generate(gen_net, teacher, z, torch.full((cond.shape[0],), T), cond)
        loss = dmd_loss(x0_gen, critic, teacher, cond, t_range, generator)
        opt.step(loss)
        clock.record(loss)
        if on_step is not None:
            on_step(step, clock.loss)
    return opt.result(), clock.stats(steps=config.steps, batch=config.batch, critic_updates=config.critic_updates)
