"""``run(spec, device, on_progress)`` for world = "digits": sample the shipped digits model with the spec's
solver, grid, steps and guidance, label the images, and judge the class histogram against the data's
frequencies (truth) and against the model's own converged sampling from the same noise (the teacher)."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from fastdiff_core import catalog
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.metrics.solver_error import mode_histogram
from fastdiff_core.worlds.digits.evaluation import REFERENCE, DigitsModel, Samples, judge, load_model, sample_digits
from fastdiff_core.worlds.digits.model import LABELS, WEIGHTS_DIR

PREVIEW_ROWS = 64
_MODELS: dict[str, DigitsModel] = {}  # loaded once per process and device (workers keep them)
_REFERENCES: dict[tuple, Samples] = {}


def model_for(device: torch.device) -> DigitsModel:
    key = str(device)
    if key not in _MODELS:
        _MODELS[key] = load_model(WEIGHTS_DIR, device)
    return _MODELS[key]


def reference_for(model: DigitsModel, condition: str, n: int, guidance: float, seed: int,
                  device: torch.device) -> tuple[Samples, float]:
    """The teacher's samples from the same noise (cached per process) and the seconds they took now."""
    key = (model.checksum, condition, n, guidance, seed, str(device))
    t0 = time.perf_counter()
    if key not in _REFERENCES:
        if len(_REFERENCES) >= 8:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = sample_digits(model, condition=condition, n=n, solver=REFERENCE.solver,
                                         steps=REFERENCE.steps, grid=REFERENCE.grid, guidance=guidance, seed=seed)
    return _REFERENCES[key], time.perf_counter() - t0


def run(spec: Any, device: torch.device, on_progress: Callable | None = None) -> Any:
    from fastdiff_core.spec import Progress, RunResult

    t_start = time.perf_counter()
    progress = on_progress or (lambda p: None)
    condition = spec.world_options["condition"]
    model = model_for(device)
    n = spec.samples
    ref, ref_seconds = reference_for(model, condition, n, spec.guidance_scale, spec.seed, device)
    progress(Progress(n, n, 0.0, None, "reference"))
    t0 = time.perf_counter()

    def chunk_done(done: int, nfe: float) -> None:
        elapsed = time.perf_counter() - t0
        progress(Progress(done, n, nfe, elapsed / done * (n - done), "sampling"))

    out = sample_digits(model, condition=condition, n=n, solver=spec.solver, steps=spec.steps, grid=spec.grid,
                        guidance=spec.guidance_scale, seed=spec.seed, solver_options=spec.solver_options,
                        grid_options=spec.grid_options, on_chunk=chunk_done)
    judged = judge(model, condition, out.counts(), ref.counts())
    truth = model.truth(condition)
    rare = model.rare
    rare_lo, rare_hi = wilson_interval(out.counts()[rare], n)
    metrics = {k: float(judged[k]) for k in ("rare_rate", "rare_rate_truth", "rare_rate_ref", "tv_truth", "tv_ref",
                                             "tv_model", "unreadable_rate")}
    metrics.update({"rare_rate_lo": rare_lo, "rare_rate_hi": rare_hi, "nfe_per_sample": out.nfe_counted / n,
                    "label_agreement_ref": float((out.labels == ref.labels).to(torch.float64).mean()),
                    "sigma_max": out.sigmas[0], "sigma_min": out.sigmas[-2]})
    truth_list = [truth[k] for k in LABELS]
    histograms = tuple(mode_histogram(out.labels, truth_list, LABELS, "solver")
                       + mode_histogram(ref.labels, truth_list, LABELS, "reference"))
    m = min(n, PREVIEW_ROWS)
    preview = torch.cat([out.labels[:m, None].to(torch.float64), out.images[:m].reshape(m, 64).to(torch.float64)], 1)
    info = catalog.solver_info(spec.solver)
    dev = str(device)
    return RunResult(
        spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=out.nfe_counted,
        nfe_formula=out.nfe_formula, metrics=metrics, histograms=histograms,
        latency=({"what": "sampling", "seconds": out.seconds, "batch": min(n, 1000), "device": dev},
                 {"what": "reference", "seconds": ref_seconds, "batch": min(n, 1000), "device": dev}),
        samples=tuple(tuple(r) for r in preview.tolist()),
        info={"world": "digits", "labels": list(LABELS), "rare_label": rare, "condition": condition,
              "model": str(model.directory.name), "model_sha256": model.checksum,
              "gate_truth": judged["gate_truth"], "gate_ref": judged["gate_ref"],
              "gate_teacher_vs_truth": judged["gate_teacher_vs_truth"],
              "reference": f"the model itself: {REFERENCE.solver} x {REFERENCE.steps} steps ({REFERENCE.grid} grid), "
                           "same noise and guidance",
              "truth": "class frequencies of the training data (sklearn load_digits, the rare digit thinned)",
              "solver_title": info.title, "solver_paper": info.paper, "sigmas": out.sigmas,
              "samples_columns": ["label"] + [f"p{i}" for i in range(64)],
              "nfe_unit": "per run (network evaluations of one sample, summed over the samples; guided steps "
                          "count 2); per sample in metrics.nfe_per_sample"},
    )
