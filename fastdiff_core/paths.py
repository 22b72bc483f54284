"""Noise paths x_t = alpha(t) * x0 + sigma(t) * eps, with logSNR and its inverse.

Papers: DDPM (Ho et al. 2020) discrete betas; VP-SDE linear schedule (Song et al. 2021);
cosine schedule (Nichol & Dhariwal 2021); rectified flow / flow matching (Liu et al. 2022,
Lipman et al. 2022). The interface is DPM-Solver's: alpha, sigma, lambda (= logSNR / 2 in their
notation; here ``log_snr`` = 2 log(alpha / sigma)) and the inverse of logSNR.

Solvers never see a path. They run in the canonical "VE" coordinates of k-diffusion / EDM:
x = x_t / alpha and sigma_ve = sigma / alpha = exp(-logSNR / 2). A path only tells the denoiser
which t a network must be queried at for a given sigma_ve, and the grids where uniform-t lies.

Every method accepts a Python float (fast path through ``math``: solvers and denoisers call these
once per step) or a tensor (``torch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Union

import torch

Scalar = Union[float, torch.Tensor]


def _xp(t: Scalar):
    return torch if isinstance(t, torch.Tensor) else math


class NoisePath(Protocol):
    """The noise-schedule interface every path implements."""

    name: str
    t_min: float
    t_max: float

    def alpha(self, t: Scalar) -> Scalar: ...
    def sigma(self, t: Scalar) -> Scalar: ...
    def d_alpha(self, t: Scalar) -> Scalar: ...
    def d_sigma(self, t: Scalar) -> Scalar: ...
    def log_snr(self, t: Scalar) -> Scalar: ...
    def t_from_log_snr(self, log_snr: Scalar) -> Scalar: ...


def sigma_ve(path: NoisePath, t: Scalar) -> Scalar:
    """sigma / alpha: the noise level in the canonical coordinates solvers use."""
    return _xp(t).exp(-0.5 * path.log_snr(t))


def t_from_sigma_ve(path: NoisePath, sigma: Scalar) -> Scalar:
    """Inverse of ``sigma_ve``: the path time at which sigma / alpha equals ``sigma``."""
    return path.t_from_log_snr(-2.0 * _xp(sigma).log(sigma))


def sigma_range(path: NoisePath) -> tuple[float, float]:
    """(sigma_min, sigma_max) in VE coordinates over the path's usable time range."""
    return float(sigma_ve(path, path.t_min)), float(sigma_ve(path, path.t_max))


# ---------------------------------------------------------------------------------------------
# Variance preserving, discrete DDPM betas (as common checkpoints ship them)
# ---------------------------------------------------------------------------------------------

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]


def ddpm_betas(
    kind: BetaSchedule = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """Training betas as DDPM (linear), Stable Diffusion (scaled_linear) and iDDPM (cosine) define them."""
    n = num_train_timesteps
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":
        f = lambda i: math.cos((i / n + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(n)], dtype=torch.float64)
    raise ValueError(f"beta schedule kind={kind!r} is not one of 'linear', 'scaled_linear', 'squaredcos_cap_v2'")


@dataclass(frozen=True)
class VPDiscrete:
    """DDPM's discrete schedule made continuous: t = i / (N - 1) for training index i, logSNR
    interpolated linearly between indices (DPM-Solver's ``NoiseScheduleVP('discrete')``).

    A network trained on integer timesteps is queried at ``index = t * (N - 1)``; the denoiser's
    ``time_input`` option does that conversion.
    """

    betas: torch.Tensor = field(default_factory=ddpm_betas)
    name: str = "vp_discrete"
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        b = self.betas.to(torch.float64)
        if b.ndim != 1 or len(b) < 2 or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must be a 1-D tensor of at least 2 values, each in (0, 1)")
        log_alpha = 0.5 * torch.cumsum(torch.log1p(-b), 0)
        lam = 2 * (log_alpha - 0.5 * torch.log(-torch.expm1(2 * log_alpha)))  # logSNR per index
        object.__setattr__(self, "_lam", lam)
        object.__setattr__(self, "_lam_list", lam.tolist())
        object.__setattr__(self, "_n", len(b))

    @property
    def num_train_timesteps(self) -> int:
        return self._n

    def log_snr(self, t: Scalar) -> Scalar:
        n = self._n
        if isinstance(t, torch.Tensor):
            pos = (t.to(torch.float64) * (n - 1)).clamp(0, n - 1)
            lo = pos.floor().long().clamp(max=n - 2)
            w = pos - lo
            lam = self._lam.to(t.device)
            return (lam[lo] * (1 - w) + lam[lo + 1] * w).to(t.dtype if t.is_floating_point() else torch.float64)
        pos = min(max(t * (n - 1), 0.0), n - 1.0)
        lo = min(int(pos), n - 2)
        w = pos - lo
        return self._lam_list[lo] * (1 - w) + self._lam_list[lo + 1] * w

    def t_from_log_snr(self, log_snr: Scalar) -> Scalar:
        # logSNR decreases with the index: search the reversed (increasing) table.
        n = self._n
        rev = torch.flip(self._lam, [0])
        if isinstance(log_snr, torch.Tensor):
            v = log_snr.to(torch.float64).clamp(float(rev[0]), float(rev[-1]))
            j = torch.searchsorted(rev.to(v.device), v).clamp(1, n - 1)
            lo_v, hi_v = rev.to(v.device)[j - 1], rev.to(v.device)[j]
            frac = (v - lo_v) / (hi_v - lo_v)
            idx_rev = (j - 1) + frac
            return ((n - 1 - idx_rev) / (n - 1)).to(log_snr.dtype)
        v = min(max(float(log_snr), float(rev[0])), float(rev[-1]))
        j = min(max(int(torch.searchsorted(rev, torch.tensor(v, dtype=torch.float64))), 1), n - 1)
        lo_v, hi_v = float(rev[j - 1]), float(rev[j])
        idx_rev = (j - 1) + (v - lo_v) / (hi_v - lo_v)
        return (n - 1 - idx_rev) / (n - 1)

    def alpha(self, t: Scalar) -> Scalar:
        # alpha^2 = sigmoid(logSNR)
        lam = self.log_snr(t)
        return _xp(t).exp(-0.5 * _softplus(-lam))

    def sigma(self, t: Scalar) -> Scalar:
        lam = self.log_snr(t)
        return _xp(t).exp(-0.5 * _softplus(lam))

    def d_alpha(self, t: Scalar) -> Scalar:
        return _numeric_derivative(self.alpha, t, 1.0 / (self._n - 1))

    def d_sigma(self, t: Scalar) -> Scalar:
        return _numeric_derivative(self.sigma, t, 1.0 / (self._n - 1))


def _softplus(x: Scalar) -> Scalar:
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.softplus(x)
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _numeric_derivative(f: Callable[[Scalar], Scalar], t: Scalar, span: float) -> Scalar:
    # Central difference over one training interval: the discrete schedule is piecewise linear in
    # logSNR, so this is its natural derivative.
    h = 0.5 * span
    if isinstance(t, torch.Tensor):
        lo, hi = (t - h).clamp(min=0.0), (t + h).clamp(max=1.0)
    else:
        lo, hi = max(t - h, 0.0), min(t + h, 1.0)
    return (f(hi) - f(lo)) / (hi - lo)


# ---------------------------------------------------------------------------------------------
# Variance preserving, continuous: linear beta (VP-SDE) and cosine
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VPLinear:
    """VP-SDE with beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021):
    log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    name: str = "vp_linear"
    t_min: float = 1e-3
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.beta_min < self.beta_max):
            raise ValueError(f"beta_min={self.beta_min}, beta_max={self.beta_max}: need 0 < beta_min < beta_max")

    def _log_alpha(self, t: Scalar) -> Scalar:
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Scalar) -> Scalar:
        return _xp(t).exp(self._log_alpha(t))

    def sigma(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        return xp.sqrt(-xp.expm1(2 * self._log_alpha(t)))

    def d_alpha(self, t: Scalar) -> Scalar:
        return self.alpha(t) * (-0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min)

    def d_sigma(self, t: Scalar) -> Scalar:
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)

    def log_snr(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        la = self._log_alpha(t)
        return 2 * la - xp.log(-xp.expm1(2 * la))

    def t_from_log_snr(self, log_snr: Scalar) -> Scalar:
        # DPM-Solver's closed-form inverse: log alpha = -softplus(-logSNR) / 2, solve the quadratic.
        xp = _xp(log_snr)
        la = -0.5 * _softplus(-log_snr)
        d = self.beta_max - self.beta_min
        # -log alpha = d t^2 / 4 + beta_min t / 2  =>  t = 4y / (sqrt(beta_min^2 + 4 d y) + beta_min), y = -log alpha
        return 4 * (-la) / (xp.sqrt(self.beta_min**2 + 4 * d * (-la)) + self.beta_min)


@dataclass(frozen=True)
class VPCosine:
    """Cosine schedule (Nichol & Dhariwal 2021): alpha_bar(t) = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s)).
    Clipped at t_max (alpha -> 0 at t = 1), as DPM-Solver does."""

    s: float = 0.008
    name: str = "vp_cosine"
    t_min: float = 1e-3
    t_max: float = 0.9946

    def _log_alpha(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        s = self.s
        return xp.log(xp.cos((t + s) / (1 + s) * math.pi / 2)) - math.log(math.cos(s / (1 + s) * math.pi / 2))

    def alpha(self, t: Scalar) -> Scalar:
        return _xp(t).exp(self._log_alpha(t))

    def sigma(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        return xp.sqrt(-xp.expm1(2 * self._log_alpha(t)))

    def d_alpha(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        u = (t + self.s) / (1 + self.s) * math.pi / 2
        return -self.alpha(t) * xp.tan(u) * math.pi / (2 * (1 + self.s))

    def d_sigma(self, t: Scalar) -> Scalar:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def log_snr(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        la = self._log_alpha(t)
        return 2 * la - xp.log(-xp.expm1(2 * la))

    def t_from_log_snr(self, log_snr: Scalar) -> Scalar:
        xp = _xp(log_snr)
        la = -0.5 * _softplus(-log_snr)
        log_alpha_0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))
        return 2 * (1 + self.s) / math.pi * xp.acos(xp.exp(la + log_alpha_0)) - self.s


# ---------------------------------------------------------------------------------------------
# Rectified flow: the linear interpolant x_t = (1 - t) x0 + t eps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RectifiedFlow:
    """Linear interpolant of flow matching / rectified flow; velocity target eps - x0.
    t_max < 1 because sigma/alpha diverges at t = 1 (sigma_ve = t / (1 - t))."""

    name: str = "rectified_flow"
    t_min: float = 1e-3
    t_max: float = 1.0 - 1.0 / 81.0  # sigma_ve = 80, EDM's sigma_max

    def alpha(self, t: Scalar) -> Scalar:
        return 1 - t

    def sigma(self, t: Scalar) -> Scalar:
        return t + 0 * t if isinstance(t, torch.Tensor) else float(t)

    def d_alpha(self, t: Scalar) -> Scalar:
        return -1.0 + 0 * t if isinstance(t, torch.Tensor) else -1.0

    def d_sigma(self, t: Scalar) -> Scalar:
        return 1.0 + 0 * t if isinstance(t, torch.Tensor) else 1.0

    def log_snr(self, t: Scalar) -> Scalar:
        xp = _xp(t)
        return 2 * (xp.log1p(-t) - xp.log(t))

    def t_from_log_snr(self, log_snr: Scalar) -> Scalar:
        # (1 - t) / t = exp(logSNR / 2)  =>  t = sigmoid(-logSNR / 2)
        if isinstance(log_snr, torch.Tensor):
            return torch.sigmoid(-0.5 * log_snr)
        return 1.0 / (1.0 + math.exp(0.5 * log_snr))


PATHS: dict[str, Callable[[], NoisePath]] = {
    "vp_discrete": VPDiscrete,
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "rectified_flow": RectifiedFlow,
}


def get_path(name: str) -> NoisePath:
    """Build a path by registry name; unknown names raise ValueError listing the allowed ones."""
    if name not in PATHS:
        raise ValueError(f"path={name!r} is not one of {sorted(PATHS)}")
    return PATHS[name]()
