"""A sweep's runs: the cartesian product of axes over a base RunSpec. Torch-free and Celery-free, so the
Sweep page expands axes with it (runs, NFE and time shown before queueing) and the service's client
expands the same axes when it queues them (``workers.client.submit(..., sweep=...)``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from fastdiff_core.limits import RunLimits
from fastdiff_core.spec import RunSpec

SPEC_FIELDS = tuple(f.name for f in fields(RunSpec) if f.name != "schema_version")
OPTION = "solver_options."  # a sweep axis over one solver option: {"solver_options.eta": [0.0, 0.5, 1.0]}


def grid(base: RunSpec | Mapping[str, Any], axes: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """The cartesian product of ``axes`` ({field: [values]}) applied to ``base``, last axis fastest."""
    if not isinstance(base, RunSpec):
        if not isinstance(base, Mapping):
            raise ValueError(f"base={base!r} must be a RunSpec or a mapping of RunSpec fields")
        base = RunSpec.from_dict(base)
    if not isinstance(axes, Mapping) or not axes:
        raise ValueError(f"sweep={axes!r} must be a non-empty mapping {{field: [values, ...]}}")
    for name, values in axes.items():
        if name not in SPEC_FIELDS and not (name.startswith(OPTION) and len(name) > len(OPTION)):
            raise ValueError(f"sweep field {name!r} is not a RunSpec field or {OPTION}<name>; "
                             f"allowed: {sorted(SPEC_FIELDS)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"sweep[{name!r}]={values!r} must be a non-empty list of values")
    check_run_count(math.prod(len(v) for v in axes.values()),
                    "sweep " + " x ".join(f"{name} ({len(v)} values)" for name, v in axes.items()))
    out = []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo))
        options = {k[len(OPTION):]: v for k, v in point.items() if k.startswith(OPTION)}
        try:
            # replace() decides which options survive a change of solver; the option axes go on top
            spec = base.replace(**{k: v for k, v in point.items() if not k.startswith(OPTION)})
            out.append(spec.replace(solver_options={**spec.solver_options, **options}) if options else spec)
        except ValueError as e:
            raise ValueError(f"sweep point {point}: {e}") from None
    return out


def check_run_count(n: int, what: str) -> None:
    """Refuse queueing more than FASTDIFF_MAX_SWEEP_RUNS runs at once (checked before a grid is built)."""
    cap = RunLimits.from_env().max_sweep_runs
    if n > cap:
        raise ValueError(f"{what} = {n:,} runs exceeds FASTDIFF_MAX_SWEEP_RUNS={cap:,}; "
                         "split the sweep or raise the limit")
