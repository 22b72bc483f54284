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
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.limits import RunLimits
from fastdiff_core.metrics.coverage import branch_histogram
from fastdiff_core.metrics.gate import RELEASE_GATE, SequentialGate, coverage_gate
from fastdiff_core.models.teacher import load_teacher
from fastdiff_core.spec import Progress, RunResult, RunSpec
from fastdiff_core.worlds.driving.evaluation import SceneCoverage, sample_metrics, solver_and_grid, stream_rollouts
from fastdiff_core.worlds.driving.sampling import sample_frame
from fastdiff_core.worlds.driving.branches import branch_counts
from fastdiff_core.worlds.driving.scenes import LABELS, branch_probabilities, get_scene

PREVIEW_ROLLOUTS = 12
KEPT_ROLLOUTS = 2000  # the sample-level metrics' max_n: the first rollouts they compare (and the preview's)
_CODES = {label: i for i, label in enumerate(LABELS)}


def run(spec: RunSpec, device: torch.device, on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    from fastdiff_core.worlds.driving.planning import needs_planning_runner, run_planning

    if needs_planning_runner(spec):  # a P x R fan-out or a speed-up toggle: the planning runner
        return run_planning(spec, device, on_progress)
    t_start = time.perf_counter()
    opts = spec.world_options
    scene, action = get_scene(spec.scene), opts["action"]
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    about: dict = {}
    if spec.sampler == "student":
        from fastdiff_core.students.driving import spec_frame_sampler

        frame_sampler, about = spec_frame_sampler(spec, device)
        net, solver, sigmas = None, None, None
    else:
        frame_sampler = sample_frame
        net = load_teacher(opts["teacher"], device)
        if dtype != torch.float32:
            net = copy.deepcopy(net).to(dtype)  # the cached float32 teacher stays as it is
        solver, sigmas = solver_and_grid(spec.solver, spec.steps, grid=spec.grid,
                                         solver_options=spec.solver_options, grid_options=spec.grid_options)
    guidance = Guidance(spec.guidance_scale, spec.guidance_interval)
    bill = budget.bill_for(spec, sigmas=sigmas)
    config = replace(RELEASE_GATE, alpha=spec.gate_alpha)
    look = spec.samples * spec.plans * spec.futures  # rollouts per look (all of them without a sequential gate)
    # rows per batched forward: the world's batch option, at most the chunk setting (which bounds the peak)
    batch = min(int(opts["batch"]), RunLimits.from_env().chunk_rollouts)
    batches_per_look = -(-look // batch)
    max_looks = spec.max_cycles // spec.samples
    truth = branch_probabilities(scene, action, spec.horizon)
    sequential = SequentialGate({scene.name: truth}, config, cap=spec.gate_cap) if spec.sequential else None
    counter = NFECounter()
    t0 = time.perf_counter()

    def frame_done(done: int, total: int) -> None:
        if on_progress is not None:
            elapsed = time.perf_counter() - t0
            on_progress(Progress(done, total, counter.rows, elapsed / done * (total - done), "sampling"))

    # Looks of ``look`` rollouts: the first look's batches take generator seeds seed + b (the fixed-n run
    # of the same spec), look k >= 1 starts from a seed mixed from (seed, k), so neighbouring spec seeds
    # share no look. Without a sequential gate there is one look; with one, looks continue until the
    # gate decides or hits its cap.
    kept: list[torch.Tensor] = []  # the first KEPT_ROLLOUTS rollouts; every other batch is counted and dropped
    counts = dict.fromkeys(LABELS, 0)
    looks = n = 0
    with torch.no_grad():
        while True:
            on_frame = (lambda d, t, k=looks: frame_done(k * t + d, max_looks * t))
            look_counts = dict.fromkeys(LABELS, 0)
            for r in stream_rollouts(net, scene, action, look, spec.horizon, solver=solver, sigmas=sigmas,
                                     guidance=guidance, seed=_look_seed(spec.seed, looks), counter=counter,
                                     device=device, batch=batch, on_frame=on_frame, frame_sampler=frame_sampler,
                                     dtype=dtype):
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
    sampling_s = time.perf_counter() - t0
    rollouts = torch.cat(kept)
    cycles = looks * spec.samples  # the planning cycles drawn: what the bill and the cost count
    if on_progress is not None:
        on_progress(Progress(1, 1, counter.rows, 0.0, "metrics"))

    cov = SceneCoverage(scene.name, action, spec.horizon, counts, truth)
    rows = branch_histogram(cov.counts, cov.truth, group=scene.name)
    gate = (coverage_gate({scene.name: cov.counts}, {scene.name: cov.truth}, config) if sequential is None
            else sequential.result)
    tail, tail_lo, tail_hi = cov.tail()
    metrics = {"tv": cov.tv, "tail_rate": tail, "tail_lo": tail_lo, "tail_hi": tail_hi,
               "tail_truth": cov.truth["darts"], "implausible_rate": cov.implausible_rate,
               "gate_pass": float(gate.passed), "gate_tv_limit": gate.tv_limit,
               "nfe_per_frame": counter.nfe / spec.horizon if n else 0.0,
               "nfe_per_cycle": counter.rows / cycles, "cycles": float(cycles), "rollouts_drawn": float(n)}
    k = int(opts["k"])
    if n > k + 1:
        metrics.update(sample_metrics(rollouts, scene, action, k=k, seed=spec.seed))

    codes = torch.tensor([_CODES[lab] for lab in _labels(rollouts[:PREVIEW_ROLLOUTS], scene)])
    preview = tuple(
        (float(i), float(f), float(s), float(rollouts[i, f, s, 0]), float(rollouts[i, f, s, 1]), float(codes[i]))
        for i in range(min(PREVIEW_ROLLOUTS, n)) for f in range(rollouts.shape[1]) for s in range(rollouts.shape[2])
    )
    dev = str(device)
    latency = (
        {"what": "run_sampling", "seconds": sampling_s, "batch": min(n, batch), "device": dev},
        {"what": "frame", "seconds": sampling_s / max(1, spec.horizon * looks * batches_per_look),
         "batch": min(n, batch), "device": dev},
        {"what": "forward", "seconds": sampling_s / max(1, counter.forwards), "batch": min(n, batch), "device": dev},
    )
    info = {"teacher": opts["teacher"], "action": action, "truth": dict(cov.truth), "counts": dict(cov.counts),
            "bill": bill.formula(), "sigmas": list(sigmas or ()), **about, "gate_failures": [dict(f) for f in gate.failures],
            "preview_columns": ["rollout", "frame", "substep", "y", "x", "branch"], "branch_codes": list(LABELS),
            "gate": _gate_summary(gate, sequential)}
    if sequential is not None:
        info["sequential"] = _sequential_record(sequential, look, looks)
    return RunResult(spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(counter.rows),
                     nfe_formula=float(replace(bill, cycles=cycles).per_run), metrics=metrics, histograms=tuple(rows), latency=latency,
                     samples=preview, info=info)


def _gate_summary(gate, sequential: SequentialGate | None = None) -> dict:
    """The release gate's outcome as the verdict quotes it ({outcome: pass|fail|undecided, text})."""
    shown = gate.failures if gate.outcome == "FAIL" else gate.undecided
    how = "" if sequential is None else (
        f", sequential: {_stopped(sequential)}, {sum(map(sequential.rollouts, sequential.counts)):,} rollouts drawn")
    text = (f"release coverage gate ({len(gate.checks)} checks, family-wise alpha {gate.alpha:g}{how}) {gate.outcome}"
            + ("" if gate.outcome == "PASS" else
               f" on {len(shown)}: " + "; ".join(f"{f['check']} {f['scene']} {f['label']}".strip() for f in shown[:3])
               + ("" if gate.outcome == "FAIL" else
                  f" (rollouts per scene likely to decide: {max((v or 0) for v in gate.more_samples_needed.values()):,})")))
    return {"outcome": gate.outcome.lower(), "text": text}


def _look_seed(seed: int, look: int) -> int:
    """The generator seed of a sequential run's look: ``seed`` for the first, else 63 bits mixed from
    (seed, look) by numpy's SeedSequence (seed + look would make seed 1's first look seed 0's second)."""
    if look == 0:
        return seed
    return int(np.random.SeedSequence([seed, look]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _stopped(sequential: SequentialGate) -> str:
    """Why a sequential gate stopped: every check decided, or the cap reached with some still open."""
    return ("decided" if sequential.result.outcome != "UNDECIDED" else
            f"cap of {sequential.cap:,} rollouts per scene reached")


def _sequential_record(sequential: SequentialGate, look: int, looks: int) -> dict:
    """What a sequential run records: cap, look size, looks drawn, rollouts per scene, decision, why it stopped."""
    return {"cap": sequential.cap, "look": look, "looks": looks, "alpha": sequential.config.alpha,
            "rollouts": {s: sequential.rollouts(s) for s in sequential.counts},
            "outcome": sequential.result.outcome, "stopped": _stopped(sequential),
            "method": "beta-binomial confidence sequence (anytime-valid; fastdiff_core.metrics.gate.SequentialGate)"}


def _labels(rollouts: torch.Tensor, scene) -> list[str]:
    from fastdiff_core.worlds.driving.branches import classify

    return classify(rollouts, scene)
