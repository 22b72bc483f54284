"""Argument types for the ``fastdiff`` subcommands: each checks one value where argparse reads it, so a
bad argument is refused with one line naming the flag, the value and what is allowed, before any work.

    parser.add_argument("--n", type=int_range(1), default=1000)
    parser.add_argument("--json", type=writable_file, default=None)

argparse turns an ``ArgumentTypeError`` into "argument --n: <message>"; ``workers.cli`` prints that
as one line and exits 2. Torch-free; prints nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any

_Error = argparse.ArgumentTypeError


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _range_text(lo: float | None, hi: float | None, kind: str) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"{kind} >= {_num(lo)}"
    return f"{kind} <= {_num(hi)}" if hi is not None else kind


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (either bound optional)."""
    allowed = _range_text(lo, hi, "an integer")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _Error(f"{text!r} is not allowed; expected {allowed}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _Error(f"{value} is not allowed; expected {allowed}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (open at either end with ``lo_open`` / ``hi_open``)."""
    allowed = _range_text(lo, hi, "a finite number")
    if lo_open and lo is not None:
        allowed = allowed.replace(">= ", "> ").replace("[", "(", 1)
    if hi_open and hi is not None:
        allowed = allowed.replace("<= ", "< ")[:-1] + (")" if allowed.endswith("]") else allowed[-1])

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if not math.isfinite(value) or too_low or too_high:
            raise _Error(f"{text!r} is not allowed; expected {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def comma_list(item: Callable[[str], Any], *, choices: Sequence[Any] | None = None,
               length: int | None = None) -> Callable[[str], list[Any]]:
    """A comma-separated, non-empty list whose items ``item`` parses (and that are in ``choices``)."""

    def parse(text: str) -> list[Any]:
        parts = [p.strip() for p in text.split(",")]
        if not text.strip() or any(p == "" for p in parts):
            raise _Error(f"{text!r} is not allowed; expected a comma-separated list without empty items")
        out = []
        for p in parts:
            try:
                v = item(p)
            except (ValueError, _Error) as e:
                raise _Error(f"item {p!r} of {text!r}: {e}") from None
            if choices is not None and v not in choices:
                raise _Error(f"item {p!r} of {text!r} is not allowed; expected items from {sorted(choices)}")
            out.append(v)
        if length is not None and len(out) != length:
            raise _Error(f"{text!r} has {len(out)} items; expected exactly {length}")
        return out

    parse.__name__ = "list"
    return parse


def writable_file(text: str) -> pathlib.Path:
    """A file path this process can create or overwrite (its directory exists and is writable)."""
    path = pathlib.Path(text)
    if not text or path.is_dir():
        raise _Error(f"{text!r} is a directory; expected a file path to write")
    parent = path.parent if str(path.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise _Error(f"{text!r}: directory {str(parent)!r} does not exist; expected a file in an existing directory")
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(parent, os.W_OK | os.X_OK):
        raise _Error(f"{text!r} is not writable by this user; expected a writable file path")
    return path


def writable_dir(text: str) -> pathlib.Path:
    """A directory this process can write into (it exists, or its parent does and is writable)."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise _Error(f"{text!r} is a file; expected a directory")
    target = path if path.is_dir() else path.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise _Error(f"{text!r} is not a writable directory (nor one that can be created); "
                     "expected a writable directory")
    return path


def port(text: str) -> int:
    """A TCP port: 1-65535, or 0 for one the system picks."""
    return int_range(0, 65535)(text)


port.__name__ = "port"


def file_stem(text: str) -> str:
    """A file name without directories (a checkpoint or card name): letters, digits, '_', '-', '.'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", text) or ".." in text:
        raise _Error(f"{text!r} is not allowed; expected a name of letters, digits, '_', '-' and '.' "
                     "(no directories), at most 100 characters")
    return text
