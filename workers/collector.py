"""``fastdiff collector``: the store's single writer of results, on the machine that holds the store.

Drains the results channel (``workers.outcomes``) into ``Store.record_result`` and compacts the store
about once a second. Started by ``fastdiff up``; survives broker restarts (it reconnects and goes
on where it stopped), and a kill -9 loses nothing (an item is removed from the processing list only
after the store has it, and storing is idempotent by run id).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
import time
from typing import Any

import polars as pl
import redis

from store import Store
from workers import outcomes
from workers.celery_app import QUEUE, RUN_TASK, make_celery
from workers.settings import ServiceSettings, load_settings, redis_py_url

COMPACT_EVERY_S = 1.0


def store_item(store: Store, raw: bytes) -> bool:
    """Write one channel item to the store; a malformed item is stored as a failed run, never dropped."""
    try:
        item: dict[str, Any] = json.loads(raw)
        run_id = item["run_id"]
    except (ValueError, KeyError, TypeError):
        print(f"collector: dropping unreadable item {raw[:200]!r}", file=sys.stderr)
        return False
    try:
        return store.record_result(run_id, item["status"], item.get("result"), item.get("error"), item.get("worker"))
    except (ValueError, KeyError, TypeError) as e:
        return store.record_result(run_id, "failed", error=f"invalid result from worker: {e}",
                                   worker=item.get("worker"))


def _task_ids_known_to_broker(r: redis.Redis) -> set[str]:
    """Run ids of messages waiting in a queue or delivered and not yet acknowledged."""
    ids = set()

    def add(raw: bytes, unacked: bool) -> None:
        try:
            msg = json.loads(raw)
            ids.add((msg[0] if unacked else msg)["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            pass

    for key in r.scan_iter(match=f"{QUEUE}*", _type="list"):
        for raw in r.lrange(key, 0, -1):
            add(raw, False)
    for raw in r.hvals("unacked"):
        add(raw, True)
    return ids


def requeue_lost(store: Store, r: redis.Redis, settings: ServiceSettings, broker_url: str,
                 older_than_s: float | None = None) -> list[str]:
    """Send again every run still 'queued' in the store long after submission that the broker no longer
    holds anywhere (not queued, not delivered, no outcome): e.g. lost in the instant between a worker's
    BRPOP and its unacked bookkeeping when the broker died. The run id keeps it to one result.

    Only runs older than ``older_than_s`` (default: the visibility timeout + 30 s) are considered,
    so a run the broker is about to redeliver is left to it."""
    cutoff = time.time() - (settings.visibility_timeout_s + 30 if older_than_s is None else older_than_s)
    runs = store.runs().filter(pl.col("status") == "queued")
    old = [(rid, spec) for rid, spec, sub in runs.select("run_id", "spec", "submitted").iter_rows()
           if sub is not None and sub.replace(tzinfo=dt.UTC).timestamp() < cutoff]
    if not old:
        return []
    known = _task_ids_known_to_broker(r)
    lost = [(rid, spec) for rid, spec in old if rid not in known and not outcomes.is_finished(r, rid)]
    if lost:
        app = make_celery(settings, broker_url=broker_url)
        for rid, spec in lost:
            app.send_task(RUN_TASK, args=(rid, spec), task_id=rid)
        app.close()
    return [rid for rid, _ in lost]


def collect(store: Store, broker_url: str, stop: threading.Event, compact_every_s: float = COMPACT_EVERY_S,
            settings: ServiceSettings | None = None) -> None:
    """Run until ``stop`` is set."""
    settings = settings or load_settings()
    r = redis.Redis.from_url(redis_py_url(broker_url), socket_timeout=10, retry_on_timeout=False)
    reconcile_every = max(10.0, settings.visibility_timeout_s / 4)
    last_reconcile = time.monotonic()
    last_compact = 0.0
    interval = compact_every_s
    dirty = True
    recovered = False
    while not stop.is_set():
        try:
            if not recovered:  # items a previous collector took but did not finish
                for raw in r.lrange(outcomes.PROCESSING, 0, -1):
                    store_item(store, raw)
                    r.lrem(outcomes.PROCESSING, 1, raw)
                    dirty = True
                recovered = True
            raw = r.blmove(outcomes.RESULTS, outcomes.PROCESSING, 0.5, "RIGHT", "LEFT")
            if raw is not None:
                store_item(store, raw)
                r.lrem(outcomes.PROCESSING, 1, raw)
                dirty = True
            if time.monotonic() - last_reconcile > reconcile_every:
                last_reconcile = time.monotonic()
                for run_id in requeue_lost(store, r, settings, broker_url):
                    print(f"collector: run {run_id} was no longer held by the broker; queued it again",
                          file=sys.stderr, flush=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            recovered = False  # the broker restarted or is restarting: try again shortly
            stop.wait(0.5)
        now = time.monotonic()
        if dirty and now - last_compact >= interval:
            if store.compact() is not None:
                dirty = False
            took = time.monotonic() - now
            # Compaction copies the database: as it grows, compact less often (at most ~10% of the time).
            interval = max(compact_every_s, 10 * took)
            last_compact = now
    store.compact()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=None, help="Redis URL (default: FASTDIFF_BROKER_URL or the embedded broker)")
    parser.add_argument("--store", default=None, help="store root (default: $FASTDIFF_HOME/store)")


def main(args: argparse.Namespace) -> int:
    settings = load_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = Store(args.store or settings.store_root)
    collect(store, args.broker or settings.resolved_broker_url(), stop, settings=settings)
    return 0
