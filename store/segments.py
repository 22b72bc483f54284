"""Segment files and the manifest that lists them: the compacted store, appended one batch at a time.

A compaction writes one segment: for each table with rows in the batch, one Parquet file
``segments/<lo>-<hi>.<table>.parquet`` (lo..hi: the batch numbers it holds), then publishes a new
``MANIFEST`` (JSON, replaced atomically) naming every live segment. Files are written to a temporary
name, fsynced and renamed; a segment that no manifest names (a compaction killed half way) is garbage
that the next compaction removes. Nothing already published is ever modified, so readers need no lock:
they read the manifest, then the files it names.

Merging keeps the number of files small without rewriting the store: segments of one level are
merged into one of the next level once ``FANOUT`` of them exist (a row is rewritten about
log_FANOUT(batches) times in its life), and merges stop at ``MAX_MERGE_RUNS`` runs per segment, so
no compaction ever rewrites more than that. A merge keeps, per key, the row of the latest batch and
drops rows of deleted experiments.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
import pathlib
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from store import files, run_columns, schema

MANIFEST = "MANIFEST"
FANOUT = 8
MAX_MERGE_RUNS = 20_000
KEYS = {"catalog": "exp_id", "runs": "run_id", "records": "run_id", "run_columns": "run_id"}  # later batch wins


@dataclasses.dataclass(frozen=True)
class Segment:
    lo: int
    hi: int
    level: int
    runs: int                # run rows it holds (what merging is bounded by)
    tables: tuple[str, ...]  # the tables it has a file for

    @property
    def name(self) -> str:
        return f"{self.lo:08d}-{self.hi:08d}"

    def path(self, directory: pathlib.Path, table: str) -> pathlib.Path:
        return directory / f"{self.name}.{table}.parquet"


@dataclasses.dataclass(frozen=True)
class Manifest:
    seq: int = 0                                  # the last batch number used
    segments: tuple[Segment, ...] = ()            # oldest first
    deleted: frozenset[str] = frozenset()         # exp_ids deleted (their rows may linger in segments)
    unreadable: tuple[tuple[str, str], ...] = ()  # (id, reason): records kept on disk that reads skip
    folded: tuple[str, ...] = ()                  # ids of the journal files this manifest holds

    def to_json(self) -> str:
        return json.dumps({"format": schema.SCHEMA_VERSION, "seq": self.seq,
                           "segments": [dataclasses.asdict(s) for s in self.segments],
                           "deleted": sorted(self.deleted), "unreadable": dict(self.unreadable),
                           "folded": list(self.folded)},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str, format: int = schema.SCHEMA_VERSION) -> Manifest:
        d = json.loads(text)
        if d.get("format") != format:
            raise ValueError(f"store MANIFEST format={d.get('format')!r}; this build reads {format}")
        segs = tuple(Segment(s["lo"], s["hi"], s["level"], s["runs"], tuple(s["tables"])) for s in d["segments"])
        return cls(d["seq"], segs, frozenset(d["deleted"]), tuple(sorted(d["unreadable"].items())),
                   tuple(d["folded"]))

    def files(self, directory: pathlib.Path, table: str) -> list[pathlib.Path]:
        return [s.path(directory, table) for s in self.segments if table in s.tables]


def format_of(root: pathlib.Path) -> int | None:
    """The format number the published manifest declares (None before the first)."""
    try:
        return json.loads((root / MANIFEST).read_bytes()).get("format")
    except FileNotFoundError:
        return None


Stamp = tuple[int, int, int]
NO_MANIFEST: Stamp = (0, 0, 0)


def _stamp(st: os.stat_result) -> Stamp:
    # Each publish renames a new file into place: a new inode, even when two publishes fall within one tick
    # of the file system's clock (their mtimes then being equal).
    return st.st_ino, st.st_mtime_ns, st.st_size


def load(root: pathlib.Path) -> tuple[Manifest, Stamp]:
    """The published manifest and its file's change stamp (``NO_MANIFEST`` and an empty manifest before
    the first)."""
    try:
        with open(root / MANIFEST, "rb") as f:
            stamp = _stamp(os.fstat(f.fileno()))
            return Manifest.from_json(f.read().decode()), stamp
    except FileNotFoundError:
        return Manifest(), NO_MANIFEST


def stamp(root: pathlib.Path) -> Stamp:
    """The published manifest's change stamp (``NO_MANIFEST`` before the first), without reading it."""
    try:
        return _stamp(os.stat(root / MANIFEST))
    except FileNotFoundError:
        return NO_MANIFEST


def publish(root: pathlib.Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (and durably: the segment files it names were fsynced first)."""
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, files.FILE_MODE)
    try:
        os.write(fd, manifest.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, root / MANIFEST)
    files.fsync_path(root)


def write_segment(directory: pathlib.Path, frames: dict[str, pl.DataFrame], lo: int, hi: int, level: int) -> Segment:
    """Write the non-empty frames as one segment's files (fsynced, directory too); return the segment.
    The files are fsynced side by side (threads): the file system commits them together."""
    tables = tuple(t for t, df in frames.items() if df.height)
    seg = Segment(lo, hi, level, frames["runs"].height if "runs" in frames else 0, tables)
    written = []
    for table in tables:
        tmp = directory / f".tmp-{uuid.uuid4().hex}"
        frames[table].write_parquet(tmp, compression="zstd", statistics=True)
        os.chmod(tmp, files.FILE_MODE)
        written.append((tmp, seg.path(directory, table)))
    with ThreadPoolExecutor(len(written) or 1) as pool:
        list(pool.map(lambda pair: files.fsync_path(pair[0]), written))
    for tmp, final in written:
        os.replace(tmp, final)
    files.fsync_path(directory)
    return seg


def read(paths: Iterable[pathlib.Path], table: str, columns: list[str] | None = None,
         where: pl.Expr | None = None) -> pl.DataFrame:
    """The rows of ``table`` in these segment files (in their order), only ``columns``, only ``where``."""
    return scan(paths, table, columns, where).collect()


def scan(paths: Iterable[pathlib.Path], table: str, columns: list[str] | None = None,
         where: pl.Expr | None = None) -> pl.LazyFrame:
    """``read`` as a query not yet run (a caller that joins or sorts the rows lets polars do it all in one
    pass, without a copy of every row read first)."""
    paths = list(paths)
    sch = schema.segment_schema(table)
    cols = list(sch) if columns is None else columns
    if not paths:
        return pl.LazyFrame(schema={c: sch[c] for c in cols})
    lf = pl.scan_parquet([str(p) for p in paths], schema={c: sch[c] for c in sch})
    if where is not None:
        lf = lf.filter(where)
    return lf.select(cols)


def read_derived(paths: Iterable[pathlib.Path]) -> pl.DataFrame:
    """Every column of these ``run_columns`` files (their columns differ: ``store.run_columns.concat``)."""
    return run_columns.concat([pl.read_parquet(p) for p in paths])


def latest(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """One row per key: the latest batch's (rows arrive oldest first), in the order of those rows."""
    return df.filter(pl.col(KEYS[table]).is_last_distinct()) if table in KEYS else df


def goes_on_from(manifest: Manifest, before: Manifest) -> bool:
    """Whether ``manifest`` lists every row ``before`` listed that is still the latest of its key (or of a
    deleted experiment): it numbers its batches on from ``before``'s, and each segment of ``before`` is
    in it or was merged into one of its segments (a merge keeps the latest row per key, rows of deleted
    experiments aside). Then the rows of the batches after ``before.seq`` are all a reader of ``before``
    has not seen (``after``)."""
    if manifest.seq < before.seq or not manifest.deleted >= before.deleted:
        return False
    spans = sorted((s.lo, s.hi) for s in manifest.segments)
    los = [lo for lo, _ in spans]
    for s in before.segments:
        i = bisect.bisect_right(los, s.lo) - 1
        if i < 0 or spans[i][1] < s.hi:
            return False
    return True


def after(directory: pathlib.Path, manifest: Manifest, seq: int, table: str, columns: list[str]) -> pl.LazyFrame:
    """``columns`` of ``table``'s rows of the batches after ``seq`` (in the manifest's order: oldest first),
    read only from the segments that hold such batches (a query: ``.collect()`` runs it)."""
    paths = [s.path(directory, table) for s in manifest.segments if s.hi > seq and table in s.tables]
    return scan(paths, table, columns, pl.col("_seq") > seq)


def updated(before: pl.DataFrame, new: pl.DataFrame, table: str) -> pl.DataFrame:
    """``latest(concat([rows, new]))`` where ``before == latest(rows)``: the same rows in the same order,
    without going over ``before`` again but for one hash probe per row."""
    new = latest(new, table)
    if new.height == 0:
        return before
    key = KEYS[table]
    return pl.concat([before.filter(~pl.col(key).is_in(new[key].implode())), new])


def plan_merge(manifest: Manifest) -> list[Segment]:
    """The newest FANOUT segments if they share a level and together stay under MAX_MERGE_RUNS, else []."""
    tail = manifest.segments[-FANOUT:]
    if len(tail) < FANOUT or len({s.level for s in tail}) != 1:
        return []
    if sum(s.runs for s in tail) > MAX_MERGE_RUNS:
        return []
    return list(tail)


def merge(directory: pathlib.Path, manifest: Manifest, group: list[Segment], dead_runs: set[str]) -> Manifest:
    """Merge ``group`` (consecutive, newest) into one segment of the next level; return the new manifest
    (not yet published). Rows of deleted experiments (``manifest.deleted``, ``dead_runs``) are dropped."""
    frames = {}
    for table in schema.SEGMENT_TABLES:
        paths = [s.path(directory, table) for s in group if table in s.tables]
        df = latest(read_derived(paths) if table in schema.DERIVED else read(paths, table), table)
        if "exp_id" in df.columns and table in ("catalog", "runs"):
            df = df.filter(~pl.col("exp_id").is_in(list(manifest.deleted)))
        if dead_runs and "run_id" in df.columns:
            df = df.filter(~pl.col("run_id").is_in(list(dead_runs)))
        frames[table] = df
    seg = write_segment(directory, frames, group[0].lo, group[-1].hi, group[0].level + 1)
    keep = manifest.segments[: len(manifest.segments) - len(group)]
    return dataclasses.replace(manifest, segments=(*keep, seg))


def live_names(directory: pathlib.Path, manifest: Manifest) -> set[str]:
    """The names of the segment files ``manifest`` lists."""
    return {s.path(directory, t).name for s in manifest.segments for t in s.tables}


def remove_unlisted(directory: pathlib.Path, manifest: Manifest, grace_s: float, now: float) -> None:
    """Delete segment files no manifest names any more (merged away, or left by a killed compaction),
    once they are ``grace_s`` old: a reader that read the previous manifest may still be opening them."""
    live = live_names(directory, manifest)
    with os.scandir(directory) as it:
        for e in it:
            if e.name not in live and (e.name.endswith(".parquet") or e.name.startswith(".tmp-")):
                try:
                    if now - e.stat().st_mtime > grace_s:
                        os.unlink(e.path)
                except FileNotFoundError:
                    pass


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, check_circular=False)
