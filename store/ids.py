"""The one pattern every id is checked against where it crosses a boundary (STYLE rule 14).

An id is a kind letter and 12 lowercase hex digits: experiments ``e…``, runs ``r…``, sweeps ``s…``
(``new_id``). URL parameters (?run= ?exp= ?sel= ?sweep= ?runs=), task messages, results-channel
items, bundle records and the client API are checked here before the id is used; the store's file
layer checks again before an id becomes a file name, so no caller can name a path. The pattern has no
'/', '.', NUL or non-ASCII character and a fixed length, so a valid id is always a plain file name
inside its directory. Imports nothing but the standard library (the app, the store and the workers
all use it).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

KINDS = {"exp_id": "e", "run_id": "r", "sweep_id": "s"}
HEX = "[0-9a-f]{12}"
ID = re.compile(f"[ers]{HEX}", re.ASCII)
EXAMPLE = "r0123456789ab"


def new_id(prefix: str) -> str:
    """A fresh id of the kind ``prefix`` ('e', 'r' or 's')."""
    if prefix not in KINDS.values():
        raise ValueError(f"prefix={prefix!r} is not one of {sorted(KINDS.values())}")
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def is_id(value: Any, field: str | None = None) -> bool:
    """True if ``value`` is an id (of ``field``'s kind when given: 'exp_id', 'run_id', 'sweep_id')."""
    if type(value) is not str or ID.fullmatch(value) is None:
        return False
    return field is None or value[0] == KINDS[field]


def shown(value: Any) -> str:
    """``value`` for an error message: its repr, cut short (a 10 MB id must not make a 10 MB message)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def check(value: Any, field: str) -> str:
    """``value`` if it is an id of ``field``'s kind, else ValueError naming the field, the value and the pattern."""
    if field not in KINDS:
        raise ValueError(f"field={field!r} is not one of {sorted(KINDS)}")
    if not is_id(value, field):
        raise ValueError(f"{field}={shown(value)} is not a valid id: expected {KINDS[field]!r} followed by "
                         f"12 lowercase hex digits, e.g. {KINDS[field]}{EXAMPLE[1:]}")
    return value


def check_many(values: Any, field: str) -> list[str]:
    """A list of ids of one kind (a single id string is refused: it would iterate as characters)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{field}s={shown(values)} must be a list of ids")
    return [check(v, field) for v in values]


def check_column(values: Any, field: str, kinds: str) -> Any:
    """A polars Series of ids, checked at once (a page passes every stored run's id; one ``check`` per id
    would cost more than the read it guards): ``values`` itself, or ValueError naming ``field`` and the
    first value that is not an id of one of the kind letters ``kinds`` ('r', 'e', 'er', ...)."""
    import polars as pl  # only a caller holding a Series gets here

    if not isinstance(values, pl.Series) or values.dtype != pl.String:
        raise ValueError(f"{field}s must be a polars String Series of ids, not {shown(values)}")
    ok = values.str.contains(f"^[{kinds}]{HEX}$").fill_null(False)
    if not ok.all():
        raise ValueError(f"{field}={shown(values.filter(~ok)[0])} is not a valid id: expected one of {list(kinds)} "
                         f"followed by 12 lowercase hex digits, e.g. {kinds[0]}{EXAMPLE[1:]}")
    return values
