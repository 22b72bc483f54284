"""Upgrade of a store of segment format 4 to format 5 (``store.schema``): every segment gains its
``run_columns`` file (the runs table's per-run columns, derived from the segment's own runs, metrics and
histograms by ``store.run_columns``, as a compaction now writes them) and its catalog file gains the
experiments' regime, world and sampler (from each experiment's record).

Done once, by the first ``Store`` that opens the store, holding the compaction lock (another process
opening it meanwhile waits, then finds it done). Nothing already stored changes: a catalog file is
rewritten from its own records, a new file is added beside the others, and the manifest naming them
in format 5 is published last, so a process killed half way leaves a store of format 4 that the next
start upgrades from the beginning.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import TYPE_CHECKING

import polars as pl

from store import records, run_columns, schema, segments

if TYPE_CHECKING:
    from store.store import Store

FROM = 4


def needed(root: pathlib.Path) -> bool:
    """Whether the store at ``root`` is of format 4 (a store of format 5, or none yet, needs nothing)."""
    return segments.format_of(root) == FROM


def _catalog(path: pathlib.Path) -> pl.DataFrame:
    """A catalog file's rows rebuilt from their records (the columns format 5 adds included)."""
    old = pl.read_parquet(path, columns=["record", "_seq"])
    rows = [records.catalog_row(json.loads(rec), seq) for rec, seq in old.iter_rows()]
    return schema.frame("catalog", rows, schema.segment_schema("catalog"))


def _run_columns(directory: pathlib.Path, seg: segments.Segment) -> pl.DataFrame:
    """The segment's run_columns rows, from its runs, metrics and histograms files."""
    def read(table: str, columns: list[str] | None = None) -> pl.DataFrame:
        paths = [seg.path(directory, table)] if table in seg.tables else []
        return segments.read(paths, table, columns)

    runs = read("runs", ["run_id", "world", "spec", "verdict", "_seq"])
    return run_columns.segment_frame(runs, read("metrics"), read("histograms"))


def upgrade(store: Store) -> float | None:
    """Upgrade ``store`` to format 5 if it is of format 4; returns the seconds it took (None: nothing to do)."""
    with store._flock("compact.lock"):
        if not needed(store.root):
            return None
        start = time.perf_counter()
        manifest = segments.Manifest.from_json((store.root / segments.MANIFEST).read_text(), format=FROM)
        directory = store.segments_dir
        new = []
        for seg in manifest.segments:
            frames = {"run_columns": _run_columns(directory, seg)}
            if "catalog" in seg.tables:
                frames["catalog"] = _catalog(seg.path(directory, "catalog"))
            written = segments.write_segment(directory, frames, seg.lo, seg.hi, seg.level)
            tables = tuple(dict.fromkeys([*seg.tables, *written.tables]))
            new.append(dataclasses.replace(seg, tables=tables))
        segments.publish(store.root, dataclasses.replace(manifest, segments=tuple(new)))
        return time.perf_counter() - start
