"""The analytic Gaussian-mixture world: exact denoiser, exact samples, exact probability-flow ODE.

Data x0 ~ sum_k w_k N(mu_k, S_k), S_k = U_k diag(l_k) U_k^T (full or diagonal, scales that differ by
orders of magnitude, one rare component of ~2%). In VE coordinates x = x0 + sigma eps, so
p_sigma = sum_k w_k N(mu_k, S_k + sigma^2 I) and, with z_k = U_k^T (x - mu_k),

    D(x, sigma)      = sum_k r_k(x, sigma) [mu_k + U_k (l_k / (l_k + sigma^2) * z_k)]     (Tweedie)
    dx/dsigma        = (x - D) / sigma = sum_k r_k U_k (sigma / (l_k + sigma^2) * z_k)   (finite at sigma = 0)

r_k are the posterior responsibilities. The class-conditional model replaces the prior weights w by
a condition vector c (one-hot of a component; all zeros = unconditional), so classifier-free guidance
has an exact answer too. ``MixtureNetwork`` exposes the exact denoiser as a network predicting eps,
x0, v or flow velocity on any path, so runs go through ``fastdiff_core.denoiser`` like a trained net.
``reference`` integrates the ODE in float64 with scipy's DOP853 at rtol = atol = 1e-10.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter, Prediction, prediction_from_x0_eps
from fastdiff_core.paths import NoisePath, get_path

F64 = torch.float64


@dataclass(frozen=True, eq=False)
class Mixture:
    """A Gaussian mixture with eigendecomposed covariances. Tensors are float64 on CPU.

    weights (K,), means (K, d), eigvals (K, d), eigvecs (K, d, d) with columns the eigenvectors;
    ``rare`` is the index of the rare component; ``labels`` names every component.
    """

    weights: torch.Tensor
    means: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    rare: int
    labels: tuple[str, ...]
    name: str = "mixture"

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.eigvals.shape != (k, d) or self.eigvecs.shape != (k, d, d):
            raise ValueError("mixture shapes disagree: weights (K,), means (K, d), eigvals (K, d), eigvecs (K, d, d)")
        if not bool((self.weights > 0).all()) or abs(float(self.weights.sum()) - 1) > 1e-9:
            raise ValueError(f"weights={self.weights.tolist()} must be positive and sum to 1")
        if not bool((self.eigvals > 0).all()):
            raise ValueError("covariance eigenvalues must be positive")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def components(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device) -> "Mixture":
        return Mixture(self.weights.to(device), self.means.to(device), self.eigvals.to(device),
                       self.eigvecs.to(device), self.rare, self.labels, self.name)

    # -- exact quantities -------------------------------------------------------------------------

    def _posterior(self, x: torch.Tensor, sigma: float | torch.Tensor, prior: torch.Tensor | None):
        """Responsibilities r (K, B, 1), eigen-coordinates z (K, B, d), variances l + sigma^2 (K, B|1, d).
        Components lead the layout so every contraction is one batched matmul."""
        x = x.to(F64)
        if isinstance(sigma, torch.Tensor):
            var = self.eigvals[:, None, :] + (sigma.to(F64) ** 2).reshape(1, -1, 1)
        else:
            var = (self.eigvals + sigma * sigma)[:, None, :]
        z = torch.bmm(x.unsqueeze(0) - self.means[:, None, :], self.eigvecs)
        logw = torch.log(self.weights)[:, None] if prior is None else _log_prior(prior, self.weights).T
        logp = logw - 0.5 * ((z * z / var).sum(-1) + torch.log(var).sum(-1))
        return torch.softmax(logp, dim=0).unsqueeze(-1), z, var

    def denoise(self, x: torch.Tensor, sigma: float | torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """E[x0 | x, sigma] (B, d) in float64; ``prior`` (B, K) rows of condition weights (zeros = unconditional)."""
        r, z, var = self._posterior(x, sigma, prior)
        # sum_k r_k [mu_k + U_k (l_k / (l_k + sigma^2) z_k)]
        shrunk = torch.bmm(r * (self.eigvals[:, None, :] / var) * z, self.eigvecs.transpose(1, 2)).sum(0)
        return shrunk + r[..., 0].T @ self.means

    def drift(self, x: torch.Tensor, sigma: float | torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """dx/dsigma = (x - D(x, sigma)) / sigma, computed without the division (finite at sigma = 0)."""
        r, z, var = self._posterior(x, sigma, prior)
        s = sigma.to(F64).reshape(1, -1, 1) if isinstance(sigma, torch.Tensor) else sigma
        return torch.bmm(r * (s / var) * z, self.eigvecs.transpose(1, 2)).sum(0)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the mode each sample belongs to: argmax_k of w_k N(x; mu_k, S_k)."""
        r, _, _ = self._posterior(x, 0.0, None)
        return r[..., 0].argmax(dim=0)

    def sample(self, n: int, generator: torch.Generator | None = None, component: int | None = None) -> torch.Tensor:
        """Exact samples (n, d) float64, from the mixture or from one component."""
        if component is None:
            ks = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        else:
            ks = torch.full((n,), component, dtype=torch.int64)
        eps = torch.randn(n, self.dim, generator=generator, dtype=F64)
        ks = ks.to(self.means.device)
        eps = eps.to(self.means.device)
        return self.means[ks] + torch.einsum("bde,be->bd", self.eigvecs[ks], self.eigvals[ks].sqrt() * eps)

    def one_hot(self, component: int, rows: int) -> torch.Tensor:
        """The condition vector selecting ``component`` (the class-conditional model's input)."""
        c = torch.zeros(rows, self.components, dtype=F64, device=self.means.device)
        c[:, component] = 1.0
        return c

    # -- reference ----------------------------------------------------------------------------------

    def reference(self, x: torch.Tensor, sigma_start: float, sigma_end: float = 0.0, *,
                  prior: torch.Tensor | None = None, uncond: torch.Tensor | None = None,
                  guidance: Guidance = Guidance(), rtol: float = 1e-10, atol: float = 1e-10) -> torch.Tensor:
        """Solve the probability-flow ODE from (x, sigma_start) to sigma_end (default 0, exactly) with
        DOP853 in float64. With guidance, the field is that of the guided denoiser
        D_u + scale (D_c - D_u) (c = ``prior``, u = ``uncond``), piecewise over the guidance interval."""
        from scipy.integrate import solve_ivp

        shape, device = x.shape, x.device
        mix = self.to(torch.device("cpu"))
        pc = None if prior is None else prior.to("cpu", F64)
        pu = None if uncond is None else uncond.to("cpu", F64)

        def field(active: bool) -> Callable[[float, np.ndarray], np.ndarray]:
            w = guidance.scale

            def f(sigma: float, y: np.ndarray) -> np.ndarray:
                xt = torch.from_numpy(y).reshape(shape)
                if active and w not in (0.0, 1.0):
                    dc, du = mix.drift(xt, sigma, pc), mix.drift(xt, sigma, pu)
                    v = du + w * (dc - du)
                else:
                    v = mix.drift(xt, sigma, pu if (w == 0.0) else pc)
                return v.reshape(-1).numpy()
            return f

        # Pieces split at the guidance interval's ends (the guided field jumps there) and at
        # sigma_switch: above it the ODE is integrated in tau = log sigma (dx/dtau = sigma dx/dsigma,
        # smooth over four decades of noise), below it in sigma itself (finite down to sigma = 0).
        sigma_switch = float(self.eigvals.min().sqrt())
        cuts = {sigma_start, sigma_end}
        if guidance.interval is not None:
            cuts |= {c for c in guidance.interval if sigma_end < c < sigma_start}
        if sigma_end < sigma_switch < sigma_start:
            cuts.add(sigma_switch)
        cuts = sorted(cuts, reverse=True)
        y = x.detach().to("cpu", F64).reshape(-1).numpy().copy()
        for a, b in zip(cuts, cuts[1:]):
            mid = 0.5 * (a + b)
            f = field(guidance.interval is None or guidance.interval[0] <= mid <= guidance.interval[1])
            if b >= sigma_switch:
                g = lambda tau, y, f=f: math.exp(tau) * f(math.exp(tau), y)  # noqa: E731
                sol = solve_ivp(g, (math.log(a), math.log(b)), y, method="DOP853", rtol=rtol, atol=atol)
            else:
                sol = solve_ivp(f, (a, b), y, method="DOP853", rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"reference ODE solve failed: {sol.message}")
            y = sol.y[:, -1]
        return torch.from_numpy(y).reshape(shape).to(device)


def _log_prior(prior: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # Rows of zeros mean "unconditional": the true weights. Otherwise the row, normalised.
    prior = prior.to(F64)
    total = prior.sum(-1, keepdim=True)
    p = torch.where(total > 0, prior / total.clamp_min(1e-300), weights.expand_as(prior))
    return torch.log(p.clamp_min(1e-300))


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _rot2(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _build(name: str, weights, means, eigvals, eigvecs, rare: int, labels) -> Mixture:
    t = lambda a: torch.tensor(np.asarray(a), dtype=F64)  # noqa: E731
    return Mixture(t(weights), t(means), t(eigvals), t(eigvecs), rare, tuple(labels), name)


def rare2d() -> Mixture:
    """2-D, four full-covariance modes with stds from 0.05 to 0.5; the rare mode (2%) sits apart."""
    weights = [0.50, 0.30, 0.18, 0.02]
    means = [[-1.4, -0.6], [1.1, -0.9], [0.0, 1.3], [2.3, 1.9]]
    eigvals = [[0.25, 0.02], [0.08, 0.01], [0.12, 0.0025], [0.02, 0.006]]
    eigvecs = [_rot2(30), _rot2(-45), _rot2(80), _rot2(10)]
    return _build("rare2d", weights, means, eigvals, eigvecs, 3, ["major", "second", "third", "rare"])


def rare16d() -> Mixture:
    """16-D, five diagonal modes whose per-axis stds span 0.05 to 0.7; one rare mode (2%)."""
    rng = np.random.default_rng(16)
    weights = [0.40, 0.30, 0.18, 0.10, 0.02]
    means = rng.standard_normal((5, 16)) * 0.9
    means[4] = means[4] / np.linalg.norm(means[4]) * 4.0  # the rare mode: far from the rest
    stds = np.exp(rng.uniform(math.log(0.05), math.log(0.7), size=(5, 16)))
    eigvecs = np.broadcast_to(np.eye(16), (5, 16, 16)).copy()
    return _build("rare16d", weights, means, stds**2, eigvecs, 4, ["a", "b", "c", "d", "rare"])


def anisotropic8d() -> Mixture:
    """8-D, four full-covariance modes with eigenvalues log-uniform in [1e-3, 1] (condition 1000)."""
    rng = np.random.default_rng(8)
    weights = [0.50, 0.30, 0.18, 0.02]
    means = rng.standard_normal((4, 8)) * 1.2
    means[3] = means[3] / np.linalg.norm(means[3]) * 4.0
    eigvals = np.exp(rng.uniform(math.log(1e-3), 0.0, size=(4, 8)))
    eigvecs = np.stack([_rotation(rng, 8) for _ in range(4)])
    return _build("anisotropic8d", weights, means, eigvals, eigvecs, 3, ["a", "b", "c", "rare"])


PRESETS: dict[str, Callable[[], Mixture]] = {"rare2d": rare2d, "rare16d": rare16d, "anisotropic8d": anisotropic8d}


def get_mixture(preset: str) -> Mixture:
    if preset not in PRESETS:
        raise ValueError(f"world_options.preset={preset!r} is not one of {sorted(PRESETS)}")
    return PRESETS[preset]()


# ---------------------------------------------------------------------------------------------
# The exact network
# ---------------------------------------------------------------------------------------------


class MixtureNetwork:
    """``net(x_t, t, cond) -> prediction``: the mixture's exact answer as a network on ``path``
    predicting ``prediction``. cond: (B, K) condition weights (one-hot: that component; zeros or
    None: unconditional). Computes in float64, returns x_t's dtype."""

    def __init__(self, mixture: Mixture, path: NoisePath, prediction: Prediction) -> None:
        self.mixture, self.path, self.prediction = mixture, path, prediction

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        p = self.path
        t64 = t.to(F64)
        a, s = p.alpha(t64)[:, None], p.sigma(t64)[:, None]
        sigma = (s / a)[:, 0]
        x = x_t.to(F64) / a
        x0 = self.mixture.denoise(x, sigma, cond)
        eps = self.mixture.drift(x, sigma, cond)  # (x - x0) / sigma, without cancellation
        da, ds = p.d_alpha(t64)[:, None], p.d_sigma(t64)[:, None]
        return prediction_from_x0_eps(self.prediction, x0, eps, a, s, da, ds).to(x_t.dtype)


# ---------------------------------------------------------------------------------------------
# The runner: execute(spec) for world = "mixture"
# ---------------------------------------------------------------------------------------------

CHUNK = 1024  # samples per sampling batch (one progress report each)
PREVIEW_ROWS = 256
_REFERENCES: dict[tuple, torch.Tensor] = {}


def condition_component(mixture: Mixture, condition: str) -> int | None:
    """world_options.condition -> the component index the conditional model is given (None: unconditional)."""
    if condition == "none":
        return None
    if condition == "rare":
        return mixture.rare
    if condition == "major":
        return int(mixture.weights.argmax())
    raise ValueError(f"world_options.condition={condition!r} is not one of ['none', 'rare', 'major']")


def _reference(mixture: Mixture, key: tuple, x_start: torch.Tensor, sigma_max: float, cond_all: torch.Tensor | None,
               uncond_all: torch.Tensor | None, guidance: Guidance, progress: Callable) -> torch.Tensor:
    """The exact ODE solution from the same noise. It depends on neither the path nor the prediction
    type nor the solver (VE coordinates), so runs that differ only in those share it (cached per
    process under ``key``)."""
    from fastdiff_core.spec import Progress

    ref = _REFERENCES.get(key)
    if ref is None:
        n, refs = len(x_start), []
        for lo in range(0, n, 4 * CHUNK):
            hi = min(n, lo + 4 * CHUNK)
            refs.append(mixture.reference(
                x_start[lo:hi], sigma_max, 0.0,
                prior=None if cond_all is None else cond_all[lo:hi],
                uncond=None if uncond_all is None else uncond_all[lo:hi], guidance=guidance))
            progress(Progress(hi, n, 0.0, None, "reference"))
        ref = torch.cat(refs)
        if len(_REFERENCES) >= 8:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = ref
    return ref


def _sample(spec: Any, net: MixtureNetwork, path: Any, sigmas: list[float], x_start: torch.Tensor,
            cond_all: torch.Tensor | None, uncond_all: torch.Tensor | None, guidance: Guidance, device: torch.device,
            dtype: torch.dtype, progress: Callable) -> tuple[torch.Tensor, float, float, float]:
    """The spec's solver over the noise in chunks of ``CHUNK`` rows, each chunk's NFE checked against
    the solver's declared NFE: (samples in float64, NFE counted, NFE by the formula, sampling seconds)."""
    from fastdiff_core import catalog
    from fastdiff_core.solvers import sample
    from fastdiff_core.solvers.primitives import StepInfo
    from fastdiff_core.spec import Progress

    info = catalog.solver_info(spec.solver)
    n = len(x_start)
    outs, nfe_rows, formula_rows, sample_seconds = [], 0.0, 0.0, 0.0
    for c, lo in enumerate(range(0, n, CHUNK)):
        hi = min(n, lo + CHUNK)
        counter = NFECounter()
        den = Denoiser(net, path, spec.world_options["prediction"], counter=counter, guidance=guidance,
                       cond=None if cond_all is None else cond_all[lo:hi].to(device, dtype),
                       uncond=None if uncond_all is None else uncond_all[lo:hi].to(device, dtype))
        evals: list[float] = []
        last: list[StepInfo] = []

        def record(s: StepInfo) -> None:
            evals.extend(s.eval_sigmas)
            last[:] = [s]

        x = x_start[lo:hi].to(device=device, dtype=dtype)
        solver_gen = torch.Generator(device=device).manual_seed(spec.seed * 1_000_003 + c + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = sample(spec.solver, den, x, sigmas, options=spec.solver_options, generator=solver_gen, callback=record)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sample_seconds += time.perf_counter() - t0
        declared = info.nfe(spec.steps, spec.solver_options)
        reported = last[-1].nfe if last else 0
        if declared is not None and (reported != declared or len(evals) != declared):
            raise RuntimeError(f"solver {spec.solver!r} declared NFE {declared} for steps={spec.steps} but made "
                               f"{reported} evaluations ({len(evals)} reported sigmas)")
        evaluations = declared if declared is not None else reported
        mean_passes = sum(guidance.passes(s) for s in evals) / max(len(evals), 1)
        formula_rows += evaluations * mean_passes * (hi - lo)
        nfe_rows += counter.nfe * (hi - lo)
        outs.append(out.to(F64))
        progress(Progress(hi, n, nfe_rows, sample_seconds / hi * (n - hi), "sampling"))
    x0 = torch.cat(outs)
    if not bool(torch.isfinite(x0).all()):
        raise FloatingPointError(f"solver {spec.solver!r} produced non-finite samples")
    return x0, nfe_rows, formula_rows, sample_seconds


def _metrics(mixture: Mixture, x0: torch.Tensor, ref: torch.Tensor, component: int | None, nfe_per_sample: float,
             sigmas: list[float]) -> tuple[dict[str, float], tuple, torch.Tensor]:
    """Errors against the reference, the rare mode with its Wilson interval, and the mode histograms
    of the samples and of the reference: (metrics, histograms, each sample's mode)."""
    from fastdiff_core.metrics import solver_error as se
    from fastdiff_core.metrics.intervals import wilson_interval

    n, k, rare = len(x0), mixture.components, mixture.rare
    modes, ref_modes = mixture.assign(x0), mixture.assign(ref)
    weights = mixture.weights.tolist()
    truth = weights if component is None else [1.0 if j == component else 0.0 for j in range(k)]
    rare_count = int((modes == rare).sum())
    rare_lo, rare_hi = wilson_interval(rare_count, n)
    metrics = {
        "rmse": se.terminal_rmse(x0, ref),
        "median_err": se.median_error(x0, ref),
        "rare_rate": rare_count / n,
        "rare_rate_lo": rare_lo,
        "rare_rate_hi": rare_hi,
        "rare_rate_ref": float((ref_modes == rare).to(F64).mean()),
        "rare_rate_truth": truth[rare],
        "mode_flip_rate": se.mode_flip_rate(modes, ref_modes),
        "mode_tv": 0.5 * sum(abs(r["rate"] - r["truth"]) for r in se.mode_histogram(modes, truth, mixture.labels, "x")),
        "nfe_per_sample": nfe_per_sample,
        "sigma_max": sigmas[0],
        "sigma_min": sigmas[-2],
    }
    histograms = tuple(se.mode_histogram(modes, truth, mixture.labels, "solver")
                       + se.mode_histogram(ref_modes, truth, mixture.labels, "reference"))
    return metrics, histograms, modes


def run(spec: Any, device: torch.device, on_progress: Callable | None = None) -> Any:
    """Sample the spec's solver/grid/steps/guidance on the mixture world, solve the reference ODE from
    the same noise, and return a RunResult with NFE (counted and declared), errors, mode histograms
    with Wilson intervals, a preview of samples and latencies."""
    from fastdiff_core import catalog
    from fastdiff_core.grids import build_grid
    from fastdiff_core.spec import RunResult

    t_start = time.perf_counter()
    # what this world refuses (rollouts, fan-out, speed-ups, students, guidance without a condition) is
    # declared once in its plugin (fastdiff_core.worlds.mixture.plugin) and refused by RunSpec validation
    opts = spec.world_options
    mixture = get_mixture(opts["preset"]).to(device)
    path = get_path(opts["path"])
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    sigmas = build_grid(spec.grid, spec.steps, path, spec.grid_options)
    info = catalog.solver_info(spec.solver)
    guidance = Guidance(spec.guidance_scale, spec.guidance_interval)
    component = condition_component(mixture, opts.get("condition", "none"))
    n, k = spec.samples, mixture.components
    progress = on_progress or (lambda p: None)

    gen = torch.Generator().manual_seed(spec.seed)
    x_start = torch.randn(n, mixture.dim, generator=gen, dtype=F64) * sigmas[0]
    cond_all = None if component is None else mixture.one_hot(component, n).cpu()
    uncond_all = torch.zeros(n, k, dtype=F64) if guidance.scale != 1.0 else None

    t_ref = time.perf_counter()
    ref = _reference(mixture, (opts["preset"], spec.seed, n, sigmas[0], guidance, component), x_start, sigmas[0],
                     cond_all, uncond_all, guidance, progress).to(device)
    ref_seconds = time.perf_counter() - t_ref
    x0, nfe_rows, formula_rows, sample_seconds = _sample(
        spec, MixtureNetwork(mixture, path, opts["prediction"]), path, sigmas, x_start, cond_all, uncond_all,
        guidance, device, dtype, progress)
    nfe_per_sample = nfe_rows / n
    metrics, histograms, modes = _metrics(mixture, x0, ref, component, nfe_per_sample, sigmas)
    m = min(n, PREVIEW_ROWS)
    preview = torch.cat([x0[:m, :2], modes[:m, None].to(F64), ref[:m, :2]], dim=1).cpu().tolist()
    dev = str(device)
    chunks = math.ceil(n / CHUNK)
    latency = (
        {"what": "sampling", "seconds": sample_seconds, "batch": min(n, CHUNK), "device": dev},
        {"what": "per_nfe", "seconds": sample_seconds / max(chunks * nfe_per_sample, 1e-12), "batch": min(n, CHUNK),
         "device": dev},
        {"what": "reference", "seconds": ref_seconds, "batch": n, "device": dev},
    )
    return RunResult(
        spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(nfe_rows),
        nfe_formula=float(formula_rows), metrics=metrics, histograms=histograms, latency=latency,
        samples=tuple(tuple(r) for r in preview),
        info={"world": mixture.name, "dim": mixture.dim, "labels": list(mixture.labels), "rare_label": mixture.labels[mixture.rare],
              "sigmas": sigmas, "solver_title": info.title, "solver_paper": info.paper,
              "samples_columns": ["x0", "x1", "mode", "ref_x0", "ref_x1"],
              "reference": "scipy DOP853, float64, rtol=atol=1e-10, to sigma=0",
              "nfe_unit": "per run (network evaluations of one sample, summed over the samples; guided steps "
                          "count 2); per sample in metrics.nfe_per_sample"},
    )
