"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models"): exponential integrators of the data-prediction ODE in lambda = -log sigma.

    x_{i+1} = e^{-h} x_i + phi_1(h) D_i + phi_2(h) (h D') + phi_3(h) (h^2 D'') + ...,  h = lambda_{i+1} - lambda_i

Multistep variants estimate D', D'' from earlier outputs (kept as local variables); the single-step
variant spends an extra evaluation at the midpoint. Every variant takes the final step into
sigma = 0 (h = inf) at first order, which returns D(x, sigma_min): the higher-order terms vanish
with phi_1 -> 1 while their finite-difference weights r = h_prev / h -> 0.
Step coefficients are plain floats computed before the loop.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch

from fastdiff_core.solvers.brownian import noise_source
from fastdiff_core.solvers.primitives import (
    StepCallback, StepInfo, X0Denoiser, checked_inputs, lambdas, phi_1, phi_2, phi_3, scalar, step_orders,
)


def _step_sizes(sigmas: list[float]) -> list[float]:
    lam = lambdas(sigmas)
    return [lam[i + 1] - lam[i] for i in range(len(sigmas) - 1)]


def dpmpp_2m(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, lower_order_final: bool = False,
             generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), Algorithm 2. NFE = n. First step and the step into 0 are first order (and the
    last step above 0 with ``lower_order_final``, see ``primitives.step_orders``)."""
    sigmas = checked_inputs(x, sigmas)
    n = len(sigmas) - 1
    h = _step_sizes(sigmas)
    orders = step_orders(sigmas, 2, lower_order_final)
    # D_hat = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},  r = h_{i-1} / h_i;  written as lerp(D_i, D_{i-1}, -1/(2r))
    w_prev = [0.0 if orders[i] == 1 or sigmas[i + 1] == 0.0 else -h[i] / (2.0 * h[i - 1]) for i in range(n)]
    decay = [sigmas[i + 1] / sigmas[i] for i in range(n)]  # e^{-h}
    denoised_prev = None
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        d_hat = denoised if w_prev[i] == 0.0 else torch.lerp(denoised, denoised_prev, w_prev[i])
        # x_{i+1} = e^{-h} x_i + (1 - e^{-h}) D_hat
        x = torch.lerp(d_hat, x, decay[i])
        denoised_prev = denoised
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


def dpmpp_3m(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, lower_order_final: bool = False,
             generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(3M): third-order multistep (DPM-Solver's multistep_dpm_solver_third_update in data
    prediction). Orders ramp 1, 2, 3, ... (and down with ``lower_order_final``); the step into 0 is first
    order. NFE = n."""
    sigmas = checked_inputs(x, sigmas)
    n = len(sigmas) - 1
    coef = _coefficients_3m(tuple(sigmas), lower_order_final)
    d1 = d2 = None
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        cx, c0, c1, c2 = coef[i]
        x = torch.mul(x, scalar(cx, x.dtype)).add_(denoised, alpha=c0)
        if c1 != 0.0:
            x.add_(d1, alpha=c1)
        if c2 != 0.0:
            x.add_(d2, alpha=c2)
        d1, d2 = denoised, d1
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


@lru_cache(maxsize=64)
def _coefficients_3m(sigmas: tuple[float, ...], lower_order_final: bool) -> tuple[tuple[float, float, float, float], ...]:
    """DPM-Solver++(3M) step weights for a grid (cached: a rollout re-solves on one grid every frame)."""
    n = len(sigmas) - 1
    h = _step_sizes(list(sigmas))
    orders = step_orders(sigmas, 3, lower_order_final)
    # Per step: x_{i+1} = e^{-h} x_i + c0 D_i + c1 D_{i-1} + c2 D_{i-2}
    coef: list[tuple[float, float, float, float]] = []
    for i in range(n):
        hi = h[i]
        order = 1 if sigmas[i + 1] == 0.0 else orders[i]
        if order == 1:
            coef.append((math.exp(-hi), phi_1(hi), 0.0, 0.0))
        elif order == 2:
            # D1 = (D_i - D_{i-1}) / r0 estimates h D'; 2M uses phi_1 / 2 as its weight (DPM-Solver++ eq. 2M)
            w = 0.5 * phi_1(hi) * hi / h[i - 1]
            coef.append((math.exp(-hi), phi_1(hi) + w, -w, 0.0))
        else:
            r0, r1 = h[i - 1] / hi, h[i - 2] / hi
            p2, p3 = phi_2(hi), phi_3(hi)
            # D1_0 = (D_i - D_{i-1}) / r0, D1_1 = (D_{i-1} - D_{i-2}) / r1
            # D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1) ~ h D',  D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 D''
            # The D'' term of the exact step is int_0^h e^{-(h-u)} u^2/2 du D'' = h^2 phi_3(h) D'' and D2
            # estimates h^2 D'' / 2 (Taylor: D1_0 - D1_1 = (r0 + r1) h^2 D'' / 2), so D2 needs weight
            # 2 phi_3. The widely copied form uses phi_3, which makes the method formally 2nd order.
            p3 = 2.0 * p3
            a = p2 * (1.0 + r0 / (r0 + r1)) + p3 / (r0 + r1)  # weight of D1_0
            b = -p2 * r0 / (r0 + r1) - p3 / (r0 + r1)  # weight of D1_1
            coef.append((math.exp(-hi), phi_1(hi) + a / r0, -a / r0 + b / r1, -b / r1))
    return tuple(coef)


def dpmpp_2m_sde(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, eta: float = 1.0,
                 s_noise: float = 1.0, noise: str = "iid", lower_order_final: bool = False,
                 generator: torch.Generator | None = None,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (the paper's SDE solver, midpoint form). eta = 0 is DPM-Solver++(2M). NFE = n.

    x_{i+1} = (s'/s) e^{-eta h} x_i + (1 - e^{-(1+eta) h}) (D_i + (D_i - D_{i-1}) / (2r)) + s' sqrt(1 - e^{-2 eta h}) z

    ``noise``: "iid" (a fresh z per step) or "brownian" (z from one Brownian motion per seed, so step
    counts converge to one SDE solution; see ``solvers.brownian``).
    """
    sigmas = checked_inputs(x, sigmas)
    draw = noise_source(noise, x, sigmas, generator)
    n = len(sigmas) - 1
    h = _step_sizes(sigmas)
    orders = step_orders(sigmas, 2, lower_order_final)
    decay, w_d, w_prev, std = [], [], [], []
    for i in range(n):
        s, s_next, hi = sigmas[i], sigmas[i + 1], h[i]
        if s_next == 0.0:
            decay.append(0.0), w_d.append(1.0), w_prev.append(0.0), std.append(0.0)
            continue
        decay.append(s_next / s * math.exp(-eta * hi))
        w_d.append(-math.expm1(-(1.0 + eta) * hi))
        w_prev.append(0.0 if orders[i] == 1 else -hi / (2.0 * h[i - 1]))
        std.append(s_next * math.sqrt(-math.expm1(-2.0 * eta * hi)) * s_noise)
    denoised_prev = None
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        d_hat = denoised if w_prev[i] == 0.0 else torch.lerp(denoised, denoised_prev, w_prev[i])
        if std[i] > 0.0:  # s z + decay x + w D_hat, starting from the scaled draw
            x = draw(i, std[i]).add_(x, alpha=decay[i]).add_(d_hat, alpha=w_d[i])
        else:
            x = torch.mul(x, scalar(decay[i], x.dtype)).add_(d_hat, alpha=w_d[i])
        denoised_prev = denoised
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


def midpoint_step(denoiser: X0Denoiser, x: torch.Tensor, denoised: torch.Tensor, s: float,
                  s_next: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One DPM-Solver++(2S) step from s to s_next > 0, given D(x, s): evaluate D at the midpoint in lambda,
    sigma_mid = sqrt(s s_next), and take the exponential-integrator step with it. Returns (x_next,
    D(u, sigma_mid), sigma_mid). One evaluation.

        u = (s_mid / s) x - (e^{-h/2} - 1) D(x, s);  x_next = (s_next / s) x - (e^{-h} - 1) D(u, s_mid)
    """
    s_mid = math.sqrt(s * s_next)
    d_mid = denoiser(torch.lerp(denoised, x, s_mid / s), s_mid)
    return torch.lerp(d_mid, x, s_next / s), d_mid, s_mid


def dpmpp_2s(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, single_stage_steps: int = 1,
             generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2S), Algorithm 1 with r = 1/2: an intermediate evaluation at lambda_i + h/2
    (sigma_mid = sqrt(sigma_i sigma_{i+1})). NFE = 2n - k, k = min(single_stage_steps, n): the last k steps
    are first order (DDIM), one evaluation each; into 0 that is D(x, sigma_min)."""
    sigmas = checked_inputs(x, sigmas)
    if single_stage_steps not in (1, 2):
        raise ValueError(f"single_stage_steps={single_stage_steps!r} is not one of [1, 2]")
    n = len(sigmas) - 1
    nfe = 0
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        nfe += 1
        if i >= n - single_stage_steps:  # x_{i+1} = e^{-h} x_i + (1 - e^{-h}) D_i
            x, evals = torch.lerp(denoised, x, s_next / s), (s,)
        else:
            x, denoised, s_mid = midpoint_step(denoiser, x, denoised, s, s_next)
            nfe += 1
            evals = (s, s_mid)
        if callback is not None:
            callback(StepInfo(i, n, s, s_next, x, denoised, nfe, evals))
    return x
