"""Adaptive, error-controlled integration of the probability-flow ODE: Bogacki-Shampine 3(2) with
first-same-as-last (Bogacki & Shampine 1989), in tau = log sigma where the ODE reads
dx/dtau = x - D(x, e^tau) (smooth at both ends); the step size follows the embedded error estimate
as in Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast When Generating Data with Score-Based Models"),
with the error measured per sample (scaled RMS) and the worst sample deciding.

The tolerance, not a step count, sets the cost: NFE = 1 + 3 x (attempted steps), reported in
``StepInfo.nfe``. Only the grid's sigmas[0] and sigmas[-2] (sigma_max, sigma_min) are used, plus the
first grid step as the initial step size. The final step into 0 is D(x, sigma_min), which the last
stage already computed (no extra evaluation).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from fastdiff_core.solvers.dpm_solver import midpoint_step
from fastdiff_core.solvers.primitives import StepCallback, StepInfo, X0Denoiser, checked_inputs


def adaptive(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, rtol: float = 1e-3,
             atol: float = 1e-4, max_nfe: int = 2000, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> torch.Tensor:
    """BS3(2) with error control; when max_nfe would be exceeded the remaining span is taken in one
    last (unchecked) step. NFE is data-dependent and at most max_nfe."""
    sigmas = checked_inputs(x, sigmas)
    if not (rtol > 0 and atol > 0 and max_nfe >= 4):
        raise ValueError(f"rtol={rtol!r}, atol={atol!r}, max_nfe={max_nfe!r}: need rtol > 0, atol > 0, max_nfe >= 4")
    tau, tau_end = math.log(sigmas[0]), math.log(sigmas[-2])
    denoised = denoiser(x, sigmas[0])
    nfe, i = 1, 0
    evals = [sigmas[0]]  # sigmas evaluated since the last callback, rejected attempts included
    k1 = x - denoised
    h = math.log(sigmas[1] / sigmas[0]) if len(sigmas) > 2 else tau_end - tau
    while tau > tau_end:
        h = max(h, tau_end - tau)  # h < 0: never step past sigma_min
        # an attempt costs 3; one that could leave no room for a last step is the last step
        forced = nfe + 6 > max_nfe
        if forced:
            h = tau_end - tau
        # Bogacki-Shampine stages (c = 0, 1/2, 3/4, 1)
        tau_new = tau_end if forced or tau + h <= tau_end else tau + h
        stage_sigmas = (math.exp(tau + 0.5 * h), math.exp(tau + 0.75 * h), math.exp(tau_new))
        evals.extend(stage_sigmas)
        k2 = x.add(k1, alpha=0.5 * h)
        k2 = k2 - denoiser(k2, stage_sigmas[0])
        k3 = x.add(k2, alpha=0.75 * h)
        k3 = k3 - denoiser(k3, stage_sigmas[1])
        x_new = x.add(k1, alpha=2 / 9 * h).add_(k2, alpha=h / 3).add_(k3, alpha=4 / 9 * h)
        d_new = denoiser(x_new, stage_sigmas[2])
        k4 = x_new - d_new
        nfe += 3
        # embedded 2nd-order solution's difference: h (-5/72 k1 + 1/12 k2 + 1/9 k3 - 1/8 k4)
        err = k1.mul(-5 / 72 * h).add_(k2, alpha=h / 12).add_(k3, alpha=h / 9).add_(k4, alpha=-h / 8)
        scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol).add_(atol)
        # per-sample RMS of the scaled error, worst sample decides: no sample may be integrated badly
        # so that the batch average looks fine
        e = float(err.div_(scale).square_().reshape(err.shape[0], -1).mean(dim=1).max().sqrt())
        if e <= 1.0 or forced or not math.isfinite(e):
            if not math.isfinite(e):
                raise FloatingPointError("adaptive solver produced a non-finite state")
            sigma_old = math.exp(tau)
            x, k1, denoised, tau = x_new, k4, d_new, tau_new
            if callback is not None:
                callback(StepInfo(i, 0, sigma_old, math.exp(tau), x, denoised, nfe, tuple(evals)))
            evals = []
            i += 1
        h *= min(5.0, max(0.2, 0.9 * (max(e, 1e-12)) ** (-1 / 3)))
    if i == 0 and callback is not None:  # one step grid: the single evaluation at sigma_max
        callback(StepInfo(0, 0, sigmas[0], 0.0, denoised, denoised, nfe, tuple(evals)))
    return denoised


def dpm_adaptive(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, rtol: float = 1e-3,
                 atol: float = 1e-4, max_nfe: int = 2000, generator: torch.Generator | None = None,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """Adaptive DPM-Solver++: the exponential integrator's first-order step (DDIM) and its second-order
    single-step update (2S, midpoint in lambda = -log sigma) form an embedded pair, the error estimate
    is their difference (Lu et al. 2022, DPM-Solver, sec. 4.4 / Alg. 4 "DPM-Solver-12", in data
    prediction as in DPM-Solver++).

        lower:  x1 = e^{-h} x + (1 - e^{-h}) D(x, s)
        higher: x2 = e^{-h} x + (1 - e^{-h}) D(u, s_mid),  u = e^{-h/2} x + (1 - e^{-h/2}) D(x, s)
        error:  x2 - x1 = (1 - e^{-h}) (D(u, s_mid) - D(x, s))

    The linear part of the ODE is integrated exactly, so at high noise, where D barely moves, steps are
    long; the per-sample error (scaled RMS, worst sample decides, as in ``adaptive``) sets the step in
    lambda. An accepted step costs 2 evaluations (the midpoint and D at the new point, which the next
    step starts from); a rejected one costs 1. Only sigmas[0], sigmas[-2] and the first grid step are used;
    the final step into 0 returns D(x, sigma_min), already computed. NFE reported in ``StepInfo.nfe``,
    at most max_nfe (the remaining span is then taken in one last, unchecked step)."""
    sigmas = checked_inputs(x, sigmas)
    if not (rtol > 0 and atol > 0 and max_nfe >= 3):
        raise ValueError(f"rtol={rtol!r}, atol={atol!r}, max_nfe={max_nfe!r}: need rtol > 0, atol > 0, max_nfe >= 3")
    lam, lam_end = -math.log(sigmas[0]), -math.log(sigmas[-2])
    denoised = denoiser(x, sigmas[0])
    nfe, i = 1, 0
    evals = [sigmas[0]]
    h = math.log(sigmas[0] / sigmas[1]) if len(sigmas) > 2 else lam_end - lam
    while lam < lam_end:
        h = min(h, lam_end - lam)
        # an attempt costs at most 2; one that could leave no room for a last step is the last step
        forced = nfe + 4 > max_nfe
        if forced:
            h = lam_end - lam
        lam_new = lam_end if forced or lam + h >= lam_end else lam + h
        s, s_next = math.exp(-lam), math.exp(-lam_new)
        x_new, d_mid, s_mid = midpoint_step(denoiser, x, denoised, s, s_next)  # the higher-order x2
        nfe += 1
        evals.append(s_mid)
        # error = x2 - x1 = (1 - e^{-h}) (D_mid - D)
        err = torch.sub(d_mid, denoised).mul_(1.0 - s_next / s)
        scale = torch.maximum(x.abs(), x_new.abs()).mul_(rtol).add_(atol)
        e = float(err.div_(scale).square_().reshape(err.shape[0], -1).mean(dim=1).max().sqrt())
        if not math.isfinite(e):
            raise FloatingPointError("dpm_adaptive produced a non-finite state")
        if e <= 1.0 or forced:
            # D at the new point: where the next step starts, or at sigma_min the step into 0
            x, denoised = x_new, denoiser(x_new, s_next)
            nfe += 1
            evals.append(s_next)
            if callback is not None:
                callback(StepInfo(i, 0, s, s_next, x, denoised, nfe, tuple(evals)))
            evals = []
            lam = lam_new
            i += 1
        # the pair's error is O(h^2): step factor e^(-1/2), safety 0.9, within [0.2, 5]
        h *= min(5.0, max(0.2, 0.9 * max(e, 1e-12) ** -0.5))
    if i == 0 and callback is not None:  # one step grid: the single evaluation at sigma_max
        callback(StepInfo(0, 0, sigmas[0], 0.0, denoised, denoised, nfe, tuple(evals)))
    return denoised
