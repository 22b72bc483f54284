"""Option schemas for registries (solvers, grids, worlds, students) and RunSpec's own fields, torch-free.

A registry entry declares its options as ``Option``s; ``validate_options`` checks a user's dict
against them where it enters (RunSpec, CLI, dashboard) and raises ValueError naming the field,
the value and what is allowed. Nothing is silently remapped or clipped. ``Option.json_schema`` states
the same declaration as JSON schema (the schema published for API users, ``fastdiff_core.schema``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Option:
    """One option of a registry entry: its type, default, and allowed values or range."""

    type: type
    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    nullable: bool = False
    max_inclusive: bool = True
    max_length: int | None = None  # strings: at most this many characters

    def allowed(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        lo = "-inf" if self.min is None else repr(self.min)
        hi = "inf" if self.max is None else repr(self.max)
        br = "[" if self.min_inclusive else "("
        ket = "]" if self.max_inclusive else ")"
        kind = {int: "an integer", float: "a number", bool: "a boolean"}.get(self.type, f"a {self.type.__name__}")
        return f"{kind} in {br}{lo}, {hi}{ket}" + (" or null" if self.nullable else "")

    def check(self, field: str, value: Any) -> Any:
        """Return the value (ints accepted for floats) or raise ValueError naming ``field``."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{field}=None is not allowed; expected {self.allowed()}")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is int and isinstance(value, bool) or not isinstance(value, self.type):
            raise ValueError(f"{field}={value!r} has type {type(value).__name__}; expected {self.allowed()}")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"{field} has {len(value)} characters; at most {self.max_length} are allowed")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{field}={value!r} is not allowed; expected {self.allowed()}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field}={value!r} is not finite; expected {self.allowed()}")
            too_low = self.min is not None and (value < self.min if self.min_inclusive else value <= self.min)
            too_high = self.max is not None and (value > self.max if self.max_inclusive else value >= self.max)
            if too_low or too_high:
                raise ValueError(f"{field}={value!r} is out of range; expected {self.allowed()}")
        return value

    def json_schema(self, choices: tuple[Any, ...] | None = None) -> dict[str, Any]:
        """This option as a JSON-schema property (``choices`` overrides ``self.choices``: names read live)."""
        kind = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array"}[self.type]
        out: dict[str, Any] = {"type": [kind, "null"] if self.nullable else kind}
        if self.doc:
            out["description"] = self.doc
        if self.default is not None or self.nullable:
            out["default"] = self.default
        choices = self.choices if choices is None else choices
        if choices is not None:
            out["enum"] = [*choices, *([None] if self.nullable else [])]
        if self.min is not None:
            out["minimum" if self.min_inclusive else "exclusiveMinimum"] = self.min
        if self.max is not None:
            out["maximum" if self.max_inclusive else "exclusiveMaximum"] = self.max
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.__name__, "default": self.default, "doc": self.doc,
            "choices": list(self.choices) if self.choices is not None else None,
            "min": self.min, "max": self.max, "nullable": self.nullable,
        }


def validate_options(field: str, given: Mapping[str, Any], schema: Mapping[str, Option]) -> dict[str, Any]:
    """Merge ``given`` over the schema's defaults; unknown keys and bad values raise ValueError."""
    if not isinstance(given, Mapping):
        raise ValueError(f"{field}={given!r} must be an object mapping option names to values")
    unknown = sorted(set(given) - set(schema))
    if unknown:
        allowed = sorted(schema) or "none"
        raise ValueError(f"{field} has unknown option(s) {unknown}; allowed: {allowed}")
    out = {k: opt.default for k, opt in schema.items()}
    for k, v in given.items():
        out[k] = schema[k].check(f"{field}.{k}", v)
    return out
