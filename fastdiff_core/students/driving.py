"""The students of the driving world model: the teacher bundle, training rows, shipped checkpoints,
and a frame sampler with ``sampling.sample_frame``'s signature so ``sampling.rollout`` runs a student
exactly where it runs the teacher (H frames, batched, NFE counted per sample).
"""

from __future__ import annotations

import copy
import functools
import pathlib
from typing import Any, Callable, Mapping, Sequence

import torch

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.students.distill import Pairs, Teacher, sample_student
from fastdiff_core.students.network import StudentNet, load_student
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving import PATH
from fastdiff_core.worlds.driving import Scene

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"


def driving_teacher(prediction: str | None = None, device: torch.device | str = "cpu") -> Teacher:
    """The shipped driving teacher (default: ``models.teacher.DEFAULT_TEACHER``) as a distillation teacher
    (null condition: scene/action dropped)."""
    from fastdiff_core.models.teacher import DEFAULT_TEACHER, load_teacher

    net = load_teacher(prediction or DEFAULT_TEACHER, device)
    return Teacher(net, PATH, net.prediction, driving.drop_condition)


def driving_pairs(seed: int, rollouts_per_condition: int = 1500, horizon: int = 8) -> Pairs:
    """Training rows (next-frame x0, condition) cut from fresh simulator rollouts of every scene x action —
    the teacher's own training distribution (``models.teacher.transition_pool``), drawn once."""
    from fastdiff_core.models.teacher import transition_pool

    pool = transition_pool(rollouts_per_condition, horizon, torch.Generator().manual_seed(seed))

    def pairs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(pool.x0.shape[0], (n,), generator=generator)
        return pool.x0[idx], pool.cond[idx]

    return pairs


def checkpoint_file(name: str, steps: int | None = None, weights_dir: pathlib.Path = WEIGHTS_DIR) -> pathlib.Path:
    """Where a student lives: ``weights/<name>.safetensors`` (progressive: one per step count); the shipped
    ones in ``WEIGHTS_DIR``, others (``fastdiff train student --out DIR``) in ``weights_dir``."""
    return weights_dir / (f"{name}_{steps}.safetensors" if steps is not None else f"{name}.safetensors")


@functools.lru_cache(maxsize=32)
def _load(file: str, device: str) -> tuple[StudentNet, dict[str, Any]]:
    return load_student(pathlib.Path(file), device)


def load_shipped(name: str, steps: int, device: torch.device | str = "cpu", weights_dir: pathlib.Path = WEIGHTS_DIR
                 ) -> tuple[StudentNet, dict[str, Any]]:
    """The shipped student ``name`` for ``steps`` steps (cached per process and device); ``weights_dir``:
    one trained elsewhere by ``fastdiff train student --out``."""
    from fastdiff_core import catalog

    info = catalog.STUDENTS.get(name)
    if info is None:
        raise ValueError(f"student={name!r} is not one of {sorted(catalog.STUDENTS)}")
    if info.fixed_steps and steps not in info.steps:
        raise ValueError(f"steps={steps!r} is not available for student={name!r}; allowed: {list(info.steps)}")
    per_steps = checkpoint_file(name, steps, weights_dir)
    file = per_steps if per_steps.exists() else checkpoint_file(name, weights_dir=weights_dir)
    if not file.exists():
        raise ValueError(f"student={name!r}: no weights {file.name} in {weights_dir} (train it with "
                         f"`fastdiff train student {name} --out {weights_dir}`)")
    return _load(str(file), str(device))


def student_frame_sampler(student: StudentNet, facts: Mapping[str, Any], steps: int, *,
                          guidance_scale: float = 1.0, solver: Callable | None = None,
                          sigmas: Sequence[float] | None = None) -> Callable[..., torch.Tensor]:
    """A ``sample_frame``-compatible function that draws the next frame from ``student``.

    Students with their own sampler (progressive, consistency, DMD, rCM, reflow, shortcut) run it on
    their uniform grid with ``steps`` evaluations. A guidance-distilled student is a network with w
    bound: given ``solver``/``sigmas`` it runs through the x0-denoiser like the teacher (any solver,
    C = 1), else on the uniform DDIM grid.
    """
    kind = facts["sampler"]
    ode_solver, ode_sigmas = solver, sigmas
    if "guidance" not in student.inputs and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale!r}: student {facts['recipe']!r} was distilled at "
                         "guidance 1; only the guidance-distilled student takes another scale")

    def sample_frame(net: Any, prev: torch.Tensor, scene: Scene, action: str, *, solver: Any = None,
                     sigmas: Any = None, guidance: Guidance = Guidance(), generator: torch.Generator | None = None,
                     counter: NFECounter | None = None, **_: Any) -> torch.Tensor:
        # net / solver / sigmas / guidance are the teacher's (what ``rollout`` passes); the student ignores them
        cond = driving.condition(prev, scene, action).to(next(student.parameters()).dtype)
        noise = torch.randn(prev.shape[0], driving.FRAME_DIM, generator=generator, device=prev.device,
                            dtype=cond.dtype)
        with torch.no_grad():
            if "guidance" in student.inputs and ode_solver is not None:
                w = torch.full((prev.shape[0], 1), float(guidance_scale), dtype=cond.dtype, device=cond.device)
                den = Denoiser(lambda x, t, c: student(x, t, c, w), PATH, facts["prediction"], cond=cond,
                               counter=counter)
                x0 = ode_solver(den, noise * float(ode_sigmas[0]), ode_sigmas, generator=generator)
            else:
                x0 = sample_student(student, kind, PATH, facts["prediction"], cond, noise, steps,
                                    t_max=float(facts["t_max"]), guidance=guidance_scale, generator=generator,
                                    counter=counter)
        return driving.decode_frame(x0, prev)

    return sample_frame


def spec_frame_sampler(spec: Any, device: torch.device | str = "cpu") -> tuple[Callable[..., torch.Tensor], dict]:
    """The frame sampler a RunSpec with ``sampler="student"`` asks for, and facts for the RunResult.

    NFE per frame is ``spec.steps`` for every student (C = 1), which is what the budget bills. The
    guidance-distilled student runs through ``spec.solver`` on ``spec.grid`` (any solver whose NFE
    for n steps is n) with ``spec.guidance_scale`` fed to the network; every other student was
    distilled at guidance 1 and samples on its own grid.
    """
    from fastdiff_core import catalog

    info = catalog.STUDENTS.get(spec.student)
    if info is None:
        raise ValueError(f"student={spec.student!r} is not one of {sorted(catalog.STUDENTS)}")
    if info.fixed_steps and spec.steps not in info.steps:
        raise ValueError(f"steps={spec.steps!r} is not available for student={spec.student!r}; "
                         f"allowed: {list(info.steps)}")
    student, facts = load_shipped(spec.student, spec.steps, device)
    if spec.dtype == "float64":
        student = copy.deepcopy(student).to(torch.float64)  # the cached float32 copy stays as it is
    about = {"student": spec.student, "student_steps": spec.steps, "student_recipe": facts["recipe"],
             "student_sampler": facts["sampler"], "student_train_seconds": facts["stats"]["train_seconds"]}
    if info.guidance_input:
        lo, hi = facts["config"]["w_min"], facts["config"]["w_max"]
        if not lo <= spec.guidance_scale <= hi:
            raise ValueError(f"guidance_scale={spec.guidance_scale!r} is outside the range the student "
                             f"{spec.student!r} was distilled on: [{lo}, {hi}]")
    else:
        return student_frame_sampler(student, facts, spec.steps, guidance_scale=spec.guidance_scale), about
    from fastdiff_core.worlds.driving import solver_and_grid

    solver_nfe = catalog.solver_info(spec.solver).nfe(spec.steps, dict(spec.solver_options))
    if solver_nfe != spec.steps:
        allowed = sorted(k for k, v in catalog.SOLVERS.items() if v.nfe(spec.steps, {}) == spec.steps)
        raise ValueError(f"solver={spec.solver!r} takes {solver_nfe} evaluations for steps={spec.steps}; the "
                         f"guidance-distilled student is billed `steps` per frame, use one of {allowed}")
    solver, sigmas = solver_and_grid(spec.solver, spec.steps, grid=spec.grid, solver_options=spec.solver_options,
                                     grid_options=spec.grid_options)
    about["student_solver"] = spec.solver
    return student_frame_sampler(student, facts, spec.steps, guidance_scale=spec.guidance_scale, solver=solver,
                                 sigmas=sigmas), about
