"""What one run may cost: the server-side budget RunSpec validation enforces, and the chunk size the
rollout engine executes the fan-out in. Torch-free; read from the environment, defaults below.

    FASTDIFF_MAX_RUN_NFE      NFE bill of one run (budget.bill_for(spec).per_run), default 1e10
    FASTDIFF_MAX_ROLLOUTS     rollout frames of one run, samples x plans x futures x horizon, default 1e7
    FASTDIFF_MAX_PEAK_MB      estimated peak memory of one run in MiB (``peak_memory_mb``), default 2048
    FASTDIFF_CHUNK_ROLLOUTS   rollouts per batched forward when the fan-out executes, default 4096
    FASTDIFF_MAX_SWEEP_RUNS   runs one submit (a sweep or a list of specs) may queue, default 500

Every process that builds or runs a RunSpec (the CLI, the client, the page, the worker) reads the
same variables, so a worker with tighter limits refuses a run a laxer client queued (the run is
stored failed with the reason). docs/limits.md states the memory model and how it was calibrated.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

MIB = 1024 * 1024


def _env_number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or (integer and not value.is_integer()):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name}={raw!r} must be {kind} (e.g. 1e9)")
    return int(value) if integer else value


@dataclass(frozen=True)
class RunLimits:
    """The per-run limits (see the module docstring for the variables and defaults)."""

    max_run_nfe: float = 1e10
    max_rollouts: int = 10_000_000
    max_peak_mb: float = 2048.0
    chunk_rollouts: int = 4096
    max_sweep_runs: int = 500

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RunLimits":
        env = os.environ if env is None else env
        d = cls()
        return cls(
            max_run_nfe=_env_number(env, "FASTDIFF_MAX_RUN_NFE", d.max_run_nfe, integer=False),
            max_rollouts=int(_env_number(env, "FASTDIFF_MAX_ROLLOUTS", d.max_rollouts, integer=True)),
            max_peak_mb=_env_number(env, "FASTDIFF_MAX_PEAK_MB", d.max_peak_mb, integer=False),
            chunk_rollouts=int(_env_number(env, "FASTDIFF_CHUNK_ROLLOUTS", d.chunk_rollouts, integer=True)),
            max_sweep_runs=int(_env_number(env, "FASTDIFF_MAX_SWEEP_RUNS", d.max_sweep_runs, integer=True)),
        )


@dataclass(frozen=True)
class RowMemory:
    """A world's memory per rollout, in bytes at float32 (float64 doubles both).

    kept_per_frame: what a run holds for every rollout frame until its metrics are computed (the frames
    and their stacked copy, branch codes, weights). working_per_row: one row of one batched forward
    (activations, solver state, noise), counted once per guidance pass. fixed_mb: the run's own
    allocations that do not grow with the fan-out (the model, the reference sample, the metrics).
    """

    kept_per_frame: float
    working_per_row: float
    fixed_mb: float


# Calibrated against peak RSS of real runs (docs/limits.md has the command and the figures); an
# unknown (plugin) world is charged like the driving world model.
ROW_MEMORY: Mapping[str, RowMemory] = {
    "driving": RowMemory(kept_per_frame=64.0, working_per_row=18432.0, fixed_mb=160.0),
    "mixture": RowMemory(kept_per_frame=256.0, working_per_row=512.0, fixed_mb=64.0),
}
DEFAULT_ROW_MEMORY = ROW_MEMORY["driving"]


def peak_memory_mb(world: str, *, rollouts: int, horizon: int, chunk: int, guidance_passes: float,
                   itemsize: int) -> float:
    """Estimated peak memory of a run in MiB: fixed + kept frames + one chunk's batched forward.

        peak = fixed + rollouts x horizon x kept_per_frame x s + min(rollouts, chunk) x C x working_per_row x s

    with s = itemsize / 4 (float64 doubles it) and C the guidance passes per evaluation (CFG runs the
    conditional and unconditional rows in one batch). Chunked execution makes the last term
    independent of the fan-out; the kept term is what a run must hold to measure coverage.
    """
    row = ROW_MEMORY.get(world, DEFAULT_ROW_MEMORY)
    scale = itemsize / 4
    kept = rollouts * horizon * row.kept_per_frame * scale
    working = min(rollouts, chunk) * guidance_passes * row.working_per_row * scale
    return row.fixed_mb + (kept + working) / MIB
