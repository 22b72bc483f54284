"""``Store``: experiments, runs and their results: Parquet segments appended in batches, read as polars.

Write path (no reader ever waits for a writer):

    app       new_experiment / import_bundle  -> one journal line: the experiment and all its runs
    app       rename / delete                 -> one journal line
    app       set_tags / set_note (store.annotations) -> annotations/<id>.json (replaced on each edit)
    collector record_result in batched_writes -> one journal line per batch (first outcome wins)
    collector compact (one owner: compact.lock) -> segments/<batch>.<table>.parquet, MANIFEST

The journal (``store.journal``: inbox/journal.jsonl, sealed JSON lines, one fsync per write) is the
store's commit log. A compaction rotates it, folds the rotated file into ONE new segment (one Parquet
file per table: catalog, runs, records, metrics, histograms, latency, and the runs table's derived
columns ``run_columns``, computed here once per run: ``store.run_columns``), publishes a new manifest
naming the segment and the folded file, and only then removes the file: its cost is the size of the
journal, not of the store (``store.segments`` merges small segments, never past a bounded size).
Between compactions a read adds the journal's lines to what the manifest lists.

Read path: a reader reads the journal first and the manifest second, and drops journal files the
manifest says it folded, so a record a compaction moves meanwhile is seen once, never zero times.
Segments are immutable; a reader keeps the light columns of each (run ids, statuses, the catalog) in
memory, loads only the segments new since its last read, and reads a run's full row, its results or
its record only from the segment that holds it.

Idempotence: outcome writers take turns (``results.lock``) and check the journal and the manifest
before they write, so a run's first outcome is its only one; submissions and outcomes already in a
segment are skipped when a journal line repeats them.

Stores written in the per-record format (experiments/, runs/, results/, db/) are migrated when a
``Store`` opens them (``store.legacy``); so are stores of the previous segment format (``store.upgrade``).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import polars as pl

from fastdiff_core.spec import RunResult, RunSpec
from store import files, ids, journal, records, run_columns, schema, segments
from store.annotations import Annotations, check_target

log = logging.getLogger(__name__)

GRACE_S = 10.0  # a reader opens a segment within ms of reading the manifest; an orphan result may be early
MAX_QUEUED_SUBS = 200_000
WHOLE_READ_RUNS = 2_000  # runs() of more runs than this reads the asked columns of every segment
UNREADABLE = "unreadable.jsonl"  # unreadable journal lines, kept byte for byte once compacted
LIGHT_RUN_COLUMNS = ["run_id", "exp_id", "status", "_seq"]
# The catalog's columns kept in memory: not the record, nor the base spec (most of the bytes; no page lists
# it: ``experiments()`` reads it from the segments only for a caller that asks for it)
CATALOG_COLUMNS = [c for c in schema.segment_schema("catalog") if c not in ("record", "spec")]
EXPERIMENT_COLUMNS = [*schema.polars_schema("experiments"), "status", "n_done", "n_failed", "n_cancelled", "n_queued"]
# Every run column but the long texts: kept in memory once asked for (the lists Compare and the
# run-time estimate draw from), so a runs() of only these reads no file.
WIDE_RUN_COLUMNS = [c for c in schema.segment_schema("runs") if c not in ("spec", "verdict", "error")]
FRAME_RUN_COLUMNS = list(schema.polars_schema("runs"))


def default_root() -> pathlib.Path:
    """``$FASTDIFF_HOME/store`` (default ``./var/store``)."""
    return pathlib.Path(os.environ.get("FASTDIFF_HOME", "var")).resolve() / "store"


def as_specs(specs: RunSpec | Mapping[str, Any] | str | Sequence[Any]) -> list[RunSpec]:
    """Validate one spec or a list of specs; errors name the spec's position and the field."""
    one = isinstance(specs, (RunSpec, Mapping, str))
    items = [specs] if one else list(specs)
    if not items:
        raise ValueError("specs=[] is empty; give at least one RunSpec")
    out = []
    for i, s in enumerate(items):
        try:
            out.append(s if isinstance(s, RunSpec) else
                       RunSpec.from_json(s) if isinstance(s, str) else RunSpec.from_dict(s))
        except ValueError as e:
            raise ValueError(str(e) if one else f"specs[{i}]: {e}") from None
    return out


def _status(counts: Mapping[str, int], n_runs: int) -> str:
    finished = sum(counts.get(s, 0) for s in records.FINAL_STATUSES)
    if n_runs == 0:
        return "empty"
    if finished == 0:
        return "queued"
    if finished < n_runs:
        return "running"
    if counts.get("failed", 0):
        return "failed"
    if counts.get("cancelled", 0):
        return "cancelled"
    return "done"


READ_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


@dataclasses.dataclass
class _Inbox:
    """What the journal adds to the segments, checked: experiments, runs' submissions and outcomes,
    deletions; ``unreadable``: id -> reason for the lines the checks refused (``bad_lines``: where)."""

    exps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    subs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)       # run_id -> submission
    outcomes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)   # run_id -> outcome
    deleted: dict[str, list[str]] = dataclasses.field(default_factory=dict)         # exp_id -> its run ids
    unreadable: dict[str, str] = dataclasses.field(default_factory=dict)
    bad_lines: set[str] = dataclasses.field(default_factory=set)
    outcome_lines: dict[str, journal.Line] = dataclasses.field(default_factory=dict)  # sealed outcome lines
    bad_outcomes: set[str] = dataclasses.field(default_factory=set)                 # runs shown nowhere


@dataclasses.dataclass
class _Snapshot:
    """What one manifest lists, in memory: the latest light row of every run and experiment."""

    manifest: segments.Manifest
    index: pl.DataFrame    # run_id, exp_id, status, _seq (latest per run; deleted experiments dropped)
    catalog: pl.DataFrame  # CATALOG_COLUMNS (latest per experiment; deleted dropped)
    los: list[int]

    _final: set[str] | None = None
    wide: pl.DataFrame | None = None  # WIDE_RUN_COLUMNS of the latest row per run, built on first use
    derived: pl.DataFrame | None = None  # run_columns of the latest row per run, built on first use
    listed: pl.DataFrame | None = None  # experiments() of the catalog and index alone, built on first use
    specs: pl.DataFrame | None = None  # exp_id, spec of the catalog's experiments, read on first use

    def final(self) -> set[str]:
        """Ids of the runs whose outcome is in a segment (built once per manifest, on first use)."""
        if self._final is None:
            self._final = set(self.index.filter(pl.col("status") != "queued")["run_id"].to_list())
        return self._final

    def segment_of(self, seq: int) -> segments.Segment:
        return self.manifest.segments[bisect.bisect_right(self.los, seq) - 1]


def _check_entry(entry: dict[str, Any]) -> None:
    """A journal line of kind 'experiment': {experiment, runs (its submissions; absent in a rename),
    outcomes (an imported bundle's)}; ValueError naming the field."""
    exp = records.check_experiment(entry.get("experiment"))
    mine = set(exp["run_ids"])
    for i, sub in enumerate(entry.get("runs", ())):
        s = records.check_submission(sub, len(mine), f"runs[{i}]")
        if s["exp_id"] != exp["exp_id"] or s["run_id"] not in mine:
            raise ValueError(f"runs[{i}]: run {s['run_id']} is not one of the experiment's runs")
    for run_id, res in _mapping_of(entry.get("outcomes")).items():
        records.check_outcome(res, f"outcomes[{ids.check(run_id, 'run_id')}]")


def _mapping_of(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{ids.shown(value)} must be an object")  # noqa: TRY004 - the store's input errors
    return value


_ID_IN_LINE = re.compile(rb'"([er][0-9a-f]{12})"')


def _grown_from(before: tuple[tuple[str, int], ...], now: tuple[tuple[str, int], ...]) -> tuple[int, int] | None:
    """Where the journal lines ``now`` (per file: id, lines) go on from ``before``: (file index, line index)
    of the first new line, or None when ``before`` is not where they started (a compaction folded a file)."""
    if not before:
        return 0, 0
    if len(now) < len(before) or any(a != b for a, b in zip(before[:-1], now)):
        return None
    (last_id, last_n), (now_id, now_n) = before[-1], now[len(before) - 1]
    if last_id != now_id or now_n < last_n:
        return None
    return len(before) - 1, last_n


def _copied(box: _Inbox) -> _Inbox:
    """A copy of ``box`` that folding more lines into leaves ``box`` as it was (its records are shared)."""
    return _Inbox(dict(box.exps), dict(box.subs), dict(box.outcomes), dict(box.deleted), dict(box.unreadable),
                  set(box.bad_lines), dict(box.outcome_lines), set(box.bad_outcomes))


def _id_in(raw: bytes) -> str | None:
    """The first experiment or run id in a line that does not parse (what the line was about)."""
    m = _ID_IN_LINE.search(raw)
    return m.group(1).decode() if m else None


class Store:
    """The experiment store rooted at ``root`` (default ``$FASTDIFF_HOME/store``). Safe to use from
    many processes and threads at once; see the module docstring for who writes what."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = pathlib.Path(root).resolve() if root is not None else default_root()
        self.inbox_dir = self.root / "inbox"
        self.segments_dir = self.root / "segments"
        for d in (self.root, self.inbox_dir, self.segments_dir):
            files.private_dir(d)
        self._annotations = Annotations(self.root / "annotations")
        self._lock = threading.RLock()
        self._wide_base: tuple[segments.Manifest, pl.DataFrame] | None = None  # the last wide frame built
        self._derived_base: tuple[segments.Manifest, pl.DataFrame] | None = None  # the last run_columns built
        self._listed_base: tuple[segments.Manifest, pl.DataFrame] | None = None  # the last experiments list built
        self._snap: tuple[segments.Stamp, _Snapshot] | None = None
        self._journal_files: dict[str, journal.Read] = {}  # file name -> what was read of it
        self._inbox_cache: tuple[Any, _Inbox] | None = None
        self._inbox_folded: tuple[tuple[tuple[str, int], ...], _Inbox] | None = None  # lines folded, and what they gave
        self._queued_subs: dict[str, dict[str, Any]] = {}  # submissions this process folded while queued
        self._batch: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(f"batch{id(self)}",
                                                                                           default=None)
        from store import legacy, upgrade

        if upgrade.needed(self.root):  # first: the legacy migration reads the manifest
            upgrade.upgrade(self)
        if legacy.present(self.root):
            legacy.migrate(self)

    # ----------------------------------------------------------------------------------------
    # locks
    # ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _flock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        with open(self.root / name, "a") as lock:
            os.chmod(lock.fileno(), files.FILE_MODE)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    # ----------------------------------------------------------------------------------------
    # writes: experiments (app side)
    # ----------------------------------------------------------------------------------------

    def create_experiment(self, name: str, specs: Any, sweep: Mapping[str, Sequence[Any]] | None = None) -> str:
        """Record an experiment and its runs (status 'queued'); returns its id. See ``new_experiment``."""
        return self.new_experiment(name, specs, sweep)[0]

    def new_experiment(self, name: str, specs: Any, sweep: Mapping[str, Sequence[Any]] | None = None,
                       while_syncing: Callable[[str, list[str]], None] | None = None) -> tuple[str, list[str]]:
        """Record an experiment: ``specs`` (RunSpec, dict, JSON, or a list of them) are validated first.
        ``sweep`` is the grid's axes ({field: [values]}) when the specs came from one. Returns
        (exp_id, run_ids) with run_ids in the order of ``specs``. One journal line for the experiment
        and all its runs: readers see all of it or none of it. ``while_syncing(exp_id, run_ids)`` runs
        once the record is readable, beside its fsync (``journal.append``): how the service queues the
        runs while the record becomes durable; this returns once both are done."""
        name = records.check_name(name)
        specs = as_specs(specs)
        axes = records.check_axes({k: list(v) for k, v in sweep.items()}, "sweep") if sweep else None
        exp_id = ids.new_id("e")
        run_ids = [ids.new_id("r") for _ in specs]
        submitted = records.now_iso()
        subs = [{"format": 1, "run_id": run_id, "exp_id": exp_id, "idx": idx, "spec": spec.to_dict(),
                 "submitted": submitted} for idx, (run_id, spec) in enumerate(zip(run_ids, specs))]
        exp = {"format": 1, "exp_id": exp_id, "name": name, "created": submitted, "run_ids": run_ids,
               "spec": specs[0].to_dict(), "imported_from": None,
               "sweep": {"sweep_id": ids.new_id("s"), "axes": axes} if axes else None}
        during = None if while_syncing is None else (lambda: while_syncing(exp_id, run_ids))
        self._publish_experiment(exp, subs, while_syncing=during)
        return exp_id, run_ids

    def _publish_experiment(self, exp: dict[str, Any], subs: list[dict[str, Any]] | None,
                            outcomes: dict[str, dict[str, Any]] | None = None,
                            while_syncing: Callable[[], None] | None = None) -> None:
        entry: dict[str, Any] = {"experiment": exp}
        if subs is not None:
            entry["runs"] = subs
        if outcomes:
            entry["outcomes"] = outcomes
        journal.append(self.inbox_dir, [("experiment", entry)], while_syncing)

    def rename_experiment(self, exp_id: str, name: str) -> None:
        ids.check(exp_id, "exp_id")
        name = records.check_name(name)
        exp = self.experiment(exp_id)
        if exp is None:
            raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
        self._publish_experiment({**exp, "name": name}, None)  # the latest record of an experiment wins

    def delete_experiment(self, exp_id: str) -> None:
        """Delete an experiment, its runs and their results (gone from every read at once; the
        compaction drops their rows, and merges drop them from the files)."""
        ids.check(exp_id, "exp_id")
        exp = self.experiment(exp_id)
        if exp is None:
            raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
        run_ids = [r for r in exp.get("run_ids", ()) if ids.is_id(r, "run_id")]
        journal.append(self.inbox_dir, [("delete", {"exp_id": exp_id, "run_ids": run_ids})])
        self._annotations.remove([exp_id] + run_ids)

    def set_tags(self, target: str, tags: Sequence[str]) -> list[str]:
        """Replace the tags of a stored run or experiment (``target``: its id); returns them sorted.
        ValueError naming the tag, or the id when nothing stored has it."""
        return self._annotations.set_tags(self._stored(target), tags)

    def set_note(self, target: str, note: str) -> str:
        """Replace the note of a stored run or experiment ("" removes it)."""
        return self._annotations.set_note(self._stored(target), note)

    def annotations(self, targets: Sequence[str] | pl.Series | None = None) -> pl.DataFrame:
        """Tags and notes: id (run or experiment), tags (sorted list), note, updated; one row per
        annotated id (of ``targets`` when given), none for ids that carry neither."""
        return self._annotations.frame(targets)

    def _stored(self, target: str) -> str:
        check_target(target)
        found = (self.experiment(target) is not None if target[0] == "e"
                 else self.runs(run_ids=[target]).height == 1)
        if not found:
            raise ValueError(f"id={target!r} is not a stored run or experiment")
        return target


    # ----------------------------------------------------------------------------------------
    # writes: results (the collector)
    # ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def batched_writes(self, while_syncing: Callable[[], None] | None = None) -> Iterator[None]:
        """Results recorded inside this block are written as ONE journal line, durable when the block
        exits (one fsync): how the collector stores a batch of results. Result writers take turns
        (``results.lock``), which makes "first outcome wins" exact across processes.
        ``while_syncing`` runs once they are readable, beside the fsync (``journal.append``); only
        when the block wrote something."""
        if self._batch.get() is not None:
            yield  # nested: the outer block writes
            return
        with self._flock("results.lock"):
            pending: dict[str, Any] = {}
            token = self._batch.set(pending)
            completed = False
            try:
                yield
                completed = True
            finally:
                self._batch.reset(token)
                if pending:
                    journal.append(self.inbox_dir, [("outcome", rec) for rec in pending.values()],
                                   while_syncing if completed else None)

    def record_result(self, run_id: str, status: str, result: RunResult | Mapping[str, Any] | None = None,
                      error: str | None = None, worker: str | None = None) -> bool:
        """Store a run's outcome once. Returns False (and changes nothing) if the run already has one,
        so a redelivered or duplicated result is never stored twice. Everything is checked first
        (``records.check_outcome``: the results channel's declaration): ValueError naming the field, and
        nothing written. A RunResult object was validated when it was made: only its type is checked here."""
        ids.check(run_id, "run_id")
        made = isinstance(result, RunResult)
        checked = records.check_outcome({"status": status, "result": result.to_dict() if made else result,
                                         "error": error, "worker": worker}, "", result_made=made)
        status, result, error, worker = (checked[k] for k in ("status", "result", "error", "worker"))
        with self.batched_writes():
            pending = self._batch.get()
            inbox, snap = self._view()
            if run_id in pending or run_id in inbox.outcomes or run_id in snap.final():
                return False
            pending[run_id] = {"format": 1, "run_id": run_id, "status": status, "result": result, "error": error,
                               "worker": worker, "finished": records.now_iso()}
            return True

    # ----------------------------------------------------------------------------------------
    # compaction (one owner at a time; the others skip)
    # ----------------------------------------------------------------------------------------

    def compact(self) -> int | None:
        """Fold the journal into one new segment and publish a new manifest.

        Returns the number of runs changed (a rename alone publishes a manifest with 0 runs changed),
        or None when another process is compacting right now."""
        with self._flock("compact.lock", blocking=False) as mine:
            if not mine:
                return None
            return self._compact_locked()

    def _compact_locked(self, more_unreadable: dict[str, str] | None = None) -> int:
        # long: one fold, its steps in the order that makes it safe (rotate, read, fold, publish, remove)
        manifest, _ = segments.load(self.root)
        journal.rotate(self.inbox_dir)
        todo: list[tuple[str, str]] = []  # (name, id) of the rotated files to fold
        lines: list[journal.Line] = []
        for name in journal.rotated(self.inbox_dir):
            got = journal.read(self.inbox_dir / name, self._read_before(name))
            if got is None:
                continue
            if got.id in manifest.folded:  # left by a compaction killed after it published: folded already
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.inbox_dir / name)
                continue
            todo.append((name, got.id))
            lines.extend(got.lines)
        inbox = self._overlay(lines)
        snap = self._snapshot()
        deleted = manifest.deleted | set(inbox.deleted)
        dead_runs = {r for rs in inbox.deleted.values() for r in rs}
        seq = manifest.seq + 1
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in schema.SEGMENT_TABLES if t not in schema.DERIVED}
        wanted = set(inbox.subs) | set(inbox.outcomes)
        known = {r: (e, st) for r, e, st in snap.index.filter(pl.col("run_id").is_in(list(wanted)))
                 .select("run_id", "exp_id", "status").iter_rows()}
        for exp_id, exp in inbox.exps.items():
            if exp_id not in deleted:
                rows["catalog"].append(records.catalog_row(exp, seq))
        new_subs = {r: sub for r, sub in inbox.subs.items() if r not in known and sub["exp_id"] not in deleted}
        kept = {k: v for k, v in inbox.unreadable.items()}  # what stays listed, its raw line kept on disk
        keep_lines = [line for line in lines if line.where in inbox.bad_lines]
        outcome_for: dict[str, dict[str, Any]] = {}
        unsure = any(k[0] == "e" for k in inbox.unreadable)  # an unreadable experiment: its runs' outcomes wait
        for run_id, res in inbox.outcomes.items():
            if run_id in known:
                exp_id, status = known[run_id]
                if exp_id in deleted or status in records.FINAL_STATUSES:
                    continue  # the first outcome stays; or its experiment is deleted
            elif run_id not in new_subs:
                if run_id not in dead_runs and unsure:  # perhaps a run of the unreadable experiment: kept
                    kept[run_id] = f"outcome of run {run_id}, not part of any readable experiment"
                    line = inbox.outcome_lines.get(run_id)
                    keep_lines.append(line or journal.parse(journal.encode("outcome", res).rstrip(b"\n"), run_id))
                continue  # else a run of a deleted experiment (or no run at all)
            outcome_for[run_id] = res
        late = [r for r in outcome_for if r not in new_subs]
        subs = {**self._submissions(late, snap), **new_subs}
        for run_id in sorted(set(new_subs) | set(outcome_for)):
            sub, res = subs.get(run_id), outcome_for.get(run_id)
            if sub is None:
                continue
            if res is None and len(self._queued_subs) < MAX_QUEUED_SUBS:
                self._queued_subs[run_id] = sub
            else:
                self._queued_subs.pop(run_id, None)
            rows["runs"].append({**records.run_row(sub, res), "_seq": seq})
            line = inbox.outcome_lines.get(run_id)
            outcome = None if res is None else line.json.decode() if line is not None else segments.dumps(res)
            rows["records"].append({"run_id": run_id, "submission": segments.dumps(sub), "outcome": outcome,
                                    "_seq": seq})
            for table, fn in records.ROWS_FOR.items():
                rows[table].extend(fn(run_id, res))
        changed = len(rows["runs"]) + sum(len(r) for e, r in inbox.deleted.items() if e not in manifest.deleted)
        unreadable = {**dict(manifest.unreadable), **kept, **(more_unreadable or {})}
        if not todo and unreadable == dict(manifest.unreadable):
            return 0
        if keep_lines:  # unreadable lines leave the journal for unreadable.jsonl, byte for byte
            self._keep_unreadable(keep_lines)
        new = dataclasses.replace(manifest, deleted=frozenset(deleted), folded=tuple(i for _, i in todo),
                                  unreadable=tuple(sorted(unreadable.items())))
        if any(rows.values()):
            frames = {t: schema.frame(t, r, schema.segment_schema(t)) for t, r in rows.items()}
            frames["run_columns"] = run_columns.segment_frame(frames["runs"], frames["metrics"], frames["histograms"])
            seg = segments.write_segment(self.segments_dir, frames, seq, seq, 0)
            new = dataclasses.replace(new, seq=seq, segments=(*manifest.segments, seg))
        segments.publish(self.root, new)
        for name, _ in todo:  # only now: the manifest that holds them is published
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.inbox_dir / name)
        while group := segments.plan_merge(new):
            dead = set(snap.index.filter(pl.col("exp_id").is_in(list(new.deleted)))["run_id"].to_list()) | dead_runs
            new = segments.merge(self.segments_dir, new, group, dead)
            segments.publish(self.root, new)
        segments.remove_unlisted(self.segments_dir, new, GRACE_S, time.time())
        return changed

    def _keep_unreadable(self, lines: list[journal.Line]) -> None:
        path = self.root / UNREADABLE
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, files.FILE_MODE)
        try:
            os.write(fd, b"".join(line.raw + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        files.fsync_path(self.root)

    def _submissions(self, run_ids: Sequence[str], snap: _Snapshot) -> dict[str, dict[str, Any]]:
        """The stored submission records of compacted runs: those this process compacted while queued
        from memory (a sweep's outcomes arrive after its submission was folded), the rest read from
        the segments that hold them."""
        out = {r: self._queued_subs[r] for r in run_ids if r in self._queued_subs}
        rest = [r for r in run_ids if r not in out]
        if rest:
            recs = self._segment_rows("records", rest, snap, ["run_id", "submission"])
            out.update((r, json.loads(s)) for r, s in recs.iter_rows())
        return out

    # ----------------------------------------------------------------------------------------
    # reads: the journal and the manifest
    # ----------------------------------------------------------------------------------------

    def _journal(self) -> list[journal.Read]:
        """Every journal file's lines; of a file read before, only the lines appended since. Read
        again if a compaction rotated the journal meanwhile (its lines moved to a new name)."""
        with self._lock:
            for _ in range(100):
                names = journal.names(self.inbox_dir)
                out = []
                for name in names:
                    got = journal.read(self.inbox_dir / name, self._read_before(name))
                    if got is not None:
                        self._journal_files[name] = got
                        out.append(got)
                    else:
                        self._journal_files.pop(name, None)
                if not set(journal.rotated(self.inbox_dir)) - set(names):  # no rotation meanwhile
                    return out
            raise RuntimeError(f"store at {self.root}: the journal kept rotating while it was read")

    def _read_before(self, name: str) -> journal.Read | None:
        """What this process read of journal file ``name`` before, under this name or, for a file a
        rotation renamed, as the journal (``journal.read`` uses it only if the file's id matches): a
        line is parsed once per process, not again after each compaction's rotation."""
        with self._lock:
            return self._journal_files.get(name) or self._journal_files.get(journal.JOURNAL)

    def _overlay(self, lines: list[journal.Line], box: _Inbox | None = None) -> _Inbox:
        """What journal lines add to the segments, in order: experiments (the latest record wins), runs
        and outcomes (the first wins), deletions. A line that is not sealed is checked; one that fails
        (edited by hand, truncated) is skipped, kept, and listed by ``unreadable()``. ``box``: what the
        lines before these added (changed in place), to fold only the new lines onto it."""
        box = _Inbox() if box is None else box
        for line in lines:
            rec = line.record
            try:
                if line.kind is None:
                    raise ValueError("not a whole journal line (truncated?)")
                if line.kind == "experiment":
                    if not line.sealed:
                        _check_entry(rec)
                    exp = rec["experiment"]
                    if exp["exp_id"] in box.deleted:
                        continue
                    box.exps[exp["exp_id"]] = exp
                    for sub in rec.get("runs", ()):
                        box.subs.setdefault(sub["run_id"], sub)
                    for run_id, res in (rec.get("outcomes") or {}).items():
                        box.outcomes.setdefault(run_id, res)
                elif line.kind == "outcome":
                    if not line.sealed:
                        ids.check(_mapping_of(rec).get("run_id"), "run_id")
                        records.check_outcome(rec, f"outcome of {rec['run_id']}")
                    if rec["run_id"] not in box.outcomes:
                        box.outcomes[rec["run_id"]] = rec
                        if line.sealed:
                            box.outcome_lines[rec["run_id"]] = line
                elif line.kind == "delete":
                    exp_id = ids.check(_mapping_of(rec).get("exp_id"), "exp_id")
                    box.deleted[exp_id] = ids.check_many(rec.get("run_ids", []), "run_id")
                    box.exps.pop(exp_id, None)
                else:
                    raise ValueError(f"kind={ids.shown(line.kind)} is not one of {list(journal.KINDS)}")
            except READ_ERRORS as e:
                key = _id_in(line.raw) or line.where
                self._refuse(box, line, key, e)
                if key[0] == "r":
                    box.bad_outcomes.add(key)
        return box

    def _refuse(self, box: _Inbox, line: journal.Line, key: str, e: BaseException) -> None:
        reason = f"{line.where}: {str(e)[:300]}"
        if box.unreadable.get(key) is None:
            log.warning("store %s: skipping a record it cannot read: %s", self.root, reason)
        box.unreadable[key] = reason
        box.bad_lines.add(line.where)

    def _read_inbox(self) -> _Inbox:
        """The overlay of the journal files the manifest has not folded yet (cached while unchanged). The
        journal only grows between compactions: the lines already folded are not folded again, only the new
        ones onto a copy of what they gave (a fold from the start costs every line since the last compaction,
        on every read after each write)."""
        parts = self._journal()
        manifest, _ = segments.load(self.root)  # after the journal: see the module docstring
        parts = [p for p in parts if p.id not in manifest.folded]
        counts = tuple((p.id, len(p.lines)) for p in parts)
        stamp = (counts, manifest.unreadable)
        with self._lock:
            if self._inbox_cache is not None and self._inbox_cache[0] == stamp:
                return self._inbox_cache[1]
            folded = self._inbox_folded
        start = _grown_from(folded[0], counts) if folded is not None else None
        if start is None:
            raw = self._overlay([line for p in parts for line in p.lines])
        else:
            i, n = start
            raw = self._overlay([*parts[i].lines[n:], *(line for p in parts[i + 1:] for line in p.lines)]
                                if i < len(parts) else [], _copied(folded[1]))
        box = raw
        if any(key[0] == "r" for key, _ in manifest.unreadable):
            box = _copied(raw)
            box.bad_outcomes.update(key for key, _ in manifest.unreadable if key[0] == "r")
        with self._lock:
            self._inbox_folded = (counts, raw)
            self._inbox_cache = (stamp, box)
        return box

    def unreadable(self) -> dict[str, str]:
        """Stored records that reads skip because they do not pass the store's checks: {id: reason}.
        They stay on disk unchanged (in the journal, or ``unreadable.jsonl`` once compacted; old-format
        files where they were); a page shows how many."""
        manifest, _ = segments.load(self.root)
        return {**dict(manifest.unreadable), **self._read_inbox().unreadable}

    def _snapshot(self) -> _Snapshot:
        """The manifest's light frames. After the first, updated from the previous snapshot with the rows
        of the batches published since (``segments.goes_on_from``): a new manifest costs what is new,
        not a pass over every run."""
        stamp = segments.stamp(self.root)
        with self._lock:
            if self._snap is not None and self._snap[0] == stamp:  # (before the first compaction too)
                return self._snap[1]
            manifest, stamp = segments.load(self.root)
            before = self._snap[1] if self._snap is not None else None
            if before is not None and not segments.goes_on_from(manifest, before.manifest):
                before = None
            seq = before.manifest.seq if before is not None else -1  # -1: every row
            dead = list(manifest.deleted)
            newly_dead = list(manifest.deleted - before.manifest.deleted) if before is not None else []
            parts = {}
            for table, columns in (("runs", LIGHT_RUN_COLUMNS), ("catalog", CATALOG_COLUMNS)):
                new = segments.after(self.segments_dir, manifest, seq, table, columns).collect()
                if before is None:
                    parts[table] = segments.latest(new, table)
                    parts[table] = parts[table].filter(~pl.col("exp_id").is_in(dead)) if dead else parts[table]
                    continue
                new = new.filter(~pl.col("exp_id").is_in(dead)) if dead else new
                old = before.index if table == "runs" else before.catalog
                old = old.filter(~pl.col("exp_id").is_in(newly_dead)) if newly_dead else old
                parts[table] = segments.updated(old, new, table)
            index, catalog = parts["runs"], parts["catalog"]
            snap = _Snapshot(manifest, index, catalog, [s.lo for s in manifest.segments])
            self._snap = (stamp, snap)
            return snap

    def _wide(self, snap: _Snapshot) -> pl.DataFrame:
        """``snap``'s WIDE_RUN_COLUMNS: the last one built, with the rows of the batches published since."""
        with self._lock:
            if snap.wide is None:
                base = self._wide_base
                if base is not None and not segments.goes_on_from(snap.manifest, base[0]):
                    base = None
                seq = base[0].seq if base is not None else -1
                new = segments.after(self.segments_dir, snap.manifest, seq, "runs", WIDE_RUN_COLUMNS)
                rows = pl.concat([base[1].lazy(), new]) if base is not None else new
                snap.wide = rows.join(snap.index.lazy().select("run_id", "_seq"), on=["run_id", "_seq"],
                                      how="semi").sort(["submitted", "exp_id", "idx"]).collect()
                self._wide_base = (snap.manifest, snap.wide)
            return snap.wide

    def _derived(self, snap: _Snapshot) -> pl.DataFrame:
        """``snap``'s run_columns rows, the latest per run: the last built, with the rows of the batches
        published since (their files' columns differ: ``store.run_columns.concat``)."""
        with self._lock:
            if snap.derived is None:
                base = self._derived_base
                if base is not None and ("_seq" not in base[1].columns  # none yet
                                         or not segments.goes_on_from(snap.manifest, base[0])):
                    base = None
                seq = base[0].seq if base is not None else -1
                have = [s for s in snap.manifest.segments if "run_columns" in s.tables and s.hi > seq]
                new = segments.read_derived([s.path(self.segments_dir, "run_columns") for s in have])
                new = new.filter(pl.col("_seq") > seq) if "_seq" in new.columns else new
                rows = new if base is None else base[1] if new.height == 0 else pl.concat(
                    [base[1], new], how="diagonal_relaxed")  # (an empty base's columns too, as a full read has them)
                snap.derived = rows.join(snap.index.select("run_id", "_seq"), on=["run_id", "_seq"],
                                         how="semi") if "_seq" in rows.columns else rows  # else: none yet
                self._derived_base = (snap.manifest, snap.derived)
            return snap.derived

    def _view(self) -> tuple[_Inbox, _Snapshot]:
        inbox = self._read_inbox()  # first the inbox, then the manifest (see the module docstring)
        return inbox, self._snapshot()

    def _segment_rows(self, table: str, run_ids: Sequence[str], snap: _Snapshot,
                      columns: list[str] | None = None, final_only: bool = False) -> pl.DataFrame:
        """Rows of ``table`` for ``run_ids``, read only from the segments that hold their latest rows."""
        idx = snap.index.filter(pl.col("run_id").is_in(list(run_ids)))
        if final_only:
            idx = idx.filter(pl.col("status").is_in(list(records.FINAL_STATUSES)))
        paths = sorted({snap.segment_of(s).name for s in idx["_seq"].unique().to_list()})
        by_name = {s.name: s for s in snap.manifest.segments}
        files_ = [by_name[n].path(self.segments_dir, table) for n in paths if table in by_name[n].tables]
        keyed = table in segments.KEYS
        cols = None if columns is None else list(dict.fromkeys([*columns, *(("run_id", "_seq") if keyed else ())]))
        df = segments.read(files_, table, cols, pl.col("run_id").is_in(idx["run_id"].to_list()))
        if keyed:  # the latest batch's row: the one the index names
            df = df.join(idx.select("run_id", "_seq"), on=["run_id", "_seq"], how="semi")
        return df if columns is None else df.select(columns)

    # ----------------------------------------------------------------------------------------
    # reads: the API
    # ----------------------------------------------------------------------------------------

    def runs(self, exp_id: str | None = None, run_ids: Sequence[str] | None = None,
             status: str | None = None, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """One row per run (all, one experiment's, the given ids, or those of one ``status``), ordered by
        submission; ``columns`` (default all) reads only those.

        Columns: run_id, exp_id, idx, name, world, scene, sampler, solver, student, grid, steps,
        guidance_scale, horizon, plans, futures, samples, seed, dtype, regime, spec (JSON), submitted,
        status (queued|done|failed|cancelled), finished, device, worker, wall_s, nfe_counted,
        nfe_formula, verdict (JSON), error, model, model_checksum."""
        if exp_id is not None:
            ids.check(exp_id, "exp_id")
        if run_ids is not None:
            run_ids = ids.check_many(run_ids, "run_id")
        if status is not None and status not in records.RUN_STATUSES:
            raise ValueError(f"status={ids.shown(status)} is not one of {list(records.RUN_STATUSES)}")
        want = FRAME_RUN_COLUMNS if columns is None else list(columns)
        unknown = [c for c in want if c not in FRAME_RUN_COLUMNS]
        if unknown:
            raise ValueError(f"columns={unknown} are not run columns; allowed: {FRAME_RUN_COLUMNS}")
        read_cols = list(dict.fromkeys([*want, "run_id", "exp_id", "status", "submitted", "idx", "_seq"]))
        inbox, snap = self._view()
        dead = set(snap.manifest.deleted) | set(inbox.deleted)
        overlay = set(inbox.subs) | set(inbox.outcomes)
        idx = _where(snap.index, exp_id, run_ids, status)
        idx = idx.filter(~pl.col("run_id").is_in(list(overlay | inbox.bad_outcomes)))
        old, in_order = self._stored_runs(snap, idx, read_cols, exp_id, run_ids, status, overlay | inbox.bad_outcomes)
        # Runs the inbox adds or finishes
        mine = [r for r in overlay if r not in inbox.bad_outcomes
                and (run_ids is None or r in run_ids)
                and (exp_id is None or (inbox.subs.get(r) or {}).get("exp_id", exp_id) == exp_id)]
        late = [r for r in mine if r not in inbox.subs]
        subs = {**self._submissions(late, snap), **{r: inbox.subs[r] for r in mine if r in inbox.subs}}
        new_rows = [records.run_row(subs[r], inbox.outcomes.get(r)) for r in mine if r in subs]
        new = schema.frame("runs", new_rows).with_columns(pl.lit(0, pl.Int64).alias("_seq")).select(read_cols)
        out = pl.concat([old.select(read_cols), new])
        out = _where(out, exp_id, None, status)
        if dead:
            out = out.filter(~pl.col("exp_id").is_in(list(dead)))
        if not (in_order and new.height == 0):
            out = out.sort(["submitted", "exp_id", "idx"])
        return out.select(want)

    def _stored_runs(self, snap: _Snapshot, idx: pl.DataFrame, read_cols: list[str], exp_id: str | None,
                     run_ids: list[str] | None, status: str | None, hidden: set[str]) -> tuple[pl.DataFrame, bool]:
        """The segments' rows of the runs ``idx`` selects (``idx``: the index with the same filters);
        and whether they are in order already."""
        if set(read_cols) <= set(WIDE_RUN_COLUMNS):  # from memory, already in order: the same filters
            old = _where(self._wide(snap), exp_id, run_ids, status)
            return old.filter(~pl.col("run_id").is_in(list(hidden))), True
        if idx.height > WHOLE_READ_RUNS:  # most of the store: one scan of the columns beats a lookup per run
            return segments.read(snap.manifest.files(self.segments_dir, "runs"), "runs", read_cols).join(
                idx.select("run_id", "_seq"), on=["run_id", "_seq"], how="semi"), False
        return self._segment_rows("runs", idx["run_id"].to_list(), snap, read_cols), False

    def run_columns(self, run_ids: Sequence[str] | pl.Series | None = None) -> tuple[pl.DataFrame, list[str]]:
        """The runs table's per-run columns (``store.run_columns.result_columns``: spec fields, metrics,
        tail rate, verdicts) of the given runs (ids, or a polars Series of them; default all), one row
        per run by run_id, and the names of the metric columns among them. Read from the segments,
        where the compaction that stored a run wrote them; only the runs the journal adds or finishes
        are derived here."""
        if run_ids is not None:
            run_ids = (ids.check_column(run_ids, "run_id", "r") if isinstance(run_ids, pl.Series)
                       else pl.Series("run_id", ids.check_many(run_ids, "run_id"), dtype=pl.String))
        inbox, snap = self._view()
        fresh = set(inbox.subs) | set(inbox.outcomes)
        hidden = fresh | inbox.bad_outcomes | {r for rs in inbox.deleted.values() for r in rs}
        stored = self._derived(snap)
        stored = stored.filter(~pl.col("run_id").is_in(list(hidden))) if hidden else stored
        if run_ids is not None:
            stored = stored.join(run_ids.unique().to_frame("run_id"), on="run_id", how="semi")
            fresh &= set(run_ids.filter(run_ids.is_in(list(fresh))).to_list()) if fresh else set()
        parts = [stored]
        if fresh - inbox.bad_outcomes:
            runs = self.runs(run_ids=sorted(fresh - inbox.bad_outcomes), columns=["run_id", "world", "spec", "verdict"])
            ids_ = runs["run_id"].to_list()
            parts.append(run_columns.segment_frame(runs, self.metrics(ids_), self.histograms(ids_)))
        return run_columns.shown(run_columns.concat(parts))

    def run(self, run_id: str) -> dict[str, Any] | None:
        """Everything about one run, or None: {run_id, exp_id, idx, spec (RunSpec dict), submitted,
        status, result (RunResult dict incl. samples, or None), error, worker, finished}."""
        ids.check(run_id, "run_id")
        inbox, snap = self._view()
        if run_id in inbox.bad_outcomes:
            return None
        sub, res = inbox.subs.get(run_id), inbox.outcomes.get(run_id)
        if sub is None:
            recs = self._segment_rows("records", [run_id], snap, ["submission", "outcome"])
            if recs.height == 0:
                return None
            sub = json.loads(recs["submission"][0])
            if res is None and recs["outcome"][0] is not None:
                res = json.loads(recs["outcome"][0])
        if sub["exp_id"] in inbox.deleted or sub["exp_id"] in snap.manifest.deleted:
            return None
        return {"run_id": run_id, "exp_id": sub["exp_id"], "idx": sub["idx"], "spec": sub["spec"],
                "submitted": sub["submitted"], "status": res["status"] if res else "queued",
                "result": res.get("result") if res else None, "error": res.get("error") if res else None,
                "worker": res.get("worker") if res else None, "finished": res.get("finished") if res else None}

    def _per_run(self, table: str, run_ids: Sequence[str]) -> pl.DataFrame:
        ids_ = [ids.check(run_ids, "run_id")] if isinstance(run_ids, str) else ids.check_many(run_ids, "run_id")
        inbox, snap = self._view()
        late = [r for r in ids_ if r in inbox.outcomes and r not in inbox.subs]
        shown = set(inbox.subs) | set(snap.index.filter(pl.col("run_id").is_in(late))["run_id"].to_list())
        fresh = [r for r in ids_ if r in inbox.outcomes and r in shown]  # a run shown nowhere has no rows
        old = self._segment_rows(table, [r for r in ids_ if r not in inbox.outcomes], snap, final_only=True)
        rows = [row for r in dict.fromkeys(fresh) for row in records.ROWS_FOR[table](r, inbox.outcomes[r])]
        out = pl.concat([old, schema.frame(table, rows)])
        # In the order of run_ids, each run's rows in the order its result listed them (stable sort).
        position = {r: i for i, r in enumerate(dict.fromkeys(ids_))}
        return out.sort(pl.col("run_id").replace_strict(position, return_dtype=pl.Int64), maintain_order=True)

    def metrics(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """Long format: run_id, name, value (one row per scalar metric of each finished run)."""
        return self._per_run("metrics", run_ids)

    def histograms(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """Branch histograms: run_id, group, label, count, n, rate, lo, hi (Wilson interval), truth."""
        return self._per_run("histograms", run_ids)

    def latency(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """Latency samples: run_id, what, seconds, batch, device."""
        return self._per_run("latency", run_ids)

    def experiment(self, exp_id: str) -> dict[str, Any] | None:
        """The experiment record: {exp_id, name, created, run_ids, spec, sweep, imported_from} or None."""
        ids.check(exp_id, "exp_id")
        inbox, snap = self._view()
        if exp_id in inbox.deleted:
            return None
        if exp_id in inbox.exps:
            return inbox.exps[exp_id]
        hit = snap.catalog.filter(pl.col("exp_id") == exp_id)
        if hit.height == 0:
            return None
        seg = snap.segment_of(hit["_seq"][0])
        rec = segments.read([seg.path(self.segments_dir, "catalog")], "catalog", ["record"],
                            (pl.col("exp_id") == exp_id) & (pl.col("_seq") == hit["_seq"][0]))
        return json.loads(rec["record"][0])

    def _catalog(self) -> tuple[pl.DataFrame, _Inbox, _Snapshot]:
        inbox, snap = self._view()
        fresh = schema.frame("catalog", [records.catalog_row(e, 0) for e in inbox.exps.values()],
                             schema.segment_schema("catalog")).select(CATALOG_COLUMNS)
        dead = list(set(inbox.deleted) | set(inbox.exps))
        cat = pl.concat([snap.catalog.filter(~pl.col("exp_id").is_in(dead)), fresh])
        return cat, inbox, snap

    def experiments(self, search: str | None = None, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """One row per experiment, newest first, optionally filtered by a case-insensitive substring of
        the name (or an exact id). Columns: exp_id, name, created, spec (JSON), sweep_id, n_runs,
        imported_from, regime, world, sampler (of the base spec), status (empty|queued|running|done|failed|cancelled), n_done, n_failed,
        n_cancelled, n_queued; ``columns`` (default all) only those (without spec: nothing read from a file)."""
        want = EXPERIMENT_COLUMNS if columns is None else list(columns)
        unknown = [c for c in want if c not in EXPERIMENT_COLUMNS]
        if unknown:
            raise ValueError(f"columns={unknown} are not experiment columns; allowed: {EXPERIMENT_COLUMNS}")
        inbox, snap = self._view()
        touched = set(inbox.subs) | set(inbox.outcomes) | inbox.bad_outcomes
        fresh = []  # (exp_id, status) of the runs the inbox adds or finishes
        late = [r for r in inbox.outcomes if r not in inbox.subs and r not in inbox.bad_outcomes]
        late_exp = dict(snap.index.filter(pl.col("run_id").is_in(late)).select("run_id", "exp_id").iter_rows())
        for r in touched - inbox.bad_outcomes:
            e = inbox.subs[r]["exp_id"] if r in inbox.subs else late_exp.get(r)
            if e is not None:
                fresh.append((e, inbox.outcomes[r]["status"] if r in inbox.outcomes else "queued"))
        # The experiments whose row the inbox changes; every other row is the snapshot's, listed once per manifest
        changed = set(inbox.exps) | set(inbox.deleted) | {e for e, _ in fresh}
        if touched:
            changed.update(snap.index.filter(pl.col("run_id").is_in(list(touched)))["exp_id"].to_list())
        df = self._listed(snap)
        if changed:
            cat = snap.catalog.filter(pl.col("exp_id").is_in(list(changed - set(inbox.deleted) - set(inbox.exps))))
            cat = pl.concat([cat, schema.frame("catalog", [records.catalog_row(e, 0) for e in inbox.exps.values()],
                                               schema.segment_schema("catalog")).select(CATALOG_COLUMNS)])
            st = snap.index.filter(pl.col("exp_id").is_in(list(changed)) & ~pl.col("run_id").is_in(list(touched)))
            st = pl.concat([st.select("exp_id", "status"),
                            pl.DataFrame(fresh, schema={"exp_id": pl.String, "status": pl.String}, orient="row")])
            df = pl.concat([df.filter(~pl.col("exp_id").is_in(list(changed))), _listing(cat, st)])
            df = df.sort(["created", "exp_id"], descending=True)
        if search:
            df = df.filter(pl.col("name").str.to_lowercase().str.contains(search.lower(), literal=True)
                           | (pl.col("exp_id") == search))
        if "spec" in want:
            specs = self._specs(snap)
            if inbox.exps:
                mine = schema.frame("catalog", [records.catalog_row(e, 0) for e in inbox.exps.values()],
                                    schema.segment_schema("catalog")).select("exp_id", "spec")
                specs = pl.concat([specs.filter(~pl.col("exp_id").is_in(list(inbox.exps))), mine])
            df = df.join(specs, on="exp_id", how="left", maintain_order="left")
        return df.select(want)

    def _specs(self, snap: _Snapshot) -> pl.DataFrame:
        """exp_id, spec of ``snap``'s catalog (read from its files once per manifest, on first use)."""
        with self._lock:
            if snap.specs is None:
                rows = segments.read(snap.manifest.files(self.segments_dir, "catalog"), "catalog",
                                     ["exp_id", "spec", "_seq"])
                snap.specs = rows.join(snap.catalog.select("exp_id", "_seq"), on=["exp_id", "_seq"],
                                       how="semi").select("exp_id", "spec")
            return snap.specs

    def _listed(self, snap: _Snapshot) -> pl.DataFrame:
        """``experiments()`` of what ``snap`` lists alone (built once per manifest, on first use): the last
        one built, with the rows of the experiments that the batches published since changed."""
        with self._lock:
            if snap.listed is None:
                base = self._listed_base
                if base is not None and segments.goes_on_from(snap.manifest, base[0]):
                    seq = base[0].seq
                    changed = set(base[0].deleted ^ snap.manifest.deleted)
                    for frame in (snap.index, snap.catalog):
                        changed.update(frame.filter(pl.col("_seq") > seq)["exp_id"].to_list())
                    listed = base[1]
                    if changed:
                        mine = pl.col("exp_id").is_in(list(changed))
                        listed = pl.concat([listed.filter(~mine), _listing(snap.catalog.filter(mine),
                                                                            snap.index.filter(mine).select("exp_id", "status"))])
                else:
                    listed = _listing(snap.catalog, snap.index.select("exp_id", "status"))
                snap.listed = listed.sort(["created", "exp_id"], descending=True)
                self._listed_base = (snap.manifest, snap.listed)
            return snap.listed

    def sweeps(self, exp_id: str | None = None) -> pl.DataFrame:
        """Sweep definitions: sweep_id, exp_id, axes (JSON {field: [values]}), n_runs."""
        if exp_id is not None:
            ids.check(exp_id, "exp_id")
        cat, _, _ = self._catalog()
        cat = cat.filter(pl.col("sweep_id").is_not_null())
        if exp_id is not None:
            cat = cat.filter(pl.col("exp_id") == exp_id)
        return cat.select(list(schema.polars_schema("sweeps")))

    def pending(self) -> list[str]:
        """Ids of runs still waiting for a result (status 'queued')."""
        return self.runs(status="queued", columns=["run_id"])["run_id"].to_list()

    def submission_records(self, exp_id: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The experiment's runs as stored, in order: [(submission record, outcome record or None)]
        (what a bundle carries, losslessly)."""
        exp = self.experiment(exp_id)
        if exp is None:
            raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
        inbox, snap = self._view()
        run_ids = exp["run_ids"]
        recs = {r: (json.loads(s), json.loads(o) if o is not None else None) for r, s, o in
                self._segment_rows("records", run_ids, snap, ["run_id", "submission", "outcome"]).iter_rows()}
        out = []
        for r in run_ids:
            sub, res = recs.get(r, (inbox.subs.get(r), None))
            if sub is None or r in inbox.bad_outcomes:
                continue
            out.append((sub, inbox.outcomes.get(r, res)))
        return out

    def export_bundle(self, exp_id: str, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the experiment as a zip bundle (experiment.json + Parquet tables, with the tags and notes of
        the experiment and its runs); returns its path."""
        from store import bundle

        return bundle.export_bundle(self, ids.check(exp_id, "exp_id"), pathlib.Path(path))

    def import_bundle(self, path: str | os.PathLike[str]) -> str:
        """Import a bundle as a new experiment (fresh ids; ``imported_from`` keeps the original id; the
        tags and notes it carries go to the new ids)."""
        from store import bundle

        return bundle.import_bundle(self, pathlib.Path(path))


def _listing(catalog: pl.DataFrame, statuses: pl.DataFrame) -> pl.DataFrame:
    """``experiments()``'s rows of ``catalog`` (CATALOG_COLUMNS), with its runs' counts and status from
    ``statuses`` (exp_id, status: one row per run)."""
    counts = statuses.group_by("exp_id").agg([(pl.col("status") == s).sum().cast(pl.Int32).alias(f"n_{s}")
                                              for s in ("done", "failed", "cancelled", "queued")])
    df = catalog.join(counts, on="exp_id", how="left").with_columns(
        [pl.col(f"n_{s}").fill_null(0) for s in ("done", "failed", "cancelled", "queued")])
    finished = pl.col("n_done") + pl.col("n_failed") + pl.col("n_cancelled")
    status = (pl.when(pl.col("n_runs") == 0).then(pl.lit("empty"))
              .when(finished == 0).then(pl.lit("queued"))
              .when(finished < pl.col("n_runs")).then(pl.lit("running"))
              .when(pl.col("n_failed") > 0).then(pl.lit("failed"))
              .when(pl.col("n_cancelled") > 0).then(pl.lit("cancelled"))
              .otherwise(pl.lit("done")))
    return df.with_columns(status.alias("status")).select([c for c in EXPERIMENT_COLUMNS if c != "spec"])


def _where(frame: pl.DataFrame, exp_id: str | None, run_ids: list[str] | None, status: str | None) -> pl.DataFrame:
    """``frame``'s rows of experiment ``exp_id``, among ``run_ids``, with ``status`` (None: any)."""
    if exp_id is not None:
        frame = frame.filter(pl.col("exp_id") == exp_id)
    if run_ids is not None:
        frame = frame.filter(pl.col("run_id").is_in(run_ids))
    if status is not None:
        frame = frame.filter(pl.col("status") == status)
    return frame
