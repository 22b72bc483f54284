"""The service's messages, declared once as JSON schema: what the client sends (the ``fastdiff.run`` and
``fastdiff.batch`` tasks' arguments) and what a worker pushes (its outcome, on the results channel).

The declarations are checked where the messages are read (``check``: a ValueError naming the field, the
value and what is allowed) and published for API users (``messages_schema``, docs/schema/). ``check``
reads only the keywords these declarations use and refuses a declaration with any other, so the
published schema cannot state a rule the service does not check. The RunSpec inside a message is JSON
text checked by RunSpec itself (docs/schema/runspec.schema.json); the RunResult inside an outcome
(``run_result``, declared with the outcome's fields in ``store.records``) by ``store.records.check_result``
where the collector stores it. ``check`` is the validation layer's ``registry.check_declared``.
"""

from __future__ import annotations

from typing import Any

from fastdiff_core.registry import check_declared as check  # noqa: F401 - the one checker (workers.fairqueue)
from store import ids
from store.records import OUTCOME_FIELDS, RESULT

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
        "properties": {"run_id": id_schema("run_id"), **OUTCOME_FIELDS},  # the fields the store keeps, declared once
    },
    "run_result": RESULT,  # an outcome's result: checked where the collector stores it (store.records.check_result)
}


def messages_schema() -> dict[str, Any]:
    """The published JSON schema of the service's messages (draft 2020-12), one definition per message."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "fastdiff service messages",
            "description": "What the client sends (Celery tasks fastdiff.run and fastdiff.batch, JSON serialised) "
                           "and what a worker pushes on the results channel. Validate one message against "
                           "{\"$ref\": \"messages.schema.json#/$defs/<name>\"}.",
            "$defs": MESSAGES}
