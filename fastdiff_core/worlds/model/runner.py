"""The user-model world's runner: sample a registered model, judge its modes against its own reference.

1. The model comes from this process's cache (``models.model_cache.MODELS``: loaded once, kept).
2. The reference (cached with it, per model checksum, label, size and seed): ``reference_samples``
   independent draws of Heun at ``reference_steps`` on a Karras grid at guidance 1 (the model's own
   distribution), and the same noise at half the steps; their modes' TV is the convergence check.
3. Modes: the model's declared classifier, or clusters of the reference (``metrics.reference_modes``:
   k by least BIC, tails below ``tail_rate``).
4. The spec's sampler (solver, grid, steps, guidance, Picard, precision, compile) draws ``samples`` from fresh noise; its
   mode counts are gated against the reference's counts by ``teacher_gate``, which carries the
   reference's own sampling noise (its rates enter as intervals).

NFE: ``nfe_counted`` is the spec's sampler only (it equals the bill); the reference's evaluations are
``metrics.reference_nfe`` (0 when the reference came from the cache).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.metrics.coverage import branch_histogram, tail_rate, total_variation
from fastdiff_core.metrics.gate import GateConfig, SequentialGate, teacher_gate
from fastdiff_core.metrics.reference_modes import OUTLIER, ModeModel, fit_modes
from fastdiff_core.models.loading import LoadedModel, load_classifier
from fastdiff_core.models.model_cache import MODELS
from fastdiff_core.setup_time import one_off
from fastdiff_core.spec import Progress, RunResult
from fastdiff_core.speedups import frame_sampler, prepare_model

REFERENCE_SOLVER = "heun"
REFERENCE_SEED_OFFSET = 0x5EED_0000_0000  # the reference's noise never equals a run's at any seed below it
PREVIEW_ROWS = 16
CONVERGED_TV = 0.02  # a reference whose modes move more than this between its two NFE settings has not converged


@dataclass(frozen=True)
class Reference:
    """The model's converged sampling: samples, mode counts, the convergence TV, its cost."""

    samples: np.ndarray
    counts: dict[str, int]
    counts_half: dict[str, int]
    convergence_tv: float
    nfe: float
    seconds: float
    modes: ModeModel | None


_REFERENCES: dict[tuple, Reference] = {}
_PREPARED: dict[tuple, LoadedModel] = {}  # (checksum, device, precision, compile) -> the model with them applied


def with_speedups(model: LoadedModel, precision: str, compile: bool) -> tuple[LoadedModel, torch.dtype | None]:
    """(the model with the spec's precision and compile toggles, the network dtype the denoiser casts to);
    kept beside the model so a worker prepares each variant once."""
    if precision == "float32" and not compile:
        return model, None
    key = (model.record.checksum, str(model.device), precision, compile)
    if key not in _PREPARED:
        if len(_PREPARED) > 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = dataclasses.replace(model, net=prepare_model(model.net, precision=precision, compile=compile))
    return _PREPARED[key], torch.bfloat16 if precision == "bfloat16" else None


def class_labels(model: LoadedModel, label: int, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """Labels of n samples: the given one, every class label in turn (shuffled) for -1, or None."""
    iface = model.interface
    if iface.num_classes == 0:
        return None
    if label != -1:
        return torch.full((n,), label, dtype=torch.long)
    choices = torch.tensor(iface.labels, dtype=torch.long)
    idx = torch.arange(n) % len(choices)
    return choices[idx[torch.randperm(n, generator=generator)]]


def draw(model: LoadedModel, sampler: Callable, sigmas, n: int, labels: torch.Tensor | None, guidance: Guidance,
         counter: NFECounter, generator: torch.Generator, batch: int,
         progress: Callable[[int], None] | None = None, net_dtype: torch.dtype | None = None) -> torch.Tensor:
    """n samples in batches of ``batch``; returns (n, *sample_shape) on the CPU."""
    shape, device, out = model.interface.sample_shape, model.device, []
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        x = torch.randn(rows, *shape, generator=generator) * sigmas[0]
        cond = None if labels is None else labels[start:start + rows].to(device)
        uncond = model.null_condition(rows) if guidance.scale != 1.0 else None
        den = model.denoiser(cond=cond, uncond=uncond, guidance=guidance, counter=counter, net_dtype=net_dtype)
        with torch.no_grad():
            out.append(sampler(den, x.to(device), sigmas).cpu())
        if progress is not None:
            progress(start + rows)
    return torch.cat(out)


def mode_names(model: LoadedModel, f: Callable, found: int) -> tuple[str, ...]:
    """The names of a classifier's outputs: its own ``labels`` when it declares them (a classifier's outputs are
    not the model's conditioning classes: the digits model is conditioned on 13, its classifier reads 10), else
    the model's class names (a classifier of the model's own classes, index for index; a null class in the last
    row is no class and left out), else 'class i'. Every declared output is listed, so a mode no sample reached
    is counted 0 instead of vanishing."""
    declared = getattr(f, "labels", None)  # an optional attribute of the user's classifier hook
    if declared is not None:
        names = tuple(str(n) for n in declared)
        if found > len(names):
            raise ValueError(f"classifier {model.record.classifier!r} returned class {found - 1}, but declares only "
                             f"{len(names)} labels {list(names)}")
        return names
    iface = model.interface
    names = tuple(iface.class_names)
    if names and iface.null_class == len(names) - 1:
        names = names[:-1]
    classes = max(found, len(names))
    return names if len(names) >= classes else tuple(f"class {i}" for i in range(classes))


def classify(model: LoadedModel, x: torch.Tensor) -> dict[str, int]:
    """Mode counts from the model's declared classifier, keyed by ``mode_names``."""
    f = load_classifier(model.record.classifier)
    with torch.no_grad():
        idx = torch.as_tensor(f(x)).long().reshape(-1)
    names = mode_names(model, f, int(idx.max()) + 1 if idx.numel() else 0)
    return {name: int((idx == i).sum()) for i, name in enumerate(names)}


def reference(model: LoadedModel, opts: dict, seed: int) -> tuple[Reference, bool]:
    """(the reference for these options, whether it came from the cache)."""
    key = (model.record.checksum, str(model.device), opts["label"], opts["reference_steps"],
           opts["reference_samples"], opts["modes"], opts["max_clusters"], opts["tail_rate"], seed)
    if key in _REFERENCES:
        return _REFERENCES[key], True
    ref = _sample_reference(model, opts, seed)
    if len(_REFERENCES) > 16:
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = ref
    return ref, False


@one_off  # cached for the later runs of the seed: the run records it as setup (run-time fits leave it out)
def _sample_reference(model: LoadedModel, opts: dict, seed: int) -> Reference:
    t0 = time.perf_counter()
    n, steps = opts["reference_samples"], opts["reference_steps"]
    counter = NFECounter()
    draws = []
    for s in (steps, steps // 2):  # the same noise and labels at both settings
        gen = torch.Generator().manual_seed(REFERENCE_SEED_OFFSET + seed)
        labels = class_labels(model, opts["label"], n, gen)
        draws.append(draw(model, frame_sampler(REFERENCE_SOLVER, {}), build_grid("karras", s, model.path), n, labels,
                          Guidance(), counter, gen, opts["batch"]))
    full, half = draws
    if opts["modes"] == "classifier":
        modes, counts, counts_half = None, classify(model, full), classify(model, half)
    else:
        modes = fit_modes(full.numpy(), max_clusters=opts["max_clusters"], tail_rate=opts["tail_rate"], seed=seed)
        counts, counts_half = modes.counts(full.numpy()), modes.counts(half.numpy())
    tv = total_variation(counts_half, {k: v / n for k, v in counts.items()})
    return Reference(full.numpy(), counts, counts_half, tv, float(counter.rows), time.perf_counter() - t0, modes)


def _tail(ref: Reference, tail_rate_limit: float) -> str | None:
    """The gate's tail: the rarest mode below ``tail_rate_limit`` in the reference, or None."""
    n = sum(ref.counts.values())
    rare = {k: v for k, v in ref.counts.items() if 0 < v < tail_rate_limit * n and k != OUTLIER}
    return min(rare, key=lambda k: (rare[k], k)) if rare else None


@dataclass
class _Sampled:
    """The spec's sampler's draws: mode counts, the preview rows, samples and looks drawn, the sequential
    gate (None at a fixed n), sampling time, the counter and the grid."""

    counts: dict[str, int]
    preview: torch.Tensor
    n: int
    looks: int
    sequential: SequentialGate | None
    seconds: float
    counter: NFECounter
    sigmas: list[float]


def run(spec: Any, device: torch.device, on_progress: Callable | None = None) -> RunResult:
    """Sample ``spec.model`` with the spec's sampler and gate its modes against the model's reference; with
    ``spec.gate_cap``, in looks of ``samples`` until the gate decides or the cap is reached."""
    t_start = time.perf_counter()
    opts = dict(spec.world_options)
    model, warm = MODELS.get(spec.model, device)
    load_s = time.perf_counter() - t_start
    ref, cached = reference(model, opts, spec.seed)
    tail = _tail(ref, opts["tail_rate"])
    drawn = _sample(spec, model, ref, _gate_config(spec, ref, tail), on_progress)
    counts, n = drawn.counts, drawn.n
    labels_all = list(ref.counts) + [k for k in counts if k not in ref.counts]
    config = _gate_config(spec, ref, tail, labels_all)
    gate = (teacher_gate({"model": {k: counts.get(k, 0) for k in labels_all}},
                         {"model": {k: ref.counts.get(k, 0) for k in labels_all}}, config)
            if drawn.sequential is None else drawn.sequential.result)
    ref_rates = {k: v / sum(ref.counts.values()) for k, v in ref.counts.items()}
    dev = str(device)
    info = {"model": model.record.to_dict() | {"interface": None}, "model_checksum": model.record.checksum,
            "gate": _summary(gate, drawn.sequential, ref, opts, tail), "tail": tail, "sigmas": list(drawn.sigmas),
            "modes": ref.modes.summary() if ref.modes is not None else {"classifier": model.record.classifier},
            "reference": {"solver": REFERENCE_SOLVER, "steps": opts["reference_steps"],
                          "samples": sum(ref.counts.values()), "convergence_tv": ref.convergence_tv,
                          "converged": ref.convergence_tv <= CONVERGED_TV, "converged_if_tv_at_most": CONVERGED_TV,
                          "half_steps_counts": ref.counts_half, "cached": cached},
            "nfe_unit": "per run; the reference's evaluations are metrics.reference_nfe"}
    if drawn.sequential is not None:
        info["sequential"] = drawn.sequential.record(spec.samples, drawn.looks)
    bill = budget.bill_for(spec, sigmas=drawn.sigmas)
    return RunResult(
        spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(drawn.counter.rows),
        nfe_formula=float(dataclasses.replace(bill, cycles=n, repeats=drawn.counter.repeat_rows).per_run),
        metrics={"tv_reference": total_variation(counts, ref_rates),
                 "tail_rate": tail_rate(counts, tail)[0] if tail else 0.0,
                 "tail_rate_reference": ref_rates.get(tail, 0.0), "reference_tv_convergence": ref.convergence_tv,
                 "clusters": float(ref.modes.k if ref.modes is not None else len(ref.counts)),
                 "reference_nfe": 0.0 if cached else ref.nfe, "nfe_per_sample": drawn.counter.rows / n,
                 "nfe_repeats": float(drawn.counter.repeat_rows), "cycles": float(n), "rollouts_drawn": float(n),
                 "model_cached": float(warm), "model_load_s": load_s},
        histograms=tuple(branch_histogram(counts, ref_rates, group="model")
                         + branch_histogram(ref.counts, ref_rates, group="reference")),
        latency=({"what": "sampling", "seconds": drawn.seconds, "batch": min(n, opts["batch"]), "device": dev},
                 {"what": "reference", "seconds": 0.0 if cached else ref.seconds, "batch": opts["batch"],
                  "device": dev}),
        samples=tuple(tuple(float(v) for v in row.reshape(-1)[:64]) for row in drawn.preview), info=info)


def _gate_config(spec: Any, ref: Reference, tail: str | None, labels: list[str] | None = None) -> GateConfig:
    """The release tolerances at the spec's alpha, with the model's tail and its outlier mode as a leak."""
    labels = list(ref.counts) if labels is None else labels
    return GateConfig(alpha=spec.gate_alpha, tail=tail or "(no tail)",
                      leak_labels=(OUTLIER,) if OUTLIER in labels else ())


def _sample(spec: Any, model: LoadedModel, ref: Reference, config: GateConfig,
            on_progress: Callable | None) -> _Sampled:
    """Looks of ``spec.samples`` draws from one generator (the first look is the fixed-n run), counted into
    modes; with a sequential gate (two-sample against the reference, whose counts enter once), looks go on
    until it stops or ``gate_cap`` draws."""
    opts = spec.world_options
    counter = NFECounter()
    gen = torch.Generator().manual_seed(spec.seed)
    sigmas = build_grid(spec.grid, spec.steps, model.path, spec.grid_options)
    sampler = frame_sampler(spec.solver, spec.solver_options, parallel=spec.parallel,
                            parallel_options=spec.parallel_options, generator=gen)
    fast, net_dtype = with_speedups(model, spec.precision, spec.compile)
    guidance = Guidance(spec.guidance_scale, spec.guidance_interval)
    sequential = (SequentialGate({"model": ref.counts}, config, cap=spec.gate_cap, sampled_reference=True)
                  if spec.sequential else None)
    counts: dict[str, int] = {}
    looks, n, preview, t0 = 0, spec.samples, None, time.perf_counter()
    while True:
        def progress(done: int, before: int = looks * n) -> None:
            if on_progress is not None:
                on_progress(Progress(before + done, spec.max_cycles, float(counter.rows), None))

        labels = class_labels(model, opts["label"], n, gen)
        x = draw(fast, sampler, sigmas, n, labels, guidance, counter, gen, opts["batch"], progress, net_dtype)
        look = classify(model, x) if ref.modes is None else ref.modes.counts(x.numpy())
        counts = {k: counts.get(k, 0) + look.get(k, 0) for k in {**counts, **look}}
        preview = x[:PREVIEW_ROWS] if preview is None else preview
        looks += 1
        if sequential is None:
            break
        sequential.update({"model": look}, teacher_counts={"model": ref.counts if looks == 1 else {}})
        if sequential.stop or looks * n >= spec.max_cycles:
            break
    return _Sampled(counts, preview, looks * n, looks, sequential, time.perf_counter() - t0, counter, sigmas)


def _summary(gate, sequential: SequentialGate | None, ref: Reference, opts: dict, tail: str | None) -> dict:
    """The gate's outcome as the verdict quotes it; a PASS against an unconverged reference proves
    nothing and is reported UNDECIDED."""
    summary = gate.summary()
    how = ("" if sequential is None else
           f"sequential: {sequential.stopped}, {sequential.rollouts('model'):,} samples drawn; ")
    summary["text"] = (f"{gate.outcome} against the model's own reference ({REFERENCE_SOLVER}, "
                       f"{opts['reference_steps']} steps, {sum(ref.counts.values())} samples; convergence TV "
                       f"{ref.convergence_tv:.3f}); " + how
                       + (f"tail {tail!r}" if tail else "no mode below the tail rate"))
    if ref.convergence_tv > CONVERGED_TV and gate.outcome == "PASS":
        summary.update(outcome="UNDECIDED", passed=False)
        summary["text"] = (f"UNDECIDED: the reference has not converged (TV {ref.convergence_tv:.3f} > {CONVERGED_TV} "
                           f"between {opts['reference_steps']} and {opts['reference_steps'] // 2} steps; raise "
                           "world_options.reference_steps); against it the sampler would PASS")
    return summary
