"""A student network: a copy of the teacher plus zero-initialised embeddings of extra scalar inputs.

Every recipe starts its student from the teacher's weights (Salimans & Ho 2022; Meng et al. 2023;
Song et al. 2023 all do), so step one of training is the teacher itself. Recipes that give the
network a new input — the guidance scale w (guidance distillation) or the step size d (shortcut
models) — add its Fourier features through a small MLP to the teacher's time/condition embedding,
the way Meng et al. add w and DiT adds t. The MLP's last layer starts at zero: the new input is
ignored until training teaches the network to use it.

The teacher must expose the staged forward of ``fastdiff_core.models.world_model.WorldModelNet``::

    emb = net.embed(t, cond); h = net.stem(x_t, cond); h = net.run_blocks(h, emb); out = net.head(h, emb)

Checkpoints are safetensors (float16 weights; the loader returns float32) whose header names the
teacher's class, its config and the student's facts, so a student loads with no other file.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
import pathlib
from typing import Any, Mapping

import torch
from torch import nn

from fastdiff_core.setup_time import one_off


EXTRA_INPUTS = ("guidance", "step")
_FEATURES = 16


class StudentNet(nn.Module):
    """``student(x_t, t, cond, extra=None) -> prediction`` (same prediction type as the teacher).

    extra: (B, len(inputs)) values of the extra scalar inputs, in the order of ``inputs``
    (``guidance``: the CFG scale w; ``step``: the step size d in path time). Without extra inputs
    the student is called exactly like a teacher, so it is a ``denoiser.Network``.
    """

    def __init__(self, teacher: nn.Module, inputs: tuple[str, ...] = ()) -> None:
        super().__init__()
        for name in inputs:
            if name not in EXTRA_INPUTS:
                raise ValueError(f"student input={name!r} is not one of {list(EXTRA_INPUTS)}")
        for stage in ("embed", "stem", "run_blocks", "head"):
            if not callable(getattr(teacher, stage, None)):
                raise ValueError(f"teacher {type(teacher).__name__} has no staged forward method {stage!r}")
        self.body = copy.deepcopy(teacher).requires_grad_(True).train()
        self.inputs = tuple(inputs)
        self.extra: nn.Module | None = None
        if self.inputs:
            with torch.no_grad():
                width = self.body.embed(torch.zeros(1), torch.zeros(1, self.body.config.cond_dim)).shape[-1]
            freqs = torch.exp(torch.linspace(math.log(0.1), math.log(10.0), _FEATURES // 2))
            self.register_buffer("freqs", freqs, persistent=False)
            hidden = nn.Linear((_FEATURES + 1) * len(self.inputs), width)
            last = nn.Linear(width, width)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.extra = nn.Sequential(hidden, nn.SiLU(), last)

    @property
    def config(self) -> Any:
        return self.body.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        body = self.body
        emb = body.embed(t, cond)
        if self.extra is not None:
            if extra is None or extra.shape != (x_t.shape[0], len(self.inputs)):
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"extra shape={got} must be (batch, {len(self.inputs)}) for inputs {self.inputs}")
            ang = extra.to(self.freqs.dtype)[:, :, None] * self.freqs  # (B, k, F/2)
            raw = extra.to(self.freqs.dtype)[:, :, None]
            feats = torch.cat([raw, torch.sin(ang), torch.cos(ang)], -1).flatten(1).to(emb.dtype)
            emb = emb + self.extra(feats)
        return body.head(body.run_blocks(body.stem(x_t, cond), emb), emb)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _qualname(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _import(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def save_student(student: StudentNet, file: pathlib.Path, facts: Mapping[str, Any]) -> None:
    """Write the student's weights (float16) and, in the safetensors header, what rebuilds it:
    the teacher's class and config, the extra inputs, and ``facts`` (recipe, steps, sampler, ...)."""
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    config = student.body.config
    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in student.state_dict().items()}
    meta = {
        "body_class": _qualname(type(student.body)),
        "config_class": _qualname(type(config)),
        "config": json.dumps(dataclasses.asdict(config)),
        "inputs": json.dumps(list(student.inputs)),
        "facts": json.dumps(dict(facts), sort_keys=True),
    }
    save_file(tensors, str(file), metadata=meta)


@one_off
def load_student(file: pathlib.Path, device: torch.device | str = "cpu") -> tuple[StudentNet, dict[str, Any]]:
    """(student in eval mode, float32, on ``device``; its facts) from a file written by ``save_student``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not file.exists():
        raise ValueError(f"student checkpoint={str(file)!r} does not exist")
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    config = _import(meta["config_class"])(**json.loads(meta["config"]))
    body = _import(meta["body_class"])(config)
    student = StudentNet(body, tuple(json.loads(meta["inputs"])))
    state = {k: v.to(torch.float32) for k, v in load_file(str(file)).items()}
    student.load_state_dict(state)
    return student.to(device).eval().requires_grad_(False), json.loads(meta["facts"])
