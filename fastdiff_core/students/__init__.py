"""Distilled students: recipes that train few-step samplers from a teacher, generic over
(teacher network, noise path, training rows), and the registry the CLI and the runner read.

Every recipe is ``train(teacher, pairs, config, generator) -> (student, stats)`` (progressive:
``{steps: (student, stats)}``, one student per halving) and every student samples with one of
``distill.SAMPLER_KINDS``. Torch-free metadata (title, paper, step counts) is in
``fastdiff_core.catalog.STUDENTS`` under the same names.

    guidance     guidance distillation, w as an input (Meng et al. 2023)               guidance.py
    progressive  8 -> 4 -> 2 -> 1 (Salimans & Ho 2022)                                 progressive.py
    consistency  consistency distillation, 1-4 steps (Song et al. 2023)                consistency.py
    dmd          distribution matching, one step (Yin et al. 2024)                     dmd.py
    rcm          consistency + DMD regulariser (in the spirit of Zheng et al. 2025)    rcm.py
    reflow       one rectified-flow reflow round, Euler (Liu et al. 2022)              reflow.py
    shortcut     shortcut model, step size as an input (Frans et al. 2024)             shortcut.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Recipe:
    """How a student is made: its config class, its training function, and how it samples."""

    name: str
    config: type
    train: Callable[..., Any]
    sampler: str
    per_steps: bool = False  # one checkpoint per step count (progressive)


def recipes() -> dict[str, Recipe]:
    """name -> Recipe (imports torch: the recipe modules)."""
    from fastdiff_core.students import consistency, dmd, guidance, progressive, rcm, reflow, shortcut

    return {r.name: r for r in [
        Recipe("guidance", guidance.GuidanceConfig, guidance.train_guidance, "ddim"),
        Recipe("progressive", progressive.ProgressiveConfig, progressive.train_progressive, "ddim", per_steps=True),
        Recipe("consistency", consistency.ConsistencyConfig, consistency.train_consistency, "consistency"),
        Recipe("dmd", dmd.DMDConfig, dmd.train_dmd, "consistency"),
        Recipe("rcm", rcm.RCMConfig, rcm.train_rcm, "consistency"),
        Recipe("reflow", reflow.ReflowConfig, reflow.train_reflow, "ddim"),
        Recipe("shortcut", shortcut.ShortcutConfig, shortcut.train_shortcut, "shortcut"),
    ]}


def get_recipe(name: str) -> Recipe:
    table = recipes()
    if name not in table:
        raise ValueError(f"student={name!r} is not one of {sorted(table)}")
    return table[name]
