"""The bare Celery floor of ``fastdiff bench service`` (``workers.celery_floor``): a real worker node of
the prefork pool on a real broker, configured as the service is, answers with a durable reply."""

from __future__ import annotations

import time

import pytest

from workers import celery_floor
from workers.celery_app import make_celery
from workers.local_service import LocalService
from workers.settings import load_settings

pytestmark = pytest.mark.service


def test_floor_keeps_the_service_guarantees() -> None:
    floor, service = celery_floor.floor_app("redis://127.0.0.1:1/0"), make_celery(load_settings())
    for key in ("task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier", "task_serializer",
                "accept_content", "task_time_limit", "task_soft_time_limit"):
        assert floor.conf[key] == service.conf[key], key
    assert floor.conf.task_acks_late and floor.conf.task_default_queue == celery_floor.FLOOR_QUEUE


def test_floor_round_trips(tmp_path) -> None:
    with LocalService(tmp_path, "embedded", fsync="always") as svc:
        svc.floor_worker("f1")
        svc.wait_workers(["f1"])
        app = celery_floor.floor_app(svc.broker.url)
        trips = celery_floor.round_trips(app, 3)
        assert len(trips) == 3 and all(0 < t < 60 for t in trips)
        # every reply was taken by the client; each task message is acknowledged after its task ran
        assert not svc.client.redis.keys(celery_floor.REPLY_PREFIX + "*")
        deadline = time.monotonic() + 30
        while svc.client.redis.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.client.redis.hlen("unacked") == 0
        assert svc.client.redis.config_get("appendfsync") == {"appendfsync": "always"}
