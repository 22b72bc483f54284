"""The runs table's per-run columns, derived once from a run's stored records when the store compacts it.

What never changes once a run is stored: its spec's fields (nested options as ``solver_options.eta``),
the metrics its result reported, the world's tail rate with its interval (``tail_rate``,
``tail_rate_lo``, ``tail_rate_hi``) and ``tail_rate_error``, and the verdicts' overall and per-check
statuses (``verdict``, ``verdict.projected``, ``verdict.coverage``, ...). The columns come from the
data, not from a list: a field added to RunSpec or a metric a world starts reporting shows up by itself.

``result_columns`` derives them from the store's frames of some runs. The store calls it on each
compaction's batch and writes the result as the segment table ``run_columns`` (``segment_frame``:
metric columns carry the prefix ``METRIC`` in the file, so a reader knows which columns are metrics;
a column with no value in a batch stays of type Null, so that batches concatenated give the types
one call over all their runs gives). ``shown`` turns the concatenated segment rows back into what
``result_columns`` returns. The dashboard's runs table (app/runs_table.py) reads them with one
projection instead of parsing every spec and verdict on a page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import polars as pl

log = logging.getLogger(__name__)
READ_ERRORS = (ValueError, TypeError, LookupError, AttributeError)
# The runs table's own columns (what the store's runs frame and the annotations give); a spec field of
# the same name is shown as ``spec.<name>``.
RUN_COLUMNS = ("run_id", "experiment", "status", "tags", "note", "device", "wall_s", "nfe_counted", "submitted")
VERDICT_LABEL = {"pass": "PASS", "fail": "FAIL", "undecided": "UNDECIDED", "unmeasured": "NOT YET MEASURED"}
METRIC = "metric:"  # prefix of a metric column in a segment's run_columns file
TAIL_SCHEMA = {"run_id": pl.String, "tail_rate": pl.Float64, "tail_rate_lo": pl.Float64, "tail_rate_hi": pl.Float64,
               "tail_rate_error": pl.Float64}


def flat(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a nested mapping; lists stay values."""
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def columns_of(rows: Sequence[Mapping[str, Any]], null_as_text: bool = True) -> pl.DataFrame:
    """A frame from dicts with different keys: a column per key seen (None where a row lacks it);
    lists become text, a column of mixed types becomes text, a column with no value becomes text
    (``null_as_text``) or stays of type Null."""
    cols: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for k, v in row.items():
            if k not in cols:  # not setdefault: its default list would be built for every cell
                cols[k] = [None] * len(rows)
            cols[k][i] = json.dumps(v) if isinstance(v, list) else v
    out = {}
    for k, values in cols.items():
        try:
            out[k] = pl.Series(k, values)
        except (TypeError, pl.exceptions.PolarsError):
            out[k] = pl.Series(k, [None if v is None else str(v) for v in values], dtype=pl.String)
        if out[k].dtype == pl.Null and null_as_text:
            out[k] = out[k].cast(pl.String)
    return pl.DataFrame(out)


def spec_row(spec_json: str) -> dict[str, Any]:
    """A run's spec as columns: every field, nested options as ``solver_options.eta``; a field named like
    one of the run's own columns is prefixed (``spec.device``: asked for; ``device``: where it ran)."""
    spec = json.loads(spec_json)
    spec.pop("schema_version", None)
    return {f"spec.{k}" if k in RUN_COLUMNS else k: v for k, v in flat(spec)}


def verdict_row(verdict_json: str | None) -> dict[str, Any]:
    """``verdict`` (measured overall), ``verdict.projected`` and ``verdict.<check>`` per measured check."""
    from fastdiff_core import budget  # numpy and the gates: loaded by the writers that derive, not by readers

    stored = json.loads(verdict_json) if verdict_json else None
    if not stored:
        return {}
    projected, measured = budget.stored_verdicts(stored)
    row: dict[str, Any] = {}
    if measured is not None:
        row["verdict"] = VERDICT_LABEL[measured.status]
        row.update({f"verdict.{c.name}": VERDICT_LABEL[c.status] for c in measured.checks})
    if projected is not None:
        row["verdict.projected"] = VERDICT_LABEL[projected.status]
    return row


def tail_rates(hist: pl.DataFrame, tails: Mapping[str, str | None]) -> pl.DataFrame:
    """Each run's declared tail branch (``budget.world_tail``) from its stored histogram: run_id, tail_rate,
    tail_rate_lo, tail_rate_hi (the stored interval) and tail_rate_error = |generated - truth|."""
    rows = [(rid, tail) for rid, tail in tails.items() if tail is not None]
    if not rows or hist.height == 0:
        return pl.DataFrame(schema=TAIL_SCHEMA)
    want = pl.DataFrame(rows, schema={"run_id": pl.String, "label": pl.String}, orient="row")
    gen = hist.filter(pl.col("group").fill_null("generated") != "reference")
    first = gen.join(want, on=["run_id", "label"]).group_by("run_id", maintain_order=True).first()
    return first.select("run_id", pl.col("rate").alias("tail_rate"), pl.col("lo").alias("tail_rate_lo"),
                        pl.col("hi").alias("tail_rate_hi"),
                        (pl.col("rate") - pl.col("truth")).abs().alias("tail_rate_error")).cast(TAIL_SCHEMA)


def _readable(fn, value: Any, run_id: str, what: str, default: Any) -> Any:
    """``fn(value)``, or ``default`` when a stored value cannot be read (a verdict of a form no longer
    known, a world whose plugin is not installed here): a compaction must not stop on one run."""
    try:
        return fn(value)
    except READ_ERRORS as e:
        log.warning("run %s: its %s %r cannot be read (%s); those columns stay empty", run_id, what, value, e)
        return default


def _derive(runs: pl.DataFrame, metrics: pl.DataFrame, hist: pl.DataFrame,
            null_as_text: bool) -> tuple[pl.DataFrame, list[str]]:
    from fastdiff_core import budget  # as in verdict_row

    rows = [{"run_id": r["run_id"], **spec_row(r["spec"]),
             **_readable(verdict_row, r["verdict"], r["run_id"], "verdict", {})}
            for r in runs.select("run_id", "spec", "verdict").iter_rows(named=True)]
    out = columns_of(rows, null_as_text) if rows else pl.DataFrame(schema={"run_id": pl.String})
    names: list[str] = []
    if metrics.height:
        wide = metrics.pivot(on="name", index="run_id", values="value", aggregate_function="first")
        taken = set(out.columns) | set(TAIL_SCHEMA)  # a world may report a metric of the same name (model: tail_rate)
        wide = wide.rename({c: f"metric.{c}" for c in wide.columns if c != "run_id" and c in taken})
        out = out.join(wide, on="run_id", how="left")
        names += [c for c in wide.columns if c != "run_id"]
    tails = {r: _readable(budget.world_tail, w, r, "world", None) for r, w in runs.select("run_id", "world").iter_rows()}
    rates = tail_rates(hist, tails)
    if rates.height:
        out = out.join(rates, on="run_id", how="left")
        names += [c for c in rates.columns if c != "run_id"]
    return out, names


def result_columns(runs: pl.DataFrame, metrics: pl.DataFrame, hist: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """What never changes once a run is final: its spec fields, metrics, tail rate and verdicts, by run_id,
    and the names of the metric columns among them. ``runs``: the store's rows (run_id, world, spec,
    verdict); ``metrics``/``hist``: the store's long frames of those runs."""
    return _derive(runs, metrics, hist, null_as_text=True)


def segment_frame(runs: pl.DataFrame, metrics: pl.DataFrame, hist: pl.DataFrame) -> pl.DataFrame:
    """``result_columns`` of a batch as a segment stores them: run_id, _seq (when ``runs`` has it), the
    columns (metric columns prefixed ``METRIC``; a column without a value of type Null)."""
    out, names = _derive(runs, metrics, hist, null_as_text=False)
    out = out.rename({n: METRIC + n for n in names})
    if "_seq" in runs.columns:
        out = out.join(runs.select("run_id", "_seq"), on="run_id", how="left").select(
            "run_id", "_seq", *[c for c in out.columns if c != "run_id"])
    return out


def concat(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Segment frames of different columns as one (a column a part lacks is null there)."""
    parts = [p for p in parts if p.height]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame(schema={"run_id": pl.String})


def shown(stored: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Concatenated segment frames as ``result_columns`` gives them: (columns by run_id, metric names)."""
    names = [c[len(METRIC):] for c in stored.columns if c.startswith(METRIC)]
    out = stored.drop("_seq", strict=False).rename({c: c[len(METRIC):] for c in stored.columns if c.startswith(METRIC)})
    return out.with_columns(pl.col(pl.Null).cast(pl.String)), names
