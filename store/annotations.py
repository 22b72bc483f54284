"""Tags and notes on runs and experiments: what people write about a result, kept apart from the result.

A run's submission and outcome are written once and never change; a tag is edited many times. So
each annotated id has its own small record, ``annotations/<id>.json`` = {id, tags, note, updated},
replaced atomically on every edit (``files.publish_replace``) under a short per-store lock so that a
tag edit and a note edit made at the same moment do not undo each other. Only annotated ids have a
record: a store of 100,000 runs with ten tagged ones reads ten small files.

A tag is a short word (letters, digits and ``_ . : + = -``, no space or comma) so that a list of tags
fits a URL (``?tag=baseline,ship``) unchanged; a note is free text of at most ``MAX_NOTE`` characters.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import polars as pl

from store import files, ids, records

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+=-]{0,39}", re.ASCII)
MAX_TAGS = 32
MAX_NOTE = 10_000
SCHEMA = {"id": pl.String, "tags": pl.List(pl.String), "note": pl.String, "updated": pl.Datetime("us")}


def check_tags(tags: Any) -> list[str]:
    """The tags sorted and without repeats; ValueError naming the tag and the pattern otherwise."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise ValueError(f"tags={ids.shown(tags)} must be a list of tags (a single string would split into letters)")
    items = list(tags)
    for t in items:
        if not isinstance(t, str) or TAG.fullmatch(t.strip()) is None:
            raise ValueError(f"tag={ids.shown(t)} is not a tag: 1-40 characters, letters, digits and _ . : + = - "
                             "(no spaces or commas), starting with a letter or digit")
    out = sorted({t.strip() for t in items})
    if len(out) > MAX_TAGS:
        raise ValueError(f"tags has {len(out)} tags; at most {MAX_TAGS} per run or experiment")
    return out


def check_note(note: Any) -> str:
    return records.check_text(note, "note", MAX_NOTE) or ""


def check_target(target: Any) -> str:
    """A run or experiment id (the things that carry annotations)."""
    if not (ids.is_id(target, "run_id") or ids.is_id(target, "exp_id")):
        raise ValueError(f"id={ids.shown(target)} is not a run or experiment id ('r' or 'e' followed by 12 "
                         f"lowercase hex digits, e.g. {ids.EXAMPLE})")
    return target


class Annotations:
    """The annotation records under ``directory`` (the store's ``annotations/``)."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        files.private_dir(directory)

    @contextlib.contextmanager
    def _editing(self) -> Iterator[None]:
        with open(self.directory / ".lock", "a") as lock:
            os.chmod(lock.fileno(), files.FILE_MODE)
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for one read-modify-write of one small file
            yield

    def _update(self, target: str, **change: Any) -> None:
        with self._editing():
            rec = files.read(self.directory, target) or {"format": 1, "id": target, "tags": [], "note": ""}
            rec.update(change, updated=records.now_iso())
            if rec["tags"] or rec["note"]:
                files.publish_replace(self.directory, target, rec)
            else:  # nothing left to say: no record (the store keeps records only for annotated ids)
                files.remove(self.directory, target)

    def set_tags(self, target: str, tags: Sequence[str]) -> list[str]:
        tags = check_tags(tags)
        self._update(check_target(target), tags=tags)
        return tags

    def set_note(self, target: str, note: str) -> str:
        note = check_note(note)
        self._update(check_target(target), note=note)
        return note

    def remove(self, targets: Iterable[str]) -> None:
        with self._editing():
            for t in targets:
                files.remove(self.directory, check_target(t))

    def frame(self, targets: Sequence[str] | pl.Series | None = None) -> pl.DataFrame:
        """id, tags (sorted list), note, updated: one row per annotated id (of ``targets`` when given: ids,
        or a polars Series of them, checked at once)."""
        keys = files.keys(self.directory)
        if isinstance(targets, pl.Series):
            targets = ids.check_column(targets, "id", "re")
            keys &= set(targets.filter(targets.is_in(list(keys))).to_list())  # few ids are annotated
        elif targets is not None:
            keys &= {check_target(t) for t in targets}
        rows = []
        for key, rec in files.read_many(self.directory, keys):
            try:
                rows.append({"id": key, "tags": check_tags(rec.get("tags", [])), "note": check_note(rec.get("note")),
                             "updated": records.parse_time(records.check_time(rec.get("updated"), "updated"))})
            except ValueError:
                continue  # a record edited by hand into something unreadable: left on disk, not shown
        return pl.DataFrame(rows, schema=SCHEMA)
