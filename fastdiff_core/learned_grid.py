"""A learned few-step discretisation for one model and one NFE, fitted on the model's own samples.

In the spirit of LD3 (Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs") and bespoke
solvers (Shaul et al. 2023): a handful of parameters -- where each of the few network evaluations
happens (the log-sigma fractions of the grid, the last evaluated sigma included) and what the last
step does (``solver_options.final``) -- fitted so that the few-step solver lands where the model's own
high-NFE sampling (the *teacher*: by default DPM-Solver++(3M), 50 steps, Karras) lands from the same
noise. No ground truth is needed; the teacher's convergence is checked and reported (its samples at
half its steps against its samples at its steps).

LD3 fits the parameters by backpropagation through the solver with a slack ball around the teacher's
output; here the parameters are few (NFE + 1 numbers and one choice), so a derivative-free coordinate
search on the paired RMSE is enough and fits in seconds to minutes on a CPU. Generalisation is checked
on held-out noise the fit never saw (``held_out_loss``) against the best shipped grid chosen the same
way (on the training noise), so the comparison uses no information the learned grid did not have.

The result is a RunSpec fragment (``grid="custom"`` with the sigmas, and the solver options), usable by
``fastdiff run``, the client API and the dashboard like any other setting.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch

from fastdiff_core import catalog
from fastdiff_core.grid_search import coordinate_search, fractions_to_sigmas, sigmas_to_fractions
from fastdiff_core.grids import FIXED_GRIDS, build_grid, tuned_final
from fastdiff_core.metrics.solver_error import paired_rate_difference, terminal_rmse
from fastdiff_core.paths import NoisePath, sigma_range
from fastdiff_core.solvers import sample
from fastdiff_core.solvers.primitives import X0Denoiser

TEACHER = ("dpmpp_3m", 50, "karras")
CONVERGED_RATIO = 0.1  # the teacher's half-steps RMSE against the fitted loss (TeacherCheck)


@dataclass(frozen=True)
class TeacherCheck:
    """The reference the fit targets: which sampler, and how far its samples move (RMSE) when its steps
    halve. It is called converged when that is under a tenth of the fitted few-step loss: the target is
    then at least ten times closer to the model's ODE solution than what is being fitted to it."""

    solver: str
    steps: int
    grid: str
    half_steps_rmse: float
    converged: bool | None = None


@dataclass(frozen=True)
class LearnedDiscretisation:
    """A fitted grid + last step for ``solver`` at exactly ``nfe`` evaluations on one model."""

    solver: str
    nfe: int
    steps: int
    solver_options: dict[str, Any]
    fractions: list[float]
    sigma_min: float
    sigma_max: float
    train_loss: float
    held_out_loss: float
    start: str
    start_train_loss: float
    start_held_out_loss: float
    evaluations: int
    fit_seconds: float
    teacher: TeacherCheck
    start_sigmas: list[float] = field(default_factory=list)
    start_options: dict[str, Any] = field(default_factory=dict)
    tried: list[dict[str, Any]] = field(default_factory=list)
    accepted: bool = True  # False: the fit failed the rare-mode check and this is the shipped setting
    rare_check: dict[str, Any] = field(default_factory=dict)

    def sigmas(self) -> list[float]:
        return fractions_to_sigmas(self.fractions, self.sigma_min, self.sigma_max)

    def spec_fields(self) -> dict[str, Any]:
        """What to put in a RunSpec to sample with it."""
        return {"solver": self.solver, "steps": self.steps, "grid": "custom",
                "grid_options": {"sigmas": self.sigmas()}, "solver_options": dict(self.solver_options)}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sigmas": self.sigmas(), "spec_fields": self.spec_fields()}


def teacher_samples(denoiser: X0Denoiser, x: torch.Tensor, path: NoisePath,
                    teacher: tuple[str, int, str] = TEACHER) -> tuple[torch.Tensor, TeacherCheck]:
    """The teacher's samples from ``x`` (noise scaled to the path's sigma_max), and its convergence check."""
    solver, steps, grid = teacher
    out = sample(solver, denoiser, x, build_grid(grid, steps, path), generator=torch.Generator().manual_seed(0))
    half = sample(solver, denoiser, x, build_grid(grid, max(steps // 2, 1), path),
                  generator=torch.Generator().manual_seed(0))
    return out, TeacherCheck(solver, steps, grid, terminal_rmse(half, out))


def _loss(solver: str, options: Mapping[str, Any], sigmas: Sequence[float], denoiser: X0Denoiser,
          x: torch.Tensor, target: torch.Tensor) -> float:
    try:
        out = sample(solver, denoiser, x, sigmas, options=dict(options), generator=torch.Generator().manual_seed(0))
    except ValueError:  # a trial whose neighbouring sigmas coincide in floating point is not a grid
        return math.inf
    value = terminal_rmse(out, target)
    return value if math.isfinite(value) else math.inf


def start_grids(solver: str, steps: int, path: NoisePath, final: str = "solver") -> dict[str, list[float]]:
    """Every shipped grid of ``steps`` steps on ``path``: the fixed ones and the solver's tuned one for the
    last-step convention ``final`` (the grid fitted for final = sigma_min when it is that, else for final =
    solver, whose last sigma is the last evaluation as with "denoise")."""
    grids = {g: build_grid(g, steps, path) for g in FIXED_GRIDS}
    try:
        grids["tuned"] = build_grid("tuned", steps, path, {"solver": solver, "final": tuned_final(final)})
    except ValueError:
        pass  # no tuned grid for this solver or step count
    return grids


def fit_discretisation(solver: str, denoiser: X0Denoiser, path: NoisePath, nfe: int, x_train: torch.Tensor,
                       x_held_out: torch.Tensor, *, options: Mapping[str, Any] | None = None,
                       finals: Sequence[str] | None = None, budget: int = 120,
                       teacher: tuple[str, int, str] = TEACHER,
                       rare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LearnedDiscretisation:
    """Fit where ``solver``'s ``nfe`` evaluations happen and how its last step ends, on the teacher's
    samples from ``x_train``; report the loss on ``x_held_out`` too. ``budget`` solver runs per last-step
    convention tried (each run samples the training batch once).

    ``rare`` (samples -> (B,) bool: in the rare mode / the tail) adds an acceptance check on the
    held-out batch (``rare_check``): the fit is kept only if its rare rate lies within 2 SE of the
    teacher's on the same noise (``paired_rate_difference``) or strays less than the best shipped
    setting's does; otherwise the shipped setting is returned, with ``accepted=False``. An RMSE fit can
    buy its loss by moving samples out of (or into) a mode of 1-2% weight, which RMSE barely sees."""
    info, finals = _checked(solver, nfe, budget, finals)
    t0 = time.perf_counter()
    target_train, check = teacher_samples(denoiser, x_train, path, teacher)
    target_held, _ = teacher_samples(denoiser, x_held_out, path, teacher)
    smin, smax = sigma_range(path)
    best, shipped, tried = _search(info, solver, nfe, finals, dict(options or {}), denoiser, path, x_train,
                                   target_train, budget, check)
    held = _loss(solver, best.solver_options, best.sigmas(), denoiser, x_held_out, target_held)
    s_loss, s_name, s_grid, s_opts = shipped
    s_held = _loss(solver, s_opts, s_grid, denoiser, x_held_out, target_held)
    check = TeacherCheck(check.solver, check.steps, check.grid, check.half_steps_rmse,
                         bool(check.half_steps_rmse <= CONVERGED_RATIO * best.train_loss))
    fit = LearnedDiscretisation(
        best.solver, nfe, best.steps, best.solver_options, best.fractions, smin, smax, best.train_loss, held,
        f"{s_name} (final={s_opts.get('final')})", s_loss, s_held, sum(t.get("evaluations", 0) for t in tried),
        time.perf_counter() - t0, check, list(s_grid), dict(s_opts), tried)
    if rare is None:
        return fit
    rare_check = _rare_check(rare, fit, denoiser, x_held_out, target_held)
    if rare_check["accepted"]:
        return replace(fit, rare_check=rare_check, fit_seconds=time.perf_counter() - t0)
    # the shipped setting, in the learned result's form (its grid as fractions, its own loss)
    return replace(fit, steps=len(s_grid) - 1, solver_options=dict(s_opts),
                   fractions=sigmas_to_fractions(s_grid, smin, smax), train_loss=s_loss, held_out_loss=s_held,
                   accepted=False, rare_check=rare_check, fit_seconds=time.perf_counter() - t0)


def _checked(solver: str, nfe: int, budget: int, finals: Sequence[str] | None) -> tuple[Any, list[str]]:
    """``solver``'s catalog entry and the last-step conventions to try, or ValueError naming the field."""
    info = catalog.solver_info(solver)
    if info.nfe(2, {}) is None:
        raise ValueError(f"solver={solver!r} has no fixed evaluation count; a learned grid needs one")
    if not isinstance(nfe, int) or isinstance(nfe, bool) or not 1 <= nfe <= 50:
        raise ValueError(f"nfe={nfe!r} must be an integer in [1, 50]")
    if budget < 1:
        raise ValueError(f"budget={budget!r} must be >= 1")
    allowed = list(catalog.SOLVERS[solver].options["final"].choices)
    for f in finals or ():
        if f not in allowed:
            raise ValueError(f"final={f!r} is not one of {allowed}")
    return info, list(finals or allowed)


def _search(info: Any, solver: str, nfe: int, finals: list[str], base: dict[str, Any], denoiser: X0Denoiser,
            path: NoisePath, x_train: torch.Tensor, target_train: torch.Tensor, budget: int, check: TeacherCheck
            ) -> tuple[LearnedDiscretisation, tuple[float, str, list[float], dict[str, Any]], list[dict[str, Any]]]:
    """For each last-step convention: the best shipped grid at this NFE as the start, then a coordinate
    search of its log-sigma fractions on the training batch. Returns the best fit (held-out loss not yet
    measured), the best shipped setting (chosen on the training batch as the fit is) and what was tried."""
    smin, smax = sigma_range(path)
    best: LearnedDiscretisation | None = None
    tried: list[dict[str, Any]] = []
    shipped: tuple[float, str, list[float], dict[str, Any]] | None = None
    for final in finals:
        plan = info.plan_for_nfe(nfe, {**base, "final": final})
        if plan is None:
            tried.append({"final": final, "skipped": f"no step count gives exactly {nfe} evaluations"})
            continue
        steps, opts = plan
        starts = {name: (_loss(solver, opts, g, denoiser, x_train, target_train), g)
                  for name, g in start_grids(solver, steps, path, final).items()}
        start_name = min(starts, key=lambda k: starts[k][0])
        start_loss, start_grid = starts[start_name]
        if shipped is None or start_loss < shipped[0]:
            shipped = (start_loss, start_name, start_grid, opts)
        if steps < 2 or not math.isfinite(start_loss):
            fr, loss, evals = sigmas_to_fractions(start_grid, smin, smax), start_loss, 0
        else:
            def score(f: list[float]) -> float:
                return _loss(solver, opts, fractions_to_sigmas(f, smin, smax), denoiser, x_train, target_train)

            fr, loss, _, evals = coordinate_search(
                score, sigmas_to_fractions(start_grid, smin, smax), lower=lambda i, v: v[i - 1] if i else 0.0,
                upper=lambda i, v: v[i + 1] if i + 1 < len(v) else 1.0 + 1e-12, budget=budget, step=0.2)
        tried.append({"final": final, "steps": steps, "start": start_name, "start_train_loss": start_loss,
                      "train_loss": loss, "evaluations": evals})
        if best is None or loss < best.train_loss:
            best = LearnedDiscretisation(
                solver, nfe, steps, dict(opts), list(fr), smin, smax, loss, math.nan, start_name, start_loss,
                math.nan, evals, 0.0, check)
    if best is None or shipped is None:
        raise ValueError(f"solver={solver!r} cannot spend exactly nfe={nfe} with final in {finals}")
    return best, shipped, tried


def _rare_check(rare: Callable[[torch.Tensor], torch.Tensor], fit: LearnedDiscretisation, denoiser: X0Denoiser,
                x: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """The rare rate of the fitted and of the shipped setting against the teacher's, paired on ``x``."""
    in_teacher = rare(target).bool()

    def against_teacher(sigmas: Sequence[float], options: Mapping[str, Any]) -> dict[str, Any]:
        out = sample(fit.solver, denoiser, x, sigmas, options=dict(options), generator=torch.Generator().manual_seed(0))
        inside = rare(out).bool()
        return paired_rate_difference(int((inside & ~in_teacher).sum()), int((~inside & in_teacher).sum()),
                                      int(in_teacher.shape[0]))

    learned = against_teacher(fit.sigmas(), fit.solver_options)
    shipped = against_teacher(fit.start_sigmas, fit.start_options)
    return {"teacher_rate": float(in_teacher.to(torch.float64).mean()), "learned": learned, "shipped": shipped,
            "accepted": rare_check_accepts(learned, shipped)}


def rare_check_accepts(learned: Mapping[str, Any], shipped: Mapping[str, Any]) -> bool:
    """Keep the fit when its rare rate lies within 2 SE of the teacher's, or strays no more than the shipped
    setting's does (both ``paired_rate_difference`` results against the same teacher samples). With no
    difference from the teacher, a fit is replaced about 5% of the time (the 2-SE rule's false alarm rate;
    simulated in tests/test_learned_grid.py), and only ever by a setting that strays less."""
    return bool(learned["rare_within_2se"] or abs(learned["rare_diff"]) <= abs(shipped["rare_diff"]))
