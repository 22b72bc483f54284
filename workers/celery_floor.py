"""The floor the queue's own choices impose: a bare Celery no-op with fastdiff's guarantees and nothing else.

``fastdiff bench service`` prints its round trip beside fastdiff's no-op round trip and a PING, to
say how much of the round trip is Celery's and the broker's, and how much fastdiff's. The task runs
on the same broker (appendfsync always) through a Celery app configured exactly as the service's
(``make_celery``: JSON, late acknowledgement, requeue when the worker is lost, one message per
process, the time limits in the message), on a worker node of the prefork pool like ``fastdiff worker``;
its reply is one durable write (an LPUSH, fsynced before Redis answers) that the client waits for
(BRPOP). No store, no collector, no spec checks, no run start or outcome bookkeeping.

    python -m workers.celery_floor NAME    # a floor worker node on $FASTDIFF_BROKER_URL (queue 'fastdiff-floor')
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid

import redis
from celery import Celery

from workers.celery_app import make_celery, run_options
from workers.settings import load_settings, redis_py_url

FLOOR_QUEUE = "fastdiff-floor"
FLOOR_TASK = "fastdiff.floor_noop"
REPLY_PREFIX = "fastdiff:floor:reply:"


def floor_app(broker_url: str | None = None) -> Celery:
    """The service's Celery configuration with the floor's one task, on its own queue."""
    app = make_celery(load_settings(), broker_url=broker_url)
    app.conf.task_default_queue = FLOOR_QUEUE
    replies: list[redis.Redis] = []

    @app.task(name=FLOOR_TASK)
    def noop(reply_key: str) -> None:
        if not replies:  # one connection per pool process, made in the process that uses it
            replies.append(redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=30))
        replies[0].lpush(reply_key, 1)

    return app


def round_trips(app: Celery, n: int, timeout_s: float = 60.0) -> list[float]:
    """Seconds of ``n`` round trips, one after another: send the task (as the client sends a run: its
    id and time limits in the message), wait for its durable reply."""
    settings = load_settings()
    r = redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=timeout_s + 5)
    out = []
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                task_id = str(uuid.uuid4())
                key = REPLY_PREFIX + task_id
                t = time.perf_counter()
                app.send_task(FLOOR_TASK, args=(key,), producer=producer, retry=False, ignore_result=True,
                              **run_options(settings, task_id))
                if r.brpop([key], timeout=timeout_s) is None:
                    raise TimeoutError(f"the floor task {task_id} did not reply within {timeout_s} s")
                out.append(time.perf_counter() - t)
    finally:
        r.close()
    return out


def median_ms(app: Celery, n: int) -> float:
    """Median milliseconds of ``n`` floor round trips (after two untimed ones that warm the pool process)."""
    round_trips(app, 2)
    return 1e3 * statistics.median(round_trips(app, n))


def main(argv: list[str]) -> int:
    name = argv[0] if argv else f"floor-{os.getpid()}"
    app = floor_app(os.environ.get("FASTDIFF_BROKER_URL"))
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "1", "--queues", FLOOR_QUEUE,
                     "--hostname", name, "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                     "--without-heartbeat"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
