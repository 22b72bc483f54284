"""The JSON records (experiment, run submission, run outcome): checking them, and turning them into table rows.

The ``check_*`` functions validate a record that arrives from outside (a worker's outcome through the
results channel, a bundle) — types, ranges and sizes — and return it normalised to the known fields,
or raise ValueError naming the field, the value and what is allowed. Only checked records are
written, so every reader (the compactor, the pages) can trust the types below.

One ``*_row(s)`` function per table, used by both the compactor and the readers of not-yet-compacted files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastdiff_core.spec import RunResult, RunSpec, upgrade_result
from store import ids

RUN_STATUSES = ("queued", "done", "failed", "cancelled")
FINAL_STATUSES = ("done", "failed", "cancelled")


MAX_NAME = 200            # experiment names
MAX_LABEL = 200           # metric names, histogram groups and labels, devices, worker names
MAX_ERROR = 100_000       # a failed run's error (a worker's traceback tail)
MAX_ROWS = 100_000        # histogram, latency and sample rows of one result; runs of one bundle
MAX_AXIS_VALUES = 10_000  # values of one sweep axis


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValueError(f"name={ids.shown(name)} must be a non-empty string of at most {MAX_NAME} characters")
    return name.strip()


def check_time(value: Any, field: str) -> str:
    """An ISO-8601 timestamp, returned as naive UTC (the store's convention)."""
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field}={ids.shown(value)} is not an ISO-8601 timestamp "
                         "(e.g. 2026-01-31T12:00:00.000000)") from None
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t.isoformat(timespec="microseconds")


def check_text(value: Any, field: str, max_len: int = MAX_LABEL) -> str | None:
    """None or a string of at most ``max_len`` characters."""
    if value is not None and (not isinstance(value, str) or len(value) > max_len):
        raise ValueError(f"{field}={ids.shown(value)} must be null or a string of at most {max_len} characters")
    return value


def _number(value: Any, field: str, *, integer: bool = False, minimum: float | None = None,
            optional: bool = True) -> Any:
    ok_type = (int,) if integer else (int, float)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, ok_type) or (minimum is not None and value < minimum):
        kind = "an integer" if integer else "a number"
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{field}={ids.shown(value)} must be {kind}{bound}{' or null' if optional else ''}")
    return value


def _rows(value: Any, field: str, max_rows: int = MAX_ROWS) -> Sequence[Any]:
    if not isinstance(value, list) or len(value) > max_rows:
        raise ValueError(f"{field}={ids.shown(value)} must be a list of at most {max_rows:,} rows")
    return value


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}={ids.shown(value)} must be an object")  # noqa: TRY004 - the store raises ValueError for bad input
    return value


def _label(value: Any, field: str) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value
    return check_text(value, field)


def check_spec(value: Any, field: str = "spec") -> dict[str, Any]:
    try:
        return RunSpec.from_dict(_mapping(value, field), enforce_limits=False).to_dict()  # records of past runs
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise ValueError(f"{field}: {e}") from None


def check_result(result: Any) -> dict[str, Any]:
    """A RunResult dict (what a worker pushes, what a bundle carries), checked field by field."""
    r = _mapping(result, "result")
    spec = check_spec(r.get("spec"), "result.spec")
    if not isinstance(r.get("device"), str) or len(r["device"]) > MAX_LABEL:
        raise ValueError(f"result.device={ids.shown(r.get('device'))} must be a string of at most {MAX_LABEL} characters")
    for f in ("wall_s", "nfe_counted", "nfe_formula"):
        _number(r.get(f), f"result.{f}", minimum=0, optional=False)
    for k, v in _mapping(r.get("metrics", {}), "result.metrics").items():
        check_text(k, "result.metrics key")
        _label(v, f"result.metrics[{ids.shown(k)}]")  # a number, or a short note the tables skip
    for i, h in enumerate(_rows(r.get("histograms", []), "result.histograms")):
        h = _mapping(h, f"result.histograms[{i}]")
        for f in ("group", "label"):
            _label(h.get(f), f"result.histograms[{i}].{f}")
        for f in ("count", "n"):  # weighted runs report effective (fractional) counts
            _number(h.get(f), f"result.histograms[{i}].{f}", minimum=0)
        for f in ("rate", "lo", "hi", "truth"):
            _number(h.get(f), f"result.histograms[{i}].{f}")
    for i, row in enumerate(_rows(r.get("latency", []), "result.latency")):
        row = _mapping(row, f"result.latency[{i}]")
        for f in ("what", "device"):
            check_text(row.get(f), f"result.latency[{i}].{f}")
        _number(row.get("seconds"), f"result.latency[{i}].seconds")
        _number(row.get("batch"), f"result.latency[{i}].batch", minimum=0)
    for i, row in enumerate(_rows(r.get("samples", []), "result.samples")):
        for v in _rows(row, f"result.samples[{i}]", 1_000):
            _number(v, f"result.samples[{i}][]", optional=False)
    if r.get("verdict") is not None:
        _mapping(r["verdict"], "result.verdict")
    _mapping(r.get("info", {}), "result.info")
    _number(r.get("schema_version", 1), "result.schema_version", integer=True, minimum=1)
    return RunResult.from_dict({**r, "spec": spec}).to_dict()


def check_outcome(value: Any, field: str = "outcome") -> dict[str, Any]:
    """A run's stored outcome {status, result, error, worker, finished} (a bundle's result record)."""
    o = _mapping(value, field)
    status = o.get("status")
    if status not in FINAL_STATUSES:
        raise ValueError(f"{field}.status={ids.shown(status)} is not one of {list(FINAL_STATUSES)}")
    result = o.get("result")
    if status == "done" and result is None:
        raise ValueError(f"{field}.result=None with status='done'; a done run carries its RunResult")
    return {"status": status, "result": None if result is None else check_result(result),
            "error": check_text(o.get("error"), f"{field}.error", MAX_ERROR),
            "worker": check_text(o.get("worker"), f"{field}.worker"),
            "finished": None if o.get("finished") is None else check_time(o["finished"], f"{field}.finished")}


def check_submission(value: Any, n_runs: int, field: str = "run") -> dict[str, Any]:
    """A run's submission {run_id, exp_id, idx, spec, submitted} (a bundle's run record)."""
    s = _mapping(value, field)
    ids.check(s.get("run_id"), "run_id")
    ids.check(s.get("exp_id"), "exp_id")
    idx = s.get("idx")
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n_runs:
        raise ValueError(f"{field}.idx={ids.shown(idx)} must be an integer in [0, {n_runs})")
    return {"format": 1, "run_id": s["run_id"], "exp_id": s["exp_id"], "idx": idx,
            "spec": check_spec(s.get("spec"), f"{field}.spec"),
            "submitted": check_time(s.get("submitted"), f"{field}.submitted")}


def check_axes(value: Any, field: str = "sweep.axes") -> dict[str, list[Any]]:
    axes = _mapping(value, field)
    if len(axes) > 10:
        raise ValueError(f"{field} has {len(axes)} axes; at most 10")
    out = {}
    for k, v in axes.items():
        check_text(k, f"{field} key")
        values = _rows(v, f"{field}[{ids.shown(k)}]", MAX_AXIS_VALUES)
        for x in values:  # any JSON value (guidance_interval takes pairs, world_options objects), bounded
            try:
                size = len(json.dumps(x))
            except (TypeError, ValueError, RecursionError):
                size = None
            if size is None or size > MAX_LABEL * 50:
                raise ValueError(f"{field}[{ids.shown(k)}] value {ids.shown(x)} must be a JSON value of at most "
                                 f"{MAX_LABEL * 50:,} characters")
        out[k] = list(values)
    return out


def check_experiment(value: Any, field: str = "experiment") -> dict[str, Any]:
    """An experiment record {exp_id, name, created, spec, sweep, run_ids, imported_from}."""
    e = _mapping(value, field)
    sweep = e.get("sweep")
    if sweep is not None:
        sweep = _mapping(sweep, f"{field}.sweep")
        sweep = {"sweep_id": ids.check(sweep.get("sweep_id"), "sweep_id"),
                 "axes": check_axes(sweep.get("axes"), f"{field}.sweep.axes")}
    imported = e.get("imported_from")
    return {"format": 1, "exp_id": ids.check(e.get("exp_id"), "exp_id"), "name": check_name(e.get("name")),
            "created": check_time(e.get("created"), f"{field}.created"),
            "run_ids": ids.check_many(e.get("run_ids", []), "run_id"),
            "spec": check_spec(e.get("spec"), f"{field}.spec"), "sweep": sweep,
            "imported_from": None if imported is None else ids.check(imported, "exp_id")}


def _float(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return int(v)


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def experiment_row(exp: Mapping[str, Any]) -> dict[str, Any]:
    sweep = exp.get("sweep") or {}
    spec = exp.get("spec") or {}
    return {
        "exp_id": exp["exp_id"],
        "name": exp["name"],
        "created": parse_time(exp["created"]),
        "spec": json.dumps(exp.get("spec"), sort_keys=True),
        "sweep_id": sweep.get("sweep_id"),
        "n_runs": len(exp.get("run_ids", ())),
        "imported_from": exp.get("imported_from"),
        "regime": spec.get("regime") or "offline",
        "world": spec.get("world") or "",
        "sampler": (spec.get("student") if spec.get("sampler") == "student" else spec.get("solver")) or "",
    }


def sweep_row(exp: Mapping[str, Any]) -> dict[str, Any] | None:
    sweep = exp.get("sweep")
    if not sweep:
        return None
    return {"sweep_id": sweep["sweep_id"], "exp_id": exp["exp_id"],
            "axes": json.dumps(sweep.get("axes", {}), sort_keys=True), "n_runs": len(exp.get("run_ids", ()))}


def run_row(sub: Mapping[str, Any], res: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = sub["spec"]
    row: dict[str, Any] = {
        "run_id": sub["run_id"],
        "exp_id": sub["exp_id"],
        "idx": sub["idx"],
        "name": spec.get("name", ""),
        "world": spec.get("world"),
        "scene": spec.get("scene"),
        "sampler": spec.get("sampler"),
        "solver": spec.get("solver"),
        "student": spec.get("student"),
        "grid": spec.get("grid"),
        "steps": spec.get("steps"),
        "guidance_scale": spec.get("guidance_scale"),
        "horizon": spec.get("horizon"),
        "plans": spec.get("plans"),
        "futures": spec.get("futures"),
        "samples": spec.get("samples"),
        "seed": spec.get("seed"),
        "dtype": spec.get("dtype"),
        "regime": spec.get("regime"),
        "model": spec.get("model"),
        "spec": json.dumps(spec, sort_keys=True),
        "submitted": parse_time(sub.get("submitted")),
        "status": "queued",
    }
    if res is not None:
        result = res.get("result") or {}
        if isinstance(result, Mapping) and "spec" in result:
            try:  # NFE per run for every world (older mixture results stored it per sample)
                result = upgrade_result(result)
            except ValueError:
                pass  # an unreadable version: the row keeps what the file says
        row.update(
            status=res["status"],
            finished=parse_time(res.get("finished")),
            worker=res.get("worker"),
            error=res.get("error"),
            device=result.get("device"),
            wall_s=_float(result.get("wall_s")),
            nfe_counted=_float(result.get("nfe_counted")),
            nfe_formula=_float(result.get("nfe_formula")),
            verdict=json.dumps(result["verdict"], sort_keys=True) if result.get("verdict") is not None else None,
            model_checksum=(result.get("info") or {}).get("model_checksum"),
        )
    return row


def metric_rows(run_id: str, res: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    result = (res or {}).get("result") or {}
    return [{"run_id": run_id, "name": str(k), "value": _float(v)}
            for k, v in sorted(result.get("metrics", {}).items()) if _float(v) is not None]


def histogram_rows(run_id: str, res: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    result = (res or {}).get("result") or {}
    return [{"run_id": run_id, "group": _str(h.get("group")), "label": _str(h.get("label")),
             "count": _int(h.get("count")), "n": _int(h.get("n")), "rate": _float(h.get("rate")),
             "lo": _float(h.get("lo")), "hi": _float(h.get("hi")), "truth": _float(h.get("truth"))}
            for h in result.get("histograms", ())]


def latency_rows(run_id: str, res: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    result = (res or {}).get("result") or {}
    return [{"run_id": run_id, "what": _str(r.get("what")), "seconds": _float(r.get("seconds")),
             "batch": _int(r.get("batch")), "device": _str(r.get("device", result.get("device")))}
            for r in result.get("latency", ())]


ROWS_FOR = {"metrics": metric_rows, "histograms": histogram_rows, "latency": latency_rows}


def catalog_row(exp: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """An experiment as a segment's catalog row: the Experiments page's columns, the sweep's axes,
    and the record itself (JSON, what ``Store.experiment`` returns)."""
    sweep = exp.get("sweep") or {}
    return {**experiment_row(exp), "axes": json.dumps(sweep["axes"], sort_keys=True) if sweep else None,
            "record": json.dumps(exp, sort_keys=True), "_seq": seq}
