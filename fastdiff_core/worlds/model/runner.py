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
from fastdiff_core.metrics.gate import RELEASE_GATE, GateConfig, teacher_gate
from fastdiff_core.metrics.reference_modes import OUTLIER, ModeModel, fit_modes
from fastdiff_core.models.loading import LoadedModel, load_classifier
from fastdiff_core.models.model_cache import MODELS
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
    ref = Reference(full.numpy(), counts, counts_half, tv, float(counter.rows), time.perf_counter() - t0, modes)
    if len(_REFERENCES) > 16:
        _REFERENCES.pop(next(iter(_REFERENCES)))
    _REFERENCES[key] = ref
    return ref, False


def _tail(ref: Reference, tail_rate_limit: float) -> str | None:
    """The gate's tail: the rarest mode below ``tail_rate_limit`` in the reference, or None."""
    n = sum(ref.counts.values())
    rare = {k: v for k, v in ref.counts.items() if 0 < v < tail_rate_limit * n and k != OUTLIER}
    return min(rare, key=lambda k: (rare[k], k)) if rare else None


def run(spec: Any, device: torch.device, on_progress: Callable | None = None) -> RunResult:
    """Sample ``spec.model`` with the spec's sampler and gate its modes against the model's reference."""
    t_start = time.perf_counter()
    opts = dict(spec.world_options)
    model, warm = MODELS.get(spec.model, device)
    load_s = time.perf_counter() - t_start
    ref, cached = reference(model, opts, spec.seed)
    n = spec.samples

    counter = NFECounter()

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(Progress(done, n, float(counter.rows), None))

    gen = torch.Generator().manual_seed(spec.seed)
    sigmas = build_grid(spec.grid, spec.steps, model.path, spec.grid_options)
    sampler = frame_sampler(spec.solver, spec.solver_options, parallel=spec.parallel,
                            parallel_options=spec.parallel_options, generator=gen)
    labels = class_labels(model, opts["label"], n, gen)
    t0 = time.perf_counter()
    fast, net_dtype = with_speedups(model, spec.precision, spec.compile)
    x = draw(fast, sampler, sigmas, n, labels, Guidance(spec.guidance_scale, spec.guidance_interval), counter, gen,
             opts["batch"], progress, net_dtype)
    sample_s = time.perf_counter() - t0
    counts = classify(model, x) if ref.modes is None else ref.modes.counts(x.numpy())
    tail = _tail(ref, opts["tail_rate"])
    labels_all = list(ref.counts) + [k for k in counts if k not in ref.counts]
    gate = teacher_gate({"model": {k: counts.get(k, 0) for k in labels_all}},
                        {"model": {k: ref.counts.get(k, 0) for k in labels_all}},
                        GateConfig(alpha=RELEASE_GATE.alpha, tail=tail or "(no tail)",
                                   leak_labels=(OUTLIER,) if OUTLIER in labels_all else ()))
    ref_rates = {k: v / sum(ref.counts.values()) for k, v in ref.counts.items()}
    rate = tail_rate(counts, tail)[0] if tail else 0.0
    summary = gate.summary()
    converged = ref.convergence_tv <= CONVERGED_TV
    summary["text"] = (f"{gate.outcome} against the model's own reference ({REFERENCE_SOLVER}, "
                       f"{opts['reference_steps']} steps, {sum(ref.counts.values())} samples; convergence TV "
                       f"{ref.convergence_tv:.3f}); " + (f"tail {tail!r}" if tail else "no mode below the tail rate"))
    if not converged and gate.outcome == "PASS":  # a PASS against an unconverged reference proves nothing
        summary.update(outcome="UNDECIDED", passed=False)
        summary["text"] = (f"UNDECIDED: the reference has not converged (TV {ref.convergence_tv:.3f} > {CONVERGED_TV} "
                           f"between {opts['reference_steps']} and {opts['reference_steps'] // 2} steps; raise "
                           "world_options.reference_steps); against it the sampler would PASS")
    dev = str(device)
    return RunResult(
        spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(counter.rows),
        nfe_formula=float(budget.bill_for(spec, sigmas=sigmas).per_run),
        metrics={"tv_reference": total_variation(counts, ref_rates), "tail_rate": rate,
                 "tail_rate_reference": ref_rates.get(tail, 0.0), "reference_tv_convergence": ref.convergence_tv,
                 "clusters": float(ref.modes.k if ref.modes is not None else len(ref.counts)), "reference_nfe": 0.0 if cached else ref.nfe,
                 "nfe_per_sample": counter.rows / n, "model_cached": float(warm), "model_load_s": load_s},
        histograms=tuple(branch_histogram(counts, ref_rates, group="model")
                         + branch_histogram(ref.counts, ref_rates, group="reference")),
        latency=({"what": "sampling", "seconds": sample_s, "batch": min(n, opts["batch"]), "device": dev},
                 {"what": "reference", "seconds": 0.0 if cached else ref.seconds, "batch": opts["batch"],
                  "device": dev}),
        samples=tuple(tuple(float(v) for v in row.reshape(-1)[:64]) for row in x[:PREVIEW_ROWS]),
        info={"model": model.record.to_dict() | {"interface": None}, "model_checksum": model.record.checksum,
              "gate": summary, "tail": tail, "sigmas": list(sigmas),
              "modes": ref.modes.summary() if ref.modes is not None else {"classifier": model.record.classifier},
              "reference": {"solver": REFERENCE_SOLVER, "steps": opts["reference_steps"],
                            "samples": sum(ref.counts.values()), "convergence_tv": ref.convergence_tv,
                            "converged": converged, "converged_if_tv_at_most": CONVERGED_TV,
                            "half_steps_counts": ref.counts_half, "cached": cached},
              "nfe_unit": "per run; the reference's evaluations are metrics.reference_nfe"},
    )
