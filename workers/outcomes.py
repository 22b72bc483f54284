"""The results channel: how a finished run travels from any worker, on any machine, to the one store writer.

A worker pushes its outcome (status + RunResult JSON) onto the Redis list ``fastdiff:results`` in
the same Lua call that sets the run's ``finished`` marker, so a run's outcome is pushed at most once
however often its task is redelivered, and never lost between "marked" and "pushed". The collector
moves each item to ``fastdiff:results:processing`` (BLMOVE), writes it to the store, then removes
it: a collector killed in between finds it there on restart (the store write is idempotent).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import redis

RESULTS = "fastdiff:results"
PROCESSING = "fastdiff:results:processing"
MARKER_TTL_S = 30 * 24 * 3600

_FINISH = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def finished_key(run_id: str) -> str:
    return f"fastdiff:finished:{run_id}"


def cancelled_key(run_id: str) -> str:
    return f"fastdiff:cancelled:{run_id}"


def finish(r: redis.Redis, run_id: str, status: str, result: dict[str, Any] | None = None,
           error: str | None = None, worker: str | None = None) -> bool:
    """Push the run's outcome unless one was already pushed. True if this call pushed it."""
    item = json.dumps({"run_id": run_id, "status": status, "result": result, "error": error,
                       "worker": worker or socket.gethostname()})
    return bool(r.eval(_FINISH, 2, finished_key(run_id), RESULTS, item, status, MARKER_TTL_S))


def is_finished(r: redis.Redis, run_id: str) -> bool:
    return bool(r.exists(finished_key(run_id)))


def request_cancel(r: redis.Redis, run_id: str) -> bool:
    """Flag the run as cancelled and push a 'cancelled' outcome; False if it had already finished."""
    r.set(cancelled_key(run_id), 1, ex=MARKER_TTL_S)
    return finish(r, run_id, "cancelled", error="cancelled by user", worker="client")


def is_cancelled(r: redis.Redis, run_id: str) -> bool:
    return bool(r.exists(cancelled_key(run_id)))
