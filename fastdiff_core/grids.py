"""Every sigma grid fastdiff samples on: ``n`` steps -> ``n + 1`` VE sigmas, strictly decreasing, ending in 0.

Grids live here and nowhere else; no solver builds its own. Sigmas are canonical VE noise levels
(sigma = sigma_t / alpha_t, see ``paths``), returned as a plain Python list of floats so that solvers
can precompute their step coefficients without touching tensors.

The last-step convention. ``sigmas[-2]`` (= ``sigma_min``) is where the last network evaluation
happens; the final step from it to ``sigmas[-1] = 0`` is taken by each solver (every solver here
returns the data prediction ``D(x, sigma_min)`` there, except iPNDM which takes its linear-multistep
step in sigma, where 0 is a regular point). At low NFE where sigma_min sits matters as much as the
solver's order: an evaluation at sigma = 0.002 of a world whose finest scale is 0.05 is almost
wasted. ``optimise_grid`` finds the placement by direct search against an exact reference.

Grids (``n`` = steps, ``i`` = 0..n-1 the nonzero sigmas):

- ``uniform_t``:      t_i uniform in the path's time between t(sigma_max) and t(sigma_min) (DDIM).
- ``uniform_logsnr``: logSNR uniform, i.e. log sigma uniform (DPM-Solver's time-uniform-lambda).
- ``karras``:         sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho (EDM, rho = 7).
- ``quadratic``:      t_i = t_min + (t_max - t_min) (1 - i/(n-1))^2, dense near the data (DDIM).
- ``custom``:         user sigmas, strictly decreasing and positive; a trailing 0 is optional.
- ``tuned``:          shipped per solver, last-step convention (``final``) and step count (3-10): log-sigma
                      fractions fitted across random mixture worlds and validated on held-out ones by
                      ``fastdiff fit grids`` (see docs/lownfe.md), mapped onto any path's [sigma_min, sigma_max]. Unlike
                      ``grid_search.optimise_grid`` (one world, its own reference), nothing here saw the
                      world it is used on.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fastdiff_core import catalog
from fastdiff_core.paths import NoisePath, sigma_range, sigma_ve, t_from_sigma_ve
from fastdiff_core.registry import validate_options

Sigmas = list[float]


def _endpoints(path: NoisePath, sigma_min: float | None, sigma_max: float | None) -> tuple[float, float]:
    lo, hi = sigma_range(path)
    smin = lo if sigma_min is None else float(sigma_min)
    smax = hi if sigma_max is None else float(sigma_max)
    if not (0 < smin < smax and math.isfinite(smax)):
        raise ValueError(f"grid sigma_min={smin!r}, sigma_max={smax!r}: need 0 < sigma_min < sigma_max < inf")
    return smin, smax


def _fractions(n: int) -> list[float]:
    # i / (n - 1) for the n nonzero sigmas; one step means sigma_max only.
    return [0.0] if n == 1 else [i / (n - 1) for i in range(n)]


def karras_sigmas(n: int, path: NoisePath, *, rho: float = 7.0, sigma_min: float | None = None,
                  sigma_max: float | None = None) -> Sigmas:
    """EDM's grid (Karras et al. 2022, eq. 5): uniform in sigma^(1/rho)."""
    smin, smax = _endpoints(path, sigma_min, sigma_max)
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return [(a + f * (b - a)) ** rho for f in _fractions(n)] + [0.0]


def uniform_logsnr_sigmas(n: int, path: NoisePath, *, sigma_min: float | None = None,
                          sigma_max: float | None = None) -> Sigmas:
    """Uniform in logSNR = -2 log sigma (Lu et al. 2022, DPM-Solver's recommended grid)."""
    smin, smax = _endpoints(path, sigma_min, sigma_max)
    la, lb = math.log(smax), math.log(smin)
    return [math.exp(la + f * (lb - la)) for f in _fractions(n)] + [0.0]


def uniform_t_sigmas(n: int, path: NoisePath, *, sigma_min: float | None = None,
                     sigma_max: float | None = None) -> Sigmas:
    """Uniform in the path's own time t (Song et al. 2021, DDIM's uniform timesteps)."""
    smin, smax = _endpoints(path, sigma_min, sigma_max)
    ta, tb = float(t_from_sigma_ve(path, smax)), float(t_from_sigma_ve(path, smin))
    return _strict([float(sigma_ve(path, ta + f * (tb - ta))) for f in _fractions(n)], smin, smax) + [0.0]


def quadratic_sigmas(n: int, path: NoisePath, *, sigma_min: float | None = None,
                     sigma_max: float | None = None) -> Sigmas:
    """Quadratic in t, dense near the data (Song et al. 2021, DDIM's quadratic timesteps)."""
    smin, smax = _endpoints(path, sigma_min, sigma_max)
    ta, tb = float(t_from_sigma_ve(path, smax)), float(t_from_sigma_ve(path, smin))
    return _strict([float(sigma_ve(path, tb + (ta - tb) * (1 - f) ** 2)) for f in _fractions(n)], smin, smax) + [0.0]


def _strict(sigmas: list[float], smin: float, smax: float) -> list[float]:
    # Round-trips through t can cost an ulp at the ends; pin them and refuse any non-monotone result.
    sigmas[0] = smax
    if len(sigmas) > 1:
        sigmas[-1] = smin
    for i in range(1, len(sigmas)):
        if not sigmas[i] < sigmas[i - 1]:
            raise ValueError(f"grid produced non-decreasing sigmas at index {i} ({sigmas[i - 1]!r} -> {sigmas[i]!r}); "
                             "too many steps for this path's time resolution")
    return sigmas


def custom_sigmas(n: int, path: NoisePath | None = None, *, sigmas: Sequence[float]) -> Sigmas:
    """User-supplied sigmas (VE), validated: finite, positive, strictly decreasing; 0 appended if absent.
    ``n`` must equal the number of nonzero sigmas (no silent resampling)."""
    given = list(sigmas)
    if not given or given[-1] != 0:
        given.append(0.0)
    out = check_sigmas(given, field="grid_options.sigmas")
    if len(out) - 1 != n:
        raise ValueError(f"steps={n} but grid_options.sigmas has {len(out) - 1} nonzero sigmas; they must agree")
    return out


def check_sigmas(sigmas: Sequence[Any], field: str = "sigmas", *, open_end: bool = False) -> Sigmas:
    """Validate a full grid: at least 2 finite sigmas, strictly decreasing, the last exactly 0, others > 0.
    ``open_end``: the last sigma may also be > 0 (a solver integrating down to it, see ``solvers.primitives``)."""
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Sequence) or len(sigmas) < 2:
        raise ValueError(f"{field}={sigmas!r} must be a list of at least 2 floats (n steps -> n + 1 sigmas ending in 0)")
    out = []
    for i, s in enumerate(sigmas):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"{field}[{i}]={s!r} must be a finite number")
        out.append(float(s))
    if out[-1] != 0.0 and not (open_end and out[-1] > 0.0):
        raise ValueError(f"{field}[-1]={out[-1]!r} must be 0 (every grid ends at the data)")
    for i in range(1, len(out)):
        if not out[i] < out[i - 1]:
            raise ValueError(f"{field} must be strictly decreasing; {field}[{i}]={out[i]!r} >= {field}[{i - 1}]={out[i - 1]!r}")
    if out[-2] <= 0:
        raise ValueError(f"{field}[-2]={out[-2]!r} must be > 0")
    return out


TUNED_GRIDS_FILE = Path(__file__).with_name("tuned_grids.json")


@lru_cache(maxsize=1)
def _tuned_table() -> dict[str, Any]:
    return json.loads(TUNED_GRIDS_FILE.read_text())["solvers"]


def tuned_final(final: str | None) -> str:
    """The tuned-grid convention that goes with ``solver_options.final``: "sigma_min" stops at the grid's
    last sigma without evaluating there; "solver" and "denoise" evaluate there last (one grid for both)."""
    return "sigma_min" if final == "sigma_min" else "solver"


def tuned_grid_table(solver: str, final: str = "solver") -> dict[str, list[float]]:
    """The shipped fractions of ``solver``'s tuned grids for the last-step convention ``final``, by step count."""
    table = _tuned_table()
    if solver not in table:
        raise ValueError(f"grid_options.solver={solver!r} has no tuned grids; allowed: {sorted(table)}")
    by_final = {"solver": table[solver]["grids"], **{k: v["grids"] for k, v in table[solver].get("finals", {}).items()}}
    if final not in by_final:
        raise ValueError(f"grid_options.final={final!r} has no tuned grids for {solver!r}; allowed: {sorted(by_final)}")
    return by_final[final]


def tuned_sigmas(n: int, path: NoisePath, *, solver: str = "dpmpp_2m", final: str | None = "solver",
                 sigma_min: float | None = None, sigma_max: float | None = None) -> Sigmas:
    """The shipped transfer grid of ``solver`` for ``n`` steps, fitted for the last-step convention
    ``final`` (``solver_options.final``: with "sigma_min" the last sigma is where sampling stops, with no
    evaluation there; with "solver" it is the last evaluation): sigma = smax^(1 - u) smin^u at the fitted
    fractions u. Use the grid of the convention the run uses: a grid fitted for one ends elsewhere than
    the other needs."""
    final = final or "solver"  # null: built outside a RunSpec (which pairs it with the run's last step)
    grids = tuned_grid_table(solver, final)
    if str(n) not in grids:
        raise ValueError(f"steps={n} has no tuned grid for {solver!r} (final={final!r}); "
                         f"allowed: {sorted(int(k) for k in grids)}")
    smin, smax = _endpoints(path, sigma_min, sigma_max)
    la, lb = math.log(smax), math.log(smin)
    return [smax] + [math.exp(la + u * (lb - la)) for u in grids[str(n)]] + [0.0]


GridBuilder = Callable[..., Sigmas]

FIXED_GRIDS = catalog.FIXED_GRIDS

GRID_FUNCTIONS: dict[str, GridBuilder] = {
    "karras": karras_sigmas,
    "uniform_t": uniform_t_sigmas,
    "uniform_logsnr": uniform_logsnr_sigmas,
    "quadratic": quadratic_sigmas,
    "custom": custom_sigmas,
    "tuned": tuned_sigmas,
}


def build_grid(name: str, steps: int, path: NoisePath, options: Mapping[str, Any] | None = None) -> Sigmas:
    """The grid ``name`` with ``steps`` steps on ``path``: ``steps + 1`` sigmas ending in 0.

    Options are validated against ``catalog.GRIDS[name].options`` (unknown names and bad values raise
    ValueError naming the field, the value and what is allowed).
    """
    info = catalog.grid_info(name)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1")
    opts = validate_options("grid_options", dict(options or {}), info.options)
    sigmas = GRID_FUNCTIONS[name](steps, path, **opts)
    return check_sigmas(sigmas, field=f"grid {name!r}")
