"""The project's record of dispatched runs, and the fair queue in front of Celery. Imports no torch.

Two kinds of submission (``workers.client``):

- **interactive**: one run (Explore's Run button). Sent straight to the broker at Celery priority 0,
  which every worker polls before anything else (kombu's Redis transport keeps one list per priority
  step and BRPOPs them in order), so it never waits behind a sweep's queued runs: at most behind the
  run each worker process is executing (a batch yields between runs when one is waiting).
- **sweep** (several runs): grouped into batches of up to ``MAX_BATCH`` runs and kept in the
  experiment's *lane* ``fastdiff:q:lane:<exp_id>`` in Redis; the *ring* ``fastdiff:q:ring`` lists the
  lanes with work. ``dispatch`` moves batches to the broker (priority 9) one lane at a time, round
  robin, only while fewer than ``capacity`` sweep batches wait there (the live worker processes): so
  sweeps of different users and experiments share the workers batch by batch, and a sweep submitted
  later starts within about one batch per process.

A queued run's record ``fastdiff:q:run:<run_id>`` (a hash: exp_id, owner, kind, submitted; then
state=running, worker, device, started, and progress) is written at submission (a sweep's in the
same transaction as its lane; an interactive run's right after its message is sent, so the run does
not wait for it, and never for a run that already has an outcome), updated by the worker, and
deleted by the same Lua call that pushes the run's outcome (``workers.outcomes.finish``). Everything lives in the broker's Redis, whose append-only
file is fsynced on every write: a queued run survives a broker restart, in a lane or in the broker's
queue alike. A batch taken from a lane and lost before it reaches the broker (its dispatcher died
in between) is found by the collector's reconciliation (``held_run_ids`` knows lanes and batches).
"""

from __future__ import annotations

import base64
import json
import math
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis

from store import ids
from workers import messages
from workers.messages import MAX_BATCH

QUEUE = "fastdiff"  # Celery's queue (workers.celery_app.QUEUE); kombu's key for priority 0
UNACKED = "unacked"  # kombu's Redis transport: delivery tag -> JSON [message, exchange, routing key]
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: key of priority p > 0 is f"{queue}{sep}{p}"
INTERACTIVE_PRIORITY = 0
SWEEP_PRIORITY = 9
SWEEP_KEY = f"{QUEUE}{PRIORITY_SEP}{SWEEP_PRIORITY}"
RING = "fastdiff:q:ring"
RECENT = "fastdiff:q:recent"  # wall seconds of the newest runs (for the estimated start)
RECENT_KEEP = 200
RECORD_TTL_S = 30 * 24 * 3600
# The run ids that have a record (a set, kept by every script that writes or deletes one): what the
# queue view lists instead of SCANning the broker's keyspace, which every run's markers grow (1.2 s at
# 200,000 keys). A record that expired leaves its id behind until the next listing drops it.
RECORDS = "fastdiff:q:records"
BATCH_PARTS = 8  # a sweep is cut into at least this many batches (when it has as many runs)
BATCH_TASK = "fastdiff.batch"
BATCH_BUDGET_S = 0.5  # a batch hands its unstarted runs back to its lane after running this long


def lane_key(exp_id: str) -> str:
    return f"fastdiff:q:lane:{ids.check(exp_id, 'exp_id')}"


def record_key(run_id: str) -> str:
    return f"fastdiff:q:run:{ids.check(run_id, 'run_id')}"


def batch_size(n_runs: int) -> int:
    """Runs per batch for a sweep of ``n_runs``: at least ``BATCH_PARTS`` batches, at most ``MAX_BATCH``
    runs each. A batch also yields (``yield_rest``) once it has run ``BATCH_BUDGET_S``."""
    return max(1, min(MAX_BATCH, math.ceil(n_runs / BATCH_PARTS)))


def new_batches(exp_id: str, runs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Cut (run_id, spec_json) pairs into batch payloads {batch_id, exp_id, runs: [[run_id, spec_json]]}."""
    size = batch_size(len(runs))
    return [{"batch_id": f"b{uuid.uuid4().hex[:12]}", "exp_id": exp_id, "runs": [list(x) for x in runs[i:i + size]]}
            for i in range(0, len(runs), size)]


def check_batch(batch: Any) -> dict[str, Any]:
    """A batch payload from a task message or a lane, checked against its declaration
    (``workers.messages.BATCH``); ValueError naming what is wrong."""
    return messages.check(messages.BATCH, batch, "batch")


def record_fields(exp_id: str, owner: str, kind: str, submitted: float) -> dict[str, str]:
    return {"exp_id": exp_id, "owner": owner, "kind": kind, "submitted": repr(submitted)}


def enqueue_sweep(r: redis.Redis, exp_id: str, owner: str, runs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Put a sweep's runs in its lane (as batches) and the lane in the ring, with every run's record,
    in one transaction; returns the batches."""
    batches = new_batches(exp_id, runs)
    fields = record_fields(exp_id, owner, "sweep", time.time())
    with r.pipeline(transaction=True) as p:
        for run_id, _ in runs:
            p.hset(record_key(run_id), mapping=fields)
            p.expire(record_key(run_id), RECORD_TTL_S)
        p.sadd(RECORDS, *[run_id for run_id, _ in runs])
        p.rpush(lane_key(exp_id), *[json.dumps(b) for b in batches])
        p.lrem(RING, 0, exp_id)
        p.rpush(RING, exp_id)
        p.execute()
    return batches


# KEYS: the run's record, its finished marker, RECORDS. ARGV: TTL, run id, then field, value pairs.
_RECORD_UNLESS_FINISHED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""


def record_interactive(r: redis.Redis, run_id: str, exp_id: str, owner: str, finished_marker: str) -> bool:
    """Write an interactive run's record unless the run already has an outcome (``finished_marker``,
    ``workers.outcomes.finished_key``); True if written. The client writes it right after sending the
    run, not before: the worker does not wait for it, and a worker that starts or even finishes the
    run first is handled (its 'running' fields are kept; a finished run gets no record back)."""
    fields = record_fields(exp_id, owner, "interactive", time.time())
    args = [x for kv in fields.items() for x in kv]
    return bool(r.eval(_RECORD_UNLESS_FINISHED, 3, record_key(run_id), finished_marker, RECORDS, RECORD_TTL_S,
                       run_id, *args))


# Take the next lane's first batch if fewer than the live worker processes' count of sweep batches
# wait in the broker: rotate the ring (its head goes to its tail), pop the batch, and drop the lane
# from the ring once it is empty. One atomic round trip, so dispatchers in several processes never
# take the same batch and a dispatch with nothing to do costs one call.
# KEYS: ring, the broker's sweep list, nodes (zset name -> expiry), slots (hash name -> processes).
# ARGV: lane key prefix, now (unix seconds), slots override ('' = count the live nodes').
_NEXT = """
if redis.call('LLEN', KEYS[1]) == 0 then return false end
local slots = tonumber(ARGV[3])
if not slots then
  slots = 0
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[2], '+inf')) do
    slots = slots + (tonumber(redis.call('HGET', KEYS[4], name)) or 1)
  end
  if slots < 1 then slots = 1 end
end
if redis.call('LLEN', KEYS[2]) >= slots then return false end
for _ = 1, redis.call('LLEN', KEYS[1]) do
  local exp = redis.call('LMOVE', KEYS[1], KEYS[1], 'LEFT', 'RIGHT')
  local lane = ARGV[1] .. exp
  local batch = redis.call('LPOP', lane)
  if redis.call('LLEN', lane) == 0 then redis.call('LREM', KEYS[1], 0, exp) end
  if batch then return batch end
end
return false
"""
LANE_PREFIX = "fastdiff:q:lane:"
NODES = "fastdiff:q:nodes"  # worker node -> when its heartbeat expires (zset)
SLOTS = "fastdiff:q:slots"  # worker node -> its processes (hash)


def note_node(p: redis.client.Pipeline, name: str, slots: int, ttl_s: float) -> None:
    """Queue (on pipeline ``p``) that node ``name`` runs ``slots`` processes for the next ``ttl_s``."""
    now = time.time()
    p.zadd(NODES, {name: now + ttl_s})
    p.hset(SLOTS, name, slots)
    p.zremrangebyscore(NODES, "-inf", now - 3600)  # nodes gone for an hour


def forget_node(p: redis.client.Pipeline, name: str) -> None:
    p.zrem(NODES, name)
    p.hdel(SLOTS, name)


def capacity(r: redis.Redis) -> int:
    """Worker processes of the live nodes (each node writes its count with its heartbeat); at least 1."""
    names = r.zrangebyscore(NODES, time.time(), "+inf")
    return max(1, sum(int(v) for v in (r.hmget(SLOTS, names) if names else []) if v is not None))


def dispatch(r: redis.Redis, send: Callable[[dict[str, Any]], None], slots: int | None = None) -> int:
    """Move batches from the lanes to the broker, round robin over lanes, until ``slots`` (default:
    the live worker processes) sweep batches wait there or the lanes are empty. Returns how many were sent."""
    sent = 0
    while True:
        raw = r.eval(_NEXT, 4, RING, SWEEP_KEY, NODES, SLOTS, LANE_PREFIX, repr(time.time()),
                     "" if slots is None else str(slots))
        if raw is None:
            return sent
        send(json.loads(raw))
        sent += 1


# Hand a batch's unstarted runs back to the front of its lane (and the lane to the ring's tail).
_YIELD = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LREM', KEYS[2], 0, ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


def yield_rest(r: redis.Redis, batch: dict[str, Any], rest: list[list[str]]) -> dict[str, Any]:
    """Put ``rest`` (runs of ``batch`` not started) back at the front of the batch's lane as a new batch."""
    again = {"batch_id": f"b{uuid.uuid4().hex[:12]}", "exp_id": batch["exp_id"], "runs": rest}
    r.eval(_YIELD, 2, lane_key(batch["exp_id"]), RING, json.dumps(again), batch["exp_id"])
    return again


def interactive_waiting(r: redis.Redis) -> bool:
    return bool(r.llen(QUEUE))


# ---------------------------------------------------------------------------------------------
# what the broker holds, and in which order it will serve it
# ---------------------------------------------------------------------------------------------

def message_run_ids(message: dict[str, Any]) -> list[str]:
    """Run ids a Celery task message carries: its task id for a run, the runs of a batch."""
    headers = message.get("headers") or {}
    if headers.get("task") != BATCH_TASK:
        return [headers["id"]] if isinstance(headers.get("id"), str) else []
    try:
        args = json.loads(base64.b64decode(message["body"]))[0]
        return [rid for rid, _ in check_batch(args[0])["runs"]]
    except (ValueError, KeyError, TypeError, IndexError):
        return []


def raw_run_ids(raw: bytes, unacked: bool = False) -> list[str]:
    try:
        msg = json.loads(raw)
        return message_run_ids(msg[0] if unacked else msg)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return []


def _lane_ids(raw: bytes) -> list[str]:
    try:
        return [rid for rid, _ in check_batch(json.loads(raw))["runs"]]
    except (ValueError, TypeError):
        return []


def service_order(r: redis.Redis) -> list[str]:
    """Run ids not yet delivered to a worker, in the order the workers will take them: interactive
    messages, sweep batches already in the broker, then the lanes round robin from the ring's head."""
    order: list[str] = []
    for key in (QUEUE, SWEEP_KEY):
        for raw in reversed(r.lrange(key, 0, -1)):  # kombu pops from the right
            order += raw_run_ids(raw)
    ring, lanes = _lanes(r)
    while any(lanes.values()):
        for e in ring:
            if lanes[e]:
                order += lanes[e].pop(0)
    return order


def _lanes(r: redis.Redis) -> tuple[list[str], dict[str, list[list[str]]]]:
    """(the ring, head first; each of its lanes' batches as run ids, front first), the lanes read in one
    round trip. Every script that fills a lane puts it in the ring in the same atomic step
    (``enqueue_sweep``, ``_YIELD``) and a lane leaves the ring only once ``_NEXT`` has emptied it, so the
    ring names every lane with work; never a SCAN of the broker's keyspace, which every run's markers
    grow (1.4 s at 200,000 keys)."""
    ring = [e.decode() for e in r.lrange(RING, 0, -1)]
    names = list(dict.fromkeys(ring))
    with r.pipeline(transaction=False) as p:
        for exp_id in names:
            p.lrange(LANE_PREFIX + exp_id, 0, -1)
        lanes = p.execute()
    return ring, {e: [_lane_ids(raw) for raw in lane] for e, lane in zip(names, lanes)}


def lane_run_ids(r: redis.Redis) -> set[str]:
    """Run ids waiting in lanes (``_lanes``)."""
    return {rid for batches in _lanes(r)[1].values() for batch in batches for rid in batch}


def dispatched_run_ids(r: redis.Redis) -> set[str]:
    """Run ids a worker has taken from the broker (delivered, not yet acknowledged): a run's own
    message, or every run of a batch a worker is executing."""
    out: set[str] = set()
    for raw in r.hvals(UNACKED):
        out.update(raw_run_ids(raw, unacked=True))
    return out


def recent_seconds(r: redis.Redis) -> float | None:
    """Median wall time of the newest runs (None before any)."""
    vals = [float(v) for v in r.lrange(RECENT, 0, -1)]
    return statistics.median(vals) if vals else None


def _records(r: redis.Redis, run_ids: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """Run id -> record, of ``run_ids`` or (None) of every run listed in ``RECORDS``; listed ids whose
    record is gone (expired) leave the list."""
    listed = run_ids is None
    wanted = [x.decode() for x in r.smembers(RECORDS)] if listed else list(run_ids)
    wanted = [x for x in wanted if ids.is_id(x, "run_id")]
    with r.pipeline(transaction=False) as p:
        for x in wanted:
            p.hgetall(record_key(x))
        got = p.execute()
    gone = [x for x, h in zip(wanted, got) if not h]
    if listed and gone:
        r.srem(RECORDS, *gone)
    return {x: {a.decode(): b.decode() for a, b in h.items()} for x, h in zip(wanted, got) if h}


def snapshot(r: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Every queued and running run across all users: run_id, exp_id, owner, kind, state
    ('running'; 'dispatched': taken by a worker, not started yet (a run whose batch is executing
    another run, or a message the worker is just unpacking); 'queued'), position (1 = next; None
    unless queued), est_start_s (seconds from now, ``start_estimates``; None before any run finished),
    worker, started, done, total. Running first, then dispatched, then queued in service order."""
    now = time.time() if now is None else now
    records = _records(r)
    order = [x for x in service_order(r) if x in records and records[x].get("state") != "running"]
    position = {x: i for i, x in enumerate(dict.fromkeys(order))}
    taken = dispatched_run_ids(r) - set(position)  # (a redelivered message is queued again: its position wins)
    rows = []
    for run_id, rec in records.items():
        state = "running" if rec.get("state") == "running" else "dispatched" if run_id in taken else "queued"
        pos = position.get(run_id) if state == "queued" else None
        rows.append({"run_id": run_id, "exp_id": rec.get("exp_id"), "owner": rec.get("owner"),
                     "kind": rec.get("kind"), "state": state,
                     "position": None if pos is None else pos + 1, "est_start_s": None,
                     "worker": rec.get("worker"), "started": float(rec["started"]) if "started" in rec else None,
                     "submitted": float(rec["submitted"]) if "submitted" in rec else None,
                     "done": int(rec["done"]) if "done" in rec else None,
                     "total": int(rec["total"]) if "total" in rec else None})
    rank = {"running": 0, "dispatched": 1, "queued": 2}
    rows.sort(key=lambda x: (rank[x["state"]], x["position"] if x["position"] is not None else math.inf,
                             x["submitted"] or 0.0))
    starts = start_estimates(rows, recent_seconds(r), capacity(r), now)
    for row, est in zip(rows, starts):
        row["est_start_s"] = est
    return rows


def remaining_seconds(row: dict[str, Any], per_run: float, now: float) -> float:
    """A running run's seconds left: extrapolated from its progress (elapsed x left / done) once it has
    reported some, else the typical run's time less what it has already run (never below 0)."""
    started, done, total = row.get("started"), row.get("done"), row.get("total")
    elapsed = max(now - started, 0.0) if started is not None else 0.0
    if started is not None and done and total and 0 < done <= total:
        return elapsed * (total - done) / done
    return max(per_run - elapsed, 0.0)


def start_estimates(rows: list[dict[str, Any]], per_run: float | None, slots: int,
                    now: float) -> list[float | None]:
    """Each row's estimated start in seconds from now (None unless queued, or before any run finished), by
    list scheduling over the worker processes: each process is free when its running run is done (its
    progress extrapolated); the dispatched runs, then the queued ones in service order, each take the
    process free first and hold it for the median of the newest runs' wall time (``per_run``). ``rows``
    are ``snapshot``'s, in its order."""
    if per_run is None:
        return [None] * len(rows)
    running = [remaining_seconds(x, per_run, now) for x in rows if x["state"] == "running"]
    free = sorted(running + [0.0] * max(slots - len(running), 0))
    out: list[float | None] = []
    for row in rows:
        if row["state"] == "running":
            out.append(None)
            continue
        start = free.pop(0)
        free.append(start + per_run)
        free.sort()
        out.append(start if row["state"] == "queued" else None)
    return out


def record(r: redis.Redis, run_id: str) -> dict[str, str]:
    """The run's record (empty when it has none: finished, or submitted before records existed)."""
    return _records(r, [run_id]).get(run_id, {})
