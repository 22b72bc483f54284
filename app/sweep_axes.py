"""X/Y/Z sweep axes: A1111-style range syntax over RunSpec fields (the grid itself is
``fastdiff_core.sweep.grid``, which the service's client expands too).

Syntax (comma-separated items, each one of):
    ``euler, heun``        literal values
    ``1-10``               integers 1..10 inclusive
    ``1-10 (+2)``          1, 3, 5, 7, 9 (step; floats allowed: ``1-3 (+0.5)``)
    ``10-1 (-3)``          10, 7, 4, 1
    ``1-2 [5]``            5 evenly spaced values from 1 to 2 inclusive
"""

from __future__ import annotations

import re
from typing import Any, Callable

from fastdiff_core import catalog
from fastdiff_core.spec import field_choices

INT_FIELDS = ("steps", "horizon", "plans", "futures", "samples", "seed")
FLOAT_FIELDS = ("guidance_scale",)
# the choices of each sweepable name field, read live from RunSpec's declarations (spec.FIELDS)
CHOICE_FIELDS: dict[str, Callable[[], tuple[Any, ...]]] = {
    name: (lambda name=name: tuple(c for c in field_choices(name) if c is not None))
    for name in ("solver", "student", "world", "regime", "dtype")}
CHOICE_FIELDS["grid"] = lambda: tuple(g for g in field_choices("grid") if g != "custom")  # custom needs sigmas
SWEEPABLE = (*CHOICE_FIELDS, *INT_FIELDS, *FLOAT_FIELDS)
OPTION_PREFIX = "solver_options."  # an axis over one of the base solver's options: solver_options.eta
MAX_AXIS_VALUES = 200

_NUM = r"-?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"^\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*([+-]\s*{_NUM})\s*\)|\[\s*(\d+)\s*\])?\s*$")


def _number(field: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not a number") from None


def _expand_range(field: str, item: str) -> list[float] | None:
    m = _RANGE.match(item)
    if not m:
        return None
    a, b = float(m.group(1)), float(m.group(2))
    if m.group(4) is not None:  # [n] evenly spaced
        n = int(m.group(4))
        if n < 1 or n > MAX_AXIS_VALUES:
            raise ValueError(f"{field}: [{n}] in {item!r} must be between 1 and {MAX_AXIS_VALUES}")
        return [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n)]
    step = float(m.group(3).replace(" ", "")) if m.group(3) else (1.0 if b >= a else -1.0)
    if step == 0 or (b - a) * step < 0:
        raise ValueError(f"{field}: step {step:g} in {item!r} never reaches {b:g} from {a:g}")
    count = int((b - a) / step + 1e-9) + 1
    if count > MAX_AXIS_VALUES:
        raise ValueError(f"{field}: {item!r} expands to {count} values; at most {MAX_AXIS_VALUES} per axis")
    return [a + i * step for i in range(count)]


def sweepable(solver: str | None = None) -> tuple[str, ...]:
    """The fields an axis can take: the RunSpec fields above, and the options of ``solver`` (the base
    configuration's solver) as ``solver_options.<name>``."""
    info = catalog.SOLVERS.get(solver or "")
    return SWEEPABLE + tuple(OPTION_PREFIX + name for name in (info.options if info else {}))


def spec_value(spec: dict[str, Any], field: str) -> Any:
    """A field's value in a spec's JSON dict; ``solver_options.<name>`` reads inside the options."""
    if field.startswith(OPTION_PREFIX):
        return (spec.get("solver_options") or {}).get(field[len(OPTION_PREFIX):])
    return spec.get(field)


def _numbers(field: str, item: str, integer: bool) -> list[float]:
    """An item's numbers (a literal or a range); whole numbers as ints when ``integer``."""
    out: list[float] = []
    for v in _expand_range(field, item) or [_number(field, item)]:
        if integer:
            if abs(v - round(v)) > 1e-9:
                raise ValueError(f"{field}: {v:g} (from {item!r}) must be an integer")
            v = int(round(v))
        out.append(v)
    return out


def _option_parser(field: str, solver: str | None) -> Callable[[str], list[Any]]:
    """Values of one item of a ``solver_options.<name>`` axis, checked against the option's own choices
    and range (the field named in the error)."""
    info = catalog.SOLVERS.get(solver or "")
    name = field[len(OPTION_PREFIX):]
    if info is None or name not in info.options:
        allowed = sorted(info.options) if info else []
        raise ValueError(f"axis field={field!r} is not an option of solver={solver!r}; its options: {allowed}")
    opt = info.options[name]

    def values(item: str) -> list[Any]:
        if opt.type is bool:
            if item.lower() not in ("true", "false"):
                raise ValueError(f"{field}: {item!r} is not one of ['true', 'false']")
            return [item.lower() == "true"]
        raw = [item] if opt.type is str else _numbers(field, item, opt.type is int)
        return [opt.check(field, round(v, 12) if opt.type is float else v) for v in raw]
    return values


def _field_parser(field: str) -> Callable[[str], list[Any]]:
    """Values of one item of an axis over a RunSpec field."""
    def values(item: str) -> list[Any]:
        if field in CHOICE_FIELDS:
            allowed = CHOICE_FIELDS[field]()
            if item not in allowed:
                raise ValueError(f"{field}: {item!r} is not one of {list(allowed)}")
            return [item]
        integer = field in INT_FIELDS
        return [v if integer else round(v, 10) for v in _numbers(field, item, integer)]
    return values


def parse_axis(field: str, text: str, solver: str | None = None) -> list[Any]:
    """The values of one axis; raises ValueError naming the field, the bad item and what is allowed.
    ``solver``: the base configuration's solver, whose options ``solver_options.<name>`` axes sweep."""
    if field.startswith(OPTION_PREFIX):
        parse, example = _option_parser(field, solver), "'0-1 [5]' or 'iid, brownian'"
    elif field in SWEEPABLE:
        parse, example = _field_parser(field), "'1-10', '1-10 (+2)', 'euler, heun'"
    else:
        raise ValueError(f"axis field={field!r} is not sweepable; allowed: {list(sweepable(solver))}")
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"{field}: no values given (e.g. {example})")
    values = [v for item in items for v in parse(item)]
    if len(values) > MAX_AXIS_VALUES:
        raise ValueError(f"{field}: {len(values)} values; at most {MAX_AXIS_VALUES} per axis")
    return list(dict.fromkeys(values))  # de-duplicated, order kept
