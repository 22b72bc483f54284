"""``fastdiff collector``: the store's single writer of results, on the machine that holds the store.

Drains the results channel (``workers.outcomes``) into ``Store.record_result`` and compacts the store
about once a second, in a pause between results. An item it cannot store (not JSON, no valid run id, an
outcome that fails the store's checks) is quarantined — moved to the dead-letter list ``fastdiff:results:dead`` with the
reason, and stored as a 'failed' run when its run id is valid — so one bad message never stops it.
Started by ``fastdiff up``; survives broker restarts (it reconnects and goes on where it stopped),
and a kill -9 loses nothing (an item is removed from the processing list only after the store has
it, and storing is idempotent by run id). Like every worker node, it requeues the runs of worker
nodes that stopped heartbeating (``workers.supervision``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass

import redis

from store import Store, ids
from workers import fairqueue, outcomes
from workers.celery_app import RUN_TASK, make_celery, run_options, send_batch
from workers.settings import ServiceSettings, broker_url_argument, load_settings, redis_py_url
from workers.supervision import held_run_ids, requeue_orphans

COMPACT_EVERY_S = 1.0
COMPACT_IDLE_S = 0.2  # a compaction waits for this long a pause between results ...
COMPACT_WAIT_MAX_S = 4.0  # ... but no longer than this (results arriving without a pause: a sweep)
LOST_AFTER_S = 60.0  # a 'queued' run the broker does not hold this long after submission is sent again
RECONCILE_EVERY_S = 15.0


@dataclass(frozen=True)
class Stored:
    """What ``store_item`` did with one channel item: 'stored', 'duplicate' (the run already had an
    outcome) or 'quarantined' (it could not be stored as sent; ``reason`` says why)."""

    status: str
    run_id: str | None = None
    reason: str | None = None


def store_item(store: Store, raw: bytes) -> Stored:
    """Write one channel item to the store. Never raises for what the item contains.

    An item that cannot be stored as sent is quarantined: when its run id is valid the run gets a
    'failed' outcome carrying the reason (unless it already has an outcome, which is never changed);
    an item without a valid run id writes nothing. The caller moves quarantined items to the
    dead-letter list. Only the store's own failures (OSError: a full disk) propagate, to be retried."""
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError) as e:  # not JSON (UnicodeDecodeError is a ValueError)
        return Stored("quarantined", reason=f"not a JSON object: {type(e).__name__}: {str(e)[:200]}")
    if not isinstance(item, dict):
        return Stored("quarantined", reason=f"not a JSON object: {ids.shown(item)}")
    run_id = item.get("run_id")
    if not ids.is_id(run_id, "run_id"):
        return Stored("quarantined", reason=f"run_id={ids.shown(run_id)} is not a valid run id")
    try:
        stored = store.record_result(run_id, item.get("status"), item.get("result"), item.get("error"),
                                     item.get("worker"))
        return Stored("stored" if stored else "duplicate", run_id)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        reason = f"invalid outcome from worker: {type(e).__name__}: {str(e)[:2000]}"
    worker = item.get("worker")
    store.record_result(run_id, "failed", error=f"quarantined: {reason}",
                        worker=worker if isinstance(worker, str) and len(worker) <= 200 else None)
    return Stored("quarantined", run_id, reason)


def _take(store: Store, r: redis.Redis, raws: list[bytes]) -> None:
    """Store items held in the processing list, announce the stored runs, then remove the items (a
    quarantined one to the dead-letter list). The results are durable (``Store.batched_writes``)
    before any item leaves the processing list, so a kill at any point loses nothing.

    The announcement goes out as soon as the results are readable, while the store's fsync runs: a
    reader woken by it reads them (from the page cache), and until that fsync returns the items are
    still durable in the broker's processing list, so even a power cut in between loses nothing
    (the collector stores them again when it restarts, as after a kill)."""
    done: list[tuple[bytes, Stored]] = []
    quarantined: list[tuple[bytes, Stored]] = []
    announced: list[bool] = []

    def announce() -> None:
        # A PUBLISH writes nothing, so Redis answers it without waiting for an fsync of its own.
        with r.pipeline(transaction=False) as p:
            for _, outcome in done:
                p.publish(outcomes.STORED_CHANNEL, outcome.run_id or "")
            p.execute()
        announced.append(True)

    with store.batched_writes(while_syncing=announce):
        for raw in raws:
            try:
                outcome = store_item(store, raw)
            except OSError:
                raise  # the store's disk: keep the items in the processing list and retry
            except Exception as e:  # noqa: BLE001 - a bug must not crash-loop the collector on one item
                error_id = _log_error("storing an item")
                outcome = Stored("quarantined", reason=f"collector error {error_id}: {type(e).__name__}")
            (quarantined if outcome.status == "quarantined" else done).append((raw, outcome))
    for raw, outcome in quarantined:
        print(f"collector: quarantined an item ({outcome.reason})", file=sys.stderr, flush=True)
        outcomes.dead_letter(r, raw, outcome.reason or "", processing=outcomes.PROCESSING)
        if outcome.run_id is not None:
            r.publish(outcomes.STORED_CHANNEL, outcome.run_id)
    if done:
        if not announced:  # nothing new was written (duplicates only): announce them now
            announce()
        with r.pipeline(transaction=False) as p:
            for raw, _ in done:
                p.lrem(outcomes.PROCESSING, 1, raw)
            p.execute()


# Move up to ARGV[1] items from the results list to the processing list in one round trip.
_TAKE_MORE = """
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not item then break end
  out[#out + 1] = item
end
return out
"""
BATCH = 64


def requeue_lost(store: Store, r: redis.Redis, settings: ServiceSettings, broker_url: str,
                 older_than_s: float | None = None) -> list[str]:
    """Send again every run still 'queued' in the store long after submission that the broker no longer
    holds anywhere (not queued, not delivered, no outcome): e.g. lost in the instant between a worker's
    BRPOP and its unacked bookkeeping when the broker died. The run id keeps it to one result.

    Only runs submitted more than ``older_than_s`` ago (default ``LOST_AFTER_S``) are considered, so a
    submission still being sent is left to its client. (A message is always in the queue or in the
    unacknowledged hash while a node holds it: ``workers.supervision`` requeues a dead node's.)"""
    cutoff = time.time() - (LOST_AFTER_S if older_than_s is None else older_than_s)
    runs = store.runs(status="queued", columns=["run_id", "spec", "submitted"])
    old = [(rid, spec) for rid, spec, sub in runs.select("run_id", "spec", "submitted").iter_rows()
           if sub is not None and sub.replace(tzinfo=dt.UTC).timestamp() < cutoff]
    if not old:
        return []
    known = held_run_ids(r)
    lost = [(rid, spec) for rid, spec in old if rid not in known and not outcomes.is_finished(r, rid)]
    if lost:
        app = make_celery(settings, broker_url=broker_url)
        for rid, spec in lost:
            app.send_task(RUN_TASK, args=(rid, spec), **run_options(settings, rid))
        app.close()
    return [rid for rid, _ in lost]


def collect(store: Store, broker_url: str, stop: threading.Event, compact_every_s: float = COMPACT_EVERY_S,
            settings: ServiceSettings | None = None) -> None:
    """Run until ``stop`` is set: store results as they arrive, feed the broker from the sweeps' lanes,
    requeue dead nodes' and lost runs; a thread compacts the store beside it (so storing a result
    never waits for a compaction)."""
    settings = settings or load_settings()
    r = redis.Redis.from_url(redis_py_url(broker_url), socket_timeout=10, retry_on_timeout=False)
    app = make_celery(settings, broker_url=broker_url)
    dirty = threading.Event()
    dirty.set()
    taken = [time.monotonic()]  # when the last result was taken: the compactor waits for a pause
    compactor = threading.Thread(target=_compact_loop, args=(store, stop, dirty, compact_every_s, taken),
                                 name="fastdiff-compactor", daemon=True)
    compactor.start()
    reconcile_every = RECONCILE_EVERY_S
    last_reconcile = last_reap = time.monotonic()
    recovered = False
    while not stop.is_set():
        try:
            if not recovered:  # items a previous collector took but did not finish
                held = r.lrange(outcomes.PROCESSING, 0, -1)
                for i in range(0, len(held), BATCH):
                    _take(store, r, held[i:i + BATCH])
                    dirty.set()
                recovered = True
            # Whatever waits, up to a batch; only when nothing does, block for the next one (so a result
            # arriving at an idle collector is stored at once, without a second round trip first).
            raws = r.eval(_TAKE_MORE, 2, outcomes.RESULTS, outcomes.PROCESSING, BATCH)
            if not raws:
                raw = r.blmove(outcomes.RESULTS, outcomes.PROCESSING, 0.5, "RIGHT", "LEFT")
                raws = [] if raw is None else [raw]
            if raws:
                taken[0] = time.monotonic()
                _take(store, r, raws)
                dirty.set()
            # Workers top up the broker as they finish batches; this covers a sweep submitted while
            # every worker was busy with interactive runs, or workers that joined later.
            fairqueue.dispatch(r, lambda batch: send_batch(app, settings, batch))
            if time.monotonic() - last_reap > settings.heartbeat_s:
                # As every worker node does: a dead node's runs go back to the queue even while no
                # worker is alive (the collector runs beside the broker, so this does not wait for one).
                last_reap = time.monotonic()
                for run_id in requeue_orphans(r, older_than_s=settings.node_ttl_s):
                    print(f"collector: run {run_id} was held by a worker node that stopped heartbeating; "
                          "queued it again", file=sys.stderr, flush=True)
            if time.monotonic() - last_reconcile > reconcile_every:
                last_reconcile = time.monotonic()
                for run_id in requeue_lost(store, r, settings, broker_url):
                    print(f"collector: run {run_id} was no longer held by the broker; queued it again",
                          file=sys.stderr, flush=True)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            recovered = False  # the broker restarted or is restarting: try again shortly
            stop.wait(0.5)
        except Exception:  # noqa: BLE001 - log it and go on: a restart would meet the same state
            _log_error("in the collector loop")
            recovered = False
            stop.wait(1.0)
    compactor.join()
    app.close()
    store.compact()


def _compact_loop(store: Store, stop: threading.Event, dirty: threading.Event, compact_every_s: float,
                  taken: list[float] | None = None) -> None:
    """Fold new records into the store's database about every ``compact_every_s`` while there are any,
    in a pause between results (``taken[0]``: when the last was taken) of at least ``COMPACT_IDLE_S``, or
    after ``COMPACT_WAIT_MAX_S`` without one: a fold costs tens of ms of CPU and holds this process's
    interpreter, which the result arriving meanwhile would wait for. Readers fold only the journal's new
    lines (``Store``), so a later compaction costs them nothing."""
    interval = compact_every_s
    while not stop.is_set():
        if not dirty.wait(0.5) or stop.wait(interval):
            continue
        deadline = time.monotonic() + COMPACT_WAIT_MAX_S
        while taken is not None and not stop.is_set() and time.monotonic() < deadline:
            pause = time.monotonic() - taken[0]
            if pause >= COMPACT_IDLE_S:
                break
            stop.wait(COMPACT_IDLE_S - pause)
        dirty.clear()
        t = time.monotonic()
        try:
            if store.compact() is None:
                dirty.set()  # another process is compacting: try again next time
        except Exception:  # noqa: BLE001 - the records stay on disk; the next compaction takes them
            dirty.set()
            _log_error("compacting the store")
        # A slow compaction (a merge, a slow disk) makes the next ones wait (at most ~10% of the time).
        interval = max(compact_every_s, 10 * (time.monotonic() - t))


def _log_error(doing: str) -> str:
    """Print the current exception's traceback under a short error id (to the collector's log); return the id."""
    error_id = uuid.uuid4().hex[:8]
    print(f"collector: error {error_id} {doing}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
    return error_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", type=broker_url_argument, default=None, help="Redis URL (default: FASTDIFF_BROKER_URL or the embedded broker)")
    parser.add_argument("--store", default=None, help="store root (default: $FASTDIFF_HOME/store)")


def main(args: argparse.Namespace) -> int:
    settings = load_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = Store(args.store or settings.store_root)
    collect(store, args.broker or settings.resolved_broker_url(), stop, settings=settings)
    return 0
