"""The store's inbox: an append-only journal of sealed JSON lines, rotated by each compaction.

Every write the store takes (an experiment with its runs, a rename, a delete, a batch of outcomes)
is ONE line appended to ``journal.jsonl`` with one ``write`` (O_APPEND: lines of concurrent writers
never interleave) and one fsync, so a write costs one fsync however many runs it carries, and the
inbox is one file, not one per run. A compaction renames the journal to ``rotated-<n>.jsonl`` (under
an exclusive lock that appends hold shared, so no append lands in a file already being folded),
folds it into a segment, and removes it: one unlink per compaction. (A file per record made each
compaction unlink one fsynced file per run and experiment, ~4 ms each on ext4.)

A line is ``<seal> <kind> <JSON>``; the seal is the sha256 of ``<kind> <JSON>``. A sealed line is
exactly what the store's checked write path wrote, so readers trust it without checking it again
(and a compaction keeps its JSON text as it is); a line whose seal does not match (edited by hand)
is checked field by field, and one that does not parse (truncated) is unreadable. A reader consumes
only whole lines (an append in flight is read next time). Kinds: ``experiment`` (the experiment
record, its runs' submissions, an import's outcomes), ``outcome`` (one run's), ``delete``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from store import files

JOURNAL = "journal.jsonl"
ROTATED = re.compile(r"rotated-(\d{8})\.jsonl")
LOCK = ".rotate.lock"
HEADER = "journal"


KINDS = ("experiment", "outcome", "delete")


def seal(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def encode(kind: str, record: Any) -> bytes:
    """One line: ``<seal> <kind> <JSON>``, the seal being the sha256 of ``<kind> <JSON>``."""
    body = f"{kind} {json.dumps(record, allow_nan=True, check_circular=False)}".encode()
    return seal(body).encode() + b" " + body + b"\n"


@contextlib.contextmanager
def _locked(directory: pathlib.Path, mode: int) -> Iterator[None]:
    with open(directory / LOCK, "a") as lock:
        os.chmod(lock.fileno(), files.FILE_MODE)
        fcntl.flock(lock, mode)
        yield


def append(directory: pathlib.Path, entries: list[tuple[str, Any]],
           while_syncing: Callable[[], None] | None = None) -> None:
    """Append ``entries`` durably (one write, one fsync; the directory too when the file is new). A new
    file starts with a header line naming it (``HEADER``: inode numbers are reused, names rotate).

    ``while_syncing`` runs once the lines are written (every reader on this machine sees them) while
    the fsync runs beside it in a thread; ``append`` returns (or raises what either raised) once both
    are done, so what the caller does there overlaps the disk's flush instead of following it."""
    data = b"".join(encode(kind, record) for kind, record in entries)
    with _locked(directory, fcntl.LOCK_SH):
        path = directory / JOURNAL
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, files.FILE_MODE)
        try:
            new = os.fstat(fd).st_size == 0
            if new:  # (two first writers may both add one: the first line names the file)
                data = encode(HEADER, uuid.uuid4().hex) + data
            os.write(fd, data)
        except BaseException:
            os.close(fd)
            raise
    # The lines are in the file: a rotation from here on renames the same inode, which the fd still
    # names, and a compaction that folds them reads them from it.
    try:
        _sync(fd, while_syncing)
    finally:
        os.close(fd)
    if new:
        files.fsync_path(directory)


def _sync(fd: int, while_syncing: Callable[[], None] | None) -> None:
    if while_syncing is None:
        os.fsync(fd)
        return
    # The fsync goes to a thread kept for it: starting a thread per write made the caller wait until the
    # new thread was scheduled (Thread.start blocks on it: ms on a busy machine) before ``while_syncing``
    # could run, and that wait sat on the service's critical path (the task message, the announcement).
    flushed = _flushers().submit(os.fsync, fd)
    try:
        while_syncing()
    finally:
        flushed.exception()  # wait for it; its error is raised below
    flushed.result()


_FLUSHERS: list[concurrent.futures.ThreadPoolExecutor] = []
_FLUSHERS_LOCK = threading.Lock()


def _flushers() -> concurrent.futures.ThreadPoolExecutor:
    """This process's fsync threads, started on first use (up to 4: concurrent writers flush side by side)."""
    with _FLUSHERS_LOCK:
        if not _FLUSHERS:
            _FLUSHERS.append(concurrent.futures.ThreadPoolExecutor(4, "journal-fsync"))
        return _FLUSHERS[0]


def _forget_flushers() -> None:  # a forked child has none of its parent's threads (nor its lock's holder)
    global _FLUSHERS_LOCK
    _FLUSHERS_LOCK = threading.Lock()
    _FLUSHERS.clear()


os.register_at_fork(after_in_child=_forget_flushers)


def rotated(directory: pathlib.Path) -> list[str]:
    """Names of the rotated journals, oldest first."""
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if ROTATED.fullmatch(e.name))


def rotate(directory: pathlib.Path) -> None:
    """Rename the journal to the next ``rotated-<n>.jsonl`` (if it holds anything)."""
    with _locked(directory, fcntl.LOCK_EX):
        try:
            if os.stat(directory / JOURNAL).st_size == 0:
                return
        except FileNotFoundError:
            return
        names = rotated(directory)
        n = int(ROTATED.fullmatch(names[-1]).group(1)) + 1 if names else 1
        os.rename(directory / JOURNAL, directory / f"rotated-{n:08d}.jsonl")
    files.fsync_path(directory)  # before a manifest names the file folded: new lines never go into it


def names(directory: pathlib.Path) -> list[str]:
    """The journal files in reading order: the rotated ones, then the journal."""
    return [*rotated(directory), JOURNAL]


@dataclasses.dataclass
class Line:
    kind: str | None              # None: not a line of the journal's form
    record: Any                   # the parsed JSON (None when it does not parse)
    sealed: bool                  # the seal matches: written as it is by the store's checked write path
    raw: bytes                    # the line as it is on disk
    where: str                    # "<file>:<byte offset>"

    @property
    def json(self) -> bytes:
        """The record's JSON text as written (what a segment keeps, without encoding it again)."""
        return self.raw.split(b" ", 2)[2]


def parse(raw: bytes, where: str) -> Line:
    parts = raw.split(b" ", 2)
    if len(parts) != 3:
        return Line(None, None, False, raw, where)
    given, kind, text = parts
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return Line(None, None, False, raw, where)
    return Line(kind.decode("ascii", "replace"), record, given.decode("ascii", "replace") == seal(kind + b" " + text),
                raw, where)


@dataclasses.dataclass
class Read:
    """What a reader has of one journal file: its id (header), the offset read up to, its lines."""

    id: str
    offset: int
    lines: list[Line]


def read(path: pathlib.Path, known: Read | None = None) -> Read | None:
    """The whole lines of ``path`` (only those after ``known`` when it is the same file), or None when
    the file is gone or has no whole first line yet. Header lines are not returned."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
            if not first.endswith(b"\n"):
                return None
            head = parse(first.rstrip(b"\n"), f"{path.name}:0")
            fid = str(head.record) if head.kind == HEADER else first.decode("utf-8", "replace")
            same = known is not None and known.id == fid
            offset, lines = (known.offset, list(known.lines)) if same else (len(first), [])
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return None
    end = data.rfind(b"\n") + 1
    at = offset
    for raw in data[:end].split(b"\n")[:-1]:
        line = parse(raw, f"{path.name}:{at}")
        at += len(raw) + 1
        if line.kind != HEADER:
            lines.append(line)
    return Read(fid, offset + end, lines)
