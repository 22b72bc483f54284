"""``fastdiff bench speedups``: every systems lever side by side, measured in one run.

Each lever is a RunSpec toggle applied to the driving teacher (``fastdiff_core.speedups.from_spec``).
For each: NFE per rollout (counted), deep-block share (caching), sequential network rounds per frame
(Picard), wall clock of a throughput workload (n futures per scene in one fan-out) and of one rollout
alone (the latency-bound case), the speed ratio against the baseline measured in the same run, and
the coverage cost: mean branch TV and pooled tail rate against the simulator's exact probabilities,
and the release coverage gate.

This module measures (``lever_rows``); ``fastdiff_cli.bench_speedups`` parses the flags and prints.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from fastdiff_core.bench.rollout import load_network
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import measure_interleaved
from fastdiff_core.metrics.coverage import total_variation
from fastdiff_core.metrics.gate import coverage_gate
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.rollout import fan_out
from fastdiff_core.spec import RunSpec
from fastdiff_core.speedups import from_spec
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving import PATH
from fastdiff_core.worlds.driving import ACTIONS, SCENES, TAIL, branch_probabilities
from fastdiff_core.worlds.driving import DrivingWorldModel, waiting_frame

# (label, RunSpec changes, reference row for the ratio). Caching and Picard are also measured at 32
# steps, where adjacent steps are close (the regime DeepCache and ParaDiGMS were published in).
BASE = "baseline (fp32, no cache)"
LEVERS: list[tuple[str, dict[str, Any], str]] = [
    (BASE, {}, BASE),
    ("guidance 2, every step", {"guidance_scale": 2.0}, BASE),
    ("guidance 2, interval [0.2, 5]", {"guidance_scale": 2.0, "guidance_interval": (0.2, 5.0)},
     "guidance 2, every step"),
    ("cache fixed, every 2nd step", {"feature_cache": "fixed", "cache_options": {"interval": 2}}, BASE),
    ("cache controlled, budget 0.5", {"feature_cache": "controlled", "cache_options": {"budget": 0.5}}, BASE),
    ("bf16", {"precision": "bfloat16"}, BASE),
    ("int8 dynamic (CPU)", {"precision": "int8"}, BASE),
    ("torch.compile", {"compile": True}, BASE),
    ("32 steps (reference)", {"steps": 32}, "32 steps (reference)"),
    ("32 steps, cache fixed every 2nd", {"steps": 32, "feature_cache": "fixed", "cache_options": {"interval": 2}},
     "32 steps (reference)"),
    ("32 steps, cache controlled 0.5", {"steps": 32, "feature_cache": "controlled", "cache_options": {"budget": 0.5}},
     "32 steps (reference)"),
    ("euler 32 steps (reference)", {"solver": "euler", "steps": 32}, "euler 32 steps (reference)"),
    ("euler 32, picard window 8 tol .1", {"solver": "euler", "steps": 32, "parallel": "picard",
                                          "parallel_options": {"window": 8, "tol": 0.1}},
     "euler 32 steps (reference)"),
]

SCENE_SET = ("child_at_curb", "commuter_late", "red_light_jaywalker", "hesitant_no_signal")


@dataclass(frozen=True)
class SpeedupsBench:
    """What one ``fastdiff bench speedups`` run measures."""

    checkpoint: pathlib.Path | None = None  # world-model checkpoint stem (None: the shipped driving teacher)
    n: int = 1500  # futures per scene (coverage and throughput workload)
    steps: int = 8  # solver steps of the baseline rows
    solver: str = "dpmpp_2m"
    action: str = "keep"
    horizon: int = 6
    repeats: int = 3
    skip: tuple[str, ...] = ()  # lever labels (prefixes) to skip
    seed: int = 0  # seed of the noise and the waiting frames every lever shares
    timing: bool = True  # False: coverage columns only (re-measuring coverage over seeds)


class _Workload:
    """The teacher, the inputs and the exact branch probabilities every lever is measured on."""

    def __init__(self, bench: SpeedupsBench, device: torch.device) -> None:
        self.bench, self.device = bench, device
        self.teacher = load_network(bench.checkpoint, device)
        self.base_spec = RunSpec(world="driving", scene=SCENE_SET[0], world_options={"action": bench.action},
                                 solver=bench.solver, steps=bench.steps, grid="karras", horizon=bench.horizon,
                                 samples=bench.n)
        self.plan = torch.full((1, bench.horizon), ACTIONS.index(bench.action), dtype=torch.long)
        g = torch.Generator().manual_seed(bench.seed)
        self.inputs = {s: (torch.randn(bench.n, bench.horizon, driving.FRAME_DIM, generator=g).to(device),
                           waiting_frame(SCENES[s], 1, g)[0].to(device)) for s in SCENE_SET}
        self.one_noise = torch.randn(1, bench.horizon, driving.FRAME_DIM, generator=g).to(device)
        self.truth = {s: branch_probabilities(SCENES[s], bench.action, bench.horizon) for s in SCENE_SET}
        self.setups: dict[str, tuple] = {}

    def timed(self, label: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        """(the throughput workload: n futures in one fan-out, one rollout alone) with a lever's setup."""
        net, sampler, guidance, sigmas = self.setups[label]
        s0, n = SCENE_SET[0], self.bench.n
        world = DrivingWorldModel(net, SCENES[s0])
        return (lambda: fan_out(net, world, self.plan, n, sampler=sampler, sigmas=sigmas,
                                noise=self.inputs[s0][0], context=self.inputs[s0][1], guidance=guidance),
                lambda: fan_out(net, world, self.plan, 1, sampler=sampler, sigmas=sigmas, noise=self.one_noise,
                                context=self.inputs[s0][1], guidance=guidance))


def _coverage(w: _Workload, label: str, changes: dict[str, Any]) -> dict[str, Any]:
    """One lever's counted NFE, network rounds, deep-block share and coverage against the exact truth."""
    b = w.bench
    spec = w.base_spec.replace(**changes)
    net, sampler, guidance = from_spec(spec, w.teacher)
    sigmas = build_grid("karras", spec.steps, PATH)
    w.setups[label] = (net, sampler, guidance, sigmas)
    counter = NFECounter()
    counts = {}
    for s in SCENE_SET:
        noise, ctx = w.inputs[s]
        frames = fan_out(net, DrivingWorldModel(net, SCENES[s]), w.plan, b.n, sampler=sampler, sigmas=sigmas,
                         noise=noise, context=ctx, guidance=guidance, counter=counter)
        counts[s] = driving.branch_counts(frames[0], SCENES[s])
    stats = getattr(net, "stats", None)  # a feature-cache wrapper reports its deep-block share
    n_all = b.n * len(SCENE_SET)
    tail_n = sum(counts[s][TAIL] for s in SCENE_SET)
    lo, hi = wilson_interval(tail_n, n_all, 0.95)
    gate = coverage_gate(counts, w.truth)
    return {"nfe_per_rollout": counter.rows / n_all, "rounds_per_frame": counter.forwards / (b.horizon * len(SCENE_SET)),
            "deep_fraction": stats.deep_fraction if stats is not None else 1.0,
            "mean_tv": sum(total_variation(counts[s], w.truth[s]) for s in SCENE_SET) / len(SCENE_SET),
            "tail_rate": tail_n / n_all, "tail_lo": lo, "tail_hi": hi,
            "tail_true": sum(w.truth[s][TAIL] for s in SCENE_SET) / len(SCENE_SET),
            "implausible": sum(counts[s]["implausible"] for s in SCENE_SET) / n_all, "gate": gate.outcome,
            "gate_passed": gate.passed, "gate_failures": [f"{c['check']}:{c['scene']}:{c['label']}"
                                                          for c in gate.failures][:6]}


def lever_rows(bench: SpeedupsBench, device: torch.device) -> Iterator[dict[str, Any]]:
    """One row per lever (``LEVERS``, less ``bench.skip``), each as soon as it is measured: coverage,
    then throughput and one-rollout latency timed round-robin against the lever's reference row in the
    same run (so the ratio is immune to load drift), and the TV and tail changes against it."""
    w = _Workload(bench, device)
    by_label: dict[str, dict[str, Any]] = {}
    for label, changes, ref in LEVERS:
        if any(label.startswith(p) for p in bench.skip) or (changes.get("precision") == "int8" and device.type != "cpu"):
            continue
        row = {"lever": label, "changes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in changes.items()},
               "reference": ref, **_coverage(w, label, changes)}
        refrow = by_label.get(ref, row)
        row.update(throughput=None, latency_one_rollout=None, speed_ratio=None, latency_ratio=None,
                   tv_change=row["mean_tv"] - refrow["mean_tv"], tail_change=row["tail_rate"] - refrow["tail_rate"])
        if bench.timing:
            mine, theirs = w.timed(label), w.timed(ref)
            thr_t = measure_interleaved({"lever": mine[0], "ref": theirs[0]}, batch=bench.n, device=device, warmup=1,
                                        repeats=bench.repeats)
            lat_t = measure_interleaved({"lever": mine[1], "ref": theirs[1]}, batch=1, device=device, warmup=1,
                                        repeats=max(5, bench.repeats))
            row.update(throughput=thr_t["lever"].row(), latency_one_rollout=lat_t["lever"].row(),
                       speed_ratio=thr_t["ref"].median_s / thr_t["lever"].median_s,
                       latency_ratio=lat_t["ref"].median_s / lat_t["lever"].median_s)
        by_label[label] = row
        yield row
