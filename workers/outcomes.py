"""The results channel: how a finished run travels from any worker, on any machine, to the one store writer.

A worker pushes its outcome (status + RunResult JSON) onto the Redis list ``fastdiff:results`` in
the same Lua call that sets the run's ``finished`` marker, so a run's outcome is pushed at most once
however often its task is redelivered, and never lost between "marked" and "pushed". The collector
moves each item to ``fastdiff:results:processing`` (BLMOVE), writes it to the store, then removes
it: a collector killed in between finds it there on restart (the store write is idempotent). An item
the collector cannot store moves, in one transaction, from the processing list to the dead-letter
list ``fastdiff:results:dead`` (newest first, the last ``DEAD_LETTER_KEEP`` kept) with the reason.

Run ids are checked (``store.ids``) before they become Redis keys.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import traceback
from typing import Any

import redis

from store import ids
from workers import fairqueue

RESULTS = "fastdiff:results"
PROCESSING = "fastdiff:results:processing"
DEAD = "fastdiff:results:dead"
STORED_CHANNEL = "fastdiff:stored"  # the collector publishes each run id it stored (``ServiceClient.wait``)
DEAD_LETTER_KEEP = 10_000
MARKER_TTL_S = 30 * 24 * 3600

# KEYS: finished marker, results list, the run's queue record, its attempt counter, recent wall times,
# the records' list. ARGV: item, status, marker TTL, '1' if the caller's attempt ends here, wall seconds
# (or ''), how many wall times to keep, run id.
_FINISH = """
local pushed = 0
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  pushed = 1
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[6], ARGV[7])
if ARGV[4] == '1' then redis.call('DECR', KEYS[4]) end
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[5])
  redis.call('LTRIM', KEYS[5], 0, ARGV[6] - 1)
end
return pushed
"""


def failure_text(e: BaseException) -> str:
    """A failed run's stored error: "Type: message" on the first line (what a page shows,
    ``app.connection.error_headline``), then the traceback (kept in the record, never on a page)."""
    return f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e, limit=5))}"


def finished_key(run_id: str) -> str:
    return f"fastdiff:finished:{ids.check(run_id, 'run_id')}"


def attempt_key(run_id: str) -> str:
    """Attempts at the run that started and have not ended (``workers.supervision.begin_attempt``)."""
    return f"fastdiff:attempt:{run_id}"


def cancelled_key(run_id: str) -> str:
    return f"fastdiff:cancelled:{ids.check(run_id, 'run_id')}"


def dead_letter(r: redis.Redis, raw: bytes, reason: str, processing: str | None = None) -> None:
    """Quarantine ``raw`` with ``reason`` on the dead-letter list (removing it from ``processing`` in
    the same transaction)."""
    entry = json.dumps({"reason": reason, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        "item": raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)})
    with r.pipeline(transaction=True) as p:
        p.lpush(DEAD, entry)
        p.ltrim(DEAD, 0, DEAD_LETTER_KEEP - 1)
        if processing is not None:
            p.lrem(processing, 1, raw)
        p.execute()


def dead_letters(r: redis.Redis, n: int = 100) -> list[dict[str, Any]]:
    """The newest ``n`` quarantined items: {reason, at, item}."""
    return [json.loads(x) for x in r.lrange(DEAD, 0, n - 1)]


def finish(r: redis.Redis, run_id: str, status: str, result: dict[str, Any] | None = None,
           error: str | None = None, worker: str | None = None, *, end_attempt: bool = False,
           wall_s: float | None = None, results: str = RESULTS) -> bool:
    """Push the run's outcome onto ``results`` unless one was already pushed. True if this call pushed it.

    In the same call: the run's queue record is deleted (``workers.fairqueue``); with ``end_attempt``
    the worker's attempt ends (``workers.supervision.begin_attempt``); ``wall_s`` joins the recent
    run times the queue's start estimates use."""
    item = json.dumps({"run_id": run_id, "status": status, "result": result, "error": error,
                       "worker": worker or socket.gethostname()})
    keys = (finished_key(run_id), results, fairqueue.record_key(run_id), attempt_key(run_id), fairqueue.RECENT,
            fairqueue.RECORDS)
    return bool(r.eval(_FINISH, len(keys), *keys, item, status, MARKER_TTL_S, "1" if end_attempt else "0",
                       "" if wall_s is None else f"{wall_s:.6f}", fairqueue.RECENT_KEEP, run_id))


def is_finished(r: redis.Redis, run_id: str) -> bool:
    return bool(r.exists(finished_key(run_id)))


def request_cancel(r: redis.Redis, run_id: str) -> bool:
    """Flag the run as cancelled and push a 'cancelled' outcome; False if it had already finished."""
    r.set(cancelled_key(run_id), 1, ex=MARKER_TTL_S)
    return finish(r, run_id, "cancelled", error="cancelled by user", worker="client")


def is_cancelled(r: redis.Redis, run_id: str) -> bool:
    return bool(r.exists(cancelled_key(run_id)))
