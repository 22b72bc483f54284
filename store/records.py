"""The JSON records (experiment, run submission, run outcome): checking them, and turning them into table rows.

The ``check_*`` functions validate a record that arrives from outside (a worker's outcome through the
results channel, a bundle) — types, ranges and sizes — and return it normalised to the known fields,
or raise ValueError naming the field, the value and what is allowed. Only checked records are
written, so every reader (the compactor, the pages) can trust the types below. A record's fields are
declared once, as JSON schema (``RESULT``, ``OUTCOME_FIELDS``), checked by the validation layer's
``registry.check_declared`` and published with the service's messages (docs/schema/messages.schema.json);
its RunSpec is checked by RunSpec.

One ``*_row(s)`` function per table, used by both the compactor and the readers of not-yet-compacted files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from fastdiff_core.registry import check_declared
from fastdiff_core.spec import RunResult, RunSpec, upgrade_result
from store import ids

RUN_STATUSES = ("queued", "done", "failed", "cancelled")
FINAL_STATUSES = ("done", "failed", "cancelled")


MAX_NAME = 200            # experiment names
MAX_LABEL = 200           # metric names, histogram groups and labels, devices, worker names
MAX_ERROR = 100_000       # a failed run's error (a worker's traceback tail)
MAX_ROWS = 100_000        # histogram, latency and sample rows of one result; runs of one bundle
MAX_AXIS_VALUES = 10_000  # values of one sweep axis


def _text(max_len: int = MAX_LABEL) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": max_len,
            "description": f"null or a string of at most {max_len:,} characters"}


def _number(minimum: float | None = None, nullable: bool = True) -> dict[str, Any]:
    bound = {} if minimum is None else {"minimum": minimum}
    return {"type": ["number", "null"] if nullable else "number", **bound,
            "description": f"a number{'' if minimum is None else f' >= {minimum}'}{' or null' if nullable else ''}"}


def _rows(item: dict[str, Any], what: str, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    return {"type": "array", "maxItems": max_rows, "items": item,
            "description": f"a list of at most {max_rows:,} {what}"}


# A number, or a short note the tables skip (a metric's value, a histogram's group or label).
LABEL = {"type": ["number", "boolean", "string", "null"], "maxLength": MAX_LABEL,
         "description": f"a number, or null or a string of at most {MAX_LABEL} characters"}
# A RunResult (fastdiff_core.spec.RunResult.to_dict): what a worker pushes, what a bundle carries.
RESULT: dict[str, Any] = {
    "type": "object", "required": ["spec", "device", "wall_s", "nfe_counted", "nfe_formula"],
    "description": "a RunResult {spec, device, wall_s, nfe_counted, nfe_formula, metrics, histograms, latency, "
                   "samples, verdict, info, schema_version}",
    "properties": {
        "spec": {"type": "object", "description": "the run's RunSpec (runspec.schema.json; checked by RunSpec)"},
        "device": {"type": "string", "maxLength": MAX_LABEL,
                   "description": f"a string of at most {MAX_LABEL} characters"},
        "wall_s": _number(0, nullable=False),
        "nfe_counted": _number(0, nullable=False),  # per run, every world (RESULT_SCHEMA_VERSION 2)
        "nfe_formula": _number(0, nullable=False),
        "metrics": {"type": "object", "propertyNames": {"type": "string", "maxLength": MAX_LABEL},
                    "additionalProperties": LABEL, "description": "an object: metric name -> number or short note"},
        "histograms": _rows({"type": "object", "description": "a histogram row", "properties": {
            "group": LABEL, "label": LABEL,
            "count": _number(0), "n": _number(0),  # weighted runs report effective (fractional) counts
            **{f: _number() for f in ("rate", "lo", "hi", "truth")}}}, "histogram rows"),
        "latency": _rows({"type": "object", "description": "a latency row", "properties": {
            "what": _text(), "device": _text(), "seconds": _number(), "batch": _number(0)}}, "latency rows"),
        "samples": _rows(_rows(_number(nullable=False), "numbers", 1_000), "sample rows"),
        "verdict": {"type": ["object", "null"], "description": "a stored regime verdict or null"},
        "info": {"type": "object", "description": "an object"},
        "schema_version": {"type": "integer", "minimum": 1, "description": "an integer >= 1"},
    },
}
# A run's outcome, as the results channel carries it (workers.messages adds its run_id) and the store keeps it.
OUTCOME_FIELDS: dict[str, Any] = {
    "status": {"enum": list(FINAL_STATUSES)},
    "result": {"type": ["object", "null"], "description": "the RunResult (fastdiff_core.spec.RunResult."
               "to_dict) of a done run: $defs/run_result, checked where the collector stores it"},
    "error": _text(MAX_ERROR),  # a failed run's error (a worker's traceback tail)
    "worker": _text(),
}
FINISHED = {"type": ["string", "null"], "description": "null or an ISO-8601 timestamp"}  # parsed by check_time
OUTCOME = {"type": "object", "required": ["status"], "properties": {**OUTCOME_FIELDS, "finished": FINISHED},
           "description": "an object {status, result, error, worker, finished}"}


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
    return check_declared(_text(max_len), value, field)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}={ids.shown(value)} must be an object")  # noqa: TRY004 - the store raises ValueError for bad input
    return value


def check_spec(value: Any, field: str = "spec") -> dict[str, Any]:
    try:
        return RunSpec.from_dict(_mapping(value, field), enforce_limits=False).to_dict()  # records of past runs
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        raise ValueError(f"{field}: {e}") from None


def check_result(result: Any) -> dict[str, Any]:
    """A RunResult dict (what a worker pushes, what a bundle carries), checked against ``RESULT``."""
    r = check_declared(RESULT, result, "result")
    return RunResult.from_dict({**r, "spec": check_spec(r["spec"], "result.spec")}).to_dict()


def check_outcome(value: Any, field: str = "outcome", *, result_made: bool = False) -> dict[str, Any]:
    """A run's stored outcome {status, result, error, worker, finished} (a bundle's result record; with
    ``field=""``, the outcome ``Store.record_result`` is given). ``result_made``: the result is a RunResult
    object's ``to_dict()``, validated when it was made (an in-process run, a benchmark's store), not again."""
    o = check_declared(OUTCOME, value, field)
    result = o.get("result")
    if o["status"] == "done" and result is None:
        raise ValueError(f"{_at(field, 'result')}=None with status='done'; a done run carries its RunResult")
    if result is not None and not result_made:
        result = check_result(result)
    finished = o.get("finished")
    return {"status": o["status"], "result": result,
            "error": o.get("error"), "worker": o.get("worker"),
            "finished": None if finished is None else check_time(finished, _at(field, "finished"))}


def _at(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


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
        values = check_declared(_rows({}, "values", MAX_AXIS_VALUES), v, f"{field}[{ids.shown(k)}]")
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
