"""``fastdiff collector``: the store's single writer of results, on the machine that holds the store.

Drains the results channel (``workers.outcomes``) into ``Store.record_result`` and compacts the store
about once a second. Started by ``fastdiff up``; survives broker restarts (it reconnects and goes
on where it stopped), and a kill -9 loses nothing (an item is removed from the processing list only
after the store has it, and storing is idempotent by run id).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import redis

from store import Store
from workers import outcomes
from workers.settings import load_settings, redis_py_url

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


def collect(store: Store, broker_url: str, stop: threading.Event, compact_every_s: float = COMPACT_EVERY_S) -> None:
    """Run until ``stop`` is set."""
    r = redis.Redis.from_url(redis_py_url(broker_url), socket_timeout=10, retry_on_timeout=False)
    last_compact = 0.0
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
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            recovered = False  # the broker restarted or is restarting: try again shortly
            stop.wait(0.5)
        now = time.monotonic()
        if dirty and now - last_compact >= compact_every_s:
            if store.compact() is not None:
                dirty = False
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
    collect(store, args.broker or settings.resolved_broker_url(), stop)
    return 0
