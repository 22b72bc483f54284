"""Worker supervision through the broker: node heartbeats, requeueing a dead node's runs, and the death count.

Kombu's Redis transport keeps every delivered, unacknowledged message in the hash ``unacked``
(delivery tag -> [message, exchange, routing key]) with its delivery time in ``unacked_index``, and
gives it back only after the visibility timeout — which must outlast the longest run (an hour), so a
node that dies would hold its runs for that long. Instead each worker node's main process writes
``fastdiff:node:<name>`` every ``heartbeat_s``: the delivery tags it holds (reserved or running),
expiring after ``node_ttl_s`` (3 heartbeats). Any live node, and the collector, then requeues every unacknowledged
message older than ``node_ttl_s`` that no live node claims: a dead node's runs are back in the queue
within ``node_ttl_s`` + one heartbeat. A message requeued by mistake (a live node's claim racing its
ack) is harmless: a run that already has an outcome is acknowledged without running again.

A run whose worker *process* dies (a run that exhausts memory, a kill -9) is redelivered by Celery
at once; ``begin_attempt`` counts the attempts that started and did not end, so the task stores it
as failed after ``max_worker_deaths`` of them instead of redelivering it forever.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from workers import fairqueue, outcomes
from workers.fairqueue import QUEUE, UNACKED
from workers.outcomes import attempt_key

NODE_PREFIX = "fastdiff:node:"
# Every node that heartbeats, by name (score: its last heartbeat, unix seconds): what ``live_claims``
# reads instead of SCANning the keyspace, which every run's markers grow (a SCAN is one round trip per
# ten keys). Whether a listed node is alive is still its key's TTL, counted by the broker's clock.
NODES = "fastdiff:nodes"
NODES_FORGET_S = 3600.0  # a name not heard from for this long leaves the list
UNACKED_INDEX = "unacked_index"  # delivery tag -> delivery time (unix seconds)
ATTEMPT_TTL_S = 30 * 24 * 3600


def node_key(name: str) -> str:
    return NODE_PREFIX + name


def heartbeat(r: redis.Redis, name: str, tags: Iterable[str], ttl_s: float, slots: int | None = None) -> None:
    """Say that node ``name`` is alive and holds the messages ``tags``, for the next ``ttl_s``; with
    ``slots``, how many processes it runs (the fair queue's capacity)."""
    now = time.time()
    with r.pipeline(transaction=False) as p:
        p.set(node_key(name), json.dumps(sorted(tags)), px=int(ttl_s * 1000))
        p.zadd(NODES, {name: now})
        p.zremrangebyscore(NODES, "-inf", now - max(NODES_FORGET_S, 10 * ttl_s))
        if slots is not None:
            fairqueue.note_node(p, name, slots, ttl_s)
        p.execute()


def live_claims(r: redis.Redis) -> tuple[set[str], set[str]]:
    """(names of live nodes, delivery tags they hold): the listed nodes (``NODES``) whose key has not
    expired. Two round trips, whatever the number of keys in the broker."""
    listed = [n.decode() for n in r.zrange(NODES, 0, -1)]
    names, tags = set(), set()
    for name, raw in zip(listed, r.mget([node_key(n) for n in listed]) if listed else []):
        if raw is None:  # expired: the node stopped heartbeating
            continue
        names.add(name)
        try:
            tags.update(json.loads(raw))
        except ValueError:
            pass
    return names, tags


def unlisted_claims(r: redis.Redis) -> set[str]:
    """Delivery tags held by live nodes missing from ``NODES``: nodes of a version before the list, which
    write only their key. A SCAN of the keyspace, so ``requeue_orphans`` makes it only when some message
    is about to go back (a node died, or such a node is running): during a rolling upgrade an old node's
    runs are then never taken for a dead node's and run twice."""
    listed = {n.decode() for n in r.zrange(NODES, 0, -1)}
    tags: set[str] = set()
    for key in r.scan_iter(match=NODE_PREFIX + "*", count=1000):
        if key.decode()[len(NODE_PREFIX):] in listed:
            continue
        raw = r.get(key)
        try:
            tags.update(json.loads(raw) if raw is not None else ())
        except ValueError:
            pass
    return tags


def requeue_orphans(r: redis.Redis, older_than_s: float, now: float | None = None) -> list[str]:
    """Put back in the queue every unacknowledged message older than ``older_than_s`` that no live
    node holds; returns their run ids. Atomic per message (WATCH on the hash, as kombu's own restore),
    so two nodes reaping at once requeue a message once."""
    now = time.time() if now is None else now
    _, claimed = live_claims(r)
    old = [(t.decode(), since) for t, since in r.zrange(UNACKED_INDEX, 0, now - older_than_s, byscore=True,
                                                       withscores=True)]
    if any(tag not in claimed for tag, _ in old):
        claimed |= unlisted_claims(r)
    requeued = []
    for tag, since in old:
        if tag in claimed:
            continue
        run_id: list[str] = []

        def restore(pipe: redis.client.Pipeline, tag: str = tag, run_id: list[str] = run_id) -> None:
            raw = pipe.hget(UNACKED, tag)
            pipe.multi()
            pipe.zrem(UNACKED_INDEX, tag)
            pipe.hdel(UNACKED, tag)
            if raw is None:  # acknowledged (or restored by another node) since we looked
                return
            message = json.loads(raw)[0]
            message["headers"]["redelivered"] = True
            message["properties"]["delivery_info"]["redelivered"] = True
            run_id.extend(fairqueue.message_run_ids(message))
            # Back where it came from (a sweep batch to the sweep priority), at the end kombu pops first.
            sweep = message["properties"].get("priority") == fairqueue.SWEEP_PRIORITY
            pipe.rpush(fairqueue.SWEEP_KEY if sweep else QUEUE, json.dumps(message))

        r.transaction(restore, UNACKED)
        requeued += run_id
    return requeued


class Heartbeat(threading.Thread):
    """A worker node's heartbeat: every ``interval_s``, claim the node's messages and reap dead nodes'."""

    def __init__(self, url: str, name: str, held_tags: Callable[[], set[str]], interval_s: float,
                 ttl_s: float, log: Callable[[str], None], slots: int | None = None):
        super().__init__(name="fastdiff-heartbeat", daemon=True)
        self.r = redis.Redis.from_url(url, socket_timeout=max(1.0, interval_s))
        self.node, self.held_tags, self.interval_s, self.ttl_s, self.log = name, held_tags, interval_s, ttl_s, log
        self.slots = slots
        self.stopped = threading.Event()

    def beat(self) -> list[str]:
        heartbeat(self.r, self.node, self.held_tags(), self.ttl_s, self.slots)
        return requeue_orphans(self.r, older_than_s=self.ttl_s)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                for run_id in self.beat():
                    self.log(f"requeued run {run_id}: its worker node stopped heartbeating")
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # the broker is restarting; the next beat tries again
            self.stopped.wait(self.interval_s)

    def stop(self) -> None:
        self.stopped.set()
        try:
            with self.r.pipeline(transaction=False) as p:
                p.delete(node_key(self.node))
                p.zrem(NODES, self.node)
                fairqueue.forget_node(p, self.node)
                p.execute()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass


def held_run_ids(r: redis.Redis) -> set[str]:
    """Run ids the broker holds: waiting in the queue (alone or in a batch), delivered and not yet
    acknowledged, or waiting in a sweep's lane (``workers.fairqueue``)."""
    ids: set[str] = set()
    for key in (QUEUE, *(f"{QUEUE}{fairqueue.PRIORITY_SEP}{p}" for p in (3, 6, 9))):
        for raw in r.lrange(key, 0, -1):
            ids.update(fairqueue.raw_run_ids(raw))
    return ids | fairqueue.dispatched_run_ids(r) | fairqueue.lane_run_ids(r)


def begin_attempt(r: redis.Redis, run_id: str) -> int:
    """Record that an attempt at ``run_id`` starts; returns how many earlier attempts started and never
    ended (their worker process died)."""
    pipe = r.pipeline()
    pipe.incr(attempt_key(run_id))
    pipe.expire(attempt_key(run_id), ATTEMPT_TTL_S)
    return int(pipe.execute()[0]) - 1


# KEYS: finished marker, cancel flag, attempt counter, queue record, the interactive queue, the records' list.
# ARGV: worker, device, start time, TTL, run id. Returns {finished, cancelled, earlier deaths, interactive waiting}.
_BEGIN = """
local waiting = redis.call('LLEN', KEYS[5])
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0, 0, waiting} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 1, 0, waiting} end
local deaths = redis.call('INCR', KEYS[3]) - 1
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[4], 'state', 'running', 'worker', ARGV[1], 'device', ARGV[2], 'started', ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[6], ARGV[5])
return {0, 0, deaths, waiting}
"""


@dataclass(frozen=True)
class Begun:
    """What a worker learns as it starts a run, in one round trip (``begin_run``)."""

    finished: bool  # the run already has an outcome (a redelivery): do nothing
    cancelled: bool  # the user cancelled it before it started
    deaths: int  # earlier attempts whose worker process died
    interactive_waiting: bool  # an interactive run waits in the broker


def begin_run(r: redis.Redis, run_id: str, worker: str, device: str) -> Begun:
    """Start an attempt at ``run_id`` unless it is finished or cancelled: count the attempt
    (``begin_attempt``) and mark its queue record running, atomically. The attempt ends with
    ``outcomes.finish(..., end_attempt=True)``."""
    return send_begin(r, run_id, worker, device)()


def send_begin(r: redis.Redis, run_id: str, worker: str, device: str) -> Callable[[], Begun]:
    """``begin_run`` in two halves: send it now, read what it found later (the returned function, which
    must be called, once). The run may compute in between, while the broker makes the start durable;
    nothing the run does may leave the process before the answer is read."""
    keys = (outcomes.finished_key(run_id), outcomes.cancelled_key(run_id), attempt_key(run_id),
            fairqueue.record_key(run_id), QUEUE, fairqueue.RECORDS)
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("EVAL", _BEGIN, len(keys), *keys, worker, device, repr(time.time()), ATTEMPT_TTL_S,
                          run_id)
    except BaseException:
        conn.disconnect()
        r.connection_pool.release(conn)
        raise

    def answer() -> Begun:
        try:
            fin, can, deaths, waiting = conn.read_response()
        except BaseException:
            conn.disconnect()  # a reply left unread would be the next command's answer
            raise
        finally:
            r.connection_pool.release(conn)
        return Begun(bool(fin), bool(can), int(deaths), bool(waiting))
    return answer


def end_attempt(r: redis.Redis, run_id: str) -> None:
    """The attempt ended without its process dying (whatever the run's outcome)."""
    r.decr(attempt_key(run_id))
