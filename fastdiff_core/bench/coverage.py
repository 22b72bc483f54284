"""``fastdiff bench coverage``: what solver, step count and guidance cost in coverage on the driving teacher.

Two sweeps, every configuration sampled on every scene (action ``keep``, H = 6) from the same seeds:

1. solver families x NFE per frame (guidance 1): branch TV, pooled and per-scene tail rate with its
   interval, implausible rate (blur), k-NN precision/recall on two multimodal scenes, the release gate;
2. guidance scale {1, 1.5, 3, 5} x {always, interval}: the same columns.

The gate column is the three-outcome coverage gate (``metrics.gate``: PASS / FAIL / UNDECIDED at
family alpha 0.05). Sequential mode samples every scene in batches (250, then x1.5) until the gate
has decided it or ``cap`` rollouts per scene (``SequentialGate``: confidence sequences, so the looks
cost no error rate); ``rollouts_per_scene`` is then the mean rollouts drawn per scene. Several seeds
repeat every configuration per seed; ``summary`` gives one line per configuration over the seeds.

This module measures and returns rows (``solver_sweep``, ``guidance_sweep``, ``summary``);
``fastdiff_cli.bench_coverage`` parses the command's flags and prints the tables. The figures in
docs/bench-coverage.md and docs/coverage.md come from that command.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.gate import Schedule
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.metrics.gate import RELEASE_GATE, SequentialGate, coverage_gate
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.models.teacher import DEFAULT_TEACHER
from fastdiff_core.worlds.driving import (
    sample_metrics,
    sample_rollouts,
    scene_coverage,
    solver_and_grid,
)
from fastdiff_core.worlds.driving import SCENES, branch_probabilities, get_scene

PR_SCENES = ("hesitant_no_signal", "child_at_curb")


@dataclass(frozen=True)
class CoverageBench:
    """What one ``fastdiff bench coverage`` run measures (the command's flags, checked on creation)."""

    teacher: str = DEFAULT_TEACHER
    solvers: tuple[str, ...] = ("euler", "heun", "dpmpp_2m", "unipc", "dpmpp_2m_sde")
    nfe: tuple[int, ...] = (4, 8, 16, 32, 50)  # per frame, before guidance
    sweeps: tuple[str, ...] = ("solver", "guidance")
    guidance: tuple[float, ...] = (1.0, 1.5, 3.0, 5.0)
    interval: tuple[float, float] = (0.3, 5.0)  # guidance interval [sigma_lo, sigma_hi] (VE sigma)
    guidance_solver: str = "dpmpp_2m"
    guidance_nfe: int = 16
    n: int = 1000  # rollouts per scene per configuration (fixed mode)
    horizon: int = 6
    action: str = "keep"
    seeds: tuple[int, ...] = (0,)
    sequential: bool = False
    cap: int = 4000  # sequential: rollouts per scene at most
    pr: bool = True  # k-NN precision/recall on PR_SCENES

    def __post_init__(self) -> None:
        lo, hi = self.interval
        if not lo < hi:
            raise ValueError(f"--interval={lo:g},{hi:g} must have sigma_lo < sigma_hi")
        if catalog.solver_info(self.guidance_solver).steps_for_nfe(self.guidance_nfe) is None:
            raise ValueError(f"--guidance-nfe={self.guidance_nfe} is not an NFE {self.guidance_solver} can spend "
                             "exactly; choose another (e.g. an even number for two-evaluation steps)")
        if self.pr and self.n <= 5:
            raise ValueError(f"--n={self.n} is too small for k-NN precision/recall (k = 5); allowed: --n >= 6, "
                             "or --no-pr")

    @property
    def guidance_steps(self) -> int:
        return int(catalog.solver_info(self.guidance_solver).steps_for_nfe(self.guidance_nfe))


def _draw(net: torch.nn.Module, solver_name: str, steps: int, guidance: Guidance, bench: CoverageBench, seed: int,
          counter: NFECounter) -> tuple[dict[str, torch.Tensor], SequentialGate | None]:
    """Every scene's rollouts: ``bench.n`` each, or (sequential) looks until the gate decides each scene."""
    solver, sigmas = solver_and_grid(solver_name, steps)
    looks = (Schedule(first_batch=min(250, bench.cap), growth=1.5, cap=bench.cap).looks() if bench.sequential
             else [bench.n])
    sequential = (SequentialGate({name: branch_probabilities(get_scene(name), bench.action, bench.horizon)
                                  for name in SCENES}, RELEASE_GATE, cap=int(looks[-1])) if bench.sequential else None)
    drawn: dict[str, list[torch.Tensor]] = {name: [] for name in SCENES}
    for k, target in enumerate(looks):
        todo = list(SCENES) if sequential is None or k == 0 else sequential.scenes_to_sample()
        if not todo:
            break
        batch = {}
        for name in todo:
            scene = get_scene(name)
            have = sum(len(r) for r in drawn[name])
            r = sample_rollouts(net, scene, bench.action, int(target) - have, bench.horizon, solver=solver,
                                sigmas=sigmas, guidance=guidance, seed=seed + 7919 * k, counter=counter)
            drawn[name].append(r)
            batch[name] = scene_coverage(r, scene, bench.action).counts
        if sequential is not None:
            sequential.update(batch)
    return {name: torch.cat(rs) for name, rs in drawn.items()}, sequential


def measure(net: torch.nn.Module, solver_name: str, steps: int, guidance: Guidance, bench: CoverageBench,
            seed: int) -> dict:
    """One configuration on every scene from ``seed``: the row ``--json`` stores and the tables show."""
    counter = NFECounter()
    t0 = time.perf_counter()
    drawn, sequential = _draw(net, solver_name, steps, guidance, bench, seed, counter)
    covs, pr = {}, {}
    for name in SCENES:
        scene, r = get_scene(name), drawn[name]
        covs[name] = scene_coverage(r, scene, bench.action)
        if name in PR_SCENES and bench.pr:
            pr[name] = sample_metrics(r, scene, bench.action, max_n=min(len(r), 1000))
    seconds = time.perf_counter() - t0
    gate = (sequential.result if sequential is not None else
            coverage_gate({s: c.counts for s, c in covs.items()}, {s: c.truth for s, c in covs.items()}, RELEASE_GATE))
    tail_count = sum(c.counts["darts"] for c in covs.values())
    n_total = sum(c.n for c in covs.values())
    tail_truth = sum(c.truth["darts"] * c.n for c in covs.values()) / n_total
    lo, hi = wilson_interval(tail_count, n_total)
    row = {
        "solver": solver_name, "steps": steps, "guidance": guidance.scale,
        "interval": list(guidance.interval) if guidance.interval else None,
        "nfe_per_frame": counter.rows / (n_total * bench.horizon),  # per-sample evaluations per frame
        "mean_tv": sum(c.tv for c in covs.values()) / len(covs), "max_tv": max(c.tv for c in covs.values()),
        "tail_rate": tail_count / n_total, "tail_lo": lo, "tail_hi": hi, "tail_truth": tail_truth,
        "implausible_rate": sum(c.counts["implausible"] for c in covs.values()) / n_total,
        "seed": seed, "mode": "sequential" if sequential is not None else "fixed",
        "rollouts_per_scene": n_total / len(covs), "gate": gate.outcome, "gate_pass": gate.passed,
        "gate_failures": len(gate.failures), "gate_undecided": len(gate.undecided),
        "more_samples_needed": dict(gate.more_samples_needed),
        "scenes": {s: c.to_dict() for s, c in covs.items()}, "seconds": round(seconds, 1),
    }
    if pr:
        row["precision"] = sum(v["precision"] for v in pr.values()) / len(pr)
        row["recall"] = sum(v["recall"] for v in pr.values()) / len(pr)
        row["sample_metrics"] = pr
    return row


def solver_sweep(net: torch.nn.Module, bench: CoverageBench) -> Iterator[dict]:
    """Sweep 1, row by row as measured: each solver at each NFE it can spend exactly (guidance 1), per seed."""
    for solver in (bench.solvers if "solver" in bench.sweeps else []):
        info = catalog.solver_info(solver)
        done = set()
        for nfe in bench.nfe:
            steps = info.steps_for_nfe(nfe)
            if steps is None or steps in done:
                continue
            done.add(steps)
            for seed in bench.seeds:
                yield {**measure(net, solver, steps, Guidance(), bench, seed), "sweep": "solver"}


def guidance_sweep(net: torch.nn.Module, bench: CoverageBench) -> Iterator[dict]:
    """Sweep 2, row by row as measured: each guidance scale always on and inside the interval, per seed."""
    for scale in (bench.guidance if "guidance" in bench.sweeps else []):
        for interval in (None, tuple(bench.interval)):
            if scale == 1.0 and interval is not None:
                continue
            for seed in bench.seeds:
                row = measure(net, bench.guidance_solver, bench.guidance_steps, Guidance(scale, interval), bench, seed)
                yield {**row, "sweep": "guidance"}


def summary(rows: list[dict]) -> list[dict]:
    """One line per configuration over its seeds: the outcomes and the rollouts per scene drawn."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["sweep"], r["solver"], r["steps"], r["guidance"], str(r["interval"]))
        groups.setdefault(key, []).append(r)
    out = []
    for (sweep, solver, steps, scale, interval), rs in groups.items():
        n = [r["rollouts_per_scene"] for r in rs]
        out.append({"sweep": sweep, "solver": solver, "steps": steps, "guidance": scale, "interval": interval,
                    "nfe_per_frame": rs[0]["nfe_per_frame"], "seeds": [r["seed"] for r in rs],
                    "outcomes": [r["gate"] for r in rs], "mean_rollouts": sum(n) / len(n),
                    "min_rollouts": min(n), "max_rollouts": max(n),
                    "mean_tv": [r["mean_tv"] for r in rs], "tail_rate": [r["tail_rate"] for r in rs]})
    return out
