"""DDIM (Song, Meng & Ermon 2021) and DDPM ancestral sampling (Ho, Jain & Abbeel 2020), written in VE
coordinates. The VP quantities of a VE noise level sigma are alpha = 1 / sqrt(1 + sigma^2) and
sigma_vp = sigma * alpha, so one code path serves every noise path.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fastdiff_core.solvers.brownian import noise_source
from fastdiff_core.solvers.primitives import StepCallback, StepInfo, X0Denoiser, checked_inputs, scalar


def ddim(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, eta: float = 0.0, noise: str = "iid",
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """DDIM, eq. 12 of the paper, with stochasticity eta in [0, 1] (eta = 0: the deterministic ODE
    step, identical to Euler in sigma; eta = 1: DDPM's posterior, ancestral). NFE = n.

    The paper's noise std s_t = eta sqrt((1 - a_{t-1}) / (1 - a_t)) sqrt(1 - a_t / a_{t-1}) divided by
    alpha_{t-1} to move to VE coordinates is s_up = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma, and
    the deterministic part becomes an Euler step to s_down = sqrt(sigma'^2 - s_up^2).
    The final step into sigma = 0 returns D(x, sigma_min) with no noise. ``noise``: "iid" or
    "brownian" (see ``solvers.brownian``).
    """
    sigmas = checked_inputs(x, sigmas)
    draw = noise_source(noise, x, sigmas, generator)
    n = len(sigmas) - 1
    ratio, s_up = [], []
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        up = eta * s_next * math.sqrt(max(s * s - s_next * s_next, 0.0)) / s
        s_up.append(up)
        ratio.append(math.sqrt(max(s_next * s_next - up * up, 0.0)) / s)  # s_down / s
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        # x_{i+1} = D + (s_down / s) (x - D) + s_up z
        x = torch.lerp(denoised, x, ratio[i])
        if s_up[i] > 0.0:
            x = x.add_(draw(i, s_up[i]))
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


def ddpm(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, variance: str = "posterior",
         noise: str = "iid", generator: torch.Generator | None = None,
         callback: StepCallback | None = None) -> torch.Tensor:
    """DDPM ancestral sampling from q(x_{t-1} | x_t, x0 = D) (Ho et al. 2020, eq. 6-7 and Alg. 2). NFE = n.

    variance = "posterior": beta~_t = (1 - a_{t-1}) / (1 - a_t) beta_t (equals DDIM with eta = 1);
    variance = "beta": beta_t (the paper's other choice, more noise). Here a = alpha^2 (alpha-bar) and
    beta_t = 1 - a_t / a_{t-1} for the step actually taken, so any grid is a valid DDPM chain.
    No noise on the final step into sigma = 0 (Alg. 2: z = 0 at t = 1). ``noise``: "iid" or "brownian"
    (see ``solvers.brownian``).
    """
    sigmas = checked_inputs(x, sigmas)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance={variance!r} is not one of ['posterior', 'beta']")
    draw = noise_source(noise, x, sigmas, generator)
    n = len(sigmas) - 1
    coef_x, coef_d, std = [], [], []
    for i in range(n):
        a, a_prev = 1.0 / (1.0 + sigmas[i] ** 2), 1.0 / (1.0 + sigmas[i + 1] ** 2)  # alpha-bar at t, t-1
        beta = 1.0 - a / a_prev
        # posterior mean (eq. 7) in VP: sqrt(a_prev) beta / (1 - a) x0 + sqrt(1 - beta) (1 - a_prev) / (1 - a) x_t
        # with x_t = sqrt(a) x and everything divided by sqrt(a_prev) to return to VE coordinates.
        coef_d.append(beta / (1.0 - a))
        coef_x.append(math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a) * math.sqrt(a / a_prev))
        var = (1.0 - a_prev) / (1.0 - a) * beta if variance == "posterior" else beta
        std.append(math.sqrt(var / a_prev) if sigmas[i + 1] > 0 else 0.0)
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        if std[i] > 0.0:  # s z + c_x x + c_d D, starting from the scaled draw
            x = draw(i, std[i]).add_(x, alpha=coef_x[i]).add_(denoised, alpha=coef_d[i])
        else:
            x = torch.mul(x, scalar(coef_x[i], x.dtype)).add_(denoised, alpha=coef_d[i])
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x
