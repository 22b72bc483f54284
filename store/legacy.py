"""Migration of a store written in the per-record format (schema 1-3): experiments/<e>.json,
runs/<r>.json, results/<r>.json and a DuckDB cache in db/.

Each readable experiment becomes one journal line (the experiment, its runs and their outcomes,
the records exactly as they were stored), then its old files are removed, and a compaction folds the
journal into a segment. Every step is idempotent and ordered so that a kill at any point loses
nothing: an experiment's line is written (and fsynced) before any of its old files is removed, and
it is not written again once the journal or a segment holds it. The next ``Store`` to open the store
finishes the migration.

A record the checks refuse is left where it is, untouched, and listed by ``Store.unreadable()``
(as the old format did): an unreadable experiment with all its files, a run whose submission or
outcome is unreadable with both of its files (it was not shown before either). Old files that no
readable experiment names (they were not shown before) stay as they are and are listed too.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import TYPE_CHECKING, Any

from store import files, ids, records

if TYPE_CHECKING:
    from store.store import Store

DIRS = ("experiments", "runs", "results")
READ_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RecursionError)


def present(root: pathlib.Path) -> bool:
    """Whether ``root`` holds old-format records (or their cache) not migrated yet."""
    return (root / "db").exists() or any(files.keys(root / d) - _left(root) for d in DIRS)


def _left(root: pathlib.Path) -> set[str]:
    """Ids of old records a previous migration left in place as unreadable (from the manifest)."""
    from store import segments

    manifest, _ = segments.load(root)
    return {k for k, _ in manifest.unreadable}


def _read(directory: pathlib.Path, key: str, check: Any, unreadable: dict[str, str]) -> Any:
    try:
        rec = files.read(directory, key)
        if rec is not None:
            check(rec)
        return rec
    except READ_ERRORS as e:
        unreadable[key] = f"{directory.name}/{key}.json: {str(e)[:300]}"
        return None


class _Crash(Exception):
    pass


def migrate(store: Store, crash_after: int | None = None) -> dict[str, str]:
    """Migrate the old-format records under ``store.root`` (holding the compaction lock; another
    process migrating makes this one wait and then find nothing left). Returns the unreadable ones.

    ``crash_after``: the process exits abruptly (``os._exit``, no cleanup) after that many file
    operations -- how the tests kill a migration half way at every step."""
    steps = [0]

    def step() -> None:
        steps[0] += 1
        if crash_after is not None and steps[0] > crash_after:
            os._exit(9)

    root = store.root
    exps_dir, runs_dir, results_dir = (root / d for d in DIRS)
    with store._flock("compact.lock"):
        unreadable: dict[str, str] = {}
        snap = store._snapshot()
        written = set(snap.catalog["exp_id"].to_list()) | set(store._read_inbox().exps)
        for exp_id in sorted(files.keys(exps_dir)):
            exp = _read(exps_dir, exp_id, records.check_experiment, unreadable)
            if exp is None:
                continue
            subs, outcomes, moved = [], {}, []
            for run_id in exp.get("run_ids", ()):
                if not ids.is_id(run_id, "run_id"):
                    continue
                sub = _read(runs_dir, run_id, lambda r: records.check_submission(r, records.MAX_ROWS), unreadable)
                res = _read(results_dir, run_id, records.check_outcome, unreadable)
                if run_id in unreadable or sub is None:
                    continue  # left in place (or never written): the old format did not show it either
                subs.append(sub)
                if res is not None:
                    outcomes[run_id] = res
                moved.append(run_id)
            if exp_id not in written:
                store._publish_experiment(exp, subs, outcomes)
                step()
            for run_id in moved:
                files.remove(results_dir, run_id)
                step()
                files.remove(runs_dir, run_id)
                step()
            files.remove(exps_dir, exp_id)
            step()
        # The DuckDB cache: rebuilt from the records by the old format, not needed by this one.
        shutil.rmtree(root / "db", ignore_errors=True)
        for d in (exps_dir, runs_dir, results_dir):
            for key in files.keys(d):  # old files no readable experiment names: kept as they are, listed
                if key not in unreadable:
                    unreadable[key] = f"{d.name}/{key}.json: not part of any readable experiment"
        store._compact_locked(more_unreadable=unreadable)
        step()
        for d in (exps_dir, runs_dir, results_dir):
            try:
                d.rmdir()  # only when empty
            except OSError:
                pass
    return unreadable
