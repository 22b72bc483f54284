"""What exists, torch-free: names, option schemas, NFE rules and papers of every solver and grid.

The dashboard, the CLI and RunSpec validation read this module without importing torch; the
implementations (``fastdiff_core.solvers``, ``fastdiff_core.grids``) attach their functions to these
same names, and a test checks the two agree entry for entry.

NFE rules are per sample and per frame, before guidance (C) and fan-out (H, P·R): the budget module
multiplies them out. ``nfe(steps, options)`` is exact for fixed-grid solvers; adaptive solvers
declare ``None`` and report what they used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from fastdiff_core.regimes import REGIMES, RegimeInfo  # noqa: F401 (re-exported: the form reads them here)
from fastdiff_core.registry import Entry, Option
from fastdiff_core.worlds import WORLD_INFOS, WorldInfo, world_plugin

NFERule = Callable[[int, Mapping[str, Any]], "int | None"]


@dataclass(frozen=True)
class Method:
    """What a solver, a student and a speed-up each declare first: the name RunSpec, the command line and
    the pages speak, a title, and the paper the method comes from."""

    name: str
    title: str
    paper: str


@dataclass(frozen=True)
class SolverInfo(Method):
    """A solver's declared facts. ``order`` is the global convergence order on a smooth ODE."""

    order: int
    nfe: NFERule
    options: Mapping[str, Option] = field(default_factory=dict)
    stochastic: bool = False
    adaptive: bool = False
    min_steps: int = 1

    def steps_for_nfe(self, nfe: int, options: Mapping[str, Any] | None = None) -> int | None:
        """Largest step count whose declared NFE does not exceed ``nfe`` (None if even the smallest valid
        step count does). Step counts the options do not allow (rule returns None) are passed over."""
        opts = dict(options or {})
        best = None
        for steps in range(self.min_steps, max(nfe, 1) + 3):
            n = self.nfe(steps, opts)
            if n is None:
                if self.adaptive:
                    return None
                continue
            if n > nfe:
                break
            best = steps
        return best

    def plan_for_nfe(self, nfe: int, options: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]] | None:
        """(steps, options) whose declared NFE is exactly ``nfe``: the most steps that spend the budget
        without a wasted evaluation. Two-stage solvers may set ``single_stage_steps`` (1 or 2, unless the
        caller fixed it) to make the parity fit. None when no step count of these options hits ``nfe``
        exactly; ``steps_for_nfe`` and ``nfe`` then say what the solver will really use."""
        opts = dict(options or {})
        tries = [opts]
        if "single_stage_steps" in self.options and "single_stage_steps" not in opts:
            tries = [{**opts, "single_stage_steps": k} for k in self.options["single_stage_steps"].choices]
        for steps in range(max(nfe, 1) + 2, self.min_steps - 1, -1):
            for o in tries:
                if self.nfe(steps, o) == nfe:
                    return steps, o
        return None


@dataclass(frozen=True)
class GridInfo(Entry):
    """A time/sigma grid builder's declared facts: name, title, doc and options (``registry.Entry``)."""


_ETA = Option(float, 0.0, "stochasticity: 0 = deterministic ODE step, 1 = ancestral (DDPM-like)", min=0.0, max=1.0)
# The last step, the same choice for every solver (implemented once in solvers.primitives.finish):
#   solver:    the solver's own update into sigma = 0 from the grid's last nonzero sigma (every solver but
#              iPNDM returns D(x, sigma_last) there; iPNDM takes its Adams-Bashforth step in sigma);
#   denoise:   the solver runs down to the grid's last nonzero sigma and the output is D there (for
#              two-stage solvers the step into it is single-stage: no second evaluation at one sigma);
#   sigma_min: the grid's last nonzero sigma (sigma_min, see the grids' ``last_sigma``) is reached by the
#              solver's own step from the one before it with no evaluation there, and the state at
#              sigma_min is the output (diffusers' final_sigmas_type="sigma_min"): one evaluation fewer.
FINALS = ("solver", "denoise", "sigma_min")
_FINAL = Option(str, "solver", "the last step: solver = the solver's own step into 0; denoise = D at the last "
                "nonzero sigma; sigma_min = the solver's step to the last nonzero sigma with no evaluation there, "
                "whose state is the output (one evaluation fewer)", choices=FINALS)
# Default on, chosen by measurement across random worlds at NFE 4-10 (`fastdiff fit grids`, docs/lownfe.md).
_LOWER_ORDER_FINAL = Option(bool, True, "on grids of < 15 steps the last steps ending above 0 ramp down to first "
                            "order (k-th last: order <= k; diffusers' lower_order_final)")
_SINGLE_STAGE = Option(int, 1, "how many of the grid's last steps are single-stage (the last one always is: no "
                       "evaluation at its end); 2 flips the NFE parity, so any budget is spent exactly",
                       choices=(1, 2))


def _one_per_step(n: int, o: Mapping[str, Any]) -> int | None:
    """n steps, one evaluation each; final = sigma_min skips the evaluation at sigma_min."""
    if o.get("final", "solver") == "sigma_min":
        return n - 1 if n >= 2 else None
    return n


def _two_stage(n: int, o: Mapping[str, Any]) -> int | None:
    """Two evaluations per step but the last k = single_stage_steps of the steps the solver itself runs
    (all n for final = solver, the n - 1 down to the last nonzero sigma otherwise), plus D for denoise."""
    final, k = o.get("final", "solver"), o.get("single_stage_steps", 1)
    m = n if final == "solver" else n - 1
    if m < (1 if final == "sigma_min" else 0):
        return None
    return 2 * m - min(k, m) + (1 if final == "denoise" else 0)


_S_NOISE = Option(float, 1.0, "scale of the fresh noise in stochastic steps", min=0.0, max=2.0)
_NOISE = Option(str, "iid", "iid: a fresh draw per step; brownian: increments of one Brownian motion per seed, so "
                "more steps converge to one SDE solution (~10 extra draws per step)", choices=("iid", "brownian"))

SOLVERS: dict[str, SolverInfo] = {
    s.name: s
    for s in [
        SolverInfo("euler", "Euler (probability-flow ODE)", "Karras et al. 2022, EDM (Alg. 1 without 2nd order)", 1,
                   _one_per_step, options={"final": _FINAL}),
        SolverInfo("heun", "Heun (2nd order; the last step is an Euler step)", "Karras et al. 2022, EDM Alg. 1", 2,
                   _two_stage, options={"final": _FINAL, "single_stage_steps": _SINGLE_STAGE}),
        SolverInfo("ddim", "DDIM", "Song, Meng & Ermon 2021, DDIM", 1, _one_per_step,
                   options={"eta": _ETA, "noise": _NOISE, "final": _FINAL}, stochastic=True),
        SolverInfo("ddpm", "DDPM ancestral sampling", "Ho, Jain & Abbeel 2020, DDPM", 1, _one_per_step,
                   options={"variance": Option(str, "posterior", "posterior (= DDIM eta=1) or beta (more noise)",
                                               choices=("posterior", "beta")), "noise": _NOISE,
                            "final": _FINAL},
                   stochastic=True),
        SolverInfo("dpmpp_2m", "DPM-Solver++(2M)", "Lu et al. 2022, DPM-Solver++ (Alg. 2)", 2, _one_per_step,
                   options={"final": _FINAL, "lower_order_final": _LOWER_ORDER_FINAL}),
        SolverInfo("dpmpp_3m", "DPM-Solver++(3M)", "Lu et al. 2022, DPM-Solver++ (3rd-order multistep)", 3,
                   _one_per_step, options={"final": _FINAL, "lower_order_final": _LOWER_ORDER_FINAL}),
        SolverInfo("dpmpp_2m_sde", "DPM-Solver++(2M) SDE", "Lu et al. 2022, DPM-Solver++ (SDE variant)", 2,
                   _one_per_step, options={"eta": Option(float, 1.0, "SDE noise level", min=0.0, max=1.0),
                                           "s_noise": _S_NOISE, "noise": _NOISE, "final": _FINAL,
                                           "lower_order_final": _LOWER_ORDER_FINAL}, stochastic=True),
        SolverInfo("dpmpp_2s", "DPM-Solver++(2S) single-step", "Lu et al. 2022, DPM-Solver++ (Alg. 1)", 2,
                   _two_stage, options={"final": _FINAL, "single_stage_steps": _SINGLE_STAGE}),
        SolverInfo("unipc", "UniPC (predictor + UniC corrector)", "Zhao et al. 2023, UniPC", 3, _one_per_step,
                   options={
                       "variant": Option(str, "bh2", "B(h) choice", choices=("bh1", "bh2")),
                       "order": Option(int, 3, "predictor order", choices=(1, 2, 3)),
                       "corrector": Option(bool, True, "apply UniC after each step (no extra NFE)"),
                       "final": _FINAL, "lower_order_final": _LOWER_ORDER_FINAL,
                   }),
        SolverInfo("ipndm", "iPNDM (fixed Adams-Bashforth weights: 4th order on uniform-sigma grids only)",
                   "Zhang & Chen 2023, DEIS (iPNDM)", 4,
                   _one_per_step,
                   options={"max_order": Option(int, 4, "highest Adams-Bashforth order", choices=(1, 2, 3, 4)),
                            "final": _FINAL, "lower_order_final": _LOWER_ORDER_FINAL}),
        SolverInfo("adaptive", "Adaptive RK (error-controlled)", "Bogacki & Shampine 1989; Jolicoeur-Martineau 2021",
                   3, lambda n, o: None,
                   options={"rtol": Option(float, 1e-3, "relative tolerance", min=1e-10, max=1.0),
                            "atol": Option(float, 1e-4, "absolute tolerance", min=1e-12, max=1.0),
                            "max_nfe": Option(int, 2000, "hard cap on evaluations", min=3, max=100000)},
                   adaptive=True),
        SolverInfo("dpm_adaptive", "Adaptive DPM-Solver++ (DDIM / 2S embedded pair, error-controlled)",
                   "Lu et al. 2022, DPM-Solver (sec. 4.4, DPM-Solver-12) in DPM-Solver++ data prediction",
                   2, lambda n, o: None,
                   options={"rtol": Option(float, 1e-3, "relative tolerance", min=1e-10, max=1.0),
                            "atol": Option(float, 1e-4, "absolute tolerance", min=1e-12, max=1.0),
                            "max_nfe": Option(int, 2000, "hard cap on evaluations", min=3, max=100000)},
                   adaptive=True),
    ]
}

_SIGMA_MIN = Option(float, None, "smallest nonzero sigma (default: the path's)", min=0.0, min_inclusive=False,
                    nullable=True)
_SIGMA_MAX = Option(float, None, "largest sigma (default: the path's)", min=0.0, min_inclusive=False, nullable=True)

FIXED_GRIDS = ("karras", "uniform_logsnr", "uniform_t", "quadratic")  # built from a formula, no fit
TUNED_STEPS = range(3, 11)  # the step counts `fastdiff fit grids` ships tuned grids for
TUNED_SOLVERS = ("dpmpp_2m", "unipc", "ipndm")  # the solvers it ships them for (the first: for any other solver)

GRIDS: dict[str, GridInfo] = {
    g.name: g
    for g in [
        GridInfo("karras", "Karras (rho)", "sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho; EDM",
                 {"rho": Option(float, 7.0, "warping exponent", min=0.0, min_inclusive=False, max=100.0),
                  "sigma_min": _SIGMA_MIN, "sigma_max": _SIGMA_MAX}),
        GridInfo("uniform_t", "Uniform in path time t", "DDIM's uniform timesteps",
                 {"sigma_min": _SIGMA_MIN, "sigma_max": _SIGMA_MAX}),
        GridInfo("uniform_logsnr", "Uniform in logSNR", "DPM-Solver's time-uniform-in-lambda grid",
                 {"sigma_min": _SIGMA_MIN, "sigma_max": _SIGMA_MAX}),
        GridInfo("quadratic", "Quadratic in t", "DDIM's quadratic timesteps: t_i ~ (i/n)^2",
                 {"sigma_min": _SIGMA_MIN, "sigma_max": _SIGMA_MAX}),
        GridInfo("custom", "User-supplied sigmas", "strictly decreasing positive sigmas; 0 is appended",
                 {"sigmas": Option(list, None, "strictly decreasing positive sigmas", nullable=False)}),
        GridInfo("tuned", "Tuned across random worlds (shipped, steps 3-10)",
                 "log-sigma fractions per solver and step count, fitted by `fastdiff fit grids` on random mixture "
                 "worlds and validated on held-out ones; mapped onto the path's sigma range",
                 {"solver": Option(str, None, "the solver the grid was fitted for; null (default): the run's own "
                                   "when it has tuned grids (dpmpp_2m, unipc, ipndm), else dpmpp_2m",
                                   choices=TUNED_SOLVERS, nullable=True),
                  "final": Option(str, None, "the last-step convention (solver_options.final) the grid was "
                                  "fitted for; null (default): the run's own (sigma_min with "
                                  "solver_options.final=sigma_min, else solver)", choices=("solver", "sigma_min"),
                                  nullable=True),
                  "sigma_min": _SIGMA_MIN, "sigma_max": _SIGMA_MAX}),
    ]
}


def solver_info(name: str) -> SolverInfo:
    if name not in SOLVERS:
        raise ValueError(f"solver={name!r} is not one of {sorted(SOLVERS)}")
    return SOLVERS[name]


def grid_info(name: str) -> GridInfo:
    if name not in GRIDS:
        raise ValueError(f"grid={name!r} is not one of {sorted(GRIDS)}")
    return GRIDS[name]


# Worlds are plugins (``fastdiff_core.worlds``): each declares its facts and capabilities once; this is
# the live name -> WorldInfo view of every registered world, built-in or from an entry point.
WORLDS = WORLD_INFOS


@dataclass(frozen=True)
class StudentInfo(Method):
    """A distilled student: its own step count and guidance passes."""

    steps: tuple[int, ...]
    guidance_passes: int = 1
    fixed_steps: bool = True  # False: any step count works, ``steps`` lists the measured ones
    guidance_input: bool = False  # the guidance scale is a network input (guidance distillation)
    doc: str = ""


STUDENTS: dict[str, StudentInfo] = {
    s.name: s
    for s in [
        StudentInfo("guidance", "Guidance-distilled (w as input, one pass per step)",
                    "Meng et al. 2023, On Distillation of Guided Diffusion Models", (16,), 1, fixed_steps=False,
                    guidance_input=True, doc="CFG baked in for w in [1, 6]: C 2 -> 1 with any solver and step count"),
        StudentInfo("progressive", "Progressive distillation 8 -> 4 -> 2 -> 1",
                    "Salimans & Ho 2022, Progressive Distillation for Fast Sampling", (8, 4, 2, 1), 1,
                    doc="each halving learns two DDIM steps of the previous student in one"),
        StudentInfo("consistency", "Consistency distillation (1-4 steps)",
                    "Song et al. 2023, Consistency Models", (1, 2, 4), 1,
                    doc="one jump from noise to data; multistep re-noises and jumps again"),
        StudentInfo("dmd", "Distribution matching (DMD, one step)",
                    "Yin et al. 2024, One-step Diffusion with Distribution Matching Distillation", (1,), 1,
                    doc="reverse-KL score-difference gradient with a fake-score critic: mode-seeking"),
        StudentInfo("rcm", "Consistency + DMD regulariser (rCM-style hybrid)",
                    "Zheng et al. 2025, Large Scale Diffusion Distillation via Score-Regularized "
                    "Continuous-Time Consistency", (1, 2, 4), 1,
                    doc="mode-covering consistency objective plus a mode-seeking DMD term"),
        StudentInfo("reflow", "Rectified-flow reflow (one round, Euler)",
                    "Liu, Gong & Liu 2022, Flow Straight and Fast", (1, 2, 4, 8), 1, fixed_steps=False,
                    doc="flow matching on teacher ODE couplings; straighter paths, few Euler steps"),
        StudentInfo("shortcut", "Shortcut model (step size as input)",
                    "Frans et al. 2024, One Step Diffusion via Shortcut Models", (1, 2, 4, 8), 1,
                    doc="one network for every step count by self-consistency of step sizes"),
    ]
}


def world_info(name: str) -> WorldInfo:
    return world_plugin(name).info


# ---------------------------------------------------------------------------------------------
# Speed-ups: each a RunSpec toggle with its option schema (implemented in fastdiff_core.speedups)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeedupInfo(Method):
    """A systems speed-up: its modes (the first is 'off'), paper and option schema."""

    modes: tuple[str, ...]
    options: Mapping[str, Option] = field(default_factory=dict)


# Solvers Picard iteration can run: deterministic, one evaluation per step (DDIM with eta = 0 only).
PICARD_SOLVERS = ("ddim", "dpmpp_2m", "euler")

SPEEDUPS: dict[str, SpeedupInfo] = {
    s.name: s
    for s in [
        SpeedupInfo("feature_cache", "Feature caching of deep-block outputs across adjacent steps",
                    "Ma et al. 2024, DeepCache; Selvaraju et al. 2024, FORA; SoftCap (drift observer + PI control)",
                    ("off", "fixed", "controlled"),
                    {"interval": Option(int, 2, "fixed: refresh the deep blocks every n-th step", min=1, max=50),
                     "budget": Option(float, 0.5, "controlled: target share of steps that run the deep blocks",
                                      min=0.0, min_inclusive=False, max=1.0),
                     "from_block": Option(int, 1, "blocks before this one always run; the rest are cached",
                                          min=0, max=64),
                     "kp": Option(float, 1.0, "controlled: proportional gain on log(threshold)", min=0.0, max=10.0),
                     "ki": Option(float, 0.3, "controlled: integral gain on log(threshold)", min=0.0, max=10.0),
                     "threshold": Option(float, 0.1, "controlled: initial threshold on accumulated drift",
                                         min=0.0, min_inclusive=False, max=100.0)}),
        SpeedupInfo("parallel", "Parallel sampling by Picard iteration over a sliding window",
                    "Shih et al. 2023, ParaDiGMS", ("off", "picard"),
                    {"window": Option(int, 8, "steps evaluated per batched round", min=1, max=1000),
                     "tol": Option(float, 1e-2, "accept a state when its change is below tol x sigma", min=0.0,
                                   max=10.0)}),
        SpeedupInfo("precision", "Reduced-precision network", "bf16 weights/activations; dynamic int8 Linear (CPU)",
                    ("float32", "bfloat16", "int8")),
        SpeedupInfo("importance", "Importance sampling of the tail over planning futures",
                    "Owen 2013 ch. 9 (self-normalised IS); Hesterberg 1995 (defensive mixtures)", ("off", "tail"),
                    {"beta": Option(float, 0.5, "share of rollouts with one frame's noise shifted towards the tail",
                                    min=0.0, max=0.95)}),
    ]
}
