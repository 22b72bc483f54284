"""An experiment as one shareable file: a zip of ``experiment.json`` (lossless records: the experiment,
every run's spec and full result, and the tags and notes of the experiment and its runs) and Parquet
tables (runs, metrics, histograms, latency, sweeps, annotations) for any tool that reads Parquet.
Import reads only the JSON; the Parquet files are the export's view."""

from __future__ import annotations

import io
import json
import pathlib
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

from fastdiff_core.registry import check_declared
from store import ids, records
from store.annotations import check_note, check_tags

if TYPE_CHECKING:
    from store.store import Store

BUNDLE_FORMAT = 1
MAX_JSON_BYTES = 512 * 2**20  # experiment.json, uncompressed
MAX_RUNS = 10_000
# The bundle's experiment.json; its records (experiment, each run's submission and outcome) are checked by
# store.records, each against its own declaration.
BUNDLE = {"type": "object", "required": ["bundle_format", "runs"], "description": "a bundle {bundle_format, "
          "experiment, runs}", "properties": {
              "bundle_format": {"enum": [BUNDLE_FORMAT]},
              "runs": {"type": "array", "minItems": 1, "maxItems": MAX_RUNS, "description": f"a list of 1 to "
                       f"{MAX_RUNS:,} runs", "items": {"type": "object", "description": "an object {run, result}"}}}}


def export_bundle(store: Store, exp_id: str, path: pathlib.Path) -> pathlib.Path:
    exp = store.experiment(exp_id)
    if exp is None:
        raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
    runs = [{"run": sub, "result": res} for sub, res in store.submission_records(exp_id)]
    run_ids = [r["run"]["run_id"] for r in runs]
    notes = store.annotations([exp_id, *run_ids])
    doc = {"bundle_format": BUNDLE_FORMAT, "experiment": exp, "runs": runs,
           "annotations": {i: {"tags": list(t), "note": n} for i, t, n in notes.select("id", "tags", "note").iter_rows()}}
    tables = {
        "runs": store.runs(exp_id=exp_id),
        "metrics": store.metrics(run_ids),
        "histograms": store.histograms(run_ids),
        "latency": store.latency(run_ids),
        "sweeps": store.sweeps(exp_id),
        "annotations": notes,
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


def _load(path: pathlib.Path) -> Any:
    """The bundle's experiment.json, parsed; its declared and its actual size both bounded (no zip bomb)."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("experiment.json")
            if info.file_size > MAX_JSON_BYTES:
                raise ValueError(f"experiment.json is {info.file_size:,} bytes; at most {MAX_JSON_BYTES:,}")
            with z.open(info) as f:
                data = f.read(MAX_JSON_BYTES + 1)
            if len(data) > MAX_JSON_BYTES:
                raise ValueError(f"experiment.json is over {MAX_JSON_BYTES:,} bytes")
            return json.loads(data)
    except FileNotFoundError:
        raise ValueError(f"bundle path={str(path)!r} does not exist") from None
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, NotImplementedError, EOFError, zlib.error,
            OSError) as e:
        raise ValueError(f"bundle {path.name!r} is not a fastdiff bundle ({type(e).__name__}: {e})") from None


def check_bundle(doc: Any) -> tuple[dict[str, Any], list[tuple[dict[str, Any], dict[str, Any] | None]]]:
    """The bundle's experiment and its runs [(submission, outcome or None)], every record checked
    (``store.records.check_*``: types, ranges, sizes). ValueError names the record and the field."""
    if not isinstance(doc, dict):
        raise ValueError("bundle: experiment.json must hold an object")  # noqa: TRY004 - bad input is ValueError here
    check_declared(BUNDLE, doc, "")
    exp = records.check_experiment(doc.get("experiment"), "experiment")
    runs = doc["runs"]
    checked = []
    for i, r in enumerate(runs):
        sub = records.check_submission(r.get("run"), len(runs), f"runs[{i}].run")
        res = r.get("result")
        checked.append((sub, None if res is None else records.check_outcome(res, f"runs[{i}].result")))
    idx = sorted(sub["idx"] for sub, _ in checked)
    if idx != list(range(len(checked))):
        raise ValueError(f"runs[].idx={ids.shown(idx)} must number the runs 0..{len(checked) - 1}, each once")
    return exp, checked


def check_annotations(doc: dict[str, Any], exp: dict[str, Any],
                      checked: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> dict[str, tuple[list[str], str]]:
    """The bundle's tags and notes {id: (tags, note)} (absent in bundles written before they were
    carried); each id must be the experiment's or one of its runs'. ValueError naming the id and field."""
    value = doc.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"annotations={ids.shown(value)} must be an object {{id: {{tags, note}}}}")  # noqa: TRY004
    mine = {exp["exp_id"], *(sub["run_id"] for sub, _ in checked)}
    out = {}
    for key, ann in value.items():
        if key not in mine:
            raise ValueError(f"annotations: id={ids.shown(key)} is not the bundle's experiment or one of its runs")
        if not isinstance(ann, dict):
            raise ValueError(f"annotations[{key}]={ids.shown(ann)} must be an object {{tags, note}}")  # noqa: TRY004
        try:
            out[key] = (check_tags(ann.get("tags", [])), check_note(ann.get("note", "")))
        except ValueError as e:
            raise ValueError(f"annotations[{key}]: {e}") from None
    return out


def import_bundle(store: Store, path: pathlib.Path) -> str:
    """Import a bundle as a new experiment with fresh ids; returns its exp_id.

    Every record is checked before anything is written; then the experiment, its runs and their
    outcomes are written as one file (``Store``'s inbox), so readers see the whole experiment or none
    of it, and a write that fails half way leaves nothing. The tags and notes follow (one small file
    per annotated id, ``store.annotations``)."""
    doc = _load(path)
    exp, checked = check_bundle(doc)
    notes = check_annotations(doc, exp, checked)
    exp_id = ids.new_id("e")
    run_ids = [ids.new_id("r") for _ in checked]
    subs = [dict(sub, run_id=run_id, exp_id=exp_id) for run_id, (sub, _) in zip(run_ids, checked)]
    outcomes = {run_id: dict(res, format=1, run_id=run_id) for run_id, (_, res) in zip(run_ids, checked)
                if res is not None}
    sweep = exp["sweep"]
    store._publish_experiment(dict(exp, exp_id=exp_id, run_ids=run_ids, imported_from=exp["exp_id"],
                                   sweep=dict(sweep, sweep_id=ids.new_id("s")) if sweep else None), subs, outcomes)
    new_id = {exp["exp_id"]: exp_id, **{sub["run_id"]: r for r, (sub, _) in zip(run_ids, checked)}}
    for old, (tags, note) in notes.items():  # after the experiment: an annotation names a stored id
        store.set_tags(new_id[old], tags)
        store.set_note(new_id[old], note)
    return exp_id
