"""A small conditional world with a rare mode, and a tiny teacher trained on it in seconds, for the
distillation recipe tests. Two conditions, three Gaussian modes in 2-D; the third is the tail
(5% under condition 0, 10% under condition 1). The null condition is the zero vector.
"""

from __future__ import annotations

import functools

import torch

from fastdiff_core.denoiser import prediction_from_x0_eps
from fastdiff_core.models.world_model import WorldModelConfig, WorldModelNet
from fastdiff_core.paths import RectifiedFlow
from fastdiff_core.students.distill import Teacher

CENTRES = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
WEIGHTS = torch.tensor([[0.80, 0.15, 0.05], [0.30, 0.60, 0.10]])
STD = 0.12


def conditions(labels: torch.Tensor) -> torch.Tensor:
    c = torch.zeros(len(labels), 3)
    c[torch.arange(len(labels)), labels] = 1.0
    c[:, 2] = 1.0
    return c


def uncond(cond: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(cond)


def pairs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(2, (n,), generator=generator)
    modes = torch.multinomial(WEIGHTS[labels], 1, generator=generator).squeeze(1)
    x0 = CENTRES[modes] + STD * torch.randn(n, 2, generator=generator)
    return x0, conditions(labels)


def mode_of(x: torch.Tensor) -> torch.Tensor:
    """0, 1, 2 for the nearest mode; 3 (implausible) when farther than 0.5 from every centre."""
    d = torch.cdist(x, CENTRES)
    near, idx = d.min(1)
    return torch.where(near < 0.5, idx, torch.full_like(idx, 3))


@functools.lru_cache(maxsize=1)
def tiny_teacher() -> Teacher:
    """A 10k-parameter flow-matching teacher with condition dropout, trained for a few seconds."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = WorldModelNet(WorldModelConfig(frame_dim=2, cond_dim=3, width=32, depth=2, time_features=16))
    path = RectifiedFlow()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    steps = 600
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-4)
    for _ in range(steps):
        x0, cond = pairs(256, gen)
        drop = torch.rand(256, generator=gen) < 0.15
        cond = torch.where(drop[:, None], uncond(cond), cond)
        eps = torch.randn(x0.shape, generator=gen)
        t = path.t_min + (path.t_max - path.t_min) * torch.rand(256, generator=gen)
        x_t = (1 - t)[:, None] * x0 + t[:, None] * eps
        target = prediction_from_x0_eps("flow", x0, eps, 0, 0, -1.0, 1.0)
        loss = (net(x_t, t, cond) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return Teacher(net.eval().requires_grad_(False), path, "flow", uncond)
