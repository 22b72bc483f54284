"""Turning the JSON records (experiment, run submission, run result) into table rows.

One function per table, used by both the compactor and the readers of not-yet-compacted files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

RUN_STATUSES = ("queued", "done", "failed", "cancelled")
FINAL_STATUSES = ("done", "failed", "cancelled")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


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
    return {
        "exp_id": exp["exp_id"],
        "name": exp["name"],
        "created": parse_time(exp["created"]),
        "spec": json.dumps(exp.get("spec"), sort_keys=True),
        "sweep_id": sweep.get("sweep_id"),
        "n_runs": len(exp.get("run_ids", ())),
        "imported_from": exp.get("imported_from"),
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
        "spec": json.dumps(spec, sort_keys=True),
        "submitted": parse_time(sub.get("submitted")),
        "status": "queued",
    }
    if res is not None:
        result = res.get("result") or {}
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
