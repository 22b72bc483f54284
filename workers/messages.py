"""The service's messages, declared once as JSON schema: what the client sends (the ``fastdiff.run`` and
``fastdiff.batch`` tasks' arguments) and what a worker pushes (its outcome, on the results channel).

The declarations are checked where the messages are read (``check``: a ValueError naming the field, the
value and what is allowed) and published for API users (``messages_schema``, docs/schema/). ``check``
reads only the keywords these declarations use and refuses a declaration with any other, so the
published schema cannot state a rule the service does not check. The RunSpec inside a message is JSON
text checked by RunSpec itself (docs/schema/runspec.schema.json); the RunResult inside an outcome by
``store.records.check_result`` where the collector stores it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from store import ids
from store.records import FINAL_STATUSES, MAX_ERROR, MAX_LABEL

MAX_BATCH = 16  # runs per sweep batch (workers.fairqueue cuts sweeps into batches of at most this many)
SCHEMA_ID = "https://fastdiff.invalid/schema/messages.schema.json"


def id_schema(kind: str) -> dict[str, Any]:
    """A run, experiment or sweep id (``store.ids``: its kind letter and 12 lowercase hex digits)."""
    letter = ids.KINDS[kind]
    return {"type": "string", "pattern": f"^{letter}[0-9a-f]{{12}}$", "maxLength": 13,
            "description": f"a valid {kind.replace('_', ' ')}: {letter!r} and 12 lowercase hex digits"}


SPEC_JSON = {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"$ref": "runspec.schema.json"},
             "description": "a RunSpec as JSON text (a spec the worker refuses is that run's failure)"}
RUN_PAIR = {"type": "array", "prefixItems": [id_schema("run_id"), SPEC_JSON], "minItems": 2, "maxItems": 2,
            "description": "[run_id, spec_json]"}
BATCH = {
    "type": "object", "additionalProperties": False, "required": ["batch_id", "exp_id", "runs"],
    "description": "a sweep's batch {batch_id, exp_id, runs}",
    "properties": {
        "batch_id": {"type": "string", "pattern": "^b[0-9a-f]{12}$", "maxLength": 13,
                     "description": "'b' and 12 lowercase hex digits"},
        "exp_id": id_schema("exp_id"),
        "runs": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": RUN_PAIR,
                 "description": f"1 to {MAX_BATCH} [run_id, spec_json] pairs"},
    },
}
MESSAGES: dict[str, dict[str, Any]] = {
    "run_task": {**RUN_PAIR, "description": "the fastdiff.run task's arguments: [run_id, spec_json]"},
    "batch_task": {"type": "array", "prefixItems": [BATCH], "minItems": 1, "maxItems": 1,
                   "description": "the fastdiff.batch task's arguments: [batch]"},
    "outcome": {
        "type": "object", "additionalProperties": False, "required": ["run_id", "status"],
        "description": "a run's outcome on the results channel {run_id, status, result, error, worker}",
        "properties": {
            "run_id": id_schema("run_id"),
            "status": {"enum": list(FINAL_STATUSES)},
            "result": {"type": ["object", "null"], "description": "the RunResult (fastdiff_core.spec.RunResult."
                       "to_dict) of a done run; checked field by field by store.records.check_result"},
            "error": {"type": ["string", "null"], "maxLength": MAX_ERROR},
            "worker": {"type": ["string", "null"], "maxLength": MAX_LABEL},
        },
    },
}

_TYPES = {"object": Mapping, "array": list, "string": str, "null": type(None)}
_ANNOTATIONS = {"description", "title", "contentMediaType", "contentSchema"}
_CHECKED = {"type", "pattern", "enum", "maxLength", "minItems", "maxItems", "prefixItems", "items", "required",
            "properties", "additionalProperties"}


def _anchored(pattern: str) -> str:
    """A declared pattern without its anchors (checked with fullmatch: Python's ``$`` also matches before
    a final newline, JSON schema's does not; the declarations also bound the length, so a validator built on
    Python's re agrees); every declared pattern is anchored at both ends."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern {pattern!r} must be anchored at both ends (^...$)")
    return pattern[1:-1]


def check(schema: Mapping[str, Any], value: Any, path: str) -> Any:
    """``value`` if it is what ``schema`` declares, else ValueError naming ``path``, the value and what is
    allowed. ``schema`` uses only the keywords this function checks (a declaration with another fails)."""
    unknown = set(schema) - _CHECKED - _ANNOTATIONS
    if unknown:
        raise ValueError(f"the declaration of {path} uses {sorted(unknown)}, which check() does not check")
    what = schema.get("description") or schema.get("type") or f"one of {schema.get('enum')}"
    kinds = [schema["type"]] if isinstance(schema.get("type"), str) else schema.get("type", [])
    if kinds and not any(isinstance(value, _TYPES[k]) for k in kinds):
        raise ValueError(f"{path}={ids.shown(value)} is not {what}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}={ids.shown(value)} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.fullmatch(_anchored(schema["pattern"]), value, re.ASCII):
            raise ValueError(f"{path}={ids.shown(value)} is not {what}")
        if len(value) > schema.get("maxLength", len(value)):
            raise ValueError(f"{path} has {len(value):,} characters; at most {schema['maxLength']:,} are allowed")
    elif isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise ValueError(f"{path}={ids.shown(value)} must be {what}")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix) or "items" in schema:
                check(prefix[i] if i < len(prefix) else schema["items"], item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        props = schema.get("properties", {})
        missing = [k for k in schema.get("required", []) if k not in value]
        extra = [k for k in value if k not in props] if schema.get("additionalProperties") is False else []
        if missing or extra:
            raise ValueError(f"{path}={ids.shown(value)} is not {what}: "
                             + ", ".join([*(f"{k!r} missing" for k in missing), *(f"{k!r} unknown" for k in extra)]))
        for k, sub in props.items():
            if k in value:
                check(sub, value[k], f"{path}.{k}")
    return value


def messages_schema() -> dict[str, Any]:
    """The published JSON schema of the service's messages (draft 2020-12), one definition per message."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "fastdiff service messages",
            "description": "What the client sends (Celery tasks fastdiff.run and fastdiff.batch, JSON serialised) "
                           "and what a worker pushes on the results channel. Validate one message against "
                           "{\"$ref\": \"messages.schema.json#/$defs/<name>\"}.",
            "$defs": MESSAGES}
