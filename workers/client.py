"""Submitting runs, following them and cancelling them: what the dashboard calls. Imports no torch.

    from workers.client import submit, progress, cancel, queue, grid

    exp_id, run_ids = submit(RunSpec(...), "my experiment")                      # one run: interactive
    exp_id, run_ids = submit([spec_a, spec_b], "a vs b")                          # several: a sweep
    exp_id, run_ids = submit(base_spec, "steps sweep", sweep={"steps": [4, 8, 16],
                                                              "solver": ["euler", "dpmpp_2m"]})
    progress(run_id) -> {run_id, status: queued|running|done|failed|cancelled,
                         done, total, nfe, eta_s, phase, device, worker, error,
                         position, est_start_s}        # position/estimate while queued
    cancel(run_id, owner=None) -> True if cancelled, False if it had already finished
    queue()          -> every queued and running run, all users (workers.fairqueue.snapshot)
    ServiceClient().wait(run_ids) -> run_id -> stored run, woken by the collector (no polling)

One run is interactive: it goes straight to the broker ahead of every sweep. Several runs are a
sweep: batched in the experiment's lane and served round robin with other sweeps
(``workers.fairqueue``, docs/service.md).

A submit whose broker fails part-way is reconciled, never recorded failed by guess: once the broker
answers again (within ``reconcile_s``), each run it does not hold and that has no outcome is sent
again (the run id keeps it to one result); runs still unsent after that stay 'queued' in the store,
and the collector sends them when the broker is back. A broker that does not answer at all refuses
the submission before anything is recorded.

Every spec is validated before anything is queued or recorded: a malformed one raises ValueError
naming the spec's position, the field, the value and what is allowed. Specs may be RunSpec objects,
dicts or JSON strings. The module-level functions use ``$FASTDIFF_HOME`` and the configured (or
embedded) broker; ``ServiceClient(broker_url, store_root)`` targets another pair.
"""

from __future__ import annotations

import functools
import getpass
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from fastdiff_core.spec import RunSpec, check_run_limits
from fastdiff_core.sweep import check_run_count, grid  # grid is also the service's public sweep expansion
from store import Store, as_specs, ids
from workers import fairqueue, outcomes
from workers.celery_app import RUN_TASK, make_celery, run_options, send_batch
from workers.settings import load_settings, redis_py_url, shown_url
from workers.supervision import held_run_ids

BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError, OSError)
MAX_OWNER = 200


def check_owner(owner: str | None) -> str:
    """``owner`` as given (default user@host); ValueError naming it when it is not a short printable string."""
    if owner is None:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    if not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER or not owner.isprintable():
        raise ValueError(f"owner={ids.shown(owner)} must be 1 to {MAX_OWNER} printable characters")
    return owner


class ServiceClient:
    """Submission, progress and cancellation against one broker and one store."""

    def __init__(self, broker_url: str | None = None, store_root: str | None = None, reconcile_s: float = 20.0,
                 owner: str | None = None):
        self.settings = load_settings()
        self.owner = check_owner(owner)  # who this client submits as (the queue view's "yours")
        self.broker_url = broker_url or self.settings.resolved_broker_url()
        self.store = Store(store_root if store_root is not None else self.settings.store_root)
        self.celery: Celery = make_celery(self.settings, broker_url=self.broker_url)
        # Fail fast on a dead broker instead of kombu's endless reconnecting: ``_send`` waits and reconciles.
        self.celery.conf.broker_transport_options = {**self.celery.conf.broker_transport_options, "max_retries": 1,
                                                     "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
        self.redis = redis.Redis.from_url(redis_py_url(self.broker_url), socket_timeout=10, socket_connect_timeout=5)
        # ``wait``'s subscriptions on their own connections: a pub/sub connection is closed when it is
        # given back, and one taken from ``self.redis``'s pool would make the next command reconnect.
        # A finished wait unsubscribes and keeps its connection for the next one (``_idle_subs``): a new
        # connection per wait cost a connect and its handshake (HELLO, CLIENT SETINFO) on every round trip.
        self._announcements = redis.Redis.from_url(redis_py_url(self.broker_url), socket_timeout=10,
                                                   socket_connect_timeout=5)
        self._idle_subs: list[redis.client.PubSub] = []
        self._subs_lock = threading.Lock()
        self.reconcile_s = reconcile_s

    def submit(self, specs: Any, experiment: str, *, sweep: Mapping[str, Sequence[Any]] | None = None,
               owner: str | None = None) -> tuple[str, list[str]]:
        """Validate, record the experiment (runs 'queued'), then queue its runs: one run is interactive
        (straight to the broker, ahead of every sweep); several are a sweep, batched in the
        experiment's lane and served round robin with other sweeps (``workers.fairqueue``).
        ``owner`` (default: this client's, user@host) is who may cancel them from the queue view.

        Returns (exp_id, run_ids) in the order of the specs (of the grid, for a sweep)."""
        owner = self.owner if owner is None else check_owner(owner)
        if sweep is not None:
            if not isinstance(specs, (RunSpec, Mapping, str)):
                raise ValueError("sweep= takes one base spec, not a list of specs")
            spec_list = grid(specs, sweep)
        else:
            spec_list = as_specs(specs)
            check_run_count(len(spec_list), "the list of specs")
        for i, spec in enumerate(spec_list):  # a spec built with enforce_limits=False is checked here too
            try:
                check_run_limits(spec)
                spec.runnable()  # what the world cannot run is refused here, never in a worker
            except ValueError as e:
                raise ValueError(f"spec {i}: {e}") from None
        try:
            self.redis.ping()
        except BROKER_ERRORS as e:
            raise RuntimeError(f"broker at {shown_url(self.broker_url)} is unreachable ({e}); nothing was submitted") from e
        spec_json = [spec.to_json() for spec in spec_list]

        def queue_runs(exp_id: str, run_ids: list[str]) -> None:
            # Runs while the store's record of them is being fsynced (it is readable already, so a
            # result can never arrive for a run the store does not know): submit() returns once both
            # the record and the broker's copy are durable.
            runs = list(zip(run_ids, spec_json))
            if len(runs) == 1 and sweep is None:
                try:
                    self._send(runs)
                finally:  # after the send, off the run's path: the worker does not read the record
                    try:
                        fairqueue.record_interactive(self.redis, run_ids[0], exp_id, owner,
                                                     outcomes.finished_key(run_ids[0]))
                    except BROKER_ERRORS:
                        pass  # the record only feeds the queue view; _send reconciles the run itself
            else:
                self._enqueue_sweep(exp_id, owner, runs)

        return self.store.new_experiment(experiment, spec_list, sweep, while_syncing=queue_runs)

    def _enqueue_sweep(self, exp_id: str, owner: str, runs: list[tuple[str, str]]) -> None:
        """Put a sweep in its lane and top up the broker; a broker failure here leaves the runs 'queued'
        in the store, and the collector's reconciliation sends them once the broker is back."""
        deadline = time.monotonic() + self.reconcile_s
        while True:
            try:
                fairqueue.enqueue_sweep(self.redis, exp_id, owner, runs)
                break
            except BROKER_ERRORS as e:
                # The transaction either happened or not; if it did, the lane holds the runs.
                try:
                    if fairqueue.lane_run_ids(self.redis) & {rid for rid, _ in runs}:
                        break
                except BROKER_ERRORS:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"broker at {shown_url(self.broker_url)} failed while queueing ({e}); {len(runs)} runs are recorded "
                        "'queued' but may not be in the broker: the collector sends them again once the "
                        "broker is back") from e
                time.sleep(0.5)
        try:
            fairqueue.dispatch(self.redis, self._send_batch)
        except BROKER_ERRORS:
            pass  # the lane keeps them; workers and the collector dispatch too

    def _send_batch(self, batch: dict[str, Any]) -> None:
        send_batch(self.celery, self.settings, batch)

    def _send(self, runs: list[tuple[str, str]], reconcile: bool = False) -> None:
        """Queue (run_id, spec_json) pairs; if the broker fails part-way, wait for it (``reconcile_s``) and
        send again exactly the runs it does not hold and that have no outcome (at once if ``reconcile``)."""
        deadline = time.monotonic() + self.reconcile_s
        unsent, retry = runs, reconcile
        while True:
            try:
                if retry:  # the broker may have kept (or even run) some of those whose sending failed
                    held = held_run_ids(self.redis)
                    unsent = [(rid, spec) for rid, spec in unsent
                              if rid not in held and not outcomes.is_finished(self.redis, rid)]
                with self.celery.producer_or_acquire() as producer:
                    while unsent:
                        rid, spec = unsent[0]
                        # ignore_result: no result subscription per run in this process (its reconnect loop
                        # blocked a submit to a dead broker for 20 s); the task reports through update_state
                        # and its outcome through the results channel.
                        self.celery.send_task(RUN_TASK, args=(rid, spec), producer=producer, retry=False,
                                              ignore_result=True, **run_options(self.settings, rid))
                        unsent = unsent[1:]
                return
            except BROKER_ERRORS as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"broker at {shown_url(self.broker_url)} failed while queueing ({e}); {len(unsent)} of {len(runs)} "
                        "runs are recorded 'queued' but may not be in the broker: the collector sends them "
                        "again once the broker is back") from e
                retry = True
                time.sleep(0.5)

    def progress(self, run_id: str) -> dict[str, Any]:
        """Where a run is: the store's status once it has one, else its queue record (running, with
        progress; or queued, with its position and estimated start in seconds)."""
        run = self.store.run(run_id)
        if run is None:
            raise ValueError(f"run_id={run_id!r} is not a stored run")
        out: dict[str, Any] = {"run_id": run_id, "status": run["status"], "done": None, "total": None,
                               "nfe": None, "eta_s": None, "phase": None, "device": None,
                               "worker": run["worker"], "error": run["error"], "position": None,
                               "est_start_s": None}
        if run["status"] != "queued":
            result = run["result"] or {}
            return {**out, "device": result.get("device"), "nfe": result.get("nfe_counted"), "eta_s": 0.0}
        try:
            rec = fairqueue.record(self.redis, run_id)
            if rec.get("state") != "running":
                row = next((x for x in fairqueue.snapshot(self.redis) if x["run_id"] == run_id), None)
                if row is not None:
                    out.update(position=row["position"], est_start_s=row["est_start_s"])
                return out
        except BROKER_ERRORS as e:  # the broker is down: report what the store knows
            return {**out, "error": f"broker unreachable: {e}"}
        out.update(status="running", worker=rec.get("worker"), device=rec.get("device"), phase=rec.get("phase"))
        for k, kind in (("done", int), ("total", int), ("nfe", float), ("eta_s", float)):
            if k in rec:
                out[k] = kind(float(rec[k]))
        return out

    def cancel(self, run_id: str, owner: str | None = None) -> bool:
        """Cancel a queued or running run (a running one stops at its next progress report; a run alone
        in its task is also terminated). False if it already finished. With ``owner``, only that
        owner's runs: PermissionError otherwise."""
        if self.store.run(run_id) is None:
            raise ValueError(f"run_id={run_id!r} is not a stored run")
        if owner is not None:
            holder = fairqueue.record(self.redis, run_id).get("owner")
            if holder is not None and holder != owner:
                raise PermissionError(f"run {run_id} belongs to {holder!r}, not {owner!r}")
        cancelled = outcomes.request_cancel(self.redis, run_id)
        if cancelled:
            self.celery.control.revoke(run_id, terminate=True, signal="SIGTERM")
        return cancelled

    def queue(self) -> list[dict[str, Any]]:
        """Every queued and running run across all users (``fairqueue.snapshot``), with its experiment's name."""
        rows = fairqueue.snapshot(self.redis)
        names: dict[str, str] = {}
        for row in rows:
            exp_id = row["exp_id"]
            if exp_id not in names:
                exp = self.store.experiment(exp_id) if ids.is_id(exp_id, "exp_id") else None
                names[exp_id] = exp["name"] if exp else ""
            row["experiment"] = names[exp_id]
        return rows

    def wait(self, run_ids: Sequence[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Block until every run is stored with its outcome (the collector announces each one; no
        polling); returns run_id -> ``Store.run``. TimeoutError naming the runs still queued."""
        wanted = set(ids.check_many(run_ids, "run_id"))
        deadline = time.monotonic() + timeout
        with self._subs_lock:
            sub = self._idle_subs.pop() if self._idle_subs else None
        if sub is None:
            sub = self._announcements.pubsub(ignore_subscribe_messages=True)
        kept = False
        try:
            sub.subscribe(outcomes.STORED_CHANNEL)
            out = {}
            for rid in list(wanted):
                run = self.store.run(rid)
                if run is not None and run["status"] != "queued":
                    out[rid] = run
            pending = wanted - set(out)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"runs still queued after {timeout} s: {sorted(pending)[:10]}")
                step, t = min(left, 1.0), time.monotonic()
                msg = sub.get_message(timeout=step)
                if msg is None and time.monotonic() - t < 0.5 * step:
                    continue  # a (un)subscribe confirmation, not a timeout: nothing new to read
                # A message names a stored run (another wait's, left over, names none of these); the 1 s
                # wake-up covers a collector that restarted in between.
                got = {msg["data"].decode()} & pending if msg else set(pending)
                for rid in got:
                    run = self.store.run(rid)
                    if run is not None and run["status"] != "queued":
                        out[rid] = run
                        pending.discard(rid)
            sub.unsubscribe(outcomes.STORED_CHANNEL)
            kept = True
            return out
        finally:
            if kept:
                with self._subs_lock:
                    self._idle_subs.append(sub)
            else:
                sub.close()

    def close(self) -> None:
        self.redis.close()
        with self._subs_lock:
            subs, self._idle_subs = self._idle_subs, []
        for sub in subs:
            sub.close()
        self._announcements.close()
        self.celery.close()


@functools.cache
def default_client() -> ServiceClient:
    return ServiceClient()


def submit(specs: Any, experiment: str, *, sweep: Mapping[str, Sequence[Any]] | None = None,
           owner: str | None = None) -> tuple[str, list[str]]:
    """See ``ServiceClient.submit``."""
    return default_client().submit(specs, experiment, sweep=sweep, owner=owner)


def progress(run_id: str) -> dict[str, Any]:
    """See ``ServiceClient.progress``."""
    return default_client().progress(run_id)


def cancel(run_id: str, owner: str | None = None) -> bool:
    """See ``ServiceClient.cancel``."""
    return default_client().cancel(run_id, owner)


def queue() -> list[dict[str, Any]]:
    """See ``ServiceClient.queue``."""
    return default_client().queue()
