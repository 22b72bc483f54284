"""The rows of ``fastdiff fit learned`` (printed by ``fastdiff_cli.fit_learned``): a learned few-step discretisation (``fastdiff_core.learned_grid``) for one model.

Two parts, both fitted on the model's own high-NFE samples only (no exact reference reaches the fit):

1. Held-out random mixture worlds (``worlds.random_mixtures``, seeds from the held-out range, never used
   to fit the shipped grids): per world and NFE, a grid + last step fitted for each solver on the teacher's
   samples of a training noise batch; the solver with the lowest training loss is kept. Judged on other
   noise against the world's *exact* ODE solution: RMSE and the rare mode's rate, next to (a) the best
   shipped setting chosen the same way (lowest teacher loss on the training noise) and (b) the best
   shipped setting chosen with the exact answer on the evaluation noise (an oracle no user has).
2. ``--driving-scene NAME``: the shipped driving teacher. The grid is fitted on the first frame's teacher
   samples, then whole runs (``execute``) measure the tail ("darts") rate at each NFE against the
   teacher's own 50-step reference, next to the best fixed-grid setting of docs/lownfe.md.

The core computes rows; the front end prints them (``--json PATH`` writes them).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.learned_grid import fit_discretisation, start_grids
from fastdiff_core.metrics.rate_change import rare_mode_decision
from fastdiff_core.metrics.solver_error import paired_rate_difference, terminal_rmse
from fastdiff_core.paths import get_path, sigma_range
from fastdiff_core.solvers import sample
from fastdiff_core.worlds.random_mixtures import held_out_seeds, random_world

SOLVERS = ("unipc", "dpmpp_2m", "ipndm")
PATH_NAME = "vp_discrete"
# the best fixed-grid settings for the driving teacher's tail at NFE 4 and 6 (docs/lownfe.md)
DRIVING_BASELINE = {"solver": "ipndm", "grid": "quadratic", "solver_options": {"final": "sigma_min"}}
DRIVING_REFERENCE = {"solver": "dpmpp_3m", "steps": 50, "grid": "karras"}


def _rare(world: Any, x: torch.Tensor) -> float:
    return float((world.assign(x) == world.rare).to(torch.float64).mean())


def _moves(inside: torch.Tensor, inside_ref: torch.Tensor) -> list[int]:
    """[samples in where their reference is not, the reverse] (paired rows)."""
    return [int((inside & ~inside_ref).sum()), int((~inside & inside_ref).sum())]


def _shipped_oracle(world: Any, path: Any, nfe: int, x: torch.Tensor, ref: torch.Tensor) -> tuple[float, str]:
    """The best shipped setting (solver x fixed/tuned grid x last step) at exactly ``nfe``, by exact RMSE."""
    best = (math.inf, "")
    for solver in SOLVERS:
        for final in catalog.SOLVERS[solver].options["final"].choices:
            plan = catalog.SOLVERS[solver].plan_for_nfe(nfe, {"final": final})
            if plan is None:
                continue
            steps, opts = plan
            for name, grid in start_grids(solver, steps, path, final).items():
                e = terminal_rmse(sample(solver, world.denoise, x, grid, options=opts), ref)
                if math.isfinite(e) and e < best[0]:
                    best = (e, f"{solver}(final={final})/{name}")
    return best


def world_rows(n_worlds: int, nfes: list[int], samples: int, budget: int, rare_check: bool = True) -> list[dict[str, Any]]:
    """One row per (held-out world, NFE): learned vs shipped, judged against the exact reference. With
    ``rare_check`` a fit whose rare-mode rate strays from the teacher's is replaced by the shipped setting
    (``fit_discretisation(rare=...)``)."""
    path = get_path(PATH_NAME)
    _, smax = sigma_range(path)
    rows = []
    for seed in held_out_seeds(n_worlds):
        world = random_world(seed)
        g = torch.Generator().manual_seed(seed)
        x_train = torch.randn(samples, world.dim, generator=g, dtype=torch.float64) * smax
        x_eval = torch.randn(samples, world.dim, generator=g, dtype=torch.float64) * smax
        # the fit's own held-out batch (its held-out loss, its rare-mode check): not the judging noise
        x_val = torch.randn(samples, world.dim, generator=g, dtype=torch.float64) * smax
        ref = world.reference(x_eval, smax, 0.0, rtol=1e-8, atol=1e-8)

        def rare(x: torch.Tensor, world: Any = world) -> torch.Tensor:
            return world.assign(x) == world.rare

        for nfe in nfes:
            fits = [fit_discretisation(s, world.denoise, path, nfe, x_train, x_val, budget=budget,
                                       rare=rare if rare_check else None) for s in SOLVERS]
            learned = min(fits, key=lambda f: f.train_loss)
            chosen = min(fits, key=lambda f: f.start_train_loss)  # shipped, chosen on the same information
            out = sample(learned.solver, world.denoise, x_eval, learned.sigmas(), options=learned.solver_options)
            shipped = sample(chosen.solver, world.denoise, x_eval, chosen.start_sigmas, options=chosen.start_options)
            oracle, oracle_name = _shipped_oracle(world, path, nfe, x_eval, ref)
            rows.append({
                "world_seed": seed, "nfe": nfe, "samples": samples, "learned": f"{learned.solver}(final={learned.solver_options.get('final')})",
                "learned_rmse": terminal_rmse(out, ref), "shipped": f"{chosen.solver}/{chosen.start}",
                "shipped_rmse": terminal_rmse(shipped, ref), "oracle": oracle_name, "oracle_rmse": oracle,
                "rare_learned": _rare(world, out), "rare_shipped": _rare(world, shipped), "rare_ref": _rare(world, ref),
                "rare_moves_learned": _moves(rare(out), rare(ref)), "rare_moves_shipped": _moves(rare(shipped), rare(ref)),
                "fit_seconds": sum(f.fit_seconds for f in fits), "teacher_converged": all(f.teacher.converged for f in fits),
                "accepted": learned.accepted, "rejected_fits": sum(not f.accepted for f in fits),
                "rare_check": learned.rare_check, "sigmas": learned.sigmas()})
    return rows


def world_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for nfe in sorted({r["nfe"] for r in rows}):
        rs = [r for r in rows if r["nfe"] == nfe]
        vs_shipped = [r["learned_rmse"] / r["shipped_rmse"] for r in rs]
        vs_oracle = [r["learned_rmse"] / r["oracle_rmse"] for r in rs]
        n = len(rs)
        moved = [r["rare_learned"] - r["rare_ref"] for r in rs]
        out.append({"nfe": nfe, "worlds": n, "median_vs_shipped": statistics.median(vs_shipped),
                    "better_than_shipped": sum(v < 1 for v in vs_shipped),
                    "median_vs_oracle": statistics.median(vs_oracle), "better_than_oracle": sum(v < 1 for v in vs_oracle),
                    "rare_diff_mean": statistics.fmean(moved),
                    "rare_diff_se": statistics.stdev(moved) / math.sqrt(n) if n > 1 else math.nan,
                    "fit_seconds_median": statistics.median(r["fit_seconds"] for r in rs),
                    "teacher_converged": sum(r["teacher_converged"] for r in rs),
                    "rejected": sum(not r.get("accepted", True) for r in rs),
                    **{f"{who}_pooled": paired_rate_difference(sum(r[f"rare_moves_{who}"][0] for r in rs),
                                                               sum(r[f"rare_moves_{who}"][1] for r in rs),
                                                               sum(r["samples"] for r in rs))
                       for who in ("learned", "shipped")},
                    # the rare-mode decision (metrics.rate_change; the 2-SE figure above is a test of no difference)
                    **{f"{who}_decision": rare_mode_decision([r[f"rare_moves_{who}"][0] for r in rs],
                                                             [r[f"rare_moves_{who}"][1] for r in rs],
                                                             [round(r["rare_ref"] * r["samples"]) for r in rs],
                                                             [r["samples"] for r in rs])
                       for who in ("learned", "shipped")}})
    return out


def driving_rows(scene: str, nfes: list[int], futures: int, seeds: list[int], budget: int,
                 rare_check: bool = True) -> list[dict[str, Any]]:
    """Tail rate of whole driving runs with the learned setting, the fixed baseline and the reference. With
    ``rare_check`` the fit's first-frame darting rate is checked against the teacher's (``fit_discretisation``)."""
    from fastdiff_core.models.teacher import load_teacher
    from fastdiff_core.run import execute
    from fastdiff_core.spec import RunSpec
    from fastdiff_core.worlds.driving import (FRAME_DIM, PATH, RUN, decode_frame, frame_denoiser, frame_modes, get_scene,
                                              waiting_frame)

    net = load_teacher()
    sc = get_scene(scene)
    _, smax = sigma_range(PATH)

    def batch(seed: int) -> tuple[Any, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        prev = waiting_frame(sc, 512, generator=g)
        return frame_denoiser(net, prev, sc, "keep"), torch.randn(512, FRAME_DIM, generator=g) * smax

    (den, x_train), (_, x_eval) = batch(10_001), batch(10_002)  # held-out noise, the same conditions
    prev = waiting_frame(sc, 512, generator=torch.Generator().manual_seed(10_001))  # den's condition

    def darts(x: torch.Tensor) -> torch.Tensor:
        """The first generated frame runs (the tail's first frame), read by the branch classifier."""
        frames = torch.stack([prev, decode_frame(x.to(prev.dtype), prev)], dim=1)
        return frame_modes(frames, sc)[:, 1] == RUN
    base = {"world": "driving", "scene": scene, "horizon": 2, "plans": 1, "futures": futures, "samples": 1}
    rows = []
    settings: list[tuple[str, int | None, dict[str, Any]]] = [("reference", None, DRIVING_REFERENCE)]
    for nfe in nfes:
        with torch.no_grad():
            fits = [fit_discretisation(s, den, PATH, nfe, x_train, x_eval, budget=budget, rare=darts if rare_check else None)
                    for s in SOLVERS]
        learned = min(fits, key=lambda f: f.train_loss)
        steps, opts = catalog.SOLVERS[DRIVING_BASELINE["solver"]].plan_for_nfe(nfe, DRIVING_BASELINE["solver_options"])
        settings.append((f"fixed {DRIVING_BASELINE['solver']}/{DRIVING_BASELINE['grid']}", nfe,
                         {**DRIVING_BASELINE, "steps": steps, "solver_options": opts}))
        settings.append((f"learned {learned.solver}" + ("" if learned.accepted else " (rejected: shipped)"), nfe,
                         {**learned.spec_fields(), "_fit_s": sum(f.fit_seconds for f in fits),
                          "_rare_check": learned.rare_check}))
    for name, nfe, fields in settings:
        fit_s, check = fields.pop("_fit_s", None), fields.pop("_rare_check", None)
        for seed in seeds:
            res = execute(RunSpec.from_dict({**base, **fields, "seed": seed}))
            m = res.metrics
            rows.append({"setting": name, "nfe": nfe, "seed": seed, "tail_rate": m["tail_rate"], "tail_lo": m["tail_lo"],
                         "tail_hi": m["tail_hi"], "tail_truth": m["tail_truth"], "fit_seconds": fit_s, "rare_check": check,
                         "scene": scene,
                         "spec": {k: v for k, v in fields.items()}})
    return rows
