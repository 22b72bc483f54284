"""Parallel sampling by Picard iteration over a sliding window (Shih et al. 2023, "Parallel Sampling
of Diffusion Models", ParaDiGMS, Algorithm 1).

A fixed-grid solver is a chain x_{i+1} = x_i + f_i(x_i, D_i, D_{i-1}). Picard iteration guesses every
state of a window of W steps at once, evaluates the W denoiser calls in ONE batched forward
(``Denoiser.stacked``), and replaces each state by the exact prefix sum of the increments:

    x_{j+1}^{k+1} = x_t + sum_{i=t}^{j} f_i(x_i^k)            (j = t .. t+W-1)

The fixed point is the sequential solver's answer from the same noise; after k sweeps the first k
states are exact. States whose change falls below ``tol`` (relative to the noise level, ParaDiGMS'
sigma-scaled tolerance) are accepted and the window slides past them. Total compute (NFE) goes up,
the number of sequential network rounds (latency) goes down; both are reported: NFE by the
denoiser's counter and the callback, rounds as the callback count (= ``counter.forwards``).

Base steps: 'euler' (= deterministic DDIM in these coordinates) and 'dpmpp_2m' (DPM-Solver++(2M),
first order on its first step and on the step into 0, as ``fastdiff_core.solvers.dpm_solver``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from fastdiff_core.solvers.primitives import StepCallback, StepInfo, checked_inputs, lambdas

BASES: tuple[str, ...] = ("euler", "dpmpp_2m")


def picard_coefficients(sigmas: Sequence[float], base: str) -> tuple[list[float], list[float]]:
    """Per-step (decay r_i, history weight w_i) so that step i of the base solver is
    x_{i+1} = lerp(D_hat_i, x_i, r_i) with D_hat_i = lerp(D_i, D_{i-1}, w_i)."""
    if base not in BASES:
        raise ValueError(f"base={base!r} is not one of {list(BASES)}")
    n = len(sigmas) - 1
    decay = [sigmas[i + 1] / sigmas[i] for i in range(n)]
    if base == "euler":
        return decay, [0.0] * n
    lam = lambdas(sigmas)
    h = [lam[i + 1] - lam[i] for i in range(n)]
    w_prev = [0.0 if i == 0 or sigmas[i + 1] == 0.0 else -h[i] / (2.0 * h[i - 1]) for i in range(n)]
    return decay, w_prev


def picard(denoiser, x: torch.Tensor, sigmas: Sequence[float], *, base: str = "euler", window: int = 8,
           tol: float = 1e-3, generator: torch.Generator | None = None,
           callback: StepCallback | None = None) -> torch.Tensor:
    """Sample with ``base``'s steps by sliding-window Picard iteration (ParaDiGMS).

    denoiser: needs ``stacked(x (K*B, ...), sigmas[K]) -> x0`` (see ``fastdiff_core.denoiser``);
    x: (B, ...) = sigmas[0] * noise. window: steps evaluated per round (1 = the sequential solver).
    tol: accept a state when its mean squared change per element, worst sample, is below
    (tol * sigma)^2 at that state's noise level (tol = 0: iterate to the exact fixed point).
    NFE = sum of the window sizes over rounds (>= n, <= n * window), n of them first evaluations and the
    rest re-evaluations (also tallied in ``counter.repeat_rows``); rounds >= ceil(n / window).
    The callback gets one StepInfo per round: i = last accepted step, eval_sigmas = the window.
    """
    sigmas = checked_inputs(x, sigmas)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r} must be an integer >= 1")
    if not isinstance(tol, (int, float)) or not (tol >= 0.0):
        raise ValueError(f"tol={tol!r} must be a number >= 0")
    n = len(sigmas) - 1
    decay, w_prev = picard_coefficients(sigmas, base)
    dev = x.device
    r = torch.tensor(decay, dtype=x.dtype, device=dev).reshape((n,) + (1,) * x.ndim)
    wp = torch.tensor(w_prev, dtype=x.dtype, device=dev).reshape((n,) + (1,) * x.ndim)
    # tolerance per state i+1, scaled by its noise level (the last state, sigma = 0, by sigma_{n-1})
    scale = [sigmas[i + 1] if sigmas[i + 1] > 0 else sigmas[n - 1] for i in range(n)]
    thr = torch.tensor([(tol * s) ** 2 for s in scale], dtype=torch.float64, device=dev)
    batch = x.shape[0]
    states = x.unsqueeze(0).repeat((n + 1,) + (1,) * x.ndim)  # initial guess: every state = x_T
    den = torch.zeros((n,) + tuple(x.shape), dtype=x.dtype, device=dev)
    t, evals, rounds, reached = 0, 0, 0, 0  # reached: steps evaluated at least once (a prefix)
    while t < n:
        end = min(t + window, n)
        k = end - t
        xw = states[t:end]
        # steps t .. reached-1 were evaluated in an earlier round: beyond the sequential solver's count
        d = denoiser.stacked(xw.reshape((k * batch,) + tuple(x.shape[1:])), sigmas[t:end],
                             repeated=max(0, reached - t)).reshape(xw.shape)
        reached, evals = max(reached, end), evals + k
        rounds += 1
        # D_{i-1} for each step of the window (the first uses the last accepted evaluation)
        prev = torch.cat([den[t - 1:t] if t > 0 else d[:1], d[:-1]])
        d_hat = torch.lerp(d, prev, wp[t:end])
        inc = (1.0 - r[t:end]) * (d_hat - xw)  # x_{i+1} - x_i = (1 - r_i)(D_hat_i - x_i)
        new = states[t] + torch.cumsum(inc, 0)
        change = (new - states[t + 1:end + 1]).to(torch.float64).pow(2)
        err = change.reshape(k, batch, -1).mean(-1).amax(-1)
        states[t + 1:end + 1] = new
        den[t:end] = d
        bad = torch.nonzero(err > thr[t:end]).flatten()
        # the first state of the window is exact (its start was); accept up to the first violation
        stride = k if bad.numel() == 0 else max(1, int(bad[0]))
        nxt = t + stride
        new_end = min(nxt + window, n)
        if new_end > end:
            states[end + 1:new_end + 1] = states[end]  # extend the window from its latest state
        if callback is not None:
            callback(StepInfo(nxt - 1, n, sigmas[t], sigmas[nxt], states[nxt], d[stride - 1], evals,
                              tuple(sigmas[t:end])))
        t = nxt
    return states[n]
