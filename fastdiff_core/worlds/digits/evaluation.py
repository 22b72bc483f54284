"""Sampling the digits model with any registry solver, labelling the samples, and measuring them against
the data's class frequencies (ground truth) and the model's own converged sampling (the teacher reference).

Two references, two gaps:
- truth: the thinned training set's class frequencies; generated vs truth is everything lost;
- teacher: the same model sampled at ``REFERENCE`` (its convergence checked against twice the steps);
  generated vs teacher is what the sampler lost, teacher vs truth what the model itself lost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from fastdiff_core import catalog
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.metrics.coverage import total_variation
from fastdiff_core.metrics.gate import GateConfig, coverage_gate, teacher_gate
from fastdiff_core.models.loading import LoadedModel, load_diffusers_dir
from fastdiff_core.setup_time import one_off
from fastdiff_core.worlds.digits.model import (
    BETA_END, BETA_START, CONDITIONS, LABELS, META_FILE, NULL_CLASS, NUM_TRAIN_TIMESTEPS, UNREADABLE, condition_truth,
    load_classifier,
)

CHUNK = 1000  # rows per sampling batch


@dataclass(frozen=True)
class Reference:
    """The teacher's converged setting; its convergence is checked against ``2 * steps``."""

    solver: str = "dpmpp_2m"
    steps: int = 32
    grid: str = "karras"


REFERENCE = Reference()


@dataclass(frozen=True, eq=False)
class DigitsModel:
    """A loaded digits folder: the diffusers model through fastdiff's loader (network, path, interface,
    checksum), the classifier and fastdiff's sidecar."""

    directory: Path
    loaded: LoadedModel
    classifier: Any
    meta: Mapping[str, Any]

    @property
    def unet(self) -> Any:
        return self.loaded.net.model

    @property
    def path(self) -> Any:
        return self.loaded.path

    @property
    def checksum(self) -> str:
        """sha256 of the UNet's safetensors weights (what every run records)."""
        return self.loaded.record.checksum

    @property
    def frequencies(self) -> dict[str, float]:
        return dict(self.meta["data"]["class_frequencies"])

    @property
    def rare(self) -> str:
        return str(self.meta["data"]["rare_digit"])

    def truth(self, condition: str) -> dict[str, float]:
        return condition_truth(self.frequencies, condition)


@one_off
def load_model(directory: Path, device: torch.device | str = "cpu") -> DigitsModel:
    """Load a folder written by ``fastdiff train digits``: the UNet, its path, prediction and null class
    through fastdiff's diffusers loader (``models.loading.load_diffusers_dir``, which reads them from the
    scheduler config and ``fastdiff_model.json``), checked against what the digits world trains; the
    classifier and the sidecar."""
    directory = Path(directory)
    meta_file = directory / META_FILE
    if not meta_file.is_file():
        raise ValueError(f"{directory} is not a digits model folder: no {META_FILE} (write one with fastdiff train digits)")
    meta = json.loads(meta_file.read_text())
    loaded = load_diffusers_dir(directory, name="digits").to(device)
    iface = loaded.interface
    got = {"prediction": iface.prediction, "time_scale": iface.time_scale, "num_classes": iface.num_classes,
           "null_class": iface.null_class, "path": iface.path.kind}
    want = {"prediction": "eps", "time_scale": float(NUM_TRAIN_TIMESTEPS - 1), "num_classes": len(CONDITIONS),
            "null_class": NULL_CLASS, "path": "vp_discrete"}
    if got != want:
        raise ValueError(f"{directory}: the loader reads {got}; the digits world trains {want}")
    classifier = load_classifier(directory / "classifier").to(device)
    return DigitsModel(directory, loaded, classifier, meta)


@dataclass
class Samples:
    """Generated images (n, 1, 8, 8), their labels (n,) into LABELS, and what they cost."""

    images: torch.Tensor
    labels: torch.Tensor
    nfe_counted: float  # per run: per-sample evaluations summed over the samples
    nfe_formula: float
    seconds: float
    sigmas: list[float] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = torch.bincount(self.labels, minlength=len(LABELS)).tolist()
        return {label: int(c[k]) for k, label in enumerate(LABELS)}


def start_noise(n: int, sigma_max: float, seed: int) -> torch.Tensor:
    """x_T in VE coordinates for n samples (the same for every solver at one seed and sigma_max)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen) * sigma_max


@torch.no_grad()
def sample_digits(model: DigitsModel, *, condition: str, n: int, solver: str, steps: int, grid: str = "karras",
                  guidance: float = 1.0, seed: int = 0, solver_options: Mapping[str, Any] | None = None,
                  grid_options: Mapping[str, Any] | None = None, on_chunk: Callable[[int, float], None] | None = None) -> Samples:
    """n images under ``condition`` with ``solver`` x ``steps`` on ``grid``, guidance ``guidance`` (toward
    the condition, away from the null class), labelled by the classifier. Declared NFE is checked against
    the counter for every chunk."""
    from fastdiff_core.solvers import sample
    from fastdiff_core.solvers.primitives import StepInfo

    if condition not in CONDITIONS:
        raise ValueError(f"condition={condition!r} is not one of {list(CONDITIONS)}")
    if guidance != 1.0 and condition == "none":
        raise ValueError(f"guidance={guidance!r} needs a condition; condition='none' (allowed: {list(CONDITIONS)[:-1]})")
    device = model.loaded.device
    sigmas = build_grid(grid, steps, model.path, grid_options)
    info = catalog.solver_info(solver)
    g = Guidance(guidance)
    x_all = start_noise(n, sigmas[0], seed)
    outs, labels, counted, formula, seconds = [], [], 0.0, 0.0, 0.0
    for c, lo in enumerate(range(0, n, CHUNK)):
        hi = min(n, lo + CHUNK)
        rows = hi - lo
        counter = NFECounter()
        den = model.loaded.denoiser(cond=model.loaded.condition(CONDITIONS[condition], rows), counter=counter,
                                    uncond=model.loaded.null_condition(rows) if g.scale != 1.0 else None, guidance=g)
        evals: list[float] = []

        def record(s: StepInfo) -> None:
            evals.extend(s.eval_sigmas)

        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + c + 1)
        t0 = time.perf_counter()
        x0 = sample(solver, den, x_all[lo:hi].to(device), sigmas, options=dict(solver_options or {}), generator=gen,
                    callback=record)
        seconds += time.perf_counter() - t0
        declared = info.nfe(steps, dict(solver_options or {}))
        if declared is not None and len(evals) != declared:
            raise RuntimeError(f"solver {solver!r} declared NFE {declared} for steps={steps} but made {len(evals)}")
        counted += counter.nfe * rows
        formula += sum(g.passes(s) for s in evals) * rows
        x0 = x0.clamp(-1.0, 1.0)
        outs.append(x0.cpu())
        labels.append(model.classifier.label(x0).cpu())
        if on_chunk is not None:
            on_chunk(hi, counted)
    images = torch.cat(outs)
    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError(f"solver {solver!r} produced non-finite samples")
    return Samples(images, torch.cat(labels), counted, formula, seconds, list(sigmas))


# ---------------------------------------------------------------------------------------------
# Judging a histogram: against the truth and against the teacher
# ---------------------------------------------------------------------------------------------


def judge(model: DigitsModel, condition: str, counts: Mapping[str, int], teacher: Mapping[str, int] | None,
          alpha: float = 0.05) -> dict:
    """The generated histogram against the data truth and the teacher: rates, TVs and both gates. Labels
    the condition cannot produce in the data (other digits) enter both gates as leaks."""
    truth = model.truth(condition)
    admitted = [k for k, v in truth.items() if v > 0]
    config = GateConfig(alpha=alpha, tail=model.rare if model.rare in admitted else admitted[0],
                        leak_labels=(UNREADABLE,))
    n = sum(counts.values())
    out = {"n": n, "rare": model.rare, "rare_rate": counts.get(model.rare, 0) / n,
           "rare_rate_truth": truth[model.rare], "tv_truth": total_variation(counts, truth),
           "unreadable_rate": counts.get(UNREADABLE, 0) / n,
           "gate_truth": coverage_gate({condition: counts}, {condition: truth}, config).summary()}
    if teacher is not None:
        nt = sum(teacher.values())
        t_rates = {k: v / nt for k, v in teacher.items()}
        out.update({"rare_rate_ref": teacher.get(model.rare, 0) / nt, "tv_ref": total_variation(counts, t_rates),
                    "tv_model": total_variation(teacher, truth), "ref_n": nt,
                    "gate_ref": teacher_gate({condition: counts}, {condition: dict(teacher)}, config).summary(),
                    "gate_teacher_vs_truth": coverage_gate({condition: teacher}, {condition: truth}, config).summary()})
    return out


def convergence(model: DigitsModel, condition: str, n: int, seed: int, guidance: float = 1.0,
                reference: Reference = REFERENCE) -> dict:
    """The reference against twice its steps from the same noise: how many labels flip, and the TV."""
    a = sample_digits(model, condition=condition, n=n, solver=reference.solver, steps=reference.steps,
                      grid=reference.grid, guidance=guidance, seed=seed)
    b = sample_digits(model, condition=condition, n=n, solver=reference.solver, steps=2 * reference.steps,
                      grid=reference.grid, guidance=guidance, seed=seed)
    cb = b.counts()
    nb = sum(cb.values())
    return {"steps": reference.steps, "steps_check": 2 * reference.steps, "n": n,
            "label_flip_rate": float((a.labels != b.labels).to(torch.float64).mean()),
            "tv": total_variation(a.counts(), {k: v / nb for k, v in cb.items()}),
            "pixel_rmse": float((a.images - b.images).pow(2).mean().sqrt()), "counts": a.counts()}


# ---------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------

CARD_CONDITIONS = ("none", "even")


def measure_card(model: DigitsModel, n: int = 1000, seed: int = 0) -> dict:
    """What the card shows: the teacher (REFERENCE) per condition vs the data truth, its convergence."""
    out = {"reference": {"solver": REFERENCE.solver, "steps": REFERENCE.steps, "grid": REFERENCE.grid},
           "n": n, "seed": seed, "conditions": {}}
    t0 = time.perf_counter()
    for condition in CARD_CONDITIONS:
        conv = convergence(model, condition, n, seed)
        judged = judge(model, condition, conv["counts"], None)
        out["conditions"][condition] = {"counts": conv["counts"], "truth": model.truth(condition), **judged,
                                        "convergence": {k: v for k, v in conv.items() if k != "counts"}}
    out["sampling_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render_card(meta: dict) -> str:
    """The model card (README.md of the folder) from the sidecar."""
    train, stats, data, m = meta["train"], meta["stats"], meta["data"], meta["measured"]
    rare = data["rare_digit"]
    freq = data["class_frequencies"]
    unet = train["unet"]
    lines = [
        "---", "library_name: diffusers", "tags: [fastdiff, digits, class-conditional, ddpm]", "---", "",
        "# fastdiff digits: a class-conditional DDPM on scikit-learn's handwritten digits", "",
        "A `UNet2DModel` (diffusers) that generates 8x8 handwritten digits, conditioned on a digit, a parity "
        "group (`even`, `odd`) or nothing (the null class, for classifier-free guidance), with one digit made "
        f"rare: **{rare}** is thinned to {freq[rare]:.1%} of the training set. A digit classifier trained by the "
        "same command labels samples for the class histogram. The data ship inside scikit-learn "
        "(`sklearn.datasets.load_digits`); nothing is downloaded. fastdiff's `digits` world runs it.", "",
        "## Reproduce", "", "```bash", meta["command"], "```", "",
        "## Files", "",
        "- `model_index.json`, `unet/`, `scheduler/`: a diffusers `DDPMPipeline` folder "
        "(`UNet2DModel.from_pretrained(folder + '/unet')` loads it); `scheduler/` is the training schedule",
        "- `classifier/`: the digit classifier (an MLP over the 64 pixels, safetensors + config)",
        "- `fastdiff.json`: the training config, the data's class frequencies, the class-embedding index of every "
        "condition, and everything this card shows", "",
        "## Training", "",
        f"- prediction **epsilon** on DDPM's linear betas ({BETA_START:g} to {BETA_END:g}, {NUM_TRAIN_TIMESTEPS} "
        f"steps); UNet channels {list(unet['block_out_channels'])}, {unet['layers_per_block']} layer(s) per block, "
        f"attention at the lowest resolution: {unet['attention_at_lowest']}; {stats['unet_parameters']:,} parameters",
        f"- class embedding: {len(meta['conditions'])} rows: digits 0-9, `even`, `odd`, null "
        f"(label dropout: null {train['p_null']}, parity group {train['p_group']}, digit otherwise)",
        f"- data: {data['diffusion_n']} training images ({data['train_n']} in the training split, {rare} thinned to "
        f"{freq[rare]:.2%}); {data['test_n']} held out (stratified, seed {train['seed']})",
        f"- {train['steps']} steps, batch {train['batch']}, AdamW lr {train['lr']} (warm-up, cosine to 2%, "
        f"{train['warmup']}), EMA {train['ema']} "
        f"({'warmed up: min(decay, (1 + k) / (10 + k))' if train.get('ema_warmup') else 'fixed from step 0'}), "
        f"seed {train['seed']}",
        f"- training time: **{stats['unet_seconds'] / 60:.1f} min** UNet + {stats['classifier_seconds']:.0f} s "
        f"classifier on {stats['threads']} CPU thread(s) ({stats['host']}); final loss {stats['final_loss']:.4f}", "",
        "## Classifier", "",
        f"Held-out accuracy **{stats['heldout_accuracy']:.4f}** on {stats['heldout_n']} digits (unreadable: top "
        f"softmax below 0.5, {stats['heldout_unreadable']:.2%}). Per digit: "
        + ", ".join(f"{d}: {a:.3f}" for d, a in stats["heldout_per_digit"].items()) + ".", "",
        "## Measured: the teacher against the data", "",
        f"{m['reference']['solver']} x {m['reference']['steps']} steps ({m['reference']['grid']} grid), guidance 1, "
        f"n = {m['n']} per condition, seed {m['seed']}; convergence: the same noise at twice the steps.", "",
        "| condition | rare digit rate (teacher / data) | unreadable | TV vs data | gate vs data | labels flipped at 2x steps | TV at 2x steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond, c in m["conditions"].items():
        conv = c["convergence"]
        lines.append(f"| {cond} | {c['rare_rate']:.4f} / {c['rare_rate_truth']:.4f} | {c['unreadable_rate']:.4f} | "
                     f"{c['tv_truth']:.4f} | {c['gate_truth']['outcome']} | {conv['label_flip_rate']:.4f} | "
                     f"{conv['tv']:.4f} |")
    lines += ["", "Class histogram of the teacher (condition `none`) vs the data:", "",
              "| digit | " + " | ".join(LABELS) + " |", "|---|" + "---|" * len(LABELS)]
    c = m["conditions"]["none"]
    lines.append("| teacher | " + " | ".join(f"{c['counts'][k] / c['n']:.3f}" for k in LABELS) + " |")
    lines.append("| data | " + " | ".join(f"{c['truth'][k]:.3f}" for k in LABELS) + " |")
    lines += ["", "The gate: fastdiff's coverage gate (docs/gate.md), family-wise alpha 0.05, the rare digit as the "
              "tail (±25% relative or ±0.5 point), other digits ±2 points, unreadable at most 2%.",
              "Solvers, step counts and guidance on this model: `fastdiff bench digits` (docs/digits.md)."]
    return "\n".join(lines) + "\n"
