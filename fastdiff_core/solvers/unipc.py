"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), data prediction, variants B(h) = h (bh1) and B(h) = e^h - 1 (bh2).

UniP-p (predictor, Alg. 2 of the paper) extrapolates D from the last p outputs; UniC (corrector,
Alg. 1) re-does the step once D at the new point is known — that output is the one the next
predictor needs anyway, so the corrector costs no evaluation. Orders warm up 1, 2, ..., p and come
down at the end (min(order, i + 1, n - i)), so the step into sigma = 0 is first order and returns
D(x, sigma_min); no corrector follows the last step (it would need an extra evaluation).

All coefficients are plain floats built before the loop: each update is a linear combination of
the previous state and the stored denoiser outputs.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from fastdiff_core.solvers.primitives import (
    StepCallback, StepInfo, X0Denoiser, add_lags, checked_inputs, lambdas, scalar, step_orders,
)


def _uni_coefficients(lam: list[float], i: int, order: int, variant: str, corrector: bool) -> list[float]:
    """Weights of [x_i, D_i, D_{i-1}, ..., D_{i-order+1}] (+ [D_{i+1}] for the corrector) in the update
    from lambda_i to lambda_{i+1}: x_{i+1} = e^{-h} x_i + phi_1 D_i - B(h) sum_k rho_k (D_{i-k} - D_i) / r_k
    (- B(h) rho_last (D_{i+1} - D_i) in the corrector)."""
    h = lam[i + 1] - lam[i]
    if math.isinf(h):  # the step into sigma = 0: first order, x_{i+1} = D_i
        return [0.0, 1.0] + [0.0] * (order - 1) + ([0.0] if corrector else [])
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    rks = [(lam[i - k] - lam[i]) / h for k in range(1, order)] + [1.0]
    # b_k = h phi_{k+1}(h) k! / B(h): the Taylor weights of the exponential integrator (paper eq. 7)
    b, h_phi_k, fact = [], h_phi_1 / hh - 1.0, 1
    for k in range(1, order + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    R = np.array([[r ** (k - 1) for r in rks] for k in range(1, order + 1)], dtype=np.float64)
    if corrector:
        rhos = [0.5] if order == 1 else np.linalg.solve(R, np.array(b)).tolist()
    elif order == 1:
        rhos = []
    else:
        rhos = [0.5] if order == 2 else np.linalg.solve(R[:-1, :-1], np.array(b[:-1])).tolist()
    w_x, w_0 = math.exp(hh), -h_phi_1
    hist = []
    for k in range(1, order):  # D1_k = (D_{i-k} - D_i) / r_k
        c = -b_h * rhos[k - 1] / rks[k - 1]
        hist.append(c)
        w_0 -= c
    out = [w_x, w_0] + hist
    if corrector:
        c = -b_h * rhos[-1]  # rho_last (D_{i+1} - D_i)
        out[1] -= c
        out.append(c)
    return out


def unipc(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, variant: str = "bh2",
          order: int = 3, corrector: bool = True, lower_order_final: bool = False,
          generator: torch.Generator | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """UniPC with UniP-``order`` predictor and (optionally) the UniC corrector. NFE = n.
    ``lower_order_final`` ramps down one step earlier (``primitives.step_orders``) than the paper's ramp."""
    sigmas = checked_inputs(x, sigmas)
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant={variant!r} is not one of ['bh1', 'bh2']")
    if order not in (1, 2, 3):
        raise ValueError(f"order={order!r} is not one of [1, 2, 3]")
    n = len(sigmas) - 1
    decay, weights = _plan(sigmas, variant, order, corrector, lower_order_final, x.dtype)
    d1 = d2 = d3 = x  # D_{i-1}, D_{i-2}, D_{i-3} (placeholders until filled; their weights are 0 until then)
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        # UniC on step i-1 and UniP for step i in one combination (see _tables):
        # x_{i+1} = e^{-h_i} x_i^pred + sum_k w_k D_{i-k}
        w = weights[i]
        x = add_lags(torch.mul(x, decay[i]).add_(denoised, alpha=w[0]), w, d1, d2, d3)
        d1, d2, d3 = denoised, d1, d2
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


@lru_cache(maxsize=64)
def _plan(sigmas: tuple[float, ...], variant: str, order: int, corrector: bool, lower_order_final: bool,
          dtype: torch.dtype) -> tuple[tuple[torch.Tensor, ...], tuple[tuple[float, ...], ...]]:
    """Per step, the weight of x as a cached scalar of x's dtype and the weights of D_i, D_{i-1}, ...
    (see ``_tables``): one lookup per call, where a scalar lookup per step costs ~5 us a call."""
    steps = _tables(sigmas, variant, order, corrector, lower_order_final)
    return tuple(scalar(w_x, dtype) for w_x, _ in steps), tuple(w for _, w in steps)


@lru_cache(maxsize=64)
def _tables(sigmas: tuple[float, ...], variant: str, order: int, corrector: bool, lower_order_final: bool = False
            ) -> tuple[tuple[float, tuple[float, ...]], ...]:
    """Per step i: (weight of x_i^pred, weights of D_i, D_{i-1}, ...) of the merged update.

    UniC re-does step i-1 once D_i is known; predictor and corrector share the e^{-h} x_{i-1} term, so
    x_i^corr = x_i^pred + sum_k (w^c_k - w^p_k) D_{i-1-k} + w^c_new D_i. The corrected state is needed only
    by the next predictor, x_{i+1} = e^{-h_i} x_i^corr + sum_k p_k D_{i-k}; substituting gives one linear
    combination of x_i^pred and D_i ... D_{i-3} per step — the corrector costs neither an evaluation nor
    a pass over the state. Cached: a rollout samples every frame on the same grid, and building the
    weights (two small linear solves per step) costs more than the update."""
    n = len(sigmas) - 1
    lam = lambdas(sigmas)
    ramp = step_orders(sigmas, order, lower_order_final)
    orders = [min(order, i + 1, n - i, ramp[i]) for i in range(n)]
    pred = [_uni_coefficients(lam, i, orders[i], variant, False) for i in range(n)]
    out = []
    for i in range(n):
        p = pred[i]
        w = list(p[1:])  # lags 0, 1, ..., orders[i] - 1
        # the corrector of step i-1 (at its order); none before a last step into 0, whose result
        # D(x, sigma_min) does not depend on x (an open grid's last step does)
        if corrector and 1 <= i and (i < n - 1 or sigmas[-1] > 0):
            c, q = _uni_coefficients(lam, i - 1, orders[i - 1], variant, True), pred[i - 1]
            delta = [c[j] - q[j] for j in range(1, len(q))]  # on D_{i-1}, D_{i-2}, ...
            w += [0.0] * (len(delta) + 1 - len(w))
            w[0] += p[0] * c[-1]
            for k, d in enumerate(delta, start=1):
                w[k] += p[0] * d
        out.append((p[0], tuple(w)))
    return tuple(out)
