"""``execute(spec, on_progress) -> RunResult``: the single entry point workers call.

Validates the spec (a RunSpec, its dict or its JSON), picks the device (CUDA when present unless the
spec pins one), and hands the run to the world's runner. The runner owns sampling and metrics; this
function then judges the run once, for every world (``budget.run_verdicts``: the projected and the
measured verdict from one function), so every caller — worker, CLI, tests — gets the same behaviour
and the pages render what was judged here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from fastdiff_core import budget, setup_time
from fastdiff_core.latency import machine_load
from fastdiff_core.spec import ProgressCallback, RunResult, RunSpec
from fastdiff_core.worlds import runner_for


def resolve_device(choice: str) -> torch.device:
    """'auto' -> CUDA if available else CPU; 'cuda' without a GPU raises ValueError."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(choice)


def as_spec(spec: RunSpec | Mapping[str, Any] | str) -> RunSpec:
    if isinstance(spec, RunSpec):
        return spec
    if isinstance(spec, str):
        return RunSpec.from_json(spec)
    return RunSpec.from_dict(spec)


def execute(spec: RunSpec | Mapping[str, Any] | str, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run one spec to completion and return everything it measured. ``metrics['setup_s']``: the seconds of
    its wall time spent loading networks this process keeps (``setup_time``; 0 when they were loaded by an
    earlier run), which the run-time model leaves out of a kind's fitted cost."""
    spec = as_spec(spec).runnable()
    device = resolve_device(spec.device)
    before = setup_time.spent()
    result = runner_for(spec.world)(spec, device, on_progress)
    setup = setup_time.spent() - before
    return judged(dataclasses.replace(result, metrics={**result.metrics, "setup_s": setup}))


def judged(result: RunResult) -> RunResult:
    """The result with its verdicts ({'projected', 'measured'}) and the threads and machine load it ran
    with (``metrics``: the run-time model keys its fits by threads). The measured verdict takes the
    counted NFE, the sampler's branch rows, the world's release-gate outcome (``info['gate']``) and a
    repeated cycle timing (the ``latency`` row ``what='cycle'``) when the runner reported them."""
    load = machine_load()
    metrics = {**result.metrics, "threads": float(torch.get_num_threads()),
               **({"load_1m": load} if load is not None else {})}
    return dataclasses.replace(result, verdict=budget.result_verdicts(result), metrics=metrics)
