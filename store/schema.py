"""The compacted store's tables, their polars dtypes, and the numbered migrations that build them.

Each table is declared once as (column, DuckDB type, polars dtype); the DDL of migration 1 and the
frames built from not-yet-compacted files both come from these declarations, so the two read paths
cannot drift apart. A new column is a new migration (``ALTER TABLE ... ADD COLUMN``) plus an entry
here; ``SCHEMA_VERSION`` is the number of migrations.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

Column = tuple[str, str, Any]

EXPERIMENTS: list[Column] = [
    ("exp_id", "VARCHAR", pl.String),
    ("name", "VARCHAR", pl.String),
    ("created", "TIMESTAMP", pl.Datetime("us")),
    ("spec", "VARCHAR", pl.String),          # JSON: the base RunSpec (first run's spec)
    ("sweep_id", "VARCHAR", pl.String),
    ("n_runs", "INTEGER", pl.Int32),
    ("imported_from", "VARCHAR", pl.String),
]

SWEEPS: list[Column] = [
    ("sweep_id", "VARCHAR", pl.String),
    ("exp_id", "VARCHAR", pl.String),
    ("axes", "VARCHAR", pl.String),          # JSON: {field: [values, ...]}
    ("n_runs", "INTEGER", pl.Int32),
]

RUNS: list[Column] = [
    ("run_id", "VARCHAR", pl.String),
    ("exp_id", "VARCHAR", pl.String),
    ("idx", "INTEGER", pl.Int32),
    ("name", "VARCHAR", pl.String),
    ("world", "VARCHAR", pl.String),
    ("scene", "VARCHAR", pl.String),
    ("sampler", "VARCHAR", pl.String),
    ("solver", "VARCHAR", pl.String),
    ("student", "VARCHAR", pl.String),
    ("grid", "VARCHAR", pl.String),
    ("steps", "INTEGER", pl.Int32),
    ("guidance_scale", "DOUBLE", pl.Float64),
    ("horizon", "INTEGER", pl.Int32),
    ("plans", "INTEGER", pl.Int32),
    ("futures", "INTEGER", pl.Int32),
    ("samples", "INTEGER", pl.Int32),
    ("seed", "BIGINT", pl.Int64),
    ("dtype", "VARCHAR", pl.String),
    ("regime", "VARCHAR", pl.String),
    ("spec", "VARCHAR", pl.String),          # JSON of the RunSpec
    ("submitted", "TIMESTAMP", pl.Datetime("us")),
    ("status", "VARCHAR", pl.String),        # queued | done | failed | cancelled
    ("finished", "TIMESTAMP", pl.Datetime("us")),
    ("device", "VARCHAR", pl.String),
    ("worker", "VARCHAR", pl.String),
    ("wall_s", "DOUBLE", pl.Float64),
    ("nfe_counted", "DOUBLE", pl.Float64),
    ("nfe_formula", "DOUBLE", pl.Float64),
    ("verdict", "VARCHAR", pl.String),       # JSON or null
    ("error", "VARCHAR", pl.String),
    ("model", "VARCHAR", pl.String),         # world 'model': the registered model's name (migration 3)
    ("model_checksum", "VARCHAR", pl.String),  # and the sha256 of the weights the run loaded
]

METRICS: list[Column] = [
    ("run_id", "VARCHAR", pl.String),
    ("name", "VARCHAR", pl.String),
    ("value", "DOUBLE", pl.Float64),
]

HISTOGRAMS: list[Column] = [
    ("run_id", "VARCHAR", pl.String),
    ("group", "VARCHAR", pl.String),
    ("label", "VARCHAR", pl.String),
    ("count", "BIGINT", pl.Int64),
    ("n", "BIGINT", pl.Int64),
    ("rate", "DOUBLE", pl.Float64),
    ("lo", "DOUBLE", pl.Float64),
    ("hi", "DOUBLE", pl.Float64),
    ("truth", "DOUBLE", pl.Float64),
]

LATENCY: list[Column] = [
    ("run_id", "VARCHAR", pl.String),
    ("what", "VARCHAR", pl.String),
    ("seconds", "DOUBLE", pl.Float64),
    ("batch", "BIGINT", pl.Int64),
    ("device", "VARCHAR", pl.String),
]

TABLES: dict[str, list[Column]] = {
    "experiments": EXPERIMENTS,
    "sweeps": SWEEPS,
    "runs": RUNS,
    "metrics": METRICS,
    "histograms": HISTOGRAMS,
    "latency": LATENCY,
}

# Tables keyed by run id (rows replaced together when a run's result is compacted).
PER_RUN_TABLES = ("runs", "metrics", "histograms", "latency")


def polars_schema(table: str) -> dict[str, Any]:
    return {name: dtype for name, _, dtype in TABLES[table]}


def empty_frame(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(table))


def frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows (dicts with any subset of the table's columns) as a frame with exactly the table's schema."""
    schema = polars_schema(table)
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


def _create(table: str) -> str:
    cols = ", ".join(f'"{name}" {sqltype}' for name, sqltype, _ in TABLES[table])
    return f"CREATE TABLE {table} ({cols})"


# version -> statements. Migration 1 creates the schema; later ones alter it.
MIGRATIONS: dict[int, list[str]] = {
    1: [_create(t) for t in TABLES] + [
        "CREATE INDEX runs_exp ON runs (exp_id)",
    ],
    # RunResult schema 2: NFE per run for every world; rows of older mixture results held it per sample
    2: ["UPDATE runs SET nfe_counted = nfe_counted * samples, nfe_formula = nfe_formula * samples "
        "WHERE world = 'mixture' AND samples IS NOT NULL"],
    # users' models: which model and which weights produced a run (its card stays in the result record)
    3: ["ALTER TABLE runs ADD COLUMN IF NOT EXISTS model VARCHAR",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS model_checksum VARCHAR"],
}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring ``con``'s database to SCHEMA_VERSION; returns the version it was at."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied TIMESTAMP)")
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise ValueError(f"store schema_version={current} is newer than this build reads (<= {SCHEMA_VERSION})")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN TRANSACTION")
        for statement in MIGRATIONS[version]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP)", [version])
        con.execute("COMMIT")
    return current
