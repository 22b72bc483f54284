"""What ``fastdiff train digits`` runs: train the digits world's class-conditional diffusion model and its digit
classifier on scikit-learn's bundled digits, save them as a diffusers folder with a model card.

    fastdiff train digits                 # the shipped model: fastdiff_core/models/weights/digits/
    fastdiff train digits --card-only     # re-measure the shipped weights, rewrite the card

Deterministic given ``--seed`` on one thread (the batches, noise, timesteps and label dropout all come
from one seeded generator). The folder holds ``model_index.json``, ``unet/`` and ``scheduler/`` (a
diffusers ``DDPMPipeline`` layout), ``classifier/`` (safetensors + config), ``fastdiff_model.json`` (the
null class and condition names fastdiff's model loader reads), ``fastdiff.json`` (the training config,
the data's class frequencies, what was measured) and ``README.md`` (the card).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fastdiff_core.models.diffusers_format import FASTDIFF_FILE as LOADER_FILE
from fastdiff_core.paths import VPDiscrete, ddpm_betas
from fastdiff_core.students.distill import Clock, Optimiser
from fastdiff_core.worlds.digits.data import DigitsSplit, load_split
from fastdiff_core.worlds.digits.model import (
    BETA_END, BETA_START, CONDITIONS, GROUPS, NULL_CLASS, NUM_TRAIN_TIMESTEPS, ClassifierConfig, DigitClassifier,
    META_FILE, UNetConfig, build_scheduler, save_classifier,
)



@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the shipped weights."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    steps: int = 2000
    batch: int = 128
    lr: float = 1.5e-3
    warmup: int = 200
    ema: float = 0.995
    # the EMA decay warmed up, min(ema, (1 + k) / (10 + k)); the shipped weights were trained with it fixed
    # from step 0 (their fastdiff.json has no such field; --no-ema-warmup reproduces them)
    ema_warmup: bool = True
    p_null: float = 0.2  # label dropout to the null class (classifier-free guidance)
    p_group: float = 0.3  # the parity label instead of the digit
    rare_digit: int = 4
    rare_fraction: float = 0.02
    classifier_steps: int = 3000
    seed: int = 0
    threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def training_labels(digits: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Per example: the null class with p_null, its parity group with p_group, else its digit."""
    u = torch.rand(digits.shape[0], generator=gen)
    parity = torch.where(digits % 2 == 0, CONDITIONS["even"], CONDITIONS["odd"])
    labels = torch.where(u < config.p_null + config.p_group, parity, digits)
    return torch.where(u < config.p_null, torch.full_like(digits, NULL_CLASS), labels)


def train_unet(split: DigitsSplit, config: TrainConfig, report=None) -> tuple[torch.nn.Module, dict]:
    """eps-prediction training on the thinned set; returns the EMA UNet and training stats."""
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # the UNet's initialisation
    unet = config.unet.build()
    opt = Optimiser(unet, config.lr, config.steps, config.warmup, ema=config.ema, ema_warmup=config.ema_warmup)
    clock = Clock()
    path = VPDiscrete(ddpm_betas("linear", NUM_TRAIN_TIMESTEPS, BETA_START, BETA_END))
    images = torch.from_numpy(split.diffusion_images).unsqueeze(1)
    digits = torch.from_numpy(split.diffusion_labels)
    for step in range(config.steps):
        idx = torch.randint(0, images.shape[0], (config.batch,), generator=gen)
        x0, labels = images[idx], training_labels(digits[idx], config, gen)
        index = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch,), generator=gen)
        t = index.to(torch.float64) / (NUM_TRAIN_TIMESTEPS - 1)
        a = path.alpha(t).to(torch.float32).reshape(-1, 1, 1, 1)
        s = path.sigma(t).to(torch.float32).reshape(-1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=gen)
        # x_t = alpha_i x0 + sigma_i eps at the integer training index i (DDPM)
        loss = torch.nn.functional.mse_loss(unet(a * x0 + s * eps, index, class_labels=labels).sample, eps)
        opt.step(loss)
        clock.record(loss)
        if report is not None and ((step + 1) % 250 == 0 or step + 1 == config.steps):
            report(step + 1, clock.loss, time.perf_counter() - clock.t0)
    ema = opt.result()
    stats = clock.stats(unet_parameters=sum(p.numel() for p in ema.parameters()))
    return ema, {"unet_seconds": stats.pop("train_seconds"), **stats}


def _shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction (background -1 fills the border)."""
    b = images.shape[0]
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (b,), generator=gen), torch.randint(0, 3, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(8)[None, :])[:, :, None].expand(b, 8, 8)
    cols = (dx[:, None] + torch.arange(8)[None, :])[:, None, :].expand(b, 8, 8)
    return padded[torch.arange(b)[:, None, None], rows, cols]


def train_classifier(split: DigitsSplit, config: TrainConfig) -> tuple[DigitClassifier, dict]:
    """The digit classifier on the whole (unthinned) training split, with one-pixel shifts and pixel
    noise; its accuracy is measured on the held-out split."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    torch.manual_seed(config.seed + 1)
    model = DigitClassifier(config.classifier)
    images, labels = torch.from_numpy(split.train_images), torch.from_numpy(split.train_labels)
    opt = Optimiser(model, 1e-3, config.classifier_steps, warmup=50)
    t0 = time.perf_counter()
    model.train()
    for _ in range(config.classifier_steps):
        idx = torch.randint(0, images.shape[0], (128,), generator=gen)
        x = _shift(images[idx], gen) + 0.1 * torch.randn(128, 8, 8, generator=gen)
        opt.step(torch.nn.functional.cross_entropy(model(x), labels[idx]))
    model = opt.result()
    stats = {"classifier_seconds": round(time.perf_counter() - t0, 1), **classifier_accuracy(model, split)}
    return model, stats


@torch.no_grad()
def classifier_accuracy(model: DigitClassifier, split: DigitsSplit) -> dict:
    """Held-out accuracy overall and per digit, and the share the classifier calls unreadable."""
    labels = model.label(torch.from_numpy(split.test_images))
    truth = torch.from_numpy(split.test_labels)
    per_digit = {str(d): float((labels[truth == d] == d).to(torch.float64).mean()) for d in range(10)}
    return {"heldout_accuracy": float((labels == truth).to(torch.float64).mean()), "heldout_n": int(truth.numel()),
            "heldout_per_digit": per_digit, "heldout_unreadable": float((labels == 10).to(torch.float64).mean())}


def write_loader_sidecar(out: Path) -> None:
    """``fastdiff_model.json``: what diffusers' configs do not say and fastdiff's model loader reads (the
    null class, the condition names, the classifier hook), so ``fastdiff run --model`` runs the folder too."""
    sidecar = {"null_class": NULL_CLASS, "class_names": list(CONDITIONS),
               "classifier": "fastdiff_core.worlds.digits.model:digit_classifier"}
    (out / LOADER_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")


def save_model(unet: torch.nn.Module, classifier: DigitClassifier, out: Path, meta: dict) -> None:
    """The diffusers folder (DDPMPipeline layout), the classifier and fastdiff's sidecars."""
    from diffusers import DDPMPipeline

    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet, scheduler=build_scheduler()).save_pretrained(str(out), safe_serialization=True)
    write_loader_sidecar(out)
    save_classifier(classifier, out / "classifier", {"accuracy": meta["stats"]["heldout_accuracy"],
                                                     "labels": [str(d) for d in range(10)]})
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# What `fastdiff train digits` runs (fastdiff_cli/train_digits.py parses its flags and prints)
# ---------------------------------------------------------------------------------------------


def command_for(train: dict) -> str:
    """The exact command that reproduces a folder trained with this config."""
    return (f"fastdiff train digits --steps {train['steps']} --batch {train['batch']} --lr {train['lr']} "
            f"--rare-digit {train['rare_digit']} --rare-fraction {train['rare_fraction']} "
            f"--classifier-steps {train['classifier_steps']} --seed {train['seed']}")


def train_digits(config: TrainConfig, out: Path, *, card_n: int = 1000,
                 on_stage: Callable[[str, dict], None] | None = None,
                 on_step: Callable[[int, float, float], None] | None = None) -> dict:
    """Train the classifier and the UNet, write the folder to ``out``, measure the card; returns the
    sidecar. ``on_stage(name, facts)`` at each stage, ``on_step(step, loss, seconds)`` while training."""
    stage = on_stage or (lambda name, facts: None)
    torch.set_num_threads(config.threads)  # oversubscribed threads are far slower on a shared CPU
    split = load_split(seed=config.seed, rare_digit=config.rare_digit, rare_fraction=config.rare_fraction)
    stage("classifier", {"steps": config.classifier_steps})
    classifier, cstats = train_classifier(split, config)
    stage("classifier_done", cstats)
    stage("unet", {"steps": config.steps, "batch": config.batch, "images": len(split.diffusion_labels),
                   "rare_digit": config.rare_digit, "rare_rate": split.class_frequencies()[str(config.rare_digit)]})
    unet, ustats = train_unet(split, config, on_step)
    meta = {"command": command_for(config.to_dict()), "train": config.to_dict(),
            "stats": {**cstats, **ustats, "threads": config.threads,
                      "host": f"{platform.machine()}, {platform.processor() or 'cpu'}, shared"},
            "data": {"source": "sklearn.datasets.load_digits (bundled with scikit-learn, nothing downloaded)",
                     "train_n": len(split.train_labels), "test_n": len(split.test_labels),
                     "diffusion_n": len(split.diffusion_labels),
                     "class_frequencies": split.class_frequencies(), "rare_digit": str(config.rare_digit)},
            "conditions": dict(CONDITIONS), "groups": {k: list(v) for k, v in GROUPS.items()},
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_model(unet, classifier, out, meta)
    return measure_folder(out, card_n=card_n, on_stage=stage)


def measure_folder(out: Path, *, card_n: int = 1000, on_stage: Callable[[str, dict], None] | None = None) -> dict:
    """Measure a written folder's card (the teacher vs the data, its convergence), rewrite the sidecar and
    README.md; returns the sidecar."""
    from fastdiff_core.worlds.digits.evaluation import load_model, measure_card, render_card

    write_loader_sidecar(out)
    model = load_model(out)
    meta = dict(model.meta)
    (on_stage or (lambda name, facts: None))("card", {"n": card_n})
    meta["measured"] = measure_card(model, n=card_n)
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(render_card(meta))
    return meta
