"""The store's tables: their columns and polars dtypes, declared once.

The frames the store returns (``runs``, ``experiments``, ``sweeps``, ``metrics``, ``histograms``,
``latency``) and the segment files it writes (``store.segments``) both take their columns from these
declarations, so the rows read from segments and the rows built from not-yet-compacted records cannot
drift apart. Segment tables add ``_seq`` (the batch that wrote a row: of two rows of one key, the later
batch's wins) and the lossless records (``catalog.record``, ``records.submission`` / ``.outcome``:
the JSON a run or experiment reads back as).

``run_columns`` is the one table whose columns are not all declared here: after run_id and _seq it
holds the runs table's per-run columns (``store.run_columns``), which follow the data.

``SCHEMA_VERSION`` numbers the store's on-disk formats: 1-3 were the per-record JSON files with a
DuckDB cache (3 added ``model`` / ``model_checksum``); 4 is Parquet segments (``store.segments``);
5 adds the experiments' regime, world and sampler to the catalog and the ``run_columns`` table
(``store.upgrade`` upgrades a store of format 4).
"""

from __future__ import annotations

from typing import Any

import polars as pl

Column = tuple[str, Any]

EXPERIMENTS: list[Column] = [
    ("exp_id", pl.String),
    ("name", pl.String),
    ("created", pl.Datetime("us")),
    ("spec", pl.String),          # JSON: the base RunSpec (first run's spec)
    ("sweep_id", pl.String),
    ("n_runs", pl.Int32),
    ("imported_from", pl.String),
    ("regime", pl.String),        # of the base spec ('offline' when it names none)
    ("world", pl.String),
    ("sampler", pl.String),       # the base spec's solver, or its student when it samples with one
]

SWEEPS: list[Column] = [
    ("sweep_id", pl.String),
    ("exp_id", pl.String),
    ("axes", pl.String),          # JSON: {field: [values, ...]}
    ("n_runs", pl.Int32),
]

RUNS: list[Column] = [
    ("run_id", pl.String),
    ("exp_id", pl.String),
    ("idx", pl.Int32),
    ("name", pl.String),
    ("world", pl.String),
    ("scene", pl.String),
    ("sampler", pl.String),
    ("solver", pl.String),
    ("student", pl.String),
    ("grid", pl.String),
    ("steps", pl.Int32),
    ("guidance_scale", pl.Float64),
    ("horizon", pl.Int32),
    ("plans", pl.Int32),
    ("futures", pl.Int32),
    ("samples", pl.Int32),
    ("seed", pl.Int64),
    ("dtype", pl.String),
    ("regime", pl.String),
    ("spec", pl.String),          # JSON of the RunSpec
    ("submitted", pl.Datetime("us")),
    ("status", pl.String),        # queued | done | failed | cancelled
    ("finished", pl.Datetime("us")),
    ("device", pl.String),
    ("worker", pl.String),
    ("wall_s", pl.Float64),
    ("nfe_counted", pl.Float64),
    ("nfe_formula", pl.Float64),
    ("verdict", pl.String),       # JSON or null
    ("error", pl.String),
    ("model", pl.String),         # world 'model': the registered model's name (migration 3)
    ("model_checksum", pl.String),  # and the sha256 of the weights the run loaded
]

METRICS: list[Column] = [
    ("run_id", pl.String),
    ("name", pl.String),
    ("value", pl.Float64),
]

HISTOGRAMS: list[Column] = [
    ("run_id", pl.String),
    ("group", pl.String),
    ("label", pl.String),
    ("count", pl.Int64),
    ("n", pl.Int64),
    ("rate", pl.Float64),
    ("lo", pl.Float64),
    ("hi", pl.Float64),
    ("truth", pl.Float64),
]

LATENCY: list[Column] = [
    ("run_id", pl.String),
    ("what", pl.String),
    ("seconds", pl.Float64),
    ("batch", pl.Int64),
    ("device", pl.String),
]

TABLES: dict[str, list[Column]] = {
    "experiments": EXPERIMENTS,
    "sweeps": SWEEPS,
    "runs": RUNS,
    "metrics": METRICS,
    "histograms": HISTOGRAMS,
    "latency": LATENCY,
}

# Tables keyed by run id whose rows are written once, when a run's outcome is compacted.
PER_RUN_TABLES = ("metrics", "histograms", "latency")

SEQ: Column = ("_seq", pl.Int64)
# What a segment holds, per table: the frames' columns, plus _seq and the lossless records.
SEGMENT_TABLES: dict[str, list[Column]] = {
    "catalog": EXPERIMENTS + [("axes", pl.String), ("record", pl.String), SEQ],  # record: the experiment's JSON
    "runs": RUNS + [SEQ],
    "records": [("run_id", pl.String), ("submission", pl.String), ("outcome", pl.String), SEQ],
    "metrics": METRICS,
    "histograms": HISTOGRAMS,
    "latency": LATENCY,
    "run_columns": [("run_id", pl.String), SEQ],  # + the derived columns (store.run_columns)
}
DERIVED = ("run_columns",)  # segment tables with more columns than declared
SCHEMA_VERSION = 5


def polars_schema(table: str) -> dict[str, Any]:
    return dict(TABLES[table]) if table in TABLES else dict(SEGMENT_TABLES[table])


def segment_schema(table: str) -> dict[str, Any]:
    return dict(SEGMENT_TABLES[table])


def empty_frame(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(table))


def frame(table: str, rows: list[dict[str, Any]], schema: dict[str, Any] | None = None) -> pl.DataFrame:
    """Rows (dicts with any subset of the table's columns) as a frame with exactly the table's schema."""
    schema = schema or polars_schema(table)
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")
