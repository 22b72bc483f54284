"""``Store``: experiments, runs and their results on disk, read through DuckDB as polars frames.

Write path (no process ever holds a lock another one waits for):

    app      create_experiment / rename / delete -> experiments/<exp_id>.json, runs/<run_id>.json
    app      set_tags / set_note (store.annotations) -> annotations/<id>.json (replaced on each edit)
    collector record_result (first writer wins)   -> results/<run_id>.json
    collector compact (one owner, flock)          -> db/work.duckdb -> copy -> db/gen-N.duckdb, db/CURRENT

Read path: open the newest immutable generation read-only (any number of processes may), then add
the few records written since it was published, straight from their JSON files. A generation is
never modified after it is published, so DuckDB's single-writer rule is never in play for readers.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import pathlib
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import duckdb
import polars as pl

from fastdiff_core.spec import RunResult, RunSpec
from store import files, ids, records, schema
from store.annotations import Annotations, check_target

log = logging.getLogger(__name__)

KEEP_GENERATIONS = 3
GENERATION_GRACE_S = 10.0  # a reader opens a generation within ms of reading CURRENT


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


class _Generation:
    """One published, immutable compacted database, opened read-only."""

    def __init__(self, path: pathlib.Path):
        self.name = path.name
        self.con = duckdb.connect(str(path), read_only=True)
        rows = self.con.execute("SELECT run_id, status FROM runs").fetchall()
        self.status: dict[str, str] = dict(rows)
        version = self.con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version > schema.SCHEMA_VERSION:
            raise ValueError(f"store generation {path.name} has schema_version={version}; "
                             f"this build reads <= {schema.SCHEMA_VERSION}")

    def query(self, table: str, sql: str, params: list[Any]) -> pl.DataFrame:
        df = pl.from_arrow(self.con.cursor().sql(sql, params=params).to_arrow_table())
        return df.select([pl.col(c).cast(t) for c, t in schema.polars_schema(table).items()])


def _check_submission(rec: Any) -> None:
    records.check_submission(rec, n_runs=records.MAX_ROWS)


class Store:
    """The experiment store rooted at ``root`` (default ``$FASTDIFF_HOME/store``). Safe to use from
    many processes and threads at once; see the module docstring for who writes what."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = pathlib.Path(root).resolve() if root is not None else default_root()
        self.experiments_dir = self.root / "experiments"
        self.runs_dir = self.root / "runs"
        self.results_dir = self.root / "results"
        self.db_dir = self.root / "db"
        for d in (self.root, self.experiments_dir, self.runs_dir, self.results_dir, self.db_dir):
            files.private_dir(d)
        self._annotations = Annotations(self.root / "annotations")
        self._lock = threading.Lock()
        self._gen: _Generation | None = None
        self._exp_cache: tuple[int, dict[str, dict[str, Any]]] | None = None
        self._compacted_digest: str | None = None
        self._unreadable: dict[str, str] = {}

    # ----------------------------------------------------------------------------------------
    # writes: experiments (app side)
    # ----------------------------------------------------------------------------------------

    def create_experiment(self, name: str, specs: Any, sweep: Mapping[str, Sequence[Any]] | None = None) -> str:
        """Record an experiment and its runs (status 'queued'); returns its id. See ``new_experiment``."""
        return self.new_experiment(name, specs, sweep)[0]

    def new_experiment(self, name: str, specs: Any,
                       sweep: Mapping[str, Sequence[Any]] | None = None) -> tuple[str, list[str]]:
        """Record an experiment: ``specs`` (RunSpec, dict, JSON, or a list of them) are validated first.
        ``sweep`` is the grid's axes ({field: [values]}) when the specs came from one. Returns
        (exp_id, run_ids) with run_ids in the order of ``specs``."""
        name = records.check_name(name)
        specs = as_specs(specs)
        axes = records.check_axes({k: list(v) for k, v in sweep.items()}, "sweep") if sweep else None
        exp_id = ids.new_id("e")
        run_ids = [ids.new_id("r") for _ in specs]
        submitted = records.now_iso()
        with files.deferred_dir_sync():  # one directory fsync for all the run records
            for idx, (run_id, spec) in enumerate(zip(run_ids, specs)):
                files.publish_once(self.runs_dir, run_id, {
                    "format": 1, "run_id": run_id, "exp_id": exp_id, "idx": idx,
                    "spec": spec.to_dict(), "submitted": submitted})
        exp = {"format": 1, "exp_id": exp_id, "name": name, "created": submitted, "run_ids": run_ids,
               "spec": specs[0].to_dict(), "imported_from": None,
               "sweep": {"sweep_id": ids.new_id("s"), "axes": axes} if axes else None}
        # The experiment file is published last: readers show an experiment only once all its runs exist.
        files.publish_replace(self.experiments_dir, exp_id, exp)
        return exp_id, run_ids

    def rename_experiment(self, exp_id: str, name: str) -> None:
        exp = self._experiment_record(exp_id)
        exp["name"] = records.check_name(name)
        files.publish_replace(self.experiments_dir, exp_id, exp)

    def delete_experiment(self, exp_id: str) -> None:
        """Delete an experiment, its runs and their results (the experiment disappears first)."""
        exp = self._experiment_record(exp_id)
        files.remove(self.experiments_dir, exp_id)
        for run_id in exp.get("run_ids", ()):
            if not ids.is_id(run_id, "run_id"):
                continue  # a record edited by hand: its entry names no file of this store
            files.remove(self.results_dir, run_id)
            files.remove(self.runs_dir, run_id)
        self._annotations.remove([exp_id] + [r for r in exp.get("run_ids", ()) if ids.is_id(r, "run_id")])

    def _experiment_record(self, exp_id: str) -> dict[str, Any]:
        exp = files.read(self.experiments_dir, ids.check(exp_id, "exp_id"))
        if exp is None:
            raise ValueError(f"exp_id={exp_id!r} is not a stored experiment")
        return exp

    # ----------------------------------------------------------------------------------------
    # writes: tags and notes (the app; store.annotations)
    # ----------------------------------------------------------------------------------------

    def set_tags(self, target: str, tags: Sequence[str]) -> list[str]:
        """Replace the tags of a stored run or experiment (``target``: its id); returns them sorted.
        ValueError naming the tag, or the id when nothing stored has it."""
        return self._annotations.set_tags(self._stored(target), tags)

    def set_note(self, target: str, note: str) -> str:
        """Replace the note of a stored run or experiment ("" removes it)."""
        return self._annotations.set_note(self._stored(target), note)

    def annotations(self, targets: Sequence[str] | None = None) -> pl.DataFrame:
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

    def batched_writes(self) -> contextlib.AbstractContextManager[None]:
        """Results recorded inside this block are durable when it exits, for one directory fsync in
        all (``files.deferred_dir_sync``): how the collector stores a batch of results."""
        return files.deferred_dir_sync()

    def record_result(self, run_id: str, status: str, result: RunResult | Mapping[str, Any] | None = None,
                      error: str | None = None, worker: str | None = None) -> bool:
        """Store a run's outcome once. Returns False (and changes nothing) if the run already has one,
        so a redelivered or duplicated result is never stored twice. Everything is checked first
        (``records.check_result``): ValueError naming the field, and nothing written."""
        ids.check(run_id, "run_id")
        if status not in records.FINAL_STATUSES:
            raise ValueError(f"status={ids.shown(status)} is not one of {list(records.FINAL_STATUSES)}")
        if status == "done" and result is None:
            raise ValueError("result=None with status='done'; a done run carries its RunResult")
        if isinstance(result, RunResult):
            result = result.to_dict()
        elif result is not None:
            result = records.check_result(result)  # what arrives from the queue
        error = records.check_text(error, "error", records.MAX_ERROR)
        worker = records.check_text(worker, "worker")
        return files.publish_once(self.results_dir, run_id, {
            "format": 1, "run_id": run_id, "status": status, "result": result, "error": error,
            "worker": worker, "finished": records.now_iso()})

    # ----------------------------------------------------------------------------------------
    # compaction (one owner at a time; the others skip)
    # ----------------------------------------------------------------------------------------

    def compact(self) -> int | None:
        """Fold new records into the compacted database and publish a new generation.

        Returns the number of runs changed (a rename alone publishes a generation with 0 runs
        changed), or None when another process is compacting right now."""
        with open(self.db_dir / "compact.lock", "a") as lock:
            os.chmod(lock.fileno(), files.FILE_MODE)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return self._compact_locked()

    def _compact_locked(self) -> int:
        exps = self._experiment_records(use_cache=False)
        digest = json.dumps(exps, sort_keys=True)
        work = self.db_dir / "work.duckdb"
        con = duckdb.connect(str(work))
        os.chmod(work, files.FILE_MODE)
        try:
            schema.migrate(con)
            known = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
            on_disk = files.keys(self.runs_dir)
            with_result = files.keys(self.results_dir)
            vanished = set(known) - on_disk
            fresh = (on_disk - set(known)) | {r for r in with_result & on_disk if known.get(r) == "queued"}
            have_gen = self._current_name() is not None
            if not vanished and not fresh and digest == self._compacted_digest and have_gen:
                return 0
            frames = self._run_frames(fresh, with_result)
            changed = sorted(vanished | fresh)
            con.execute("BEGIN TRANSACTION")
            for table in schema.PER_RUN_TABLES:
                con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [changed])
                con.register("incoming", frames[table])
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                con.unregister("incoming")
            for table, row_fn in (("experiments", records.experiment_row), ("sweeps", records.sweep_row)):
                rows = [r for r in (row_fn(e) for e in exps.values()) if r is not None]
                con.execute(f"DELETE FROM {table}")
                con.register("incoming", schema.frame(table, rows))
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                con.unregister("incoming")
            con.execute("COMMIT")
        finally:
            con.close()
        self._publish_generation(work)
        self._compacted_digest = digest
        self._drop_orphan_results()
        return len(changed)

    def _publish_generation(self, work: pathlib.Path) -> None:
        gens = sorted(self.db_dir.glob("gen-*.duckdb"))
        n = int(gens[-1].name[4:12]) + 1 if gens else 1
        name = f"gen-{n:08d}.duckdb"
        tmp = self.db_dir / f".tmp-{uuid.uuid4().hex}"
        shutil.copyfile(work, tmp)
        os.chmod(tmp, files.FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.rename(tmp, self.db_dir / name)
        tmp = self.db_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.write_text(name)
        os.chmod(tmp, files.FILE_MODE)
        os.replace(tmp, self.db_dir / "CURRENT")
        # Old generations stay a while for readers that opened them just before the switch.
        now = time.time()
        for old in sorted(self.db_dir.glob("gen-*.duckdb"))[:-KEEP_GENERATIONS]:
            if now - old.stat().st_mtime > GENERATION_GRACE_S:
                old.unlink(missing_ok=True)

    def _drop_orphan_results(self) -> None:
        # A result that arrived for a run of an experiment deleted meanwhile.
        now = time.time()
        for run_id in files.keys(self.results_dir) - files.keys(self.runs_dir):
            try:
                if now - (self.results_dir / f"{run_id}.json").stat().st_mtime > GENERATION_GRACE_S:
                    files.remove(self.results_dir, run_id)
            except FileNotFoundError:
                pass

    # ----------------------------------------------------------------------------------------
    # reads
    # ----------------------------------------------------------------------------------------

    def _current_name(self) -> str | None:
        try:
            return (self.db_dir / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _generation(self) -> _Generation | None:
        for _ in range(10):
            name = self._current_name()
            if name is None:
                return None
            with self._lock:
                if self._gen is not None and self._gen.name == name:
                    return self._gen
                try:
                    self._gen = _Generation(self.db_dir / name)
                    return self._gen
                except (duckdb.IOException, FileNotFoundError):
                    time.sleep(0.01)  # pruned between reading CURRENT and opening it: read CURRENT again
        raise RuntimeError(f"store at {self.root}: could not open the current generation")

    def _experiment_records(self, use_cache: bool = True) -> dict[str, dict[str, Any]]:
        stamp = os.stat(self.experiments_dir).st_mtime_ns
        cache = self._exp_cache
        if use_cache and cache is not None and cache[0] == stamp:
            return cache[1]
        exps = dict(self._valid(self.experiments_dir, files.keys(self.experiments_dir), records.check_experiment))
        self._exp_cache = (stamp, exps)
        return exps

    def _valid(self, directory: pathlib.Path, keys: Iterable[str], check: Any) -> Iterable[tuple[str, dict[str, Any]]]:
        """The records under ``keys`` that ``check`` accepts. A record it refuses (written by an older
        version, edited by hand, truncated on disk) is left where it is, untouched, and listed by
        ``unreadable()``: one bad file never takes a page, a query or the collector's compaction down."""
        for key in sorted(keys):
            try:
                rec = files.read(directory, key)
                if rec is not None:
                    check(rec)
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
                reason = f"{directory.name}/{key}.json: {str(e)[:300]}"
                if self._unreadable.get(key) != reason:
                    log.warning("store %s: skipping a record it cannot read: %s", self.root, reason)
                self._unreadable[key] = reason
                continue
            if rec is not None:
                self._unreadable.pop(key, None)
                yield key, rec

    def unreadable(self) -> dict[str, str]:
        """Stored records that the last reads skipped because they do not pass the store's checks: {id:
        reason}. They stay on disk unchanged (nothing stored is ever lost); a page shows how many."""
        return dict(self._unreadable)

    def _run_frames(self, run_ids: Iterable[str], with_result: set[str]) -> dict[str, pl.DataFrame]:
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in schema.PER_RUN_TABLES}
        for run_id, sub in self._valid(self.runs_dir, set(run_ids), _check_submission):
            res = None
            if run_id in with_result:
                res = next((r for _, r in self._valid(self.results_dir, [run_id], records.check_outcome)), None)
                if res is None and run_id in self._unreadable:
                    continue  # its outcome is unreadable: the run is skipped whole, not shown as queued
            rows["runs"].append(records.run_row(sub, res))
            for table, fn in records.ROWS_FOR.items():
                rows[table].extend(fn(run_id, res))
        return {t: schema.frame(t, r) for t, r in rows.items()}

    def _fresh(self, gen: _Generation | None) -> set[str]:
        """Run ids whose submission or result is newer than the generation."""
        known = gen.status if gen is not None else {}
        on_disk = files.keys(self.runs_dir)
        with_result = files.keys(self.results_dir)
        return (on_disk - set(known)) | {r for r in with_result if known.get(r) == "queued"}

    def runs(self, exp_id: str | None = None, run_ids: Sequence[str] | None = None) -> pl.DataFrame:
        """One row per run (all, one experiment's, or the given ids), ordered by submission.

        Columns: run_id, exp_id, idx, name, world, scene, sampler, solver, student, grid, steps,
        guidance_scale, horizon, plans, futures, samples, seed, dtype, regime, spec (JSON), submitted,
        status (queued|done|failed|cancelled), finished, device, worker, wall_s, nfe_counted,
        nfe_formula, verdict (JSON), error."""
        if exp_id is not None:
            ids.check(exp_id, "exp_id")
        if run_ids is not None:
            run_ids = ids.check_many(run_ids, "run_id")
        gen = self._generation()
        fresh = self._fresh(gen)
        if run_ids is not None:
            fresh &= set(run_ids)
        delta = self._run_frames(fresh, files.keys(self.results_dir))["runs"]
        if exp_id is not None:
            delta = delta.filter(pl.col("exp_id") == exp_id)
        if gen is None:
            old = schema.empty_frame("runs")
        elif run_ids is not None:
            old = gen.query("runs", "SELECT * FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                            [list(run_ids)])
        elif exp_id is not None:
            old = gen.query("runs", "SELECT * FROM runs WHERE exp_id = ?", [exp_id])
        else:
            old = gen.query("runs", "SELECT * FROM runs", [])
        live = list(self._experiment_records())
        out = pl.concat([old.filter(~pl.col("run_id").is_in(list(fresh))), delta])
        return out.filter(pl.col("exp_id").is_in(live)).sort(["submitted", "exp_id", "idx"])

    def run(self, run_id: str) -> dict[str, Any] | None:
        """Everything about one run, or None: {run_id, exp_id, idx, spec (RunSpec dict), submitted,
        status, result (RunResult dict incl. samples, or None), error, worker, finished}."""
        sub = next((r for _, r in self._valid(self.runs_dir, [ids.check(run_id, "run_id")], _check_submission)), None)
        if sub is None or self.experiment(sub["exp_id"]) is None:
            return None
        res = next((r for _, r in self._valid(self.results_dir, [run_id], records.check_outcome)), None)
        if res is None and run_id in self._unreadable:
            return None
        return {"run_id": run_id, "exp_id": sub["exp_id"], "idx": sub["idx"], "spec": sub["spec"],
                "submitted": sub["submitted"], "status": res["status"] if res else "queued",
                "result": res.get("result") if res else None, "error": res.get("error") if res else None,
                "worker": res.get("worker") if res else None, "finished": res.get("finished") if res else None}

    def _per_run(self, table: str, run_ids: Sequence[str]) -> pl.DataFrame:
        ids_ = [ids.check(run_ids, "run_id")] if isinstance(run_ids, str) else ids.check_many(run_ids, "run_id")
        gen = self._generation()
        status = gen.status if gen is not None else {}
        compacted = [r for r in ids_ if status.get(r) in records.FINAL_STATUSES]
        old = (gen.query(table, f"SELECT * FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
                                "ORDER BY rowid", [compacted]) if compacted else schema.empty_frame(table))
        rest = set(ids_) - set(compacted)
        rows = list(itertools.chain.from_iterable(
            records.ROWS_FOR[table](run_id, res) for run_id, res in files.read_many(self.results_dir, rest)))
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
        return next((r for _, r in self._valid(self.experiments_dir, [ids.check(exp_id, "exp_id")],
                                                records.check_experiment)), None)

    def experiments(self, search: str | None = None) -> pl.DataFrame:
        """One row per experiment, newest first, optionally filtered by a case-insensitive substring of
        the name (or an exact id). Columns: exp_id, name, created, spec (JSON), sweep_id, n_runs,
        imported_from, status (empty|queued|running|done|failed|cancelled), n_done, n_failed,
        n_cancelled, n_queued."""
        exps = self._experiment_records()
        rows = [records.experiment_row(e) for e in exps.values()]
        if search:
            s = search.lower()
            rows = [r for r in rows if s in r["name"].lower() or r["exp_id"] == search]
        df = schema.frame("experiments", rows)
        runs = self.runs() if rows else schema.empty_frame("runs")
        counts: dict[str, dict[str, int]] = {}
        for e, st, n in runs.group_by(["exp_id", "status"]).len().iter_rows():
            counts.setdefault(e, {})[st] = n
        extra = {
            "status": [_status(counts.get(e, {}), n) for e, n in zip(df["exp_id"], df["n_runs"])],
            **{f"n_{s}": [counts.get(e, {}).get(s, 0) for e in df["exp_id"]]
               for s in ("done", "failed", "cancelled", "queued")},
        }
        return df.with_columns([pl.Series(k, v, dtype=pl.String if k == "status" else pl.Int32)
                                for k, v in extra.items()]).sort("created", descending=True)

    def sweeps(self, exp_id: str | None = None) -> pl.DataFrame:
        """Sweep definitions: sweep_id, exp_id, axes (JSON {field: [values]}), n_runs."""
        if exp_id is not None:
            ids.check(exp_id, "exp_id")
        exps = self._experiment_records()
        rows = [r for r in (records.sweep_row(e) for e in exps.values() if exp_id in (None, e["exp_id"]))
                if r is not None]
        return schema.frame("sweeps", rows)

    def pending(self) -> list[str]:
        """Ids of runs still waiting for a result (status 'queued')."""
        return self.runs().filter(pl.col("status") == "queued")["run_id"].to_list()

    # ----------------------------------------------------------------------------------------
    # bundles
    # ----------------------------------------------------------------------------------------

    def export_bundle(self, exp_id: str, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the experiment as a zip bundle (experiment.json + Parquet tables); returns its path."""
        from store import bundle

        return bundle.export_bundle(self, ids.check(exp_id, "exp_id"), pathlib.Path(path))

    def import_bundle(self, path: str | os.PathLike[str]) -> str:
        """Import a bundle as a new experiment (fresh ids; ``imported_from`` keeps the original id)."""
        from store import bundle

        return bundle.import_bundle(self, pathlib.Path(path))
