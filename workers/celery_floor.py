"""The floor the queue's own choices impose: a bare Celery no-op with fastdiff's guarantees and nothing else.

``fastdiff bench service`` prints its round trip beside fastdiff's no-op round trip and a PING, to
say how much of the round trip is Celery's and the broker's, and how much fastdiff's. The task runs
on the same broker (appendfsync always) through a Celery app configured exactly as the service's
(``make_celery``: JSON, late acknowledgement, requeue when the worker is lost, one message per
process, the time limits in the message), on a worker node of the prefork pool like ``fastdiff worker``;
its reply is one durable write (an LPUSH, fsynced before Redis answers) that the client waits for
(BRPOP). No store, no collector, no spec checks, no run start or outcome bookkeeping.

The **guarantees floor** is the same Celery path plus exactly the durable steps fastdiff promises per
run, each done by the real primitive and nothing around it: the client appends the run to a journal
(``store.journal.append``: one write, one fsync) and sends the task while that fsync runs, as
``ServiceClient.submit`` does; the worker records the run's start (``supervision.begin_run``: finished?
cancelled? attempt counted, record 'running'; one Lua call, durable) and pushes its outcome
(``outcomes.finish``: the finished marker and the push in one Lua call, durable) carrying a result of
the no-op's size; a single-writer collector moves it to its processing list (BLMOVE, durable), appends
it to its journal unless that run is already there (exactly once; one fsync), announces the run id
(PUBLISH, while the fsync runs, as ``workers.collector`` does) and removes it from the processing
list; the client wakes on the announcement. No spec checks, no run, no verdicts, no result checks, no
queue record, no store reads. It says what fastdiff's guarantees cost on this machine, whatever the
Python around them.

    python -m workers.celery_floor NAME               # a floor worker node on $FASTDIFF_BROKER_URL (queue 'fastdiff-floor')
    python -m workers.celery_floor --collector DIR    # the guarantees floor's collector, its journal in DIR
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable

import redis
from celery import Celery

from store import files, ids, journal
from workers import outcomes, supervision
from workers.celery_app import make_celery, run_options
from workers.settings import load_settings, redis_py_url

FLOOR_QUEUE = "fastdiff-floor"
FLOOR_TASK = "fastdiff.floor_noop"
GUARANTEES_TASK = "fastdiff.floor_guarantees"
REPLY_PREFIX = "fastdiff:floor:reply:"
# The guarantees floor's results channel, processing list and announcements: its own, so the service's
# collector never takes its outcomes.
RESULTS = "fastdiff:floor:results"
PROCESSING = "fastdiff:floor:results:processing"
STORED_CHANNEL = "fastdiff:floor:stored"


def floor_app(broker_url: str | None = None) -> Celery:
    """The service's Celery configuration with the floor's two tasks, on their own queue."""
    app = make_celery(load_settings(), broker_url=broker_url)
    app.conf.task_default_queue = FLOOR_QUEUE
    conns: list[redis.Redis] = []

    def conn() -> redis.Redis:  # one connection per pool process, made in the process that uses it
        if not conns:
            conns.append(redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=30))
        return conns[0]

    @app.task(name=FLOOR_TASK)
    def noop(reply_key: str) -> None:
        conn().lpush(reply_key, 1)

    @app.task(name=GUARANTEES_TASK, bind=True)
    def guarantees(self, run_id: str, spec_json: str, result_bytes: int) -> None:
        r, worker = conn(), self.request.hostname or "floor"
        if supervision.begin_run(r, run_id, worker, "cpu").finished:
            return  # a redelivery of a run whose outcome was pushed
        outcomes.finish(r, run_id, "done", {"result": "x" * result_bytes}, worker=worker,
                        end_attempt=True, results=RESULTS)

    return app


def _timed(app: Celery, n: int, one: Callable[[object], None]) -> list[float]:
    out = []
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            t = time.perf_counter()
            one(producer)
            out.append(time.perf_counter() - t)
    return out


def round_trips(app: Celery, n: int, timeout_s: float = 60.0) -> list[float]:
    """Seconds of ``n`` round trips, one after another: send the task (as the client sends a run: its
    id and time limits in the message), wait for its durable reply."""
    settings = load_settings()
    r = redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=timeout_s + 5)

    def one(producer: object) -> None:
        task_id = str(uuid.uuid4())
        key = REPLY_PREFIX + task_id
        app.send_task(FLOOR_TASK, args=(key,), producer=producer, retry=False, ignore_result=True,
                      **run_options(settings, task_id))
        if r.brpop([key], timeout=timeout_s) is None:
            raise TimeoutError(f"the floor task {task_id} did not reply within {timeout_s} s")

    try:
        return _timed(app, n, one)
    finally:
        r.close()


def guarantees_round_trips(app: Celery, n: int, directory: str | os.PathLike[str], spec_json: str,
                           result_bytes: int, timeout_s: float = 60.0) -> list[float]:
    """Seconds of ``n`` round trips of the guarantees floor, one after another: the run recorded in the
    journal in ``directory`` while its task is sent (returns once both are durable, as ``submit``), then
    the wait for the collector's announcement that its outcome is stored (as ``wait``, on a kept
    subscription). The worker pushes a result of ``result_bytes`` characters (the no-op's size)."""
    settings, directory = load_settings(), pathlib.Path(directory)
    files.private_dir(directory)
    r = redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=timeout_s + 5)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(STORED_CHANNEL)

    def one(producer: object) -> None:
        run_id = ids.new_id("r")
        journal.append(directory, [("experiment", {"run_id": run_id, "spec": spec_json})], while_syncing=lambda: app.send_task(
            GUARANTEES_TASK, args=(run_id, spec_json, result_bytes), producer=producer, retry=False,
            ignore_result=True, **run_options(settings, run_id)))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = sub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if msg is not None and msg["data"].decode() == run_id:
                return
        raise TimeoutError(f"the guarantees floor's run {run_id} was not stored within {timeout_s} s")

    try:
        return _timed(app, n, one)
    finally:
        sub.close()
        r.close()


def stored_outcomes(directory: str | os.PathLike[str]) -> dict[str, int]:
    """Run id -> how many outcome lines the guarantees floor's journal in ``directory`` holds for it."""
    read = journal.read(pathlib.Path(directory) / journal.JOURNAL)
    counts: dict[str, int] = {}
    for line in read.lines if read is not None else []:
        if line.kind == "outcome":
            counts[line.record["run_id"]] = counts.get(line.record["run_id"], 0) + 1
    return counts


def collect(directory: str | os.PathLike[str], broker_url: str, stop: threading.Event) -> None:
    """The guarantees floor's collector, until ``stop``: each outcome taken (BLMOVE to the processing
    list), appended to the journal in ``directory`` once per run (the single writer knows what it
    stored), announced while the fsync runs, then removed from the processing list; what a killed
    collector had taken is taken again first."""
    directory = pathlib.Path(directory)
    files.private_dir(directory)
    stored = set(stored_outcomes(directory))
    r = redis.Redis.from_url(redis_py_url(broker_url), socket_timeout=10)
    held = r.lrange(PROCESSING, 0, -1)
    while not stop.is_set():
        raw = held.pop() if held else r.blmove(RESULTS, PROCESSING, 0.5, "RIGHT", "LEFT")
        if raw is None:
            continue
        item = json.loads(raw)
        run_id = item["run_id"]
        announce = functools.partial(r.publish, STORED_CHANNEL, run_id)
        if run_id in stored:
            announce()
        else:
            journal.append(directory, [("outcome", item)], while_syncing=announce)
            stored.add(run_id)
        r.lrem(PROCESSING, 1, raw)
    r.close()


def median_ms(app: Celery, n: int) -> float:
    """Median milliseconds of ``n`` floor round trips (after two untimed ones that warm the pool process)."""
    round_trips(app, 2)
    return 1e3 * statistics.median(round_trips(app, n))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--collector"]:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        collect(argv[1], os.environ["FASTDIFF_BROKER_URL"], stop)
        return 0
    name = argv[0] if argv else f"floor-{os.getpid()}"
    app = floor_app(os.environ.get("FASTDIFF_BROKER_URL"))
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "1", "--queues", FLOOR_QUEUE,
                     "--hostname", name, "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                     "--without-heartbeat"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
