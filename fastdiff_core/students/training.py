"""Distil one student from the shipped driving teacher and write its safetensors weights
(``fastdiff_core/students/weights``): what ``fastdiff train student NAME`` runs (its flags and output
live in ``fastdiff_cli.train_student``).

The configs below are what the shipped students were trained with (sized for a few minutes on the
shared 2-core CPU); ``--scale`` multiplies every optimiser step count (0.1 for a quick try).
"""

from __future__ import annotations

import dataclasses
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from fastdiff_core.students import get_recipe, recipes
from fastdiff_core.students.driving import WEIGHTS_DIR, driving_pairs, driving_teacher
from fastdiff_core.students.network import save_student

# The shipped students' training configs on the driving teacher.
DRIVING_CONFIGS: dict[str, dict[str, Any]] = {
    "guidance": {"steps": 800, "batch": 256, "lr": 3e-4, "w_min": 1.0, "w_max": 6.0, "at_w_min": 0.0},
    "progressive": {"start_steps": 8, "final_steps": 1, "steps_per_round": 300, "batch": 256, "lr": 2e-4,
                    "teacher_substeps": 2},
    "consistency": {"steps": 800, "batch": 256, "lr": 2e-4, "intervals": 24, "target_ema": 0.95},
    "dmd": {"steps": 300, "batch": 256, "lr": 1e-4, "critic_lr": 4e-4, "critic_updates": 2},
    "rcm": {"steps": 600, "batch": 256, "lr": 2e-4, "intervals": 24, "lambda_dmd": 0.003, "critic_updates": 1},
    "reflow": {"couplings": 30000, "coupling_substeps": 10, "steps": 800, "batch": 256, "lr": 2e-4},
    "shortcut": {"steps": 900, "batch": 256, "lr": 2e-4, "levels": 6},
}
_STEP_FIELDS = ("steps", "steps_per_round")


def _default_teacher() -> str:
    from fastdiff_core.models.teacher import DEFAULT_TEACHER

    return DEFAULT_TEACHER


TEACHER = _default_teacher()  # students are distilled from the default shipped teacher


def driving_config(name: str, scale: float = 1.0) -> Any:
    recipe = get_recipe(name)
    values = dict(DRIVING_CONFIGS[name])
    for f in _STEP_FIELDS:
        if f in values:
            values[f] = max(1, int(round(values[f] * scale)))
    return recipe.config(**values)


def train_and_save(name: str, seed: int = 0, scale: float = 1.0, out: pathlib.Path = WEIGHTS_DIR,
                   on_step: Callable[[int, float, float], None] = lambda step, loss, seconds: None,
                   ) -> list[tuple[pathlib.Path, float]]:
    """Train student ``name`` on the shipped teacher and write its checkpoint(s); returns (file, its training
    seconds) per checkpoint. ``on_step(step, loss, seconds since the start)`` every 100th optimiser step."""
    recipe = get_recipe(name)
    config = driving_config(name, scale)
    teacher = driving_teacher(TEACHER)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    pairs = driving_pairs(seed)
    data_seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)

    def every_100th(step: int, loss: float) -> None:
        if step % 100 == 0:
            on_step(step, loss, time.perf_counter() - t0)

    result = recipe.train(teacher, pairs, config, gen, every_100th)
    command = f"fastdiff train student {name} --seed {seed}" + (f" --scale {scale}" if scale != 1.0 else "")
    trained = result if recipe.per_steps else {None: result}
    files = []
    cumulative = 0.0
    for steps, (student, stats) in trained.items():
        cumulative += stats["train_seconds"]
        facts = {
            "recipe": name, "sampler": recipe.sampler, "prediction": teacher.prediction, "path": teacher.path.name,
            "t_max": teacher.t_max, "steps": steps, "teacher": f"driving_teacher_{TEACHER}",
            "teacher_sha256": _teacher_digest(),
            "config": dataclasses.asdict(config), "stats": {**stats, "data_seconds": round(data_seconds, 1)},
            "total_train_seconds": round(time.perf_counter() - t0, 1),
            "cumulative_train_seconds": round(cumulative, 1) if recipe.per_steps else None,
            "threads": torch.get_num_threads(),
            "host": f"{platform.machine()}, shared 2-core CPU", "command": command, "seed": seed,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        file = out / (f"{name}_{steps}.safetensors" if steps is not None else f"{name}.safetensors")
        save_student(student, file, facts)
        files.append((file, stats["train_seconds"]))
    return files


def _teacher_digest() -> str:
    import hashlib

    from fastdiff_core.models.teacher import teacher_stem

    return hashlib.sha256(teacher_stem(TEACHER).with_suffix(".safetensors").read_bytes()).hexdigest()
