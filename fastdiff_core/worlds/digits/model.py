"""The digits world's networks: a class-conditional diffusers ``UNet2DModel`` and a digit classifier.

The UNet predicts eps on DDPM's discrete linear-beta schedule (1,000 training steps), the most common
diffusers setup, so the shipped folder is a genuine diffusers checkpoint (``UNet2DModel.from_pretrained``,
``DDPMScheduler.from_pretrained``). Its class embedding has ``len(CONDITIONS)`` rows: the ten digits, the
two parity groups (a condition that admits several digits, the rare one among them: what guidance can
delete) and the null class for classifier-free guidance.

The classifier (an MLP over the 64 pixels) labels every generated image for the class histogram; an image
whose top softmax probability is below ``UNREADABLE_BELOW`` is labelled ``unreadable`` (a leak: the data
has none).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastdiff_core.worlds.digits.data import DIGITS

# condition name -> class-embedding index; "none" is the null class CFG guides away from
CONDITIONS: dict[str, int] = {**{d: int(d) for d in DIGITS}, "even": 10, "odd": 11, "none": 12}
NULL_CLASS = CONDITIONS["none"]
GROUPS: dict[str, tuple[int, ...]] = {"even": (0, 2, 4, 6, 8), "odd": (1, 3, 5, 7, 9)}
UNREADABLE = "unreadable"
LABELS: tuple[str, ...] = DIGITS + (UNREADABLE,)
UNREADABLE_BELOW = 0.5
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
# the shipped folder, written by `fastdiff train digits`
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "models" / "weights" / "digits"
META_FILE = "fastdiff.json"  # the training config, the data's class frequencies, the card's measurements


def admitted_digits(condition: str) -> tuple[int, ...]:
    """The digits a condition admits (all ten for "none")."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition={condition!r} is not one of {list(CONDITIONS)}")
    if condition == "none":
        return tuple(range(10))
    return GROUPS.get(condition, (CONDITIONS[condition],))


def condition_truth(frequencies: dict[str, float], condition: str) -> dict[str, float]:
    """The data's class frequencies restricted to the digits ``condition`` admits, renormalised (the
    ground truth of a conditional sample), with ``unreadable`` at 0."""
    keep = admitted_digits(condition)
    total = sum(frequencies[DIGITS[d]] for d in keep)
    truth = {label: 0.0 for label in LABELS}
    for d in keep:
        truth[DIGITS[d]] = frequencies[DIGITS[d]] / total
    return truth


@dataclass(frozen=True)
class UNetConfig:
    """The UNet's shape (diffusers ``UNet2DModel`` arguments)."""

    block_out_channels: tuple[int, ...] = (24, 48)
    layers_per_block: int = 1
    attention_at_lowest: bool = True
    norm_num_groups: int = 8

    def build(self) -> Any:
        from diffusers import UNet2DModel

        n = len(self.block_out_channels)
        down = ["DownBlock2D"] * n
        if self.attention_at_lowest:
            down[-1] = "AttnDownBlock2D"
        up = ["AttnUpBlock2D" if b.startswith("Attn") else "UpBlock2D" for b in reversed(down)]
        return UNet2DModel(sample_size=8, in_channels=1, out_channels=1,
                           block_out_channels=tuple(self.block_out_channels), layers_per_block=self.layers_per_block,
                           down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=self.norm_num_groups,
                           attention_head_dim=8, num_class_embeds=len(CONDITIONS))


def build_scheduler() -> Any:
    """The training noise schedule as diffusers' own scheduler (what the shipped folder records)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="linear", beta_start=BETA_START,
                         beta_end=BETA_END, prediction_type="epsilon", clip_sample=False)


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    width: int = 256
    dropout: float = 0.2


class DigitClassifier(nn.Module):
    """An MLP over the 64 pixels of an 8x8 image in [-1, 1]: (B, 1, 8, 8) or (B, 8, 8) -> logits (B, 10)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, w), nn.SiLU(), nn.Dropout(config.dropout),
                                  nn.Linear(w, w), nn.SiLU(), nn.Dropout(config.dropout), nn.Linear(w, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.reshape(images.shape[0], 64))

    @torch.no_grad()
    def label(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) indices into LABELS: the top digit, or ``unreadable`` (10) below UNREADABLE_BELOW."""
        p = torch.softmax(self(images.to(torch.float32)), dim=-1)
        top, digit = p.max(dim=-1)
        return torch.where(top < UNREADABLE_BELOW, torch.full_like(digit, LABELS.index(UNREADABLE)), digit)


def save_classifier(model: DigitClassifier, directory: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**asdict(model.config), **meta}, indent=2, sort_keys=True) + "\n")


def load_classifier(directory: Path) -> DigitClassifier:
    from safetensors.torch import load_file

    meta = json.loads((directory / "config.json").read_text())
    model = DigitClassifier(ClassifierConfig(**{k: meta[k] for k in ("width", "dropout")}))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.eval()


def digit_classifier() -> Any:
    """The shipped classifier as the model loader's ``classifier`` hook (``fastdiff_model.json``):
    f(x) -> (B,) top digit, for the generic ``model`` world (which has no ``unreadable`` label); ``f.labels`` names
    its outputs (the ten digits, not the model's thirteen conditions)."""
    model = load_classifier(WEIGHTS_DIR / "classifier")

    @torch.no_grad()
    def classify(x: torch.Tensor) -> torch.Tensor:
        return model(x.clamp(-1.0, 1.0).to(torch.float32).cpu()).argmax(dim=-1)

    classify.labels = DIGITS  # type: ignore[attr-defined]
    return classify
