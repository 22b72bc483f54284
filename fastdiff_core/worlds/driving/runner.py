"""``run(spec, device, on_progress) -> RunResult`` for the driving world.

Samples ``samples x plans x futures`` rollouts of ``horizon`` frames of the shipped teacher (with a
solver) or of a shipped student (``sampler="student"``, via ``students.driving.spec_frame_sampler``) in the
spec's scene under its action (every rollout here takes the same action; the rollout module owns
proper P x R fan-out), labels their branches, and measures coverage against the exact branch
probabilities: the histogram with Wilson intervals, TV, the tail rate, the implausible rate,
sample-level metrics against simulator rollouts, and the coverage gate on this scene.
Memory: batches of min(world_options.batch, FASTDIFF_CHUNK_ROLLOUTS) rollouts per forward; each batch
is labelled as it arrives and dropped (branch counts accumulate per batch), keeping only the first
``KEPT_ROLLOUTS`` for the sample-level metrics and the preview, so the peak does not grow with n.
NFE: ``nfe_counted`` is every per-sample network evaluation the NFE counter saw; ``nfe_formula``
is the budget module's S x C x H x P x R x samples for the same spec.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.limits import RunLimits
from fastdiff_core.metrics.coverage import branch_histogram
from fastdiff_core.metrics.gate import RELEASE_GATE, SequentialGate, coverage_gate, run_summary
from fastdiff_core.models.teacher import load_teacher
from fastdiff_core.spec import Progress, RunResult, RunSpec
from fastdiff_core.worlds.driving.evaluation import SceneCoverage, sample_metrics, solver_and_grid, stream_rollouts
from fastdiff_core.worlds.driving.sampling import sample_frame
from fastdiff_core.worlds.driving.branches import branch_counts
from fastdiff_core.worlds.driving.scenes import LABELS, branch_probabilities, get_scene

PREVIEW_ROLLOUTS = 12
KEPT_ROLLOUTS = 2000  # the sample-level metrics' max_n: the first rollouts they compare (and the preview's)
_CODES = {label: i for i, label in enumerate(LABELS)}


@dataclass
class _Frames:
    """What samples the spec's frames: the frame sampler (teacher solver or student), its network, solver and
    grid (None for a student), the student's description, the dtype and the rows per batched forward."""

    sampler: Callable
    net: torch.nn.Module | None
    solver: Callable | None
    sigmas: list[float] | None
    about: dict
    dtype: torch.dtype
    batch: int


@dataclass
class _Drawn:
    """What the looks drew: branch counts, the first KEPT_ROLLOUTS rollouts, rollouts and looks drawn, time."""

    counts: dict[str, int]
    rollouts: torch.Tensor
    n: int
    looks: int
    seconds: float


def run(spec: RunSpec, device: torch.device, on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    from fastdiff_core.worlds.driving.planning import needs_planning_runner, run_planning

    if needs_planning_runner(spec):  # a P x R fan-out or a speed-up toggle: the planning runner
        return run_planning(spec, device, on_progress)
    t_start = time.perf_counter()
    scene, action = get_scene(spec.scene), spec.world_options["action"]
    frames = _frames(spec, device)
    bill = budget.bill_for(spec, sigmas=frames.sigmas)
    config = replace(RELEASE_GATE, alpha=spec.gate_alpha)
    truth = branch_probabilities(scene, action, spec.horizon)
    sequential = SequentialGate({scene.name: truth}, config, cap=spec.gate_cap) if spec.sequential else None
    counter = NFECounter()
    drawn = _draw(spec, device, frames, scene, sequential, counter, on_progress)
    cycles = drawn.looks * spec.samples  # the planning cycles drawn: what the bill and the cost count
    if on_progress is not None:
        on_progress(Progress(1, 1, counter.rows, 0.0, "metrics"))

    cov = SceneCoverage(scene.name, action, spec.horizon, drawn.counts, truth)
    gate = (coverage_gate({scene.name: cov.counts}, {scene.name: cov.truth}, config) if sequential is None
            else sequential.result)
    tail, tail_lo, tail_hi = cov.tail()
    metrics = {"tv": cov.tv, "tail_rate": tail, "tail_lo": tail_lo, "tail_hi": tail_hi,
               "tail_truth": cov.truth["darts"], "implausible_rate": cov.implausible_rate,
               "gate_pass": float(gate.passed), "gate_tv_limit": gate.tv_limit,
               "nfe_per_frame": counter.nfe / spec.horizon if drawn.n else 0.0,
               "nfe_per_cycle": counter.rows / cycles, "cycles": float(cycles), "rollouts_drawn": float(drawn.n)}
    if drawn.n > int(spec.world_options["k"]) + 1:
        metrics.update(sample_metrics(drawn.rollouts, scene, action, k=int(spec.world_options["k"]), seed=spec.seed))
    info = {"teacher": spec.world_options["teacher"], "action": action, "truth": dict(cov.truth),
            "counts": dict(cov.counts), "bill": bill.formula(), "sigmas": list(frames.sigmas or ()), **frames.about,
            "gate_failures": [dict(f) for f in gate.failures],
            "preview_columns": ["rollout", "frame", "substep", "y", "x", "branch"], "branch_codes": list(LABELS),
            "gate": run_summary(gate, sequential)}
    if sequential is not None:
        info["sequential"] = sequential.record(spec.samples * spec.plans * spec.futures, drawn.looks)
    return RunResult(spec=spec, device=str(device), wall_s=time.perf_counter() - t_start,
                     nfe_counted=float(counter.rows), nfe_formula=float(replace(bill, cycles=cycles).per_run),
                     metrics=metrics, histograms=tuple(branch_histogram(cov.counts, cov.truth, group=scene.name)),
                     latency=_latency(spec, frames, drawn, counter, str(device)), samples=_preview(drawn, scene),
                     info=info)


def _frames(spec: RunSpec, device: torch.device) -> _Frames:
    """The spec's frame sampler: a shipped student, or the teacher (in the spec's dtype) with its solver."""
    opts = spec.world_options
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    batch = min(int(opts["batch"]), RunLimits.from_env().chunk_rollouts)  # the chunk setting bounds the peak
    if spec.sampler == "student":
        from fastdiff_core.students.driving import spec_frame_sampler

        frame_sampler, about = spec_frame_sampler(spec, device)
        return _Frames(frame_sampler, None, None, None, about, dtype, batch)
    net = load_teacher(opts["teacher"], device)
    if dtype != torch.float32:
        net = copy.deepcopy(net).to(dtype)  # the cached float32 teacher stays as it is
    solver, sigmas = solver_and_grid(spec.solver, spec.steps, grid=spec.grid, solver_options=spec.solver_options,
                                     grid_options=spec.grid_options)
    return _Frames(sample_frame, net, solver, sigmas, {"model_checksum": getattr(net, "sha256", None)}, dtype, batch)


def _draw(spec: RunSpec, device: torch.device, frames: _Frames, scene, sequential: SequentialGate | None,
          counter: NFECounter, on_progress: Callable[[Progress], None] | None) -> _Drawn:
    """Looks of samples x plans x futures rollouts: one without a sequential gate; with one, looks until
    the gate decides or hits its cap. The first look's batches take the spec's seed (the fixed-n run of
    the same spec), look k >= 1 a seed mixed from (seed, k), so neighbouring spec seeds share no look.
    Each batch is counted and dropped, keeping the first KEPT_ROLLOUTS rollouts."""
    look = spec.samples * spec.plans * spec.futures
    max_looks = spec.max_cycles // spec.samples
    guidance = Guidance(spec.guidance_scale, spec.guidance_interval)
    t0 = time.perf_counter()

    def frame_done(done: int, total: int) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - t0
            on_progress(Progress(done, total, counter.rows, elapsed / done * (total - done), "sampling"))

    kept: list[torch.Tensor] = []
    counts = dict.fromkeys(LABELS, 0)
    looks = n = 0
    with torch.no_grad():
        while True:
            look_counts = dict.fromkeys(LABELS, 0)
            for r in stream_rollouts(frames.net, scene, spec.world_options["action"], look, spec.horizon,
                                     solver=frames.solver, sigmas=frames.sigmas, guidance=guidance,
                                     seed=_look_seed(spec.seed, looks), counter=counter, device=device,
                                     batch=frames.batch, frame_sampler=frames.sampler, dtype=frames.dtype,
                                     on_frame=lambda d, t, k=looks: frame_done(k * t + d, max_looks * t)):
                r = r.to(torch.float32)
                for label, c in branch_counts(r, scene).items():
                    look_counts[label] += c
                if n < KEPT_ROLLOUTS:
                    kept.append(r[:KEPT_ROLLOUTS - n])
                n += len(r)
            looks += 1
            counts = {label: counts[label] + look_counts[label] for label in LABELS}
            if sequential is None:
                break
            sequential.update({scene.name: look_counts})
            if sequential.stop:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return _Drawn(counts, torch.cat(kept), n, looks, time.perf_counter() - t0)


def _latency(spec: RunSpec, frames: _Frames, drawn: _Drawn, counter: NFECounter, dev: str) -> tuple[dict, ...]:
    """The run's sampling time, and per frame and per forward (batch: rows per batched forward)."""
    batch = min(drawn.n, frames.batch)
    frames_run = spec.horizon * drawn.looks * -(-spec.samples * spec.plans * spec.futures // frames.batch)
    return ({"what": "run_sampling", "seconds": drawn.seconds, "batch": batch, "device": dev},
            {"what": "frame", "seconds": drawn.seconds / max(1, frames_run), "batch": batch, "device": dev},
            {"what": "forward", "seconds": drawn.seconds / max(1, counter.forwards), "batch": batch, "device": dev})


def _preview(drawn: _Drawn, scene) -> tuple[tuple[float, ...], ...]:
    """The first PREVIEW_ROLLOUTS rollouts, one row per (rollout, frame, substep) with its branch code."""
    rollouts = drawn.rollouts
    codes = torch.tensor([_CODES[lab] for lab in _labels(rollouts[:PREVIEW_ROLLOUTS], scene)])
    return tuple(
        (float(i), float(f), float(s), float(rollouts[i, f, s, 0]), float(rollouts[i, f, s, 1]), float(codes[i]))
        for i in range(min(PREVIEW_ROLLOUTS, drawn.n)) for f in range(rollouts.shape[1])
        for s in range(rollouts.shape[2]))


def _look_seed(seed: int, look: int) -> int:
    """The generator seed of a sequential run's look: ``seed`` for the first, else 63 bits mixed from
    (seed, look) by numpy's SeedSequence (seed + look would make seed 1's first look seed 0's second; the
    batches inside a look take ``seeds.derived_seed(look seed, b)``, a different key, so none aliases)."""
    if look == 0:
        return seed
    return int(np.random.SeedSequence([seed, look]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _labels(rollouts: torch.Tensor, scene) -> list[str]:
    from fastdiff_core.worlds.driving.branches import classify

    return classify(rollouts, scene)
