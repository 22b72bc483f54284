"""Small JSON records, one file each, atomically replaced: tags and notes (``store.annotations``), and
the records of a store in the per-record format that ``store.legacy`` migrates; fsync helpers.

``publish_replace`` writes to a temporary name in the same directory, fsyncs, then renames (last
writer wins). Readers only see complete files (names starting with '.' are in-flight temporaries and
are skipped) and tolerate a file vanishing between listing and opening.

A key is always an id (``store.ids``), checked here before it becomes a file name: whatever a caller
passes, no function of this module touches a file outside ``directory``. Files are 600 and
directories 700: the store is private to the user who runs the service.
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

from store import ids

SUFFIX = ".json"
FILE_MODE = 0o600
DIR_MODE = 0o700


def _path(directory: pathlib.Path, key: str) -> pathlib.Path:
    if not ids.is_id(key):
        raise ValueError(f"key={ids.shown(key)} is not an id; the store names files only by id")
    return directory / (key + SUFFIX)


def private_dir(directory: pathlib.Path) -> None:
    """Create ``directory`` (and parents) if needed; make it 700."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        os.chmod(directory, DIR_MODE)


def _tmp_write(directory: pathlib.Path, data: bytes) -> pathlib.Path:
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def fsync_path(path: pathlib.Path) -> None:
    """fsync a file or a directory (a directory's: the names in it are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(record: Any) -> bytes:
    return json.dumps(record, sort_keys=True, allow_nan=True).encode()


def publish_replace(directory: pathlib.Path, key: str, record: Any) -> None:
    """Write ``directory/key.json``, atomically replacing any previous version."""
    final = _path(directory, key)
    tmp = _tmp_write(directory, _encode(record))
    os.replace(tmp, final)
    fsync_path(directory)


def read(directory: pathlib.Path, key: str) -> dict[str, Any] | None:
    """The record, or None if it does not exist (or vanished while we looked)."""
    path = _path(directory, key)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def keys(directory: pathlib.Path) -> set[str]:
    """Keys of the complete records in ``directory`` (temporaries excluded)."""
    try:
        with os.scandir(directory) as it:
            names = {e.name[: -len(SUFFIX)] for e in it if e.name.endswith(SUFFIX)}
    except FileNotFoundError:
        return set()
    return {n for n in names if ids.is_id(n)}  # temporaries ('.tmp-…') and stray files are not records


def read_many(directory: pathlib.Path, wanted: set[str] | list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in sorted(wanted):
        rec = read(directory, key)
        if rec is not None:
            yield key, rec


def remove(directory: pathlib.Path, key: str) -> None:
    path = _path(directory, key)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
