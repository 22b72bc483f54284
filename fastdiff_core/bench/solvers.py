"""``fastdiff bench solvers``: every solver x grid x NFE on a mixture world,
against the exact reference, side by side with diffusers' schedulers and k-diffusion's samplers on
the same world and the same noise; plus each solver's own overhead per network call.

World: a preset of the analytic mixture on the DDPM discrete path (linear betas, 1000 steps: the
schedule diffusers' schedulers default to). Every sampler — ours and the peers' — sees the exact
denoiser at exactly the noise level it asks for, so every error printed is integration error.

Peers (dev-only, the ``peers`` extra): diffusers (installed normally) and k-diffusion. k-diffusion's
package imports torchvision, which breaks beside this torch; install it with
``pip install --no-deps k-diffusion torchsde torchdiffeq trampoline`` and this module loads only its
``sampling`` module (``load_k_diffusion_sampling``). Missing peers are reported and skipped.

This module measures and returns rows (``run_bench``); ``fastdiff_cli.bench_solvers`` parses the
command's flags and prints the tables.
"""

from __future__ import annotations

import builtins
import importlib.util
import math
import statistics
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from fastdiff_core import catalog
from fastdiff_core.denoiser import Denoiser, NFECounter
from fastdiff_core.grid_search import optimise_grid
from fastdiff_core.grids import FIXED_GRIDS, build_grid, tuned_final
from fastdiff_core.metrics.intervals import quantile, wilson_interval
from fastdiff_core.metrics.rate_change import rare_mode_decision
from fastdiff_core.metrics.solver_error import median_error, mode_flip_rate, paired_rate_difference, terminal_rmse
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.solvers import sample
from fastdiff_core.solvers.brownian import NOISE_KINDS
from fastdiff_core.worlds.mixture import Mixture, get_mixture
from fastdiff_core.worlds.random_mixtures import held_out_seeds, random_world

NFES = (4, 6, 8, 10, 15, 20, 50)
COMPARE_NFES = (6, 8, 10, 15, 20)
GRIDS = ("karras", "uniform_logsnr", "uniform_t", "quadratic")
OPTIMISED = ("dpmpp_2m", "unipc", "ipndm")  # solvers whose grid the bench optimises per NFE
STOCHASTIC = ("ddpm", "dpmpp_2m_sde")  # solvers that draw fresh noise at every step
F64 = torch.float64

# Our solver -> the k-diffusion sampler that implements the same method (for the overhead ratio).
KDIFF_SAME = {
    "euler": ("sample_euler", {}), "heun": ("sample_heun", {}), "dpmpp_2m": ("sample_dpmpp_2m", {}),
    "dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}), "dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {"eta": 1.0}), "ddim": ("sample_euler", {}),
    "ddpm": ("sample_euler_ancestral", {"eta": 1.0}),
}


# ---------------------------------------------------------------------------------------------
# The world, the noise, the references
# ---------------------------------------------------------------------------------------------


@dataclass
class Setup:
    mixture: Mixture
    sigma_min: float
    sigma_max: float
    x_start: torch.Tensor  # (n, d) float64, = sigma_max * noise
    noise: torch.Tensor
    refs: dict[float, torch.Tensor]
    ref_modes: dict[float, torch.Tensor]

    def reference(self, sigma0: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference from the same noise started at sigma0 (cached per start)."""
        # a peer that starts at our sigma_max up to float32 rounding shares our reference (the start
        # differs by ~1e-7 relative, which moves the endpoint by ~1e-7 of the data scale)
        key = next((k for k in self.refs if abs(k - sigma0) <= 1e-5 * k), sigma0)
        if key not in self.refs:
            x0 = self.noise * sigma0
            self.refs[key] = self.mixture.reference(x0, sigma0, 0.0)
            self.ref_modes[key] = self.mixture.assign(self.refs[key])
        return self.refs[key], self.ref_modes[key]


def measure(setup: Setup, out: torch.Tensor, sigma0: float) -> dict[str, float]:
    ref, ref_modes = setup.reference(sigma0)
    out = out.to(F64)
    if not bool(torch.isfinite(out).all()):
        return {"rmse": math.inf, "median_err": math.inf, "rare_rate": math.nan, "rare_rate_ref": math.nan,
                "mode_flip_rate": math.nan, "rare_lo": math.nan, "rare_hi": math.nan}
    m = setup.mixture
    modes = m.assign(out)
    n = out.shape[0]
    rare = int((modes == m.rare).sum())
    lo, hi = wilson_interval(rare, n)
    in_rare, ref_rare = modes == m.rare, ref_modes == m.rare
    return {"rmse": terminal_rmse(out, ref), "median_err": median_error(out, ref), "rare_rate": rare / n,
            "rare_lo": lo, "rare_hi": hi, "rare_rate_ref": float(ref_rare.to(F64).mean()),
            # samples that moved into / out of the rare mode against their own reference (paired); of those
            # moved in, the ones outside the rare mode's 99.9% ellipsoid: blur between modes that the
            # argmax rule hands to the broadest component, not samples of the rare mode
            "rare_in": int((in_rare & ~ref_rare).sum()), "rare_out": int((~in_rare & ref_rare).sum()), "n": n,
            "rare_in_off_mode": int((in_rare & ~ref_rare & ~_inside_rare_ellipsoid(m, out)).sum()),
            "rare_rate_truth": float(m.weights[m.rare]), "mode_flip_rate": mode_flip_rate(modes, ref_modes)}


def _inside_rare_ellipsoid(m: Mixture, x: torch.Tensor, level: float = 0.999) -> torch.Tensor:
    """(B,) bool: x within the rare component's ``level`` probability ellipsoid (Mahalanobis^2 <= chi2_d)."""
    from scipy.stats import chi2

    z = (x - m.means[m.rare]) @ m.eigvecs[m.rare]
    return (z * z / m.eigvals[m.rare]).sum(-1) <= float(chi2.ppf(level, m.dim))


class CountingDenoiser:
    """The exact x0-denoiser in VE coordinates, counting calls (one call = one NFE per sample)."""

    def __init__(self, mixture: Mixture) -> None:
        self.mixture, self.calls = mixture, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.calls += 1
        return self.mixture.denoise(x, sigma).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# fastdiff
# ---------------------------------------------------------------------------------------------


def fastdiff_variants() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, info in catalog.SOLVERS.items():
        if info.adaptive:
            continue
        if name == "unipc":
            out += [("unipc", {"variant": v, "order": o}) for v in ("bh1", "bh2") for o in (2, 3)]
        elif name == "dpmpp_2m_sde":
            out.append((name, {"eta": 1.0}))
        else:
            out.append((name, {}))
    return out


def label(name: str, options: dict[str, Any]) -> str:
    return name + ("" if not options else "(" + ",".join(f"{k}={v}" for k, v in options.items()) + ")")


def run_fastdiff(setup: Setup, path: Any, nfes: tuple[int, ...], optimise: bool, train: Setup | None,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for name, opts in fastdiff_variants():
        info = catalog.SOLVERS[name]
        for nfe in nfes:
            # exactly nfe evaluations (two-stage solvers pick their single-stage steps), else the most that fit
            plan = info.plan_for_nfe(nfe, opts)
            steps, planned = plan if plan is not None else (info.steps_for_nfe(nfe, opts), opts)
            if steps is None:
                continue
            for grid in GRIDS:
                sig = build_grid(grid, steps, path)
                d = CountingDenoiser(setup.mixture)
                out = sample(name, d, setup.x_start, sig, options=planned, generator=torch.Generator().manual_seed(1))
                rows.append({"impl": "fastdiff", "solver": label(name, opts), "grid": grid, "nfe_target": nfe,
                             "steps": steps, "solver_options": planned, "nfe": d.calls, **measure(setup, out, sig[0])})
            if optimise and train is not None and name in OPTIMISED and nfe <= 10 and not (name == "unipc" and (
                    opts.get("variant") != "bh2" or opts.get("order") != 3)):
                start = min((r for r in rows[-len(GRIDS):]), key=lambda r: r["rmse"])["grid"]
                t0 = time.perf_counter()
                res = optimise_grid(name, CountingDenoiser(train.mixture), train.x_start,
                                    train.reference(setup.sigma_max)[0], build_grid(start, steps, path),
                                    options=opts, sigma_floor=setup.sigma_min, budget=15 * steps)
                d = CountingDenoiser(setup.mixture)
                out = sample(name, d, setup.x_start, res.sigmas, options=opts)
                rows.append({"impl": "fastdiff", "solver": label(name, opts), "grid": f"optimised({start})",
                             "nfe_target": nfe, "steps": steps, "nfe": d.calls, "sigmas": res.sigmas,
                             "search_evals": res.evaluations, "search_s": time.perf_counter() - t0,
                             **measure(setup, out, res.sigmas[0])})
        log(f"  fastdiff {label(name, opts)} done")
    # the adaptive solvers: tolerance sets the NFE
    for name in [n for n, info in catalog.SOLVERS.items() if info.adaptive]:
        for rtol in (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
            d = CountingDenoiser(setup.mixture)
            sig = build_grid("karras", 10, path)
            out = sample(name, d, setup.x_start, sig, options={"rtol": rtol, "atol": rtol / 10})
            rows.append({"impl": "fastdiff", "solver": f"{name}(rtol={rtol:g})", "grid": "adaptive",
                         "nfe_target": None, "steps": None, "nfe": d.calls, **measure(setup, out, sig[0])})
    return rows


# ---------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------


def load_k_diffusion_sampling() -> types.ModuleType | None:
    """k-diffusion's sampling module alone, or None when k-diffusion is not installed.

    Its package ``__init__`` (and its ``utils``) import torchvision, which breaks beside this torch, so
    the package cannot be imported; ``sampling.py`` needs one helper from ``utils`` (``append_dims``).
    The module is executed with its own ``__import__`` that answers its one relative import
    (``from . import utils``) with that helper and passes every other import through: nothing is
    added to ``sys.modules``, so no other code can see a partial k-diffusion package."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.submodule_search_locations is None:
        return None
    utils = types.SimpleNamespace(append_dims=lambda x, n: x[(...,) + (None,) * (n - x.ndim)])
    real_import = builtins.__import__

    def own_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 1 and name == "" and tuple(fromlist) == ("utils",):
            return types.SimpleNamespace(utils=utils)
        return real_import(name, globals, locals, fromlist, level)

    location = list(spec.submodule_search_locations)[0]
    s = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{location}/sampling.py")
    module = importlib.util.module_from_spec(s)
    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": own_import}
    try:
        s.loader.exec_module(module)
    except ImportError:  # its own dependencies (torchsde, torchdiffeq, trampoline) are missing
        return None
    return module


KDIFF_SAMPLERS = [
    ("sample_euler", {}, 1), ("sample_heun", {}, 2), ("sample_dpm_2", {}, 2), ("sample_lms", {}, 1),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.0}, 2), ("sample_dpmpp_2m", {}, 1),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}, 1),
]


def kdiff_sigmas(kd: types.ModuleType, grid: str, n: int, smin: float, smax: float) -> torch.Tensor:
    if grid == "karras":
        return kd.get_sigmas_karras(n, smin, smax).to(F64)
    if grid == "exponential":
        return kd.get_sigmas_exponential(n, smin, smax).to(F64)
    return kd.get_sigmas_polyexponential(n, smin, smax, rho=2.0).to(F64)


def run_k_diffusion(kd: types.ModuleType, setup: Setup, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    m = setup.mixture
    for fn_name, kwargs, per_step in KDIFF_SAMPLERS:
        fn = getattr(kd, fn_name)
        for nfe in nfes:
            steps = nfe if per_step == 1 else (nfe + 1) // 2
            for grid in ("karras", "exponential", "polyexponential(rho=2)"):
                sig = kdiff_sigmas(kd, grid.split("(")[0], steps, setup.sigma_min, setup.sigma_max)
                calls = [0]

                def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
                    calls[0] += 1
                    return m.denoise(x, sigma)

                extra = dict(kwargs)
                if "eta" in kwargs:
                    extra["noise_sampler"] = kd.default_noise_sampler(setup.x_start)
                out = fn(model, setup.x_start.clone(), sig, disable=True, **extra)
                rows.append({"impl": "k-diffusion", "solver": fn_name.removeprefix("sample_"), "grid": grid,
                             "nfe_target": nfe, "steps": steps, "nfe": calls[0],
                             **measure(setup, out, float(sig[0]))})
    return rows


def diffusers_configs() -> list[tuple[str, str, dict[str, Any]]]:
    cfg = []
    for spacing in ("trailing", "linspace"):
        cfg.append(("DDIMScheduler", f"spacing={spacing}", {"timestep_spacing": spacing}))
    for order in (2, 3):
        for karras in (False, True):
            cfg.append(("DPMSolverMultistepScheduler", f"order={order},karras={karras}",
                        {"solver_order": order, "use_karras_sigmas": karras, "algorithm_type": "dpmsolver++",
                         "final_sigmas_type": "zero"}))
            cfg.append(("DPMSolverSinglestepScheduler", f"order={order},karras={karras}",
                        {"solver_order": order, "use_karras_sigmas": karras, "final_sigmas_type": "zero"}))
            cfg.append(("DEISMultistepScheduler", f"order={order},karras={karras}",
                        {"solver_order": order, "use_karras_sigmas": karras}))
            for bh in ("bh1", "bh2"):
                cfg.append(("UniPCMultistepScheduler", f"{bh},order={order},karras={karras}",
                            {"solver_order": order, "use_karras_sigmas": karras, "solver_type": bh,
                             "final_sigmas_type": "zero"}))
    for karras in (False, True):
        cfg.append(("EulerDiscreteScheduler", f"karras={karras}", {"use_karras_sigmas": karras,
                                                                    "timestep_spacing": "linspace"}))
        cfg.append(("HeunDiscreteScheduler", f"karras={karras}", {"use_karras_sigmas": karras,
                                                                   "timestep_spacing": "linspace"}))
        cfg.append(("LMSDiscreteScheduler", f"karras={karras}", {"use_karras_sigmas": karras,
                                                                  "timestep_spacing": "linspace"}))
    return cfg


def _diffusers_sample(scheduler: Any, steps: int, x_ve: torch.Tensor, eps_fn: Callable) -> tuple[torch.Tensor, int, float]:
    """Drive a diffusers scheduler; returns (x0, model calls, sigma the trajectory starts at)."""
    scheduler.set_timesteps(steps)
    ve_sample = hasattr(scheduler, "init_noise_sigma") and float(scheduler.init_noise_sigma) > 1.5
    sigma0 = _sigma_of_call(scheduler, scheduler.timesteps[0], 0)
    x = x_ve.clone() if ve_sample else x_ve / math.sqrt(1 + sigma0**2)
    calls = 0
    for i, t in enumerate(scheduler.timesteps):
        sigma = _sigma_of_call(scheduler, t, i)
        model_in = scheduler.scale_model_input(x, t)
        eps = eps_fn(model_in, sigma)
        calls += 1
        x = scheduler.step(eps, t, x).prev_sample
    return x, calls, sigma0


def _sigma_of_call(scheduler: Any, t: Any, i: int) -> float:
    """The VE noise level the scheduler assumes for the model call at timestep t."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > len(scheduler.timesteps) - 1 and hasattr(scheduler, "step_index"):
        idx = scheduler.step_index if scheduler.step_index is not None else 0
        return float(sigmas[idx])
    a = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt((1 - a) / a)


def run_diffusers(setup: Setup, nfes: tuple[int, ...], configs: list[tuple[str, str, dict[str, Any]]] | None = None
                  ) -> list[dict[str, Any]]:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # config-change notices on every odd step count

    rows = []
    m = setup.mixture

    def eps_fn(x_t: torch.Tensor, sigma: float) -> torch.Tensor:
        # exact eps at the scheduler's own noise level: x_ve = x_t / alpha, eps = (x_ve - D) / sigma
        return m.drift(x_t.to(F64) * math.sqrt(1 + sigma * sigma), sigma).to(x_t.dtype)

    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    for cls_name, tag, kwargs in diffusers_configs() if configs is None else configs:
        cls = getattr(diffusers, cls_name)
        for nfe in nfes:
            steps = nfe
            for _ in range(4):
                try:
                    out, calls, sigma0 = _diffusers_sample(cls(**base, **kwargs), steps, setup.noise * setup.sigma_max,
                                                           eps_fn)
                except Exception as e:  # a peer that refuses a setting is reported, not fatal
                    rows.append({"impl": "diffusers", "solver": cls_name, "grid": tag, "nfe_target": nfe,
                                 "error": f"{type(e).__name__}: {e}"[:200]})
                    break
                if calls <= nfe:
                    rows.append({"impl": "diffusers", "solver": cls_name, "grid": tag, "nfe_target": nfe,
                                 "steps": steps, "nfe": calls, **measure(setup, out, sigma0)})
                    break
                steps -= max(1, (calls - nfe + 1) // 2)
                if steps < 1:
                    break
    return rows


# ---------------------------------------------------------------------------------------------
# Overhead per network call (network time excluded)
# ---------------------------------------------------------------------------------------------


def _per_round_us(fns: list[Callable[[], int]], repeats: int) -> list[list[float]]:
    """Microseconds per network call of each function (each returns its call count) in each of
    ``repeats`` interleaved rounds: ``out[j][r]`` is function j in round r."""
    for fn in fns:
        fn()  # warm-up
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            t0 = time.perf_counter()
            calls = fn()
            out[j].append((time.perf_counter() - t0) / calls * 1e6)
    return out


def _per_call_us(fns: list[Callable[[], int]], repeats: int) -> list[float]:
    """The minimum over interleaved rounds of ``_per_round_us``: a busy machine slows every contender
    alike and the minimum keeps the undisturbed time."""
    return [min(ts) for ts in _per_round_us(fns, repeats)]


def _noise_draw(x: torch.Tensor, sig: Sequence[float], steps: int) -> Callable[[], int]:
    """What a stochastic sampler's noise costs alone: one standard-normal draw of ``x``'s shape per noisy
    step (the same torch.randn k-diffusion and diffusers call; CPU: mt19937), counted as ``steps`` calls."""
    gen = torch.Generator().manual_seed(2)
    noisy_steps = sum(1 for s in sig[1:] if s > 0.0)

    def draw() -> int:
        for _ in range(noisy_steps):
            torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return steps
    return draw


def _counting_solver(name: str, x: torch.Tensor, d0: torch.Tensor, sig: Sequence[float]) -> Callable[[], int]:
    """Our solver ``name`` over a network that costs nothing (returns ``d0``); returns its call count."""
    calls = [0]

    def null(x: torch.Tensor, sigma: float) -> torch.Tensor:
        calls[0] += 1
        return d0

    def ours() -> int:
        calls[0] = 0
        sample(name, null, x, sig, options={}, generator=torch.Generator().manual_seed(0))
        return calls[0]
    return ours


def _counting_k_diffusion(kd: types.ModuleType, kname: str, kw: dict[str, Any], x: torch.Tensor, d0: torch.Tensor,
                          sig: Sequence[float]) -> Callable[[], int]:
    """k-diffusion's sampler ``kname`` over the same free network; returns its call count."""
    ksig = torch.tensor(sig, dtype=torch.float32)
    kcalls = [0]

    def null_k(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        kcalls[0] += 1
        return d0

    def theirs() -> int:
        kcalls[0] = 0
        extra = dict(kw)
        if "eta" in kw:
            extra["noise_sampler"] = kd.default_noise_sampler(x)
        getattr(kd, kname)(null_k, x, ksig, disable=True, **extra)
        return kcalls[0]
    return theirs


def _overhead_row(kd: types.ModuleType | None, name: str, x: torch.Tensor, d0: torch.Tensor, sig: Sequence[float],
                  steps: int, repeats: int) -> dict[str, Any]:
    """One solver's time per network call at ``x``'s batch; beside k-diffusion's same sampler (timed in
    the same interleaved rounds) when ``kd`` is given and has it."""
    ours = _counting_solver(name, x, d0, sig)
    row: dict[str, Any] = {"solver": name, "batch": x.shape[0]}
    if kd is None or name not in KDIFF_SAME:
        row["overhead_us"] = _per_call_us([ours], repeats)[0]
        return row
    kname, kw = KDIFF_SAME[name]
    theirs = _counting_k_diffusion(kd, kname, kw, x, d0, sig)
    if name in STOCHASTIC:
        # both draw the same standard-normal tensor per noisy step; timed alone, so the rest of each
        # sampler's overhead can be compared without it
        mine, kd_us, noise_us = _per_call_us([ours, theirs, _noise_draw(x, sig, steps)], repeats)
        row["noise_draw_us"] = noise_us
        row["ratio_vs_k_diffusion_excluding_noise"] = (mine - noise_us) / (kd_us - noise_us)
    else:
        mine, kd_us = _per_call_us([ours, theirs], repeats)
    row["overhead_us"], row["k_diffusion_overhead_us"] = mine, kd_us
    row["k_diffusion_sampler"] = kname
    row["ratio_vs_k_diffusion"] = row["overhead_us"] / row["k_diffusion_overhead_us"]
    return row


def overhead_rows(kd: types.ModuleType | None, path: Any, dim: int, batches: tuple[int, ...], steps: int,
                  repeats: int, *, diffusers_peer: bool = True) -> list[dict[str, Any]]:
    """Solver time per network call with a network that costs nothing (returns a stored tensor); beside
    k-diffusion's same sampler when ``kd`` is given, and diffusers' schedulers when ``diffusers_peer``."""
    rows = []
    for batch in batches:
        x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0)) * 80.0
        d0 = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
        for name in [n for n, info in catalog.SOLVERS.items() if not info.adaptive]:
            rows.append(_overhead_row(kd, name, x, d0, build_grid("karras", steps, path), steps, repeats))
        if diffusers_peer:
            rows += _diffusers_overhead(batch, dim, steps, repeats)
    return rows


def _diffusers_overhead(batch: int, dim: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    try:
        import diffusers
    except ImportError:
        return []
    diffusers.utils.logging.set_verbosity_error()
    rows = []
    base = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    x = torch.randn(batch, dim)
    eps0 = torch.randn(batch, dim)
    for cls_name, kwargs, ours in [("DPMSolverMultistepScheduler", {"solver_order": 2}, "dpmpp_2m"),
                                   ("UniPCMultistepScheduler", {"solver_order": 3}, "unipc"),
                                   ("EulerDiscreteScheduler", {}, "euler"), ("DDIMScheduler", {}, "ddim")]:
        sched = getattr(diffusers, cls_name)(**base, **kwargs)

        def theirs() -> int:
            sched.set_timesteps(steps)
            y = x
            for t in sched.timesteps:
                sched.scale_model_input(y, t)
                y = sched.step(eps0, t, y).prev_sample
            return len(sched.timesteps)

        rows.append({"solver": ours, "batch": batch, "peer": f"diffusers.{cls_name}",
                     "peer_overhead_us": _per_call_us([theirs], repeats)[0]})
    return rows


def _mlp(dim: int) -> tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor], int]:
    """A ~100k-parameter MLP network ``net(x_t, t, cond)`` (seed 0) and its parameter count."""
    torch.manual_seed(0)
    hidden = 300
    mlp = torch.nn.Sequential(torch.nn.Linear(dim + 1, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.SiLU(), torch.nn.Linear(hidden, dim))

    def net(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return mlp(torch.cat([x_t, t[:, None]], dim=1))
    return net, sum(p.numel() for p in mlp.parameters())


def mlp_overhead(path: Any, dim: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    """The whole fastdiff path (Denoiser conversions + solver) around a ~100k-parameter MLP at batch 256,
    as a fraction of the MLP's own forward time.

    The overhead is timed directly: the same Denoiser and solver with the MLP replaced by a function
    that returns a stored output of the MLP's shape, so nothing but fastdiff's own work is on the
    clock. ``total_minus_network_us`` is the cross-check by subtraction (real MLP inside the solver
    minus the MLP alone); it is the difference of two ~0.5 ms figures and on a busy CPU its noise is
    larger than the overhead itself, which is why it is not the headline."""
    net, params = _mlp(dim)
    batch = 256
    x = torch.randn(batch, dim) * 80.0
    t_in = torch.full((batch,), 0.5)
    names = [n for n, info in catalog.SOLVERS.items() if not info.adaptive]
    sig = build_grid("karras", steps, path)
    counter = NFECounter()
    with torch.inference_mode():
        stored = net(x, t_in, None)

        def null_net(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
            return stored

        def run(name: str, d: Denoiser) -> Callable[[], int]:
            gen = torch.Generator().manual_seed(0)  # the caller's, made once: not the solver's work

            def go() -> int:
                counter.reset()
                sample(name, d, x, sig, generator=gen)
                return int(counter.nfe)
            return go

        def network_only() -> int:
            for _ in range(steps):
                net(x, t_in, None)
            return steps

        # every solver, with the stored output and with the MLP, and the MLP alone, interleaved round by
        # round: a slow phase of a shared machine then slows all of them alike, and the minimum over rounds
        # keeps the undisturbed time
        fns = [network_only, _noise_draw(x, sig, steps)]
        for name in names:
            fns += [run(name, Denoiser(null_net, path, "eps", counter=counter)),
                    run(name, Denoiser(net, path, "eps", counter=counter))]
        rounds = _per_round_us(fns, repeats)
    return _mlp_rows(names, rounds, batch, params)


def _mlp_rows(names: list[str], rounds: list[list[float]], batch: int, params: int) -> list[dict[str, Any]]:
    """``mlp_overhead``'s rows from its interleaved rounds: the network alone, the noise draw, then each
    solver with the stored output and with the MLP.

    The fraction is taken round by round (overhead and network timed moments apart) and its median
    reported: this machine's speed drifts by 20% over tens of seconds, which a ratio of two minima
    taken at different moments would carry."""
    net_rounds, draw_rounds = rounds[0], rounds[1]
    per_call_net = statistics.median(net_rounds)
    rows = []
    for j, name in enumerate(names):
        own, full = rounds[2 + 2 * j], rounds[3 + 2 * j]
        fraction = statistics.median(o / n for o, n in zip(own, net_rounds))
        row = {"solver": name, "batch": batch, "mlp_params": params, "network_us": per_call_net,
               "overhead_us": statistics.median(own), "overhead_fraction": fraction,
               "total_us": statistics.median(full),
               "total_minus_network_us": statistics.median(f - n for f, n in zip(full, net_rounds))}
        if name in STOCHASTIC:  # the same torch.randn k-diffusion and diffusers call, per noisy step
            row["noise_draw_us"] = statistics.median(draw_rounds)
            row["noise_draw_fraction"] = statistics.median(d / n for d, n in zip(draw_rounds, net_rounds))
            row["overhead_excluding_noise_fraction"] = statistics.median(
                (o - d) / n for o, d, n in zip(own, draw_rounds, net_rounds))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Where the steps go: high noise decides the mode, low noise the precision
# ---------------------------------------------------------------------------------------------


def zone_study(setup: Setup, split: float, solver: str) -> list[dict[str, Any]]:
    """Refine only the high-noise part (sigma > split) or only the low-noise part of a grid and
    measure mode flips (which mode a sample lands in) and median error (precision within the mode)."""

    def grid(k_high: int, k_low: int) -> list[float]:
        hi = [math.exp(math.log(setup.sigma_max) + i / k_high * (math.log(split) - math.log(setup.sigma_max)))
              for i in range(k_high)]
        lo = [math.exp(math.log(split) + i / (k_low - 1) * (math.log(setup.sigma_min) - math.log(split)))
              for i in range(k_low)]
        return hi + lo + [0.0]

    rows = []
    for tag, kh, kl in (("base", 3, 3), ("+3 steps at high noise", 6, 3), ("+3 steps at low noise", 3, 6),
                        ("+3 high, +3 low", 6, 6)):
        sig = grid(kh, kl)
        d = CountingDenoiser(setup.mixture)
        out = sample(solver, d, setup.x_start, sig)
        rows.append({"zone": tag, "solver": solver, "split_sigma": split, "steps_high": kh, "steps_low": kl,
                     "nfe": d.calls, **measure(setup, out, sig[0])})
    return rows


def sde_convergence(setup: Setup, path: Any, nfes: Sequence[int], ref_steps: int, seed: int) -> list[dict[str, Any]]:
    """The stochastic samplers against the same sampler at ``ref_steps`` from the same noise and seed:
    with noise="brownian" (one Brownian motion per seed) the error falls as steps grow, with "iid" each
    grid samples another path of the SDE and it does not. The rare mode is scored against the truth."""
    m = setup.mixture
    rows = []
    for name in STOCHASTIC:
        for kind in NOISE_KINDS:
            def run(steps: int) -> torch.Tensor:
                return sample(name, CountingDenoiser(m), setup.x_start, build_grid("karras", steps, path),
                              options={"noise": kind}, generator=torch.Generator().manual_seed(seed))

            ref = run(ref_steps)
            for nfe in nfes:
                out = run(nfe)
                rare = int((m.assign(out) == m.rare).sum())
                lo, hi = wilson_interval(rare, out.shape[0])
                rows.append({"solver": name, "noise": kind, "nfe": nfe, "ref_steps": ref_steps,
                             "rmse_vs_fine": terminal_rmse(out, ref), "median_err_vs_fine": median_error(out, ref),
                             "rare_rate": rare / out.shape[0], "rare_lo": lo, "rare_hi": hi,
                             "rare_rate_truth": float(m.weights[m.rare])})
    return rows


# ---------------------------------------------------------------------------------------------
# Held-out random worlds: every peer configuration the issue names, on worlds nobody tuned on
# ---------------------------------------------------------------------------------------------

HELDOUT_NFES = (4, 6, 8, 10)


def peer_variant_configs() -> list[tuple[str, str, dict[str, Any]]]:
    """diffusers' few-step options beside ``diffusers_configs``: final_sigmas_type="sigma_min",
    lower_order_final, use_lu_lambdas, timestep_spacing, and SA-Solver (tau = 0: its ODE form, the one
    a PF-ODE reference judges)."""
    cfg = []
    for spacing in ("linspace", "leading", "trailing"):
        for order in (2, 3):
            for lof in (True, False):
                cfg.append(("DPMSolverMultistepScheduler", f"order={order},final=sigma_min,lof={lof},{spacing}",
                            {"solver_order": order, "algorithm_type": "dpmsolver++", "final_sigmas_type": "sigma_min",
                             "lower_order_final": lof, "timestep_spacing": spacing}))
            cfg.append(("UniPCMultistepScheduler", f"bh2,order={order},final=sigma_min,{spacing}",
                        {"solver_order": order, "solver_type": "bh2", "final_sigmas_type": "sigma_min",
                         "lower_order_final": True, "timestep_spacing": spacing}))
        cfg.append(("DPMSolverMultistepScheduler", f"order=2,lu_lambdas,final=sigma_min,{spacing}",
                    {"solver_order": 2, "algorithm_type": "dpmsolver++", "use_lu_lambdas": True,
                     "final_sigmas_type": "sigma_min", "timestep_spacing": spacing}))
        cfg.append(("DDIMScheduler", f"spacing={spacing},final_alpha_cumprod", {"timestep_spacing": spacing,
                                                                               "set_alpha_to_one": False}))
        for p in (2, 3):
            cfg.append(("SASolverScheduler", f"tau=0,predictor={p},corrector=2,{spacing}",
                        {"predictor_order": p, "corrector_order": 2, "tau_func": lambda t: 0,
                         "timestep_spacing": spacing}))
    return cfg


def run_k_diffusion_extra(kd: types.ModuleType, setup: Setup, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """k-diffusion's DPM-Solver-Fast (exactly n evaluations) and DPM-Solver-12/23 adaptive (the tolerance
    sets the NFE; a row counts for the smallest NFE target its evaluations fit in)."""
    m, rows = setup.mixture, []
    calls = [0]

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return m.denoise(x, sigma)

    for nfe in nfes:
        calls[0] = 0
        out = kd.sample_dpm_fast(model, setup.x_start.clone(), setup.sigma_min, setup.sigma_max, nfe, disable=True)
        rows.append({"impl": "k-diffusion", "solver": "dpm_fast", "grid": "own", "nfe_target": nfe, "steps": nfe,
                     "nfe": calls[0], **measure(setup, out, setup.sigma_max)})
    for order in (2, 3):
        for rtol in (0.5, 0.2, 0.1, 0.05):
            calls[0] = 0
            out = kd.sample_dpm_adaptive(model, setup.x_start.clone(), setup.sigma_min, setup.sigma_max, order=order,
                                         rtol=rtol, atol=rtol / 6, disable=True)
            fits = [v for v in nfes if calls[0] <= v]
            if fits:
                rows.append({"impl": "k-diffusion", "solver": f"dpm_adaptive(order={order},rtol={rtol})",
                             "grid": "adaptive", "nfe_target": fits[0], "steps": None, "nfe": calls[0],
                             **measure(setup, out, setup.sigma_max)})
    return rows


def heldout_fastdiff(setup: Setup, path: Any, nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Every deterministic fastdiff solver at exactly each NFE on the fixed and the shipped (tuned) grids,
    in its default setting, with final = sigma_min and with lower-order final steps."""
    rows = []
    for name, base in fastdiff_variants():
        info = catalog.SOLVERS[name]
        if info.stochastic:
            continue
        variants = [dict(base), {**base, "final": "sigma_min"}]
        if "lower_order_final" in info.options:
            variants.append({**base, "lower_order_final": not info.options["lower_order_final"].default})
        if name == "ipndm":
            variants.append({**base, "final": "denoise"})
        for opts in variants:
            for nfe in nfes:
                plan = info.plan_for_nfe(nfe, opts)
                if plan is None:
                    continue
                steps, planned = plan
                # a tuned grid is used with the last-step convention it was fitted for (grids.tuned_sigmas)
                grids = [(g, {}) for g in FIXED_GRIDS] + (
                    [("tuned", {"solver": name, "final": tuned_final(opts.get("final"))})] if name in catalog.TUNED_SOLVERS else [])
                for grid, gopts in grids:
                    try:
                        sig = build_grid(grid, steps, path, gopts)
                    except ValueError:  # no tuned grid for this step count or convention
                        continue
                    d = CountingDenoiser(setup.mixture)
                    out = sample(name, d, setup.x_start, sig, options=planned, generator=torch.Generator().manual_seed(1))
                    rows.append({"impl": "fastdiff", "solver": label(name, {**base, **opts}), "grid": grid,
                                 "nfe_target": nfe, "steps": steps, "nfe": d.calls, **measure(setup, out, sig[0])})
    return rows


def run_heldout(n_worlds: int, samples: int, nfes: tuple[int, ...], kd: types.ModuleType | None,
                with_diffusers: bool, log: Callable[[str], None], offset: int = 0) -> list[dict[str, Any]]:
    """All rows on ``n_worlds`` held-out random worlds (``worlds.random_mixtures.HELD_OUT`` seeds), from the
    ``offset``-th held-out seed on (a fresh draw: worlds 1..offset are the ones earlier runs have seen)."""
    path = get_path("vp_discrete")
    smin, smax = sigma_range(path)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small solves: intra-op threads only contend on a shared machine
    try:
        for seed in held_out_seeds(n_worlds, offset):
            rows += _heldout_world(seed, samples, nfes, kd, with_diffusers, path, smin, smax, log)
    finally:
        torch.set_num_threads(threads)
    return rows


def _heldout_world(seed: int, samples: int, nfes: tuple[int, ...], kd: types.ModuleType | None, with_diffusers: bool,
                   path: Any, smin: float, smax: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One held-out world: its reference, then every fastdiff setting and every installed peer on it."""
    m = random_world(seed)
    noise = torch.randn(samples, m.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    setup = Setup(m, smin, smax, noise * smax, noise, {}, {})
    t0 = time.perf_counter()
    setup.reference(smax)
    world_rows = heldout_fastdiff(setup, path, nfes)
    if kd is not None:
        world_rows += run_k_diffusion(kd, setup, nfes) + run_k_diffusion_extra(kd, setup, nfes)
    if with_diffusers:
        world_rows += run_diffusers(setup, nfes, diffusers_configs() + peer_variant_configs())
    for r in world_rows:
        r.update(section="held_out", world=m.name, world_seed=seed, world_dim=m.dim)
    log(f"  held-out world {seed} (dim {m.dim}, {m.components} modes): {time.perf_counter() - t0:.0f}s")
    return world_rows


def _finite_at(rows: list[dict[str, Any]], nfe: int) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("nfe_target") == nfe and "rmse" in r and math.isfinite(r["rmse"])]


def _ref_in(row: dict[str, Any]) -> int:
    """The reference's rows in the rare mode (the rows store its rate over ``n``)."""
    return round(row["rare_rate_ref"] * row["n"])


def world_rare_decision(world_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``rate_change.rare_mode_decision`` over one row per world (one setting, or each world's best one)."""
    return rare_mode_decision([r["rare_in"] for r in world_rows], [r["rare_out"] for r in world_rows],
                              [_ref_in(r) for r in world_rows], [r["n"] for r in world_rows])


def heldout_summary(rows: list[dict[str, Any]], nfes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Per NFE: over worlds, best fastdiff RMSE (fixed or shipped grids) / best peer RMSE (median and
    quartiles); the rare-mode decision (``rate_change``: PASS / FAIL / UNDECIDED on the relative change of
    the pooled rate, worlds as clusters) of each world's best fastdiff setting and of each world's best peer
    setting (both chosen by RMSE); beside it the old figure, the pooled paired difference and whether it
    lies within 2 SE (``paired_rate_difference``: a test of *no difference*, shown as information); and
    the tail-safe setting (``tail_safe``)."""
    out = []
    seeds = sorted({r["world_seed"] for r in rows})
    for nfe in nfes:
        here = _finite_at(rows, nfe)
        ratios, best, best_peers = [], [], []
        for seed in seeds:
            ours = [r for r in here if r["world_seed"] == seed and r["impl"] == "fastdiff"]
            peers = [r for r in here if r["world_seed"] == seed and r["impl"] != "fastdiff"]
            if not ours:
                continue
            best.append(min(ours, key=lambda r: r["rmse"]))
            if peers:
                best_peers.append(min(peers, key=lambda r: r["rmse"]))
                ratios.append(best[-1]["rmse"] / best_peers[-1]["rmse"])
        if not best:
            continue
        rare = paired_rate_difference(sum(r["rare_in"] for r in best), sum(r["rare_out"] for r in best),
                                      sum(r["n"] for r in best))
        item = {"nfe": nfe, "worlds": len(seeds), **{k: rare[k] for k in ("rare_diff", "rare_diff_se", "rare_within_2se")},
                "rare_decision": world_rare_decision(best)}
        if ratios:
            item.update(ratio_median=statistics.median(ratios), ratio_q1=quantile(ratios, 0.25),
                        ratio_q3=quantile(ratios, 0.75),
                        worlds_better=sum(v < 1 for v in ratios), worlds_compared=len(ratios))
        if len(best_peers) == len(best):
            item["peer_rare_decision"] = world_rare_decision(best_peers)
        item["tail_safe"] = tail_safe(rows, nfe)
        out.append(item)
    return out


def heldout_settings(rows: list[dict[str, Any]], nfe: int, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Every fastdiff setting ("solver / grid") with a finite row on every world of ``seeds`` (default: all)
    at ``nfe``: its RMSE over worlds -- the geometric mean of RMSE / the world's best fastdiff RMSE, and
    the median of RMSE / the world's best peer RMSE when every world has peers -- and its rare-mode rate
    pooled over the worlds against the reference: the decision (``rare_decision``, ``world_rare_decision``)
    and the paired difference with its 2-SE test of no difference (``paired_rate_difference``). Sorted by
    the geometric mean."""
    here = _finite_at(rows, nfe)
    seeds = sorted({r["world_seed"] for r in here}) if seeds is None else list(seeds)
    ours: dict[str, dict[int, dict[str, Any]]] = {}
    best_ours: dict[int, float] = {}
    best_peer: dict[int, float] = {}
    for r in here:
        s = r["world_seed"]
        if s not in seeds:
            continue
        if r["impl"] == "fastdiff":
            ours.setdefault(f"{r['solver']} / {r['grid']}", {})[s] = r
            best_ours[s] = min(best_ours.get(s, math.inf), r["rmse"])
        else:
            best_peer[s] = min(best_peer.get(s, math.inf), r["rmse"])
    out = []
    for setting, by_world in ours.items():
        if len(by_world) < len(seeds) or not seeds:
            continue
        world_rows = [by_world[s] for s in seeds]
        item = {"setting": setting, "nfe": nfe, "worlds": len(seeds),
                "rmse_vs_best": math.exp(statistics.fmean(math.log(r["rmse"] / best_ours[r["world_seed"]])
                                                          for r in world_rows)),
                **paired_rate_difference(sum(r["rare_in"] for r in world_rows), sum(r["rare_out"] for r in world_rows),
                              sum(r["n"] for r in world_rows)),
                "rare_decision": world_rare_decision(world_rows)}
        if all("rare_in_off_mode" in r for r in world_rows):
            item["rare_in_off_mode"] = sum(r["rare_in_off_mode"] for r in world_rows)
        if all(s in best_peer for s in seeds):
            item["ratio_median"] = statistics.median(r["rmse"] / best_peer[r["world_seed"]] for r in world_rows)
        out.append(item)
    return sorted(out, key=lambda r: r["rmse_vs_best"])


def tail_safe(rows: list[dict[str, Any]], nfe: int) -> dict[str, Any] | None:
    """The setting a user who cares about the rare mode should ship at ``nfe``, chosen on one half of the
    worlds and judged on the other: among the settings whose rare-mode decision PASSes on the first half
    (``heldout_settings``' ``rare_decision``), the one with the lowest RMSE there; then its RMSE and rare-mode
    figures on the second half, which played no part in the choice. None with fewer than four worlds (a
    half needs two for a decision) or when no setting passes on the first half."""
    seeds = sorted({r["world_seed"] for r in _finite_at(rows, nfe)})
    if len(seeds) < 4:
        return None
    choose, judge = seeds[: len(seeds) // 2], seeds[len(seeds) // 2:]
    passing = [r for r in heldout_settings(rows, nfe, choose) if r["rare_decision"]["outcome"] == "PASS"]
    if not passing:
        return None
    judged = {r["setting"]: r for r in heldout_settings(rows, nfe, judge)}.get(passing[0]["setting"])
    return {"setting": passing[0]["setting"], "chosen_on": choose, "judged_on": judge, "choice": passing[0],
            "judged": judged}


def heldout_wins(rows: list[dict[str, Any]], most: int = 8) -> list[tuple[str, int]]:
    """The fastdiff settings ("solver / grid") that were best on a (world, NFE), most wins first."""
    wins: dict[str, int] = {}
    for nfe in sorted({r["nfe_target"] for r in rows if r.get("nfe_target")}):
        for seed in sorted({r["world_seed"] for r in rows}):
            here = [r for r in rows if r["world_seed"] == seed and r.get("nfe_target") == nfe and r["impl"] == "fastdiff"
                    and math.isfinite(r.get("rmse", math.inf))]
            if here:
                b = min(here, key=lambda r: r["rmse"])
                key = f"{b['solver']} / {b['grid']}"
                wins[key] = wins.get(key, 0) + 1
    return sorted(wins.items(), key=lambda kv: -kv[1])[:most]


# ---------------------------------------------------------------------------------------------
# The whole bench: configuration in, rows out (``fastdiff_cli.bench_solvers`` parses and prints)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolversBench:
    """What one ``fastdiff bench solvers`` run measures. ``quick`` is the CI size: fewer samples and
    NFEs, no grid search, fewer timing repeats."""

    preset: str = "rare2d"
    samples: int | None = None  # noise samples (default 1000, quick 300)
    seed: int = 0
    quick: bool = False
    peers: bool = True  # diffusers and k-diffusion beside fastdiff (skipped, and said so, when not installed)
    worlds: int = 0  # held-out random worlds to measure first
    world_samples: int = 300
    world_offset: int = 0  # skip the first held-out seeds (a fresh draw of worlds no earlier run looked at)
    world_nfes: tuple[int, ...] = HELDOUT_NFES  # NFEs measured on the held-out worlds

    @property
    def n(self) -> int:
        return self.samples if self.samples is not None else (300 if self.quick else 1000)

    @property
    def nfes(self) -> tuple[int, ...]:
        return (4, 8, 20) if self.quick else NFES


@dataclass
class SolversReport:
    """Every measured row of one run, by section (the ``--json`` payload is ``to_dict()``)."""

    world: str
    dim: int
    rare_weight: float
    samples: int
    nfes: tuple[int, ...]
    sigma_min: float
    sigma_max: float
    summary: list[dict[str, Any]]  # best_per_nfe of ``rows``
    rows: list[dict[str, Any]]  # accuracy: every implementation x solver x grid x NFE
    overhead: list[dict[str, Any]]
    mlp_overhead: list[dict[str, Any]]
    zones: list[dict[str, Any]]
    sde_convergence: list[dict[str, Any]]
    peers_missing: list[str]
    held_out: list[dict[str, Any]]
    held_out_summary: list[dict[str, Any]]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world, "samples": self.samples, "nfes": list(self.nfes), "summary": self.summary,
                "rows": self.rows, "overhead": self.overhead, "mlp_overhead": self.mlp_overhead, "zones": self.zones,
                "sde_convergence": self.sde_convergence, "peers_missing": self.peers_missing,
                "held_out": self.held_out, "held_out_summary": self.held_out_summary, "wall_s": self.wall_s}


def best_per_nfe(rows: list[dict[str, Any]], nfes: Sequence[int]) -> list[dict[str, Any]]:
    """Per NFE: the best fastdiff setting, the best peer setting and their RMSE ratio, the best fixed
    (not searched) fastdiff grid, and the rare mode of the best setting with its Wilson interval."""
    ok = [r for r in rows if "rmse" in r and math.isfinite(r["rmse"])]
    summary = []
    for nfe in nfes:
        ours = [r for r in ok if r["impl"] == "fastdiff" and r.get("nfe_target") == nfe]
        peers = [r for r in ok if r["impl"] != "fastdiff" and r.get("nfe_target") == nfe]
        if not ours:
            continue
        b = min(ours, key=lambda r: r["rmse"])
        item = {"nfe": nfe, "fastdiff": f"{b['solver']} / {b['grid']}", "fastdiff_rmse": b["rmse"],
                "fastdiff_nfe": b["nfe"], "fastdiff_rare_rate": b["rare_rate"],
                "rare_rate_ref": b["rare_rate_ref"], "rare_lo": b["rare_lo"], "rare_hi": b["rare_hi"]}
        if peers:
            p = min(peers, key=lambda r: r["rmse"])
            item.update({"peer": f"{p['impl']} {p['solver']} / {p['grid']}", "peer_rmse": p["rmse"],
                         "peer_nfe": p["nfe"], "ratio": b["rmse"] / p["rmse"]})
        # the best *fixed* fastdiff grid (no search), for honesty about what the optimiser adds
        bf = min((r for r in ours if not r["grid"].startswith("optimised")), key=lambda r: r["rmse"])
        item.update({"fastdiff_fixed": f"{bf['solver']} / {bf['grid']}", "fastdiff_fixed_rmse": bf["rmse"]})
        summary.append(item)
    return summary


def _setups(bench: SolversBench, mixture: Mixture, smin: float, smax: float,
            log: Callable[[str], None]) -> tuple[Setup, Setup | None]:
    """The measured noise and (unless quick) the optimiser's training noise, their references solved."""

    def make_setup(seed: int) -> Setup:
        noise = torch.randn(bench.n, mixture.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
        return Setup(mixture, smin, smax, noise * smax, noise, {}, {})

    setup = make_setup(bench.seed)
    train = None if bench.quick else make_setup(bench.seed + 10_000)
    if train is not None:  # the optimiser trains on other noise (fewer samples: it runs the solver often)
        train.noise, train.x_start = train.noise[:200], train.x_start[:200]
    t0 = time.perf_counter()
    setup.reference(smax)
    if train is not None:
        train.reference(smax)
    log(f"reference: {time.perf_counter() - t0:.1f}s")
    return setup, train


def _accuracy_rows(bench: SolversBench, setup: Setup, train: Setup | None, path: Any, kd: types.ModuleType | None,
                   log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[str]]:
    """fastdiff's rows and every installed peer's on the same noise; and the peers that are missing."""
    rows = run_fastdiff(setup, path, bench.nfes, optimise=not bench.quick, train=train, log=log)
    missing = []
    if bench.peers:
        if kd is None:
            missing.append("k-diffusion not installed (pip install --no-deps k-diffusion torchsde torchdiffeq trampoline)")
        else:
            log("k-diffusion ...")
            rows += run_k_diffusion(kd, setup, bench.nfes)
        if importlib.util.find_spec("diffusers") is None:
            missing.append("diffusers not installed (pip install -e '.[peers]')")
        else:
            log("diffusers ...")
            rows += run_diffusers(setup, bench.nfes)
    for r in rows:
        r.setdefault("section", "accuracy")
        r["world"] = setup.mixture.name
    return rows, missing


def run_bench(bench: SolversBench, log: Callable[[str], None] = lambda s: None) -> SolversReport:
    """Every section of ``fastdiff bench solvers``; ``log`` receives progress lines."""
    t_start = time.perf_counter()
    path = get_path("vp_discrete")
    smin, smax = sigma_range(path)
    mixture = get_mixture(bench.preset)
    log(f"world {mixture.name} (dim {mixture.dim}, rare weight {float(mixture.weights[mixture.rare]):.2f}) on "
        f"vp_discrete, sigma in [{smin:.4f}, {smax:.1f}], {bench.n} samples; solving the reference ODE ...")
    setup, train = _setups(bench, mixture, smin, smax, log)
    kd = load_k_diffusion_sampling() if bench.peers else None
    held_rows: list[dict[str, Any]] = []
    if bench.worlds:
        log(f"{bench.worlds} held-out random worlds ...")
        with_diffusers = bench.peers and importlib.util.find_spec("diffusers") is not None
        held_rows = run_heldout(bench.worlds, bench.world_samples, bench.world_nfes, kd, with_diffusers, log,
                                bench.world_offset)
    rows, missing = _accuracy_rows(bench, setup, train, path, kd, log)
    log("overhead ...")
    over = overhead_rows(kd, path, mixture.dim, (1, 1024), steps=20, repeats=5 if bench.quick else 15,
                         diffusers_peer=bench.peers)
    mlp = mlp_overhead(path, mixture.dim, steps=20, repeats=5 if bench.quick else 40)
    zones = zone_study(setup, split=1.0, solver="dpmpp_2m")
    log("stochastic samplers, brownian vs iid noise ...")
    sde = sde_convergence(setup, path, (8, 20) if bench.quick else (10, 20, 50, 100), 100 if bench.quick else 500,
                          bench.seed)
    for section, part in (("overhead", over), ("mlp_overhead", mlp), ("zones", zones), ("sde_convergence", sde)):
        for r in part:
            r["section"] = section
    over_by = {(r["solver"], r["batch"]): r for r in over if "overhead_us" in r}
    for r in rows:
        for b in (1, 1024):
            if r["impl"] == "fastdiff" and (r["solver"].split("(")[0], b) in over_by:
                r[f"overhead_us_batch{b}"] = over_by[(r["solver"].split("(")[0], b)]["overhead_us"]
    compare = tuple(v for v in COMPARE_NFES if v in bench.nfes)
    return SolversReport(mixture.name, mixture.dim, float(mixture.weights[mixture.rare]), bench.n, bench.nfes, smin,
                         smax, best_per_nfe(rows, compare), rows, over, mlp, zones, sde, missing, held_rows,
                         heldout_summary(held_rows, bench.world_nfes) if held_rows else [],
                         time.perf_counter() - t_start)
