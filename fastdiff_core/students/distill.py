"""What every distillation recipe shares: the teacher bundle, per-row x0 predictions, ODE steps in
path time, the student's samplers, and the optimiser loop.

Recipes train on rows that each have their own time t (a tensor (B,)), unlike solvers, which call
the x0-denoiser at one sigma per batch; the prediction conversions still come from the one module
that owns them (``fastdiff_core.denoiser``). Times are path times: t = 0 is data, ``T = path.t_max``
is where sampling starts, from x_T = sigma(T) * eps — the same start the solvers use
(VE sigma_max), so a student and the teacher's solvers see the same noise.

A sample of a student costs exactly ``steps`` network evaluations per sample (guidance is either
baked in or not used: C = 1), counted in the ``NFECounter`` the caller passes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import torch
from torch import nn

from fastdiff_core.denoiser import NFECounter, x0_from_prediction
from fastdiff_core.paths import NoisePath

Pairs = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``pairs(n, generator) -> (x0, cond)``: n training rows of the world (clean target, condition)."""


@dataclass(frozen=True)
class Teacher:
    """The trained network and how to read it: its path, its prediction type, its null condition."""

    net: nn.Module
    path: NoisePath
    prediction: str
    uncond: Callable[[torch.Tensor], torch.Tensor]

    @property
    def t_max(self) -> float:
        return float(self.path.t_max)


def _col(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A per-row value as a column that broadcasts against (B, D)."""
    if isinstance(v, torch.Tensor):
        return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
    return torch.full((like.shape[0],) + (1,) * (like.ndim - 1), float(v), dtype=like.dtype, device=like.device)


def coefficients(path: NoisePath, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(alpha, sigma, d_alpha, d_sigma) at per-row times t, as columns shaped for ``like``."""
    t64 = t.to(torch.float64)
    return tuple(_col(f(t64), like) for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma))


def x0_of(out: torch.Tensor, prediction: str, path: NoisePath, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean estimate from a network output of ``prediction`` type at per-row times t."""
    a, s, da, ds = coefficients(path, t, x_t)
    return x0_from_prediction(prediction, out, x_t, a, s, da, ds)


def loss_weight(path: NoisePath, t: torch.Tensor) -> torch.Tensor:
    """Per-row weight 1 / max(sigma_t, 0.05)^2 that puts an x0-space squared error in velocity units
    (on the linear path, x0 error = t * velocity error), so low-noise rows are not ignored."""
    return 1.0 / path.sigma(t.to(torch.float64)).clamp(min=0.05).pow(2).to(t.dtype)


def x0_for_step(path: NoisePath, x_t: torch.Tensor, x_s: torch.Tensor, t: torch.Tensor, s: torch.Tensor
                ) -> torch.Tensor:
    """The x0 estimate whose DDIM step from (x_t, t) lands on x_s (Salimans & Ho 2022, Alg. 2):
    x_s = a_s x0 + s_s (x_t - a_t x0) / s_t  =>  x0 = (x_s - (s_s / s_t) x_t) / (a_s - s_s a_t / s_t)."""
    a_t, s_t, _, _ = coefficients(path, t, x_t)
    a_s, s_s, _, _ = coefficients(path, s, x_t)
    r = s_s / s_t
    return (x_s - r * x_t) / (a_s - r * a_t)


def noised(path: NoisePath, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t x0 + sigma_t eps at per-row times."""
    a, s, _, _ = coefficients(path, t, x0)
    return a * x0 + s * eps


def teacher_x0(teacher: Teacher, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
               guidance: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The teacher's (guided) x0 at per-row times: x0_u + w (x0_c - x0_u), cond and uncond in one
    batched forward; w = 1 is one conditional pass."""
    if not isinstance(guidance, torch.Tensor) and float(guidance) == 1.0:
        return x0_of(teacher.net(x_t, t, cond), teacher.prediction, teacher.path, x_t, t)
    b = x_t.shape[0]
    x2, t2 = torch.cat([x_t, x_t]), torch.cat([t, t])
    out = teacher.net(x2, t2, torch.cat([cond, teacher.uncond(cond)]))
    x0 = x0_of(out, teacher.prediction, teacher.path, x2, t2)
    x0_c, x0_u = x0[:b], x0[b:]
    return x0_u + _col(guidance, x_t) * (x0_c - x0_u)


# ---------------------------------------------------------------------------------------------
# ODE steps in path time (per-row t -> s, s < t)
# ---------------------------------------------------------------------------------------------


def ddim_step(path: NoisePath, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """DDIM (Song et al. 2021, eta = 0) from t to s given the x0 estimate at (x_t, t):
    x_s = alpha_s x0 + sigma_s eps_hat, eps_hat = (x_t - alpha_t x0) / sigma_t. Euler on the linear path."""
    a_t, s_t, _, _ = coefficients(path, t, x_t)
    a_s, s_s, _, _ = coefficients(path, s, x_t)
    return a_s * x0 + s_s * (x_t - a_t * x0) / s_t


def teacher_ode(teacher: Teacher, x_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond: torch.Tensor,
                substeps: int, guidance: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Integrate the teacher's probability-flow ODE from t to s per row with ``substeps`` Heun steps
    (EDM Alg. 1 in VE coordinates x / alpha, sigma / alpha; Euler where a step ends at sigma = 0).
    NFE: 2 * substeps per row (x C with guidance)."""
    x = x_t
    for j in range(substeps):
        t_a = t + (s - t) * (j / substeps)
        t_b = t + (s - t) * ((j + 1) / substeps)
        a_a, s_a, _, _ = coefficients(teacher.path, t_a, x)
        a_b, s_b, _, _ = coefficients(teacher.path, t_b, x)
        sig_a, sig_b = s_a / a_a, s_b / a_b  # VE noise levels
        x0_a = teacher_x0(teacher, x, t_a, cond, guidance)
        d_a = (x / a_a - x0_a) / sig_a  # dx/dsigma in VE coordinates
        x_ve = x / a_a + (sig_b - sig_a) * d_a  # Euler
        last = (sig_b <= 0).reshape(-1)
        if not bool(last.all()):
            t_safe = torch.where(last, t_a, t_b)
            a_safe, s_safe, _, _ = coefficients(teacher.path, t_safe, x)
            x0_b = teacher_x0(teacher, x_ve * a_safe, t_safe, cond, guidance)
            d_b = (x_ve - x0_b) / (s_safe / a_safe)
            heun = x / a_a + (sig_b - sig_a) * 0.5 * (d_a + d_b)
            x_ve = torch.where(last.reshape(-1, *([1] * (x.ndim - 1))), x_ve, heun)
        x = x_ve * a_b
    return x


# ---------------------------------------------------------------------------------------------
# Samplers of a trained student (what RunSpec's sampler="student" runs)
# ---------------------------------------------------------------------------------------------

SAMPLER_KINDS = ("ddim", "consistency", "shortcut")


def uniform_times(t_max: float, steps: int) -> list[float]:
    """t_i = T (1 - i / n), i = 0..n: the student grid, uniform in path time, ending at data (t = 0)."""
    return [t_max * (1.0 - i / steps) for i in range(steps + 1)]


def sample_student(student: nn.Module, kind: str, path: NoisePath, prediction: str, cond: torch.Tensor,
                   noise: torch.Tensor, steps: int, *, t_max: float, guidance: float | None = None,
                   generator: torch.Generator | None = None, counter: NFECounter | None = None) -> torch.Tensor:
    """Draw x0 from a student. noise: (B, D) standard normal; cond: (B, C). NFE = ``steps`` per sample.

    kind = "ddim": DDIM / Euler on the uniform grid (guidance-distilled, progressive, reflow students);
    "consistency": multistep consistency sampling (Song et al. 2023, Alg. 1): jump to x0, re-noise
    to the next grid time with fresh noise, jump again; "shortcut": Euler with the step size d as an
    input (Frans et al. 2024). ``guidance``: the scale fed to a guidance-distilled student.
    """
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"sampler kind={kind!r} is not one of {list(SAMPLER_KINDS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    inputs = getattr(student, "inputs", ())
    b = noise.shape[0]
    times = uniform_times(t_max, steps)
    x = noise * float(path.sigma(t_max))
    extra_cols: list[torch.Tensor] = []
    if "guidance" in inputs:
        if guidance is None:
            raise ValueError("guidance=None: a guidance-distilled student needs a guidance scale")
        extra_cols.append(torch.full((b, 1), float(guidance), dtype=x.dtype, device=x.device))
    for i in range(steps):
        t = torch.full((b,), times[i], dtype=x.dtype, device=x.device)
        s = torch.full((b,), times[i + 1], dtype=x.dtype, device=x.device)
        cols = list(extra_cols)
        if "step" in inputs:
            cols.append(torch.full((b, 1), times[i] - times[i + 1], dtype=x.dtype, device=x.device))
        extra = torch.cat(cols, 1) if cols else None
        out = student(x, t, cond, extra) if extra is not None else student(x, t, cond)
        x0 = x0_of(out, prediction, path, x, t)
        if counter is not None:
            counter.nfe += 1
            counter.calls += 1
            counter.forwards += 1
            counter.rows += b
        if i == steps - 1:
            x = x0
        elif kind == "consistency":
            a_s, s_s, _, _ = coefficients(path, s, x)
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = a_s * x0 + s_s * z
        else:
            x = ddim_step(path, x, x0, t, s)
    return x


# ---------------------------------------------------------------------------------------------
# Configs and the optimiser loop
# ---------------------------------------------------------------------------------------------


def check_config(config: Any, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Raise ValueError naming the field, the value and the allowed range for every out-of-range field."""
    for f in fields(config):
        if f.name not in ranges:
            continue
        v = getattr(config, f.name)
        lo, hi = ranges[f.name]
        is_int = isinstance(f.default, int) and not isinstance(f.default, bool)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (is_int and not isinstance(v, int)) \
                or not math.isfinite(v) or not (lo <= v <= hi):
            kind = "an integer" if is_int else "a number"
            raise ValueError(f"{type(config).__name__}.{f.name}={v!r} must be {kind} in [{lo}, {hi}]")


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 2% of ``lr``."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    return lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after optimiser step ``step`` (0-based) with the standard warm-up,
    min(decay, (1 + step) / (10 + step)): the average forgets the random initialisation within the
    first steps instead of keeping decay^steps of it (0.999 over 2,000 steps: 13.5%)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(average: nn.Module, current: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * current, parameter by parameter (EMA / target network)."""
    for pa, p in zip(average.parameters(), current.parameters()):
        pa.lerp_(p, 1 - decay)


class Optimiser:
    """AdamW with the shared schedule and gradient clipping; optionally keeps an EMA copy, its decay
    warmed up (``ema_decay_at``) unless ``ema_warmup`` is False (fixed from step 0, as before)."""

    def __init__(self, module: nn.Module, lr: float, steps: int, warmup: int = 50, ema: float = 0.0,
                 clip: float = 1.0, *, ema_warmup: bool = True) -> None:
        self.module, self.lr, self.steps, self.warmup, self.clip = module, lr, steps, warmup, clip
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
        self.ema_decay, self.ema_warmup = ema, ema_warmup
        self.ema = copy.deepcopy(module).requires_grad_(False) if ema > 0 else None
        self.step_count = 0

    def step(self, loss: torch.Tensor) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step_count, self.steps, self.lr, self.warmup)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        if self.ema is not None:
            decay = ema_decay_at(self.step_count, self.ema_decay) if self.ema_warmup else self.ema_decay
            ema_update(self.ema, self.module, decay)
        self.step_count += 1

    def result(self) -> nn.Module:
        """The EMA weights when kept, else the trained ones, in eval mode without gradients."""
        out = self.ema if self.ema is not None else self.module
        return out.eval().requires_grad_(False)


class Clock:
    """Wall-clock seconds of a training run and a running loss, for the model card."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.loss: float | None = None

    def record(self, loss: torch.Tensor) -> None:
        v = float(loss.detach())
        self.loss = v if self.loss is None else 0.98 * self.loss + 0.02 * v

    def stats(self, **more: Any) -> dict[str, Any]:
        return {"train_seconds": round(time.perf_counter() - self.t0, 1), "final_loss": self.loss, **more}
