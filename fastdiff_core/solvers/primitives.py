"""What every solver shares, once: the denoiser contract, the per-step record, input checks, lambda and phi.

A solver integrates from sigmas[0] down to sigmas[-1], evaluating the denoiser only at sigmas[:-1]. A
grid ends in 0 (the data), or, when ``finish`` runs a solver on the part of a grid above its last
nonzero sigma, at a positive sigma ("open" grid) whose state is the result. The last-step conventions
(catalog.FINALS) and the lower-order final steps are implemented here once, for every solver.

Coordinates: x in VE form (x = x_t / alpha), sigma = sigma_t / alpha, lambda = -log sigma
(= logSNR / 2, DPM-Solver's lambda). A step from sigma_i to sigma_{i+1} has h = lambda_{i+1} - lambda_i
= log(sigma_i / sigma_{i+1}) > 0; h = inf on the final step into sigma = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Protocol, Sequence

import torch

from fastdiff_core.grids import check_sigmas
from fastdiff_core.scalars import HALF_DTYPES, scalar  # noqa: F401  (scalar: re-exported for the solvers)


class X0Denoiser(Protocol):
    """``D(x, sigma) -> x0_hat``: x of shape (B, ...) in VE coordinates, sigma a Python float > 0."""

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a solver tells its callback after each step.

    i: step index (0-based) of ``steps``; sigma -> sigma_next: the step just taken; x: the state at
    sigma_next; denoised: the latest x0 estimate; nfe: denoiser calls made so far by this solver
    (per sample, before guidance); eval_sigmas: the sigmas at which this step called the denoiser.
    """

    i: int
    steps: int
    sigma: float
    sigma_next: float
    x: torch.Tensor
    denoised: torch.Tensor
    nfe: int
    eval_sigmas: tuple[float, ...]


StepCallback = Callable[[StepInfo], None]


def checked_inputs(x: torch.Tensor, sigmas: Sequence[float]) -> tuple[float, ...]:
    """Validate where input enters a solver: x a finite floating tensor with a batch axis, sigmas a grid
    (strictly decreasing, ending in 0 or, open, at a positive sigma). Returns the sigmas as a tuple of plain floats (cached per grid:
    a rollout solves every frame on the same one; a tuple, so no solver can alter the cached copy)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise ValueError(f"x={type(x).__name__} must be a floating-point tensor of shape (B, ...)")
    if not all_finite(x):
        raise ValueError("x (the noise tensor) contains NaN or inf; allowed: finite values only")
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.tolist()
    if isinstance(sigmas, (list, tuple)) and all(type(s) is float for s in sigmas):
        return _checked_floats(tuple(sigmas))
    return tuple(check_sigmas(sigmas, open_end=True))


@lru_cache(maxsize=256)
def _checked_floats(sigmas: tuple[float, ...]) -> tuple[float, ...]:
    # floats only: (True, 0) equals (1.0, 0.0) as a key, and must still be refused
    return tuple(check_sigmas(sigmas, open_end=True))


LOWER_ORDER_FINAL_BELOW = 15  # diffusers' threshold for lower_order_final


@lru_cache(maxsize=256)
def step_orders(sigmas: tuple[float, ...], max_order: int, lower_order_final: bool) -> tuple[int, ...]:
    """The order of each step of a multistep solver: warm-up min(max_order, i + 1); with
    ``lower_order_final`` on a grid of fewer than ``LOWER_ORDER_FINAL_BELOW`` steps the k-th last step
    that ends above 0 has order <= k and a step into 0 order 1 (diffusers' lower_order_final: the long
    last steps of a few-step grid are not extrapolated; on long grids a first-order step would cost the
    method its order, so they keep it)."""
    n = len(sigmas) - 1
    m = n if sigmas[-1] > 0 else n - 1  # steps that end at a positive sigma
    orders = []
    for i in range(n):
        order = min(max_order, i + 1)
        if lower_order_final and n < LOWER_ORDER_FINAL_BELOW:
            order = min(order, m - i) if i < m else 1
        orders.append(order)
    return tuple(orders)


def finish(solve: Callable[..., torch.Tensor], final: str, denoiser: X0Denoiser, x: torch.Tensor,
           sigmas: Sequence[float], *, generator: torch.Generator | None = None,
           callback: StepCallback | None = None, **options: Any) -> torch.Tensor:
    """Run ``solve`` on a grid (ending in 0) with the last-step convention ``final`` (catalog.FINALS):

    - "solver":    ``solve`` on the whole grid: its own step into 0;
    - "denoise":   ``solve`` down to the last nonzero sigma s_last, then D(x, s_last): one evaluation there;
    - "sigma_min": ``solve`` down to s_last (= sigma_min) with no evaluation there; the state is the output.

    The callback sees the whole grid's step count and the evaluations made so far, the last step included."""
    if final == "solver":
        return solve(denoiser, x, sigmas, generator=generator, callback=callback, **options)
    sigmas = checked_inputs(x, sigmas)
    n = len(sigmas) - 1
    if sigmas[-1] != 0.0:
        raise ValueError(f"final={final!r} needs a grid ending in 0; got sigmas[-1]={sigmas[-1]!r}")
    if final == "sigma_min" and n < 2:
        raise ValueError(f"final='sigma_min' needs steps >= 2 (an evaluation above sigma_min); got steps={n}")
    if final not in ("denoise", "sigma_min"):
        raise ValueError(f"final={final!r} is not one of ['solver', 'denoise', 'sigma_min']")
    above = sigmas[:-1]  # the open grid: down to the last nonzero sigma
    last: list[StepInfo] = []

    def relay(info: StepInfo) -> None:
        info = replace(info, steps=n)
        last[:] = [info]
        if callback is not None:
            callback(info)

    if len(above) >= 2:
        x = solve(denoiser, x, above, generator=generator, callback=relay, **options)
    s_last, nfe = above[-1], last[-1].nfe if last else 0
    if final == "denoise":
        x = denoiser(x, s_last)
        if callback is not None:
            callback(StepInfo(n - 1, n, s_last, 0.0, x, x, nfe + 1, (s_last,)))
    elif callback is not None:  # sigma_min: the state at s_last is taken as the data, no evaluation
        callback(StepInfo(n - 1, n, s_last, 0.0, x, last[-1].denoised, nfe, ()))
    return x


def all_finite(x: torch.Tensor) -> bool:
    """True when x holds no NaN or inf. One sum and one scalar read: a NaN or inf anywhere makes the sum
    non-finite, and only then (or when finite values overflow the sum) does the exact min/max check run.
    ``isfinite(x).all()`` at batch 256 cost more than a solver step; this costs about one elementwise op."""
    if x.numel() == 0:
        return True
    if math.isfinite(torch.sum(x, dtype=torch.float32 if x.dtype in HALF_DTYPES else None).item()):
        return True
    lo, hi = torch.aminmax(x)  # non-finite sum: bad values, or finite ones whose sum overflowed
    return math.isfinite(lo.item()) and math.isfinite(hi.item())


def add_lags(x: torch.Tensor, w: Sequence[float], d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor) -> torch.Tensor:
    """x += w[1] d1 + w[2] d2 + w[3] d3, in place, for as many weights as ``w`` has past its first: the
    history part of a multistep update (weights of the newest term, w[0], are the caller's). Unrolled,
    not a loop over a list: at batch 256 on a CPU the Python around each op is a visible share of it."""
    lags = len(w)
    if lags > 1:
        x.add_(d1, alpha=w[1])
        if lags > 2:
            x.add_(d2, alpha=w[2])
            if lags > 3:
                x.add_(d3, alpha=w[3])
    return x


def lambdas(sigmas: Sequence[float]) -> list[float]:
    """lambda_i = -log sigma_i (inf at sigma = 0)."""
    return [-math.log(s) if s > 0 else math.inf for s in sigmas]


# phi functions of the exponential integrator (DPM-Solver++, eq. 9-10). With D(lambda) expanded around
# lambda_i, a data-prediction step is exactly
#   x_{i+1} = e^{-h} x_i + phi_1(h) D_i + phi_2(h) (h D') + phi_3(h) (h^2 D'') + ...
# The series branch avoids cancellation for small h (NFE ~1000).


def phi_1(h: float) -> float:
    """1 - e^{-h}: the weight of D_i (1 on the final step, h = inf)."""
    return -math.expm1(-h)


def phi_2(h: float) -> float:
    """1 - phi_1(h) / h  (-> h/2 as h -> 0, -> 1 as h -> inf)."""
    if h < 1e-2:
        return h / 2 - h**2 / 6 + h**3 / 24 - h**4 / 120
    return 1.0 - phi_1(h) / h


def phi_3(h: float) -> float:
    """1/2 - phi_2(h) / h  (-> h/6 as h -> 0)."""
    if h < 1e-2:
        return h / 6 - h**2 / 24 + h**3 / 120 - h**4 / 720
    return 0.5 - phi_2(h) / h


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-sample values of shape (B,) -> (B, 1, ..., 1) broadcastable against a tensor with ``ndim`` dims."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def fresh_noise(x: torch.Tensor, generator: torch.Generator | None, std: float = 1.0) -> torch.Tensor:
    """Normal noise with standard deviation ``std`` shaped like x, from the solver's generator
    (deterministic under a seed). The scaling happens inside the draw: a solver that starts its update
    from the noise (``fresh_noise(x, g, s).add_(x, alpha=a).add_(d, alpha=b)``) makes one pass fewer
    over the state than ``a x + b d + s z``."""
    # empty_like, not empty(x.shape, ...): parsing a torch.Size argument alone costs ~3 us at batch 256;
    # contiguous, so the noise a seed gives does not depend on x's memory layout
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return out.normal_(0.0, std, generator=generator)
