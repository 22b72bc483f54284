"""Write-once and atomically replaced JSON records: the store's durable source of truth.

Every record is its own file, written to a temporary name in the same directory, fsynced, then
published in one atomic step:

- ``publish_once``: ``link(tmp, final)`` — fails if ``final`` exists, so the first writer wins and a
  redelivered result can never overwrite or duplicate the first one (idempotent by key);
- ``publish_replace``: ``rename(tmp, final)`` — last writer wins (experiment renames).

Readers only see complete files (names starting with '.' are in-flight temporaries and are skipped)
and tolerate a file vanishing between listing and opening (a deleted experiment).
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

SUFFIX = ".json"


def _tmp_write(directory: pathlib.Path, data: bytes) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(record: Any) -> bytes:
    return json.dumps(record, sort_keys=True, allow_nan=True).encode()


def publish_once(directory: pathlib.Path, key: str, record: Any) -> bool:
    """Write ``directory/key.json`` unless it exists. True if this call wrote it."""
    tmp = _tmp_write(directory, _encode(record))
    try:
        os.link(tmp, directory / (key + SUFFIX))
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _fsync_dir(directory)
    return True


def publish_replace(directory: pathlib.Path, key: str, record: Any) -> None:
    """Write ``directory/key.json``, atomically replacing any previous version."""
    tmp = _tmp_write(directory, _encode(record))
    os.replace(tmp, directory / (key + SUFFIX))
    _fsync_dir(directory)


def read(directory: pathlib.Path, key: str) -> dict[str, Any] | None:
    """The record, or None if it does not exist (or vanished while we looked)."""
    try:
        with open(directory / (key + SUFFIX), "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def keys(directory: pathlib.Path) -> set[str]:
    """Keys of the complete records in ``directory`` (temporaries excluded)."""
    try:
        with os.scandir(directory) as it:
            return {e.name[: -len(SUFFIX)] for e in it if e.name.endswith(SUFFIX) and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


def read_many(directory: pathlib.Path, wanted: set[str] | list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in sorted(wanted):
        rec = read(directory, key)
        if rec is not None:
            yield key, rec


def remove(directory: pathlib.Path, key: str) -> None:
    try:
        os.unlink(directory / (key + SUFFIX))
    except FileNotFoundError:
        pass
