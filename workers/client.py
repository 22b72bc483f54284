"""Submitting runs, following them and cancelling them: what the dashboard calls. Imports no torch.

    from workers.client import submit, progress, cancel, grid

    exp_id, run_ids = submit(RunSpec(...), "my experiment")                      # one run
    exp_id, run_ids = submit([spec_a, spec_b], "a vs b")                          # several
    exp_id, run_ids = submit(base_spec, "steps sweep", sweep={"steps": [4, 8, 16],
                                                              "solver": ["euler", "dpmpp_2m"]})
    progress(run_id) -> {run_id, status: queued|running|done|failed|cancelled,
                         done, total, nfe, eta_s, phase, device, worker, error}
    cancel(run_id)   -> True if cancelled, False if it had already finished

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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from fastdiff_core.spec import RunSpec, check_run_limits
from fastdiff_core.sweep import check_run_count, grid  # grid is also the service's public sweep expansion
from store import Store, as_specs
from workers import outcomes
from workers.celery_app import RUN_TASK, make_celery, run_options
from workers.settings import load_settings, redis_py_url
from workers.supervision import held_run_ids

BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError, OSError)

class ServiceClient:
    """Submission, progress and cancellation against one broker and one store."""

    def __init__(self, broker_url: str | None = None, store_root: str | None = None, reconcile_s: float = 20.0):
        self.settings = load_settings()
        self.broker_url = broker_url or self.settings.resolved_broker_url()
        self.store = Store(store_root if store_root is not None else self.settings.store_root)
        self.celery: Celery = make_celery(self.settings, broker_url=self.broker_url)
        # Fail fast on a dead broker instead of kombu's endless reconnecting: ``_send`` waits and reconciles.
        self.celery.conf.broker_transport_options = {**self.celery.conf.broker_transport_options, "max_retries": 1,
                                                     "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
        self.redis = redis.Redis.from_url(redis_py_url(self.broker_url), socket_timeout=10, socket_connect_timeout=5)
        self.reconcile_s = reconcile_s

    def submit(self, specs: Any, experiment: str, *,
               sweep: Mapping[str, Sequence[Any]] | None = None) -> tuple[str, list[str]]:
        """Validate, record the experiment (runs 'queued'), then queue every run as one group.

        Returns (exp_id, run_ids) in the order of the specs (of the grid, for a sweep)."""
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
            raise RuntimeError(f"broker at {self.broker_url} is unreachable ({e}); nothing was submitted") from e
        exp_id, run_ids = self.store.new_experiment(experiment, spec_list, sweep)
        self._send([(run_id, spec.to_json()) for run_id, spec in zip(run_ids, spec_list)])
        return exp_id, run_ids

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
                        f"broker at {self.broker_url} failed while queueing ({e}); {len(unsent)} of {len(runs)} "
                        "runs are recorded 'queued' but may not be in the broker: the collector sends them "
                        "again once the broker is back") from e
                retry = True
                time.sleep(0.5)

    def progress(self, run_id: str) -> dict[str, Any]:
        """Where a run is: the store's status once it has one, else the live task state."""
        run = self.store.run(run_id)
        if run is None:
            raise ValueError(f"run_id={run_id!r} is not a stored run")
        out: dict[str, Any] = {"run_id": run_id, "status": run["status"], "done": None, "total": None,
                               "nfe": None, "eta_s": None, "phase": None, "device": None,
                               "worker": run["worker"], "error": run["error"]}
        if run["status"] != "queued":
            result = run["result"] or {}
            return {**out, "device": result.get("device"), "nfe": result.get("nfe_counted"), "eta_s": 0.0}
        try:
            state = AsyncResult(run_id, app=self.celery)
            name, info = state.state, state.info
        except Exception as e:  # noqa: BLE001 - the broker is down: report what the store knows
            return {**out, "error": f"broker unreachable: {e}"}
        if name in ("STARTED", "PROGRESS") and isinstance(info, Mapping):
            out.update(status="running", **{k: info.get(k) for k in ("done", "total", "nfe", "eta_s", "phase",
                                                                       "device")})
            out["worker"] = info.get("worker") or info.get("hostname")  # Celery's own STARTED meta has hostname
        elif name in ("FAILURE", "REVOKED"):
            out.update(status="failed" if name == "FAILURE" else "cancelled", error=repr(info))
        return out

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued or running run (a running one is terminated). False if it already finished."""
        if self.store.run(run_id) is None:
            raise ValueError(f"run_id={run_id!r} is not a stored run")
        cancelled = outcomes.request_cancel(self.redis, run_id)
        if cancelled:
            self.celery.control.revoke(run_id, terminate=True, signal="SIGTERM")
        return cancelled

    def close(self) -> None:
        self.redis.close()
        self.celery.close()


@functools.cache
def default_client() -> ServiceClient:
    return ServiceClient()


def submit(specs: Any, experiment: str, *, sweep: Mapping[str, Sequence[Any]] | None = None) -> tuple[str, list[str]]:
    """See ``ServiceClient.submit``."""
    return default_client().submit(specs, experiment, sweep=sweep)


def progress(run_id: str) -> dict[str, Any]:
    """See ``ServiceClient.progress``."""
    return default_client().progress(run_id)


def cancel(run_id: str) -> bool:
    """See ``ServiceClient.cancel``."""
    return default_client().cancel(run_id)
