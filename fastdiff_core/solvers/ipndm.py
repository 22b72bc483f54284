"""iPNDM: improved pseudo linear multistep (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
Exponential Integrator" (DEIS), sec. 4 / App. on iPNDM; Liu et al. 2022, PNDM).

Adams-Bashforth on dx/dsigma = d = (x - D) / sigma with the fixed coefficients of a uniform grid
and a lower-order warm start (1, 2, 3, then 4). The step into sigma = 0 is the same linear-multistep
step (d is finite there), not a plain denoise. NFE = n.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from fastdiff_core.solvers.primitives import (
    StepCallback, StepInfo, X0Denoiser, add_lags, checked_inputs, step_orders,
)

# Adams-Bashforth weights of d_i, d_{i-1}, d_{i-2}, d_{i-3} for orders 1-4.
_AB = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def ipndm(denoiser: X0Denoiser, x: torch.Tensor, sigmas: Sequence[float], *, max_order: int = 4,
          lower_order_final: bool = False, generator: torch.Generator | None = None,
          callback: StepCallback | None = None) -> torch.Tensor:
    """iPNDM of order up to ``max_order`` (1-4); ``lower_order_final``: ramp down at the end (a first-order
    step into 0 is D(x, sigma_min)), see ``primitives.step_orders``. NFE = n."""
    sigmas = checked_inputs(x, sigmas)
    if max_order not in (1, 2, 3, 4):
        raise ValueError(f"max_order={max_order!r} is not one of [1, 2, 3, 4]")
    n = len(sigmas) - 1
    weights = _weights(tuple(sigmas), max_order, lower_order_final)
    e1 = e2 = e3 = x  # e_{i-1}, e_{i-2}, e_{i-3} (placeholders until filled; unused until then)
    for i in range(n):
        denoised = denoiser(x, sigmas[i])
        e0 = torch.sub(x, denoised)
        # x_{i+1} = x_i + (s_{i+1} - s_i) sum_k AB_k d_{i-k}
        w = weights[i]
        x = add_lags(x.add(e0, alpha=w[0]), w, e1, e2, e3)
        e1, e2, e3 = e0, e1, e2
        if callback is not None:
            callback(StepInfo(i, n, sigmas[i], sigmas[i + 1], x, denoised, i + 1, (sigmas[i],)))
    return x


@lru_cache(maxsize=64)
def _weights(sigmas: tuple[float, ...], max_order: int, lower_order_final: bool) -> tuple[tuple[float, ...], ...]:
    """Per step, the weights of e_i, e_{i-1}, ...: d_k = (x_k - D_k) / sigma_k with the 1 / sigma_k folded
    in, so the history holds e_k = x_k - D_k and one subtraction per step builds it. Cached per grid."""
    n = len(sigmas) - 1
    orders = step_orders(sigmas, max_order, lower_order_final)
    return tuple(tuple(w * (sigmas[i + 1] - sigmas[i]) / sigmas[i - k] for k, w in enumerate(_AB[orders[i] - 1]))
                 for i in range(n))
