"""What ``fastdiff bench digits`` measures: the digits model's class histogram per solver x NFE x guidance,
against the data's class frequencies (truth) and against the model's own converged sampling (the
teacher), with both gates. fastdiff_cli/bench_digits.py parses the flags and prints the rows.

By default two conditions: none (the unconditional model, guidance 1 only) and ``even`` (the parity group
that holds the rare digit, at each guidance scale): does guidance delete the rare digit? Each (condition,
guidance) has one teacher reference (``evaluation.REFERENCE``) from the same noise, its convergence
checked against twice its steps. TV gaps: ``tv_truth`` everything lost, ``tv_ref`` what the sampler
lost, ``tv_model`` (teacher vs truth) what the model itself lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

from fastdiff_core import catalog
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.worlds.digits.evaluation import DigitsModel, convergence, judge, sample_digits

DETERMINISTIC = ("euler", "heun", "dpmpp_2m", "unipc")


@dataclass(frozen=True)
class DigitsBench:
    """One benchmark's settings (the command's flags)."""

    solvers: tuple[str, ...] = DETERMINISTIC
    nfe: tuple[int, ...] = (4, 8, 16, 32)  # per sample per guidance pass; each solver's steps spend it exactly
    guidance: tuple[float, ...] = (1.0, 3.0, 5.0)
    conditions: tuple[str, ...] = ("none", "even")  # "none" is sampled at guidance 1 only
    n: int = 1000
    seed: int = 0

    def parts(self) -> list[tuple[str, float]]:
        """(condition, guidance) pairs, each with its own teacher reference."""
        return [(c, float(w)) for c in self.conditions for w in ((1.0,) if c == "none" else self.guidance)]

    def plans(self) -> dict[tuple[str, int], tuple[int, dict] | None]:
        """(solver, nfe) -> (steps, options) spending exactly nfe, or None when the solver cannot."""
        return {(s, k): catalog.solver_info(s).plan_for_nfe(k) for s in self.solvers for k in self.nfe}


def bench_rows(model: DigitsModel, bench: DigitsBench) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("reference", facts) once per (condition, guidance), then ("row", facts) per solver x NFE."""
    plans = bench.plans()
    for condition, w in bench.parts():
        t0 = time.perf_counter()
        conv = convergence(model, condition, bench.n, bench.seed, guidance=w)
        teacher = conv["counts"]
        ref = judge(model, condition, teacher, None)
        yield "reference", {"condition": condition, "guidance": w, **conv, "rare_rate": ref["rare_rate"],
                            "rare_rate_truth": ref["rare_rate_truth"], "tv_model": ref["tv_truth"],
                            "unreadable_rate": ref["unreadable_rate"],
                            "gate_teacher_vs_truth": ref["gate_truth"]["outcome"],
                            "seconds": round(time.perf_counter() - t0, 1)}
        for solver in bench.solvers:
            for nfe in bench.nfe:
                plan = plans[(solver, nfe)]
                if plan is None:
                    continue
                steps, options = plan
                t1 = time.perf_counter()
                out = sample_digits(model, condition=condition, n=bench.n, solver=solver, steps=steps,
                                    solver_options=options, guidance=w, seed=bench.seed)
                counts = out.counts()
                j = judge(model, condition, counts, teacher)
                lo, hi = wilson_interval(counts[model.rare], bench.n)
                yield "row", {"condition": condition, "guidance": w, "solver": solver, "steps": steps,
                              "options": options, "nfe_target": nfe, "nfe_per_sample": out.nfe_counted / bench.n,
                              "counts": counts, "rare_lo": lo, "rare_hi": hi,
                              **{k: j[k] for k in ("rare_rate", "rare_rate_truth", "rare_rate_ref", "tv_truth",
                                                   "tv_ref", "tv_model", "unreadable_rate")},
                              "gate_truth": j["gate_truth"]["outcome"], "gate_ref": j["gate_ref"]["outcome"],
                              "gate_truth_detail": j["gate_truth"], "gate_ref_detail": j["gate_ref"],
                              "seconds": round(time.perf_counter() - t1, 1)}
