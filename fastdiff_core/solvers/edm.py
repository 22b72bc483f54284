"""Euler and Heun on the probability-flow ODE in sigma (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Algorithm 1, deterministic: S_churn = 0).

The ODE: dx/dsigma = d(x, sigma) = (x - D(x, sigma)) / sigma.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fastdiff_core.solvers.primitives import StepCallback, StepInfo, X0Denoiser, checked_inputs


def euler(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *,
          generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Euler's method in sigma; x (B, ...) = sigmas[0] * noise, any float dtype. NFE = n (steps).

    The final step into sigma = 0 returns D(x, sigma_min): Euler with d = (x - D) / sigma lands exactly there.
    """
    sigmas = checked_inputs(x, sigmas)
    n = len(sigmas) - 1
    # x_{i+1} = x_i + (s_{i+1} - s_i) (x_i - D_i) / s_i  =  D_i + (s_{i+1} / s_i) (x_i - D_i)
    ratio = [sigmas[i + 1] / sigmas[i] for i in range(n)]
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        x = torch.lerp(denoised, x, ratio[i])
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


def heun(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, single_stage_steps: int = 1,
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (EDM Alg. 1, lines 4-8). NFE = 2n - k, k = min(single_stage_steps, n): the
    last k steps are Euler steps. The last step always is (EDM line 6: "if t_{i+1} != 0"; into sigma = 0
    that is D(x, sigma_min), into an open grid's end no evaluation is made there); k = 2 spends an even
    budget without a wasted evaluation."""
    sigmas = checked_inputs(x, sigmas)
    if single_stage_steps not in (1, 2):
        raise ValueError(f"single_stage_steps={single_stage_steps!r} is not one of [1, 2]")
    n = len(sigmas) - 1
    nfe = 0
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        # Euler step (line 5)
        denoised = denoiser(x, s)
        nfe += 1
        x_euler = torch.lerp(denoised, x, s_next / s)
        if i >= n - single_stage_steps:
            x, evals = x_euler, (s,)
        else:
            # 2nd-order correction (lines 7-8): x + (s_next - s) (d_i + d'_i) / 2, d = (x - D) / sigma
            denoised_2 = denoiser(x_euler, s_next)
            nfe += 1
            half = 0.5 * (s_next - s)
            x = x.add(x - denoised, alpha=half / s).add_(x_euler - denoised_2, alpha=half / s_next)
            denoised, evals = denoised_2, (s, s_next)
        if callback is not None:
            callback(StepInfo(i, n, s, s_next, x, denoised, nfe, evals))
    return x
