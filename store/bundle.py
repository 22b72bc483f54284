"""An experiment as one shareable file: a zip of ``experiment.json`` (lossless records: the experiment,
every run's spec and full result) and Parquet tables (runs, metrics, histograms, latency, sweeps) for
any tool that reads Parquet. Import reads only the JSON; the Parquet files are the export's view."""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
from typing import TYPE_CHECKING, Any

from fastdiff_core.spec import RunResult, RunSpec
from store import files, records
from store.store import new_id

if TYPE_CHECKING:
    from store.store import Store

BUNDLE_FORMAT = 1


def export_bundle(store: Store, exp_id: str, path: pathlib.Path) -> pathlib.Path:
    exp = store.experiment(exp_id)
    if exp is None:
        raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
    runs = []
    for run_id in exp["run_ids"]:
        sub = files.read(store.runs_dir, run_id)
        if sub is not None:
            runs.append({"run": sub, "result": files.read(store.results_dir, run_id)})
    doc = {"bundle_format": BUNDLE_FORMAT, "experiment": exp, "runs": runs}
    run_ids = [r["run"]["run_id"] for r in runs]
    tables = {
        "runs": store.runs(exp_id=exp_id),
        "metrics": store.metrics(run_ids),
        "histograms": store.histograms(run_ids),
        "latency": store.latency(run_ids),
        "sweeps": store.sweeps(exp_id),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("experiment.json", json.dumps(doc, sort_keys=True, indent=1))
        for name, df in tables.items():
            buf = io.BytesIO()
            df.write_parquet(buf)
            z.writestr(f"{name}.parquet", buf.getvalue())
    tmp.replace(path)
    return path


def _load(path: pathlib.Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as z:
            doc = json.loads(z.read("experiment.json"))
    except FileNotFoundError:
        raise ValueError(f"bundle path={str(path)!r} does not exist") from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"bundle path={str(path)!r} is not a fastdiff bundle ({e})") from None
    if doc.get("bundle_format") != BUNDLE_FORMAT:
        raise ValueError(f"bundle_format={doc.get('bundle_format')!r} is not readable; expected {BUNDLE_FORMAT}")
    return doc


def import_bundle(store: Store, path: pathlib.Path) -> str:
    doc = _load(path)
    exp = doc["experiment"]
    # Validate everything before writing anything.
    for i, r in enumerate(doc["runs"]):
        try:
            RunSpec.from_dict(r["run"]["spec"])
            res = r.get("result")
            if res is not None:
                if res["status"] not in records.FINAL_STATUSES:
                    raise ValueError(f"status={res['status']!r} is not one of {list(records.FINAL_STATUSES)}")
                if res.get("result") is not None:
                    RunResult.from_dict(res["result"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"bundle runs[{i}]: {e}") from None
    exp_id = new_id("e")
    run_ids = []
    for r in doc["runs"]:
        run_id = new_id("r")
        run_ids.append(run_id)
        sub = dict(r["run"], run_id=run_id, exp_id=exp_id)
        files.publish_once(store.runs_dir, run_id, sub)
        if r.get("result") is not None:
            files.publish_once(store.results_dir, run_id, dict(r["result"], run_id=run_id))
    sweep = exp.get("sweep")
    new_exp = dict(exp, exp_id=exp_id, run_ids=run_ids, imported_from=exp["exp_id"],
                   sweep=dict(sweep, sweep_id=new_id("s")) if sweep else None)
    files.publish_replace(store.experiments_dir, exp_id, new_exp)
    return exp_id
