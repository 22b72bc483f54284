"""The validation layer's two checkers, torch-free: ``Option`` for a flat field (RunSpec's own fields, the
options of solvers, grids, worlds, speed-ups and training configs) and ``check_declared`` for a nested
JSON record declared as JSON schema (the service's messages, a RunResult, the store's records).

A registry entry declares its options as ``Option``s; ``validate_options`` checks a user's dict
against them where it enters (RunSpec, CLI, dashboard) and raises ValueError naming the field,
the value and what is allowed. Nothing is silently remapped or clipped. ``Option.json_schema`` states
the same declaration as JSON schema (the schema published for API users, ``fastdiff_core.schema``);
a record's declaration *is* JSON schema, published as written (docs/schema/messages.schema.json).
What counts as the validation layer, and why the remaining ``raise ValueError`` are guards: docs/schema.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class Entry:
    """A registry entry that is declared by its description and its option schema (a grid, a world): the name
    RunSpec, the command line and the pages speak, a title, a line of what it is, and its options."""

    name: str
    title: str
    doc: str
    options: Mapping[str, Option] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------
# Nested JSON records declared as JSON schema (a subset: the keywords below, nothing else)
# ---------------------------------------------------------------------------------------------

_TYPES = {"object": (Mapping,), "array": (list,), "string": (str,), "null": (type(None),), "boolean": (bool,),
          "number": (int, float), "integer": (int,)}
_ANNOTATIONS = {"description", "title", "contentMediaType", "contentSchema"}
_CHECKED = {"type", "pattern", "enum", "maxLength", "minItems", "maxItems", "prefixItems", "items", "required",
            "properties", "additionalProperties", "propertyNames", "minimum"}
_KNOWN = frozenset(_CHECKED | _ANNOTATIONS)
_TYPE_ONLY = frozenset({"type"} | _ANNOTATIONS)
# Python types that are that JSON type as they are (anything else, a subclass included, is checked one by one)
_EXACT = {"object": {dict}, "array": {list}, "string": {str}, "null": {type(None)}, "boolean": {bool},
          "number": {int, float}, "integer": {int}}


def shown(value: Any) -> str:
    """``value`` for an error message: its repr, cut short (a 10 MB field must not make a 10 MB message)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _is(value: Any, kind: str) -> bool:
    """JSON schema's type test (a bool is no number); "integer" takes Python ints only (10.0 is refused)."""
    return isinstance(value, _TYPES[kind]) and (kind == "boolean" or not isinstance(value, bool))


def _anchored(pattern: str) -> str:
    """A declared pattern without its anchors (checked with fullmatch: Python's ``$`` also matches before
    a final newline, JSON schema's does not; the declarations also bound the length, so a validator built on
    Python's re agrees); every declared pattern is anchored at both ends."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern {pattern!r} must be anchored at both ends (^...$)")
    return pattern[1:-1]


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str, value: Any) -> str:
    """'path=value' for a message ('value' alone for a record checked from its top, path "")."""
    return f"{path}={shown(value)}" if path else shown(value)


def _what(schema: Mapping[str, Any]) -> str:
    return schema.get("description") or schema.get("type") or f"one of {schema.get('enum')}"


def check_declared(schema: Mapping[str, Any], value: Any, path: str) -> Any:
    """``value`` if it is what ``schema`` declares, else ValueError naming ``path``, the value and what is
    allowed. ``schema`` uses only the keywords this function checks (a declaration with another fails), so
    a published declaration cannot state a rule that is not checked. (Cheap when the value is good: the
    collector checks every RunResult with it, sample rows included.)"""
    if not schema.keys() <= _KNOWN:
        unknown = sorted(set(schema) - _KNOWN)
        raise ValueError(f"the declaration of {path} uses {unknown}, which check_declared() does not check")
    kinds = schema.get("type")
    if kinds is not None and not (_is(value, kinds) if isinstance(kinds, str) else any(_is(value, k) for k in kinds)):
        raise ValueError(f"{_where(path, value)} is not {_what(schema)}")
    if "enum" in schema and not any(v == value and isinstance(v, bool) == isinstance(value, bool)
                                    for v in schema["enum"]):  # JSON: true is not 1
        raise ValueError(f"{_where(path, value)} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.fullmatch(_anchored(schema["pattern"]), value, re.ASCII):
            raise ValueError(f"{_where(path, value)} is not {_what(schema)}")
        if len(value) > schema.get("maxLength", len(value)):
            raise ValueError(f"{_where(path, value)} has {len(value):,} characters; at most {schema['maxLength']:,} "
                             "are allowed")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{_where(path, value)} is not {_what(schema)}")
    elif isinstance(value, list):
        _check_items(schema, value, path)
    elif isinstance(value, Mapping):
        _check_properties(schema, value, path)
    return value


def _check_items(schema: Mapping[str, Any], value: list, path: str) -> None:
    if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
        raise ValueError(f"{_where(path, value)} must be {_what(schema)}")
    prefix, items = schema.get("prefixItems", []), schema.get("items")
    if not prefix and items is not None and items.keys() <= _TYPE_ONLY and isinstance(items.get("type"), str) \
            and set(map(type, value)) <= _EXACT[items["type"]]:
        return  # a list of plain values of the declared type (a sample row): no call per value
    for i, item in enumerate(value):
        if i < len(prefix) or items is not None:
            check_declared(prefix[i] if i < len(prefix) else items, item, f"{path}[{i}]")


def _check_properties(schema: Mapping[str, Any], value: Mapping, path: str) -> None:
    props, more = schema.get("properties", {}), schema.get("additionalProperties", True)
    missing = [k for k in schema.get("required", []) if k not in value]
    extra = [k for k in value if k not in props] if more is False else []
    if missing or extra:
        raise ValueError(f"{_where(path, value)} is not {_what(schema)}: "
                         + ", ".join([*(f"{k!r} missing" for k in missing), *(f"{k!r} unknown" for k in extra)]))
    if "propertyNames" in schema:
        for k in value:
            check_declared(schema["propertyNames"], k, f"{path} key")
    for k, sub in props.items():
        if k in value:
            check_declared(sub, value[k], _at(path, k))
    if isinstance(more, Mapping):
        for k, v in value.items():
            if k not in props:
                check_declared(more, v, f"{path}[{shown(k)}]")
