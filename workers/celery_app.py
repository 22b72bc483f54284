"""The Celery app: JSON only, one run per worker process at a time, nothing lost when a worker dies.

Workers import this module (through ``fastdiff worker``) with the broker URL in the environment;
the submission client builds its own instance with ``make_celery(url)`` and sends tasks by name,
so neither this module nor the client imports torch.
"""

from __future__ import annotations

from celery import Celery

from workers.fairqueue import BATCH_BUDGET_S, BATCH_TASK, QUEUE, SWEEP_PRIORITY
from workers.settings import ServiceSettings, load_settings

RUN_TASK = "fastdiff.run"


def run_options(settings: ServiceSettings, run_id: str) -> dict[str, object]:
    """Options of a run's task message: its id, and the submitter's time limits, which travel in the
    message so that every worker, whatever its own settings, applies the same ones."""
    return {"task_id": run_id, "soft_time_limit": settings.soft_time_limit_s, "time_limit": settings.hard_time_limit_s}


def send_batch(app: Celery, settings: ServiceSettings, batch: dict[str, object]) -> None:
    """Queue a sweep batch (``workers.fairqueue``) at the sweep priority, with the submitter's time limits
    plus the batch's budget: a run starts only within the budget, so each still gets the whole limit."""
    opts = run_options(settings, str(batch["batch_id"]))
    app.send_task(BATCH_TASK, args=(batch,), priority=SWEEP_PRIORITY, ignore_result=True, **{
        **opts, "soft_time_limit": settings.soft_time_limit_s + BATCH_BUDGET_S,
        "time_limit": settings.hard_time_limit_s + BATCH_BUDGET_S})


def make_celery(settings: ServiceSettings | None = None, broker_url: str | None = None) -> Celery:
    settings = settings or load_settings()
    url = broker_url or settings.resolved_broker_url()
    app = Celery("fastdiff", broker=url, backend=url, include=[])
    visibility = settings.visibility_timeout_s
    transport = {
        "visibility_timeout": visibility,
        # Look for a dead worker's unacked run often enough that redelivery follows the timeout closely.
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=QUEUE,
        # Acknowledge after the run, one message reserved per process, requeue if the process dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        worker_max_memory_per_child=settings.max_memory_mb * 1024,  # KiB
        worker_proc_alive_timeout=120,  # a new child imports torch before it reports ready
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Run state lives in the project's record of dispatched runs (workers.fairqueue), written by the
        # task in the same Redis round trip that starts its attempt: no Celery result backend writes.
        task_track_started=False,
        task_ignore_result=True,
        result_expires=7 * 24 * 3600,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app
