"""The one place where network outputs, noise paths and guidance become the x0-denoiser solvers see.

A solver only ever calls ``D(x, sigma) -> x0_hat`` in canonical VE coordinates (x = x_t / alpha,
sigma = sigma_t / alpha), the k-diffusion / EDM contract. This module turns a network that predicts
eps, x0, v or flow velocity on any ``NoisePath`` into that function, adds classifier-free guidance
(cond and uncond in ONE batched forward; negative conditioning is just another "uncond"; guidance
interval: two passes only inside a sigma range), and counts NFE.

NFE is counted per sample: one network evaluation of one sample is 1 NFE, so a guided step (cond +
uncond) costs 2 whatever the batch size; the batch size is recorded separately as rows.

Papers: Ho & Salimans 2022 (CFG); Kynkäänniemi et al. 2024 (guidance in a limited interval);
Salimans & Ho 2022 (v-prediction); Lipman et al. 2022 / Liu et al. 2022 (flow velocity);
Lu et al. 2022 (DPM-Solver's model wrapper, the one-wrapper idea).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import torch

from fastdiff_core.paths import NoisePath, t_from_sigma_ve
from fastdiff_core.scalars import scalar

Prediction = Literal["eps", "x0", "v", "flow"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "flow")


class Network(Protocol):
    """A trained network: ``net(x_t, t, cond) -> prediction`` with x_t of shape (B, ...), t of shape
    (B,) in path time, cond of shape (B, ...) or None."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# Prediction-type conversions (the only copy of them in the project)
# ---------------------------------------------------------------------------------------------
# With x_t = a x0 + s eps and the path derivatives a' = da/dt, s' = ds/dt:
#   eps  : x0 = (x_t - s eps) / a
#   x0   : x0
#   v    : v = a eps - s x0                    => x0 = (a x_t - s v) / (a^2 + s^2)
#   flow : u = dx_t/dt = a' x0 + s' eps        => x0 = (s' x_t - s u) / (s' a - s a')


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not one of {list(PREDICTIONS)}")


def x0_from_prediction(
    prediction: Prediction, out: torch.Tensor, x_t: torch.Tensor,
    a: float, s: float, da: float = 0.0, ds: float = 0.0,
) -> torch.Tensor:
    """Clean-data estimate from a network output of the given prediction type."""
    _check_prediction(prediction)
    if prediction == "x0":
        return out
    if prediction == "eps":
        return (x_t - s * out) / a
    scalars = all(isinstance(c, (int, float)) for c in (a, s, da, ds))
    if prediction == "v":
        if scalars:  # one fused op pair instead of four: the per-step overhead of small batches
            den = a * a + s * s
            return torch.add(x_t * (a / den), out, alpha=-s / den)
        return (a * x_t - s * out) / (a * a + s * s)
    if scalars:
        den = ds * a - s * da
        return torch.add(x_t * (ds / den), out, alpha=-s / den)
    return (ds * x_t - s * out) / (ds * a - s * da)


def x0_coefficients(prediction: Prediction, a: float, s: float, da: float = 0.0, ds: float = 0.0) -> tuple[float, float]:
    """(c_x, c_out) with x0 = c_x * x + c_out * out in VE coordinates (x = x_t / a): the conversions
    above with the path's floats folded in, so the denoiser converts with one fused op per call."""
    _check_prediction(prediction)
    if prediction == "x0":
        return 0.0, 1.0
    if prediction == "eps":
        return 1.0, -s / a
    if prediction == "v":
        den = a * a + s * s
        return a * a / den, -s / den
    den = ds * a - s * da
    return ds * a / den, -s / den


def prediction_from_x0_eps(
    prediction: Prediction, x0: torch.Tensor, eps: torch.Tensor,
    a: float | torch.Tensor, s: float | torch.Tensor, da: float | torch.Tensor = 0.0, ds: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """The training target of a prediction type for clean data x0 and noise eps (inverse of the above)."""
    _check_prediction(prediction)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return eps
    if prediction == "v":
        return a * eps - s * x0
    return da * x0 + ds * eps


# ---------------------------------------------------------------------------------------------
# NFE counting and guidance
# ---------------------------------------------------------------------------------------------


@dataclass
class NFECounter:
    """Counts what a sampling run cost. ``nfe`` is per-sample network evaluations (the unit of the
    cost model); ``calls`` is denoiser calls as the solver sees them; ``forwards`` is batched network
    forwards; ``rows`` is samples pushed through the network in total. ``repeat_rows`` is the part of
    ``rows`` that re-evaluated a noise level the same samples had already been evaluated at (Picard
    iterations beyond the sequential solver's count, ``Denoiser.stacked(..., repeated=)``), so
    ``rows - repeat_rows`` is what the sequential solver would have counted."""

    nfe: float = 0.0
    calls: int = 0
    forwards: int = 0
    rows: int = 0
    repeat_rows: int = 0

    def reset(self) -> None:
        self.nfe, self.calls, self.forwards, self.rows, self.repeat_rows = 0.0, 0, 0, 0, 0


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance: D = D_uncond + scale * (D_cond - D_uncond).

    scale = 1 is the conditional model alone (one pass), scale = 0 the unconditional (one pass).
    ``interval`` = (sigma_lo, sigma_hi) in VE sigma: guidance (two passes) only for sigma inside it,
    the conditional pass alone outside it, so the mean guidance passes per step C is fractional.
    """

    scale: float = 1.0
    interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"guidance scale={self.scale!r} must be a finite number >= 0")
        if self.interval is not None:
            lo, hi = self.interval
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
                raise ValueError(f"guidance interval={self.interval!r} must be (sigma_lo, sigma_hi) with 0 <= lo < hi")

    def passes(self, sigma: float) -> int:
        """Network passes per sample at this sigma: 2 when guidance is active, else 1."""
        if self.scale == 1.0 or self.scale == 0.0:
            return 1
        if self.interval is not None and not (self.interval[0] <= sigma <= self.interval[1]):
            return 1
        return 2


# ---------------------------------------------------------------------------------------------
# The denoiser
# ---------------------------------------------------------------------------------------------


class Denoiser:
    """x0-denoiser ``D(x, sigma)`` over a network on a path; what every solver calls.

    x: (B, ...) in VE coordinates, any float dtype; sigma: a Python float > 0 (one noise level for
    the whole batch, as every fixed-grid solver uses). Returns x0_hat with x's shape and dtype.
    NFE: ``guidance.passes(sigma)`` per call, counted in ``self.counter``.
    """

    def __init__(
        self,
        net: Network,
        path: NoisePath,
        prediction: Prediction,
        *,
        cond: torch.Tensor | None = None,
        uncond: torch.Tensor | None = None,
        guidance: Guidance = Guidance(),
        counter: NFECounter | None = None,
        time_scale: float = 1.0,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        _check_prediction(prediction)
        if guidance.scale != 1.0 and uncond is None:
            raise ValueError(
                f"guidance scale={guidance.scale} needs an unconditional (or negative) condition; uncond is None"
            )
        if guidance.scale == 0.0 and uncond is None:
            raise ValueError("guidance scale=0 means the unconditional model; uncond is None")
        self.net, self.path, self.prediction = net, path, prediction
        self.cond, self.uncond = cond, uncond
        self.counter = counter if counter is not None else NFECounter()
        self.time_scale, self.net_dtype = time_scale, net_dtype
        self._coeffs: dict[float, tuple[float, float, float, float, float]] = {}
        self._t_cache: dict[tuple[float, int, torch.device], torch.Tensor] = {}
        self._call_cache: dict[tuple, tuple] = {}
        self.guidance = guidance

    @property
    def guidance(self) -> Guidance:
        return self._guidance

    @guidance.setter
    def guidance(self, value: Guidance) -> None:
        # the per-sigma constants include the guidance passes: a new guidance starts them afresh
        self._guidance = value
        self._call_cache.clear()

    def coefficients(self, sigma: float) -> tuple[float, float, float, float, float]:
        """(t, alpha, sigma_t, d_alpha, d_sigma) of the path at VE noise level ``sigma`` (cached)."""
        c = self._coeffs.get(sigma)
        if c is None:
            p = self.path
            t = float(t_from_sigma_ve(p, sigma))
            c = (t, float(p.alpha(t)), float(p.sigma(t)), float(p.d_alpha(t)), float(p.d_sigma(t)))
            self._coeffs[sigma] = c
        return c

    def _t(self, t: float, x: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """The network's time input for ``rows`` rows (cached per time, rows, dtype and device of x)."""
        key = (t, rows, dtype, x.get_device())  # get_device: an int, cheaper to hash than a torch.device
        tt = self._t_cache.get(key)
        if tt is None:
            if len(self._t_cache) > 4096:
                self._t_cache.clear()
            tt = torch.full((rows,), t * self.time_scale, device=x.device, dtype=dtype)
            self._t_cache[key] = tt
        return tt

    def _call_constants(self, sigma: float, x: torch.Tensor) -> tuple:
        """Everything one call at ``sigma`` needs for inputs like ``x`` (dtype, batch, device), built once
        and cached: alpha and c_x as cached scalars (``scalars.scalar``), the network dtype, the time input
        for all the call's passes, the x0 coefficients and the number of passes."""
        t, a, s, da, ds = self.coefficients(sigma)
        c_x, c_out = x0_coefficients(self.prediction, a, s, da, ds)
        passes = self._guidance.passes(sigma)
        net_dtype = self.net_dtype or x.dtype
        batch = x.shape[0]
        c = (scalar(a, x.dtype), net_dtype, self._t(t, x, passes * batch, net_dtype), c_x, c_out, passes,
             None if c_x in (0.0, 1.0) else scalar(c_x, x.dtype))
        if len(self._call_cache) > 4096:
            self._call_cache.clear()
        self._call_cache[(sigma, x.dtype, batch, x.get_device())] = c
        return c

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigma = float(sigma)
        x_dtype = x.dtype
        batch = x.shape[0]
        a, net_dtype, t_in, c_x, c_out, passes, c_x_t = (self._call_cache.get((sigma, x_dtype, batch, x.get_device()))
                                                          or self._call_constants(sigma, x))
        x_t = torch.mul(x, a)
        if net_dtype != x_dtype:
            x_t = x_t.to(net_dtype)
        if passes == 2:
            # cond and uncond in one batched forward; CFG on the raw output: x0 is affine in it at
            # fixed (x, sigma), so out_u + w (out_c - out_u) gives exactly x0_u + w (x0_c - x0_u)
            out = self.net(torch.cat([x_t, x_t]), t_in, torch.cat([self.cond, self.uncond]))
            out = torch.lerp(out[batch:], out[:batch], self._guidance.scale)
        else:
            out = self.net(x_t, t_in, self.uncond if self._guidance.scale == 0.0 else self.cond)
        # x0 = c_x x + c_out out (x0_coefficients: the conversions with the path's floats folded in)
        if c_x == 0.0:
            result = out if c_out == 1.0 else torch.mul(out, scalar(c_out, out.dtype))
        else:
            result = torch.add(x if c_x_t is None else torch.mul(x, c_x_t), out, alpha=c_out)
        if result.dtype != x_dtype:
            result = result.to(x_dtype)
        cnt = self.counter
        cnt.nfe += passes
        cnt.calls += 1
        cnt.forwards += 1
        cnt.rows += passes * batch
        return result

    def stacked(self, x: torch.Tensor, sigmas: Sequence[float], *, repeated: int = 0) -> torch.Tensor:
        """D at several noise levels in ONE batched forward (what parallel samplers need).

        x: (K * B, ...) stacked as K blocks of B rows, block k at noise level ``sigmas[k]``; the
        conditions (B, ...) are repeated per block. Equal, row for row, to K calls of ``self(x_k,
        sigma_k)``. NFE: sum over blocks of ``guidance.passes(sigma_k)`` (K calls, 1 forward).
        ``repeated``: the first blocks that re-evaluate a noise level these rows were evaluated at
        before (a Picard sweep's); their rows are also counted in ``counter.repeat_rows``.
        """
        sig = [float(s) for s in sigmas]
        k = len(sig)
        if k == 0 or x.shape[0] % k != 0:
            raise ValueError(f"x has {x.shape[0]} rows; expected a positive multiple of len(sigmas)={k}")
        if isinstance(repeated, bool) or not isinstance(repeated, int) or not 0 <= repeated <= k:
            raise ValueError(f"repeated={repeated!r} must be an integer in [0, {k}] (blocks re-evaluated)")
        batch = x.shape[0] // k
        net_dtype = self.net_dtype or x.dtype
        coeffs = [self.coefficients(s) for s in sig]
        passes = [self.guidance.passes(s) for s in sig]
        w = self.guidance.scale
        col = torch.tensor(coeffs, dtype=torch.float64, device=x.device).repeat_interleave(batch, 0)
        shape = (-1,) + (1,) * (x.ndim - 1)
        t, a, s, da, ds = (col[:, j].reshape(shape) for j in range(5))
        x_t = (x * a.to(x.dtype)).to(net_dtype)
        main = self.uncond if w == 0.0 else self.cond
        guided = [j for j in range(k) if passes[j] == 2]
        # rows: every block with its main condition, then the guided blocks again with uncond
        xs = [x_t] + [x_t[j * batch:(j + 1) * batch] for j in guided]
        ts = [t.reshape(-1)] + [t.reshape(-1)[j * batch:(j + 1) * batch] for j in guided]
        x_in, t_in = torch.cat(xs), (torch.cat(ts) * self.time_scale).to(net_dtype)
        c_in = None
        if main is not None:
            c_in = torch.cat([main] * k + [self.uncond] * len(guided))
        a_in, s_in, da_in, ds_in = (torch.cat([v] + [v[j * batch:(j + 1) * batch] for j in guided])
                                    for v in (a, s, da, ds))
        out = self.net(x_in, t_in, c_in)
        a_in, s_in, da_in, ds_in = (v.to(out.dtype) for v in (a_in, s_in, da_in, ds_in))
        x0 = x0_from_prediction(self.prediction, out, x_in, a_in, s_in, da_in, ds_in).to(x.dtype)
        result = x0[: k * batch].clone()
        for n, j in enumerate(guided):
            x0_c = result[j * batch:(j + 1) * batch]
            x0_u = x0[(k + n) * batch:(k + n + 1) * batch]
            result[j * batch:(j + 1) * batch] = x0_u + w * (x0_c - x0_u)
        cnt = self.counter
        cnt.nfe += sum(passes)
        cnt.calls += k
        cnt.forwards += 1
        cnt.rows += sum(passes) * batch
        cnt.repeat_rows += sum(passes[:repeated]) * batch
        return result
