"""The one task: ``fastdiff.run(run_id, spec_json)`` -> execute the RunSpec, push its outcome once.

Thin by design (STYLE rule 11): validation, device choice and sampling are ``fastdiff_core.run.execute``;
this module adds what a queue needs — idempotency by run id, progress through the task state,
cancellation, the time limits the message carries, the limit on worker deaths per run, the node's
heartbeat (``workers.supervision``) — and hands the RunResult to the results channel
(``workers.outcomes``), never to a disk: the worker may be on another machine than the store.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from store import ids
from workers import fairqueue, outcomes, supervision
from workers.celery_app import BATCH_TASK, RUN_TASK, make_celery, send_batch
from workers.settings import load_settings, redis_py_url

settings = load_settings()
app = make_celery(settings)

PROGRESS_EVERY_S = 0.25


class RunCancelled(Exception):
    pass


def gpu_for_child(index: int, visible: str) -> str:
    """One GPU per worker child: child ``index`` gets the index-th of the visible GPUs (round robin)."""
    ids = [g for g in visible.split(",") if g.strip()]
    return ids[index % len(ids)].strip()


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    # FASTDIFF_WORKER_GPUS is set by ``fastdiff worker`` when it sized itself to the GPUs; it must
    # reach CUDA_VISIBLE_DEVICES before torch is imported.
    visible = os.environ.get("FASTDIFF_WORKER_GPUS")
    if visible:
        from billiard.process import current_process

        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_for_child(current_process().index, visible)
    # Import torch now rather than inside the first run, so that run's time limit and latency do
    # not include the import; and what every run imports lazily (scipy.stats: ~1 s on a quiet core).
    _runtime()
    from fastdiff_core import setup_time

    setup_time.preload()
    # torch in a Celery pool process sizes its intra-op pool to the machine, whatever OMP_NUM_THREADS
    # says (measured: 2 threads with OMP_NUM_THREADS=1 on 2 cores); two such processes oversubscribe
    # the cores and every run gets several times slower (docs/bench-service.md). Apply the share
    # ``fastdiff worker`` computed (or the user's OMP_NUM_THREADS) explicitly.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


def _held_tags() -> set[str]:
    """Delivery tags of the messages this node holds (reserved or running), read in its main process."""
    from celery.worker import state

    while True:
        try:
            return {req.message.delivery_tag for req in list(state.requests.values())}
        except RuntimeError:  # the dict changed while we copied it: copy again
            continue


_heartbeat: list[supervision.Heartbeat] = []


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    slots = os.environ.get("FASTDIFF_WORKER_CONCURRENCY")
    beat = supervision.Heartbeat(redis_py_url(app.conf.broker_url), sender.hostname, _held_tags,
                                 settings.heartbeat_s, settings.node_ttl_s, log=lambda m: print(m, flush=True),
                                 slots=int(slots) if slots and slots.isdigit() else None)
    beat.start()
    _heartbeat.append(beat)


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    # Sent after the pool has stopped: this node holds nothing any more.
    for beat in _heartbeat:
        beat.stop()


@functools.cache
def _redis(pid: int) -> redis.Redis:  # keyed by pid: never share a connection across a fork
    return redis.Redis.from_url(redis_py_url(app.conf.broker_url), socket_timeout=30,
                                retry_on_timeout=True, health_check_interval=10)


@functools.cache
def _runtime() -> tuple[Callable[..., Any], Callable[[str], Any]]:
    """Import torch and the core once per worker process (in the child, never in the parent).

    Models and world data are loaded by the core lazily, on the first run that needs them, and kept
    for the life of the process (the run records those seconds as ``metrics['setup_s']``)."""
    from fastdiff_core.run import execute, resolve_device

    return execute, resolve_device


def _summary(run_id: str, status: str, pushed: bool, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "pushed": pushed, **extra}


class RunTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[override]
        # Called in the worker's main process when the hard time limit killed the child: the run
        # produced nothing, so its failure is its outcome (otherwise it would stay 'queued' forever).
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        limit = f" ({float(exc.args[0]):g} s)" if exc.args and isinstance(exc.args[0], (int, float)) else ""
        r, worker = _redis(os.getpid()), self.request.hostname if self.request else None
        if self.name == RUN_TASK:
            outcomes.finish(r, args[0], "failed", error=f"hard time limit exceeded{limit}", worker=worker)
            return
        # A batch: the run it was executing failed; the runs it had not started go back to its lane.
        batch = fairqueue.check_batch(args[0])
        rest = []
        for run_id, spec_json in batch["runs"]:
            if fairqueue.record(r, run_id).get("state") == "running":
                outcomes.finish(r, run_id, "failed", error=f"hard time limit exceeded{limit}", worker=worker)
            elif not outcomes.is_finished(r, run_id):
                rest.append([run_id, spec_json])
        if rest:
            fairqueue.yield_rest(r, batch, rest)


BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _reject(e: Exception) -> Reject:
    # The broker went away around this run: hand the message back (or, if even that fails, the
    # visibility timeout does); the run id makes the redelivery produce at most one result.
    return Reject(f"broker unreachable: {e}", requeue=True)


def _dead_letter(what: dict[str, Any], reason: str) -> dict[str, Any]:
    # No client of ours sent this: nothing to run and no key to build. Acknowledge it and keep it on
    # the dead-letter list for the operator (docs/security.md).
    outcomes.dead_letter(_redis(os.getpid()), json.dumps(what).encode(), reason)
    return _summary(str(what.get("run_id") or what.get("batch")), "rejected", False, error=reason)


def _caused_by(e: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``e`` is a ``kind`` or was raised while handling one (its __cause__ / __context__ chain): the
    soft time limit firing inside a C extension's import surfaces as 'ImportError: initialization failed'."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@app.task(name=RUN_TASK, bind=True, base=RunTask)
def run(self, run_id: str, spec_json: str) -> dict[str, Any]:
    if not ids.is_id(run_id, "run_id"):
        reason = f"task message: run_id={ids.shown(run_id)} is not a valid run id"
        return _dead_letter({"task": RUN_TASK, "run_id": ids.shown(run_id), "spec": ids.shown(spec_json)}, reason)
    try:
        return _run(self, run_id, spec_json)
    except BROKER_ERRORS as e:
        raise _reject(e) from e


@app.task(name=BATCH_TASK, bind=True, base=RunTask)
def run_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
    """A sweep's batch (``workers.fairqueue``): its runs one after another, each exactly as ``run`` runs
    it (its own outcome, progress, cancel, attempt count). After ``BATCH_BUDGET_S``, or as soon as an
    interactive run waits, the runs not started go back to the front of the lane; at the end this
    process tops up the broker from the lanes."""
    try:
        batch = fairqueue.check_batch(batch)
    except ValueError as e:
        return _dead_letter({"task": BATCH_TASK, "batch": ids.shown(batch)}, f"task message: {e}")
    r = _redis(os.getpid())
    t0 = time.monotonic()
    summaries: list[dict[str, Any]] = []
    try:
        for i, (run_id, spec_json) in enumerate(batch["runs"]):
            if i and (summaries[-1].get("timed_out") or time.monotonic() - t0 > fairqueue.BATCH_BUDGET_S
                      or fairqueue.interactive_waiting(r)):
                fairqueue.yield_rest(r, batch, batch["runs"][i:])
                break
            summaries.append(_run(self, run_id, spec_json))
        fairqueue.dispatch(r, functools.partial(send_batch, app, settings))
    except BROKER_ERRORS as e:
        raise _reject(e) from e
    return {"batch_id": batch["batch_id"], "runs": summaries}


def _run(self: Task, run_id: str, spec_json: str) -> dict[str, Any]:
    r = _redis(os.getpid())
    worker = self.request.hostname or "worker"
    execute, resolve_device = _runtime()
    spec, device, invalid = None, "unknown", None
    try:
        from fastdiff_core.spec import RunSpec

        spec = RunSpec.from_json(spec_json)
        device = str(resolve_device(spec.device))
    except Exception as e:  # noqa: BLE001 - a spec the worker cannot run is that run's failure
        invalid = outcomes.failure_text(e)
    # A message delivered for the first time starts computing while the broker records the start (its
    # answer is read at the run's first progress report, or at its end, before anything is pushed): a
    # redelivered one, whose earlier attempts may have killed their process, waits for the answer.
    first = not (self.request.delivery_info or {}).get("redelivered") and invalid is None and spec is not None
    answer = supervision.send_begin(r, run_id, worker, device)
    if not first:
        return _started(self, r, run_id, answer(), worker, invalid) or _attempt(
            self, r, run_id, spec, device, worker, execute, None)
    return _attempt(self, r, run_id, spec, device, worker, execute, answer)


def _started(self: Task, r: redis.Redis, run_id: str, begun: supervision.Begun, worker: str,
             invalid: str | None) -> dict[str, Any] | None:
    """What ``begin_run`` found that stops the run before it computes anything (its summary), else None."""
    if begun.finished:
        # A redelivery of a run whose outcome was already pushed: acknowledge, produce nothing.
        return _summary(run_id, "duplicate", False)
    if begun.cancelled:
        return _summary(run_id, "cancelled", outcomes.finish(r, run_id, "cancelled", worker=worker))
    if begun.deaths >= settings.max_worker_deaths:
        # Every earlier attempt killed its worker process (memory, a crash, kill -9): do not try again.
        invalid = (f"its worker process died {begun.deaths} times while running it "
                   f"(max_worker_deaths={settings.max_worker_deaths}); not retried")
    if invalid is not None:
        return _summary(run_id, "failed", outcomes.finish(r, run_id, "failed", error=invalid, worker=worker,
                                                          end_attempt=True))
    return None


class _Stopped(Exception):
    """The broker's answer to the run's start, read while the run computed: it must not go on."""

    def __init__(self, summary: dict[str, Any]):
        super().__init__(summary["status"])
        self.summary = summary


class _StartUnknown(Exception):
    """The broker failed before it answered the run's start (``__cause__``): the message goes back, as when
    the start itself fails, never a failure stored for the run."""


def _attempt(self: Task, r: redis.Redis, run_id: str, spec: Any, device: str, worker: str,
             execute: Callable[..., Any], answer: Callable[[], supervision.Begun] | None) -> dict[str, Any]:
    """Execute the started run and push its outcome. ``answer``: the start's reply not read yet
    (``supervision.send_begin``), read at the first progress report or after the run, before the push."""
    pending = [answer] if answer is not None else []

    def started() -> None:
        if pending:
            try:  # raised inside the run (a progress report), a broker error would pass for the run's own
                stop = _started(self, r, run_id, pending.pop()(), worker, None)
            except BROKER_ERRORS as e:
                raise _StartUnknown() from e
            if stop is not None:
                raise _Stopped(stop)

    try:
        return _execute(self, r, run_id, spec, device, worker, execute, started)
    except _Stopped as e:
        return e.summary
    except _StartUnknown as e:
        raise e.__cause__ from None  # whether it counted an attempt is unknown: no end_attempt
    except BROKER_ERRORS:
        if pending:  # the start's answer was never read: whether it counted an attempt is unknown
            raise
        try:  # the attempt ended without its process dying; if the broker is gone this fails too
            supervision.end_attempt(r, run_id)
        except BROKER_ERRORS:
            pass
        raise


def _execute(self: Task, r: redis.Redis, run_id: str, spec: Any, device: str, worker: str,
             execute: Callable[..., Any], started: Callable[[], None]) -> dict[str, Any]:
    started_at = time.time()
    last = [time.monotonic()]  # a run shorter than PROGRESS_EVERY_S writes no progress at all
    record = fairqueue.record_key(run_id)

    def on_progress(p: Any) -> None:
        started()
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        try:  # progress is best effort: a broker blip must not fail the run
            with r.pipeline(transaction=False) as pipe:
                pipe.exists(outcomes.cancelled_key(run_id))
                pipe.hset(record, mapping={k: str(v) for k, v in p.to_dict().items() if v is not None})
                pipe.expire(record, fairqueue.RECORD_TTL_S)
                cancelled = pipe.execute()[0]
        except BROKER_ERRORS:
            return
        if cancelled:
            raise RunCancelled(run_id)

    timed_out = False
    try:
        result = execute(spec, on_progress)
        status, payload, error = "done", result.to_dict(), None
    except (_Stopped, _StartUnknown):
        raise
    except RunCancelled:
        status, payload, error = "cancelled", None, "cancelled by user"
    except Exception as e:  # noqa: BLE001 - a run's failure is its result: store it, do not crash the worker
        soft = (self.request.timelimit or (None, None))[1] or app.conf.task_soft_time_limit
        # The soft limit can fire inside a C extension's import, which reports 'ImportError: initialization
        # failed' and may drop the chain: a failure once the limit has passed is the limit's doing.
        if _caused_by(e, SoftTimeLimitExceeded) or (soft and time.time() - started_at >= soft):
            status, payload, error, timed_out = "failed", None, f"time limit exceeded ({soft:g} s)", True
            if not isinstance(e, SoftTimeLimitExceeded):
                error += f"; it interrupted: {outcomes.failure_text(e)}"
        else:
            status, payload, error = "failed", None, outcomes.failure_text(e)
    wall = time.time() - started_at
    started()  # the start's answer, if no progress report read it: a run that must not count stops here
    # If the broker is unreachable this raises, and ``run`` hands the message back for redelivery.
    pushed = outcomes.finish(r, run_id, status, payload, error, worker, end_attempt=True, wall_s=wall)
    return _summary(run_id, status, pushed, device=device, wall_s=wall,
                    nfe=payload["nfe_counted"] if payload else None, **({"timed_out": True} if timed_out else {}))
