"""The floors of ``fastdiff bench service`` (``workers.celery_floor``): the bare Celery floor, a real
worker node of the prefork pool on a real broker, configured as the service is, answers with a durable
reply; the guarantees floor adds the run's journal line, its start, its outcome pushed and stored once
by its collector, and every one of those writes is durable where it claims to be."""

from __future__ import annotations

import json
import time

import pytest

from store import journal
from workers import celery_floor, outcomes
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


def test_guarantees_floor_round_trips_durably_and_stores_once(tmp_path) -> None:
    with LocalService(tmp_path, "embedded", fsync="always") as svc:
        svc.floor_worker("f1"), svc.floor_collector()
        svc.wait_workers(["f1"])
        app = celery_floor.floor_app(svc.broker.url)
        trips = celery_floor.guarantees_round_trips(app, 3, svc.floor_dir, '{"spec": 1}', 5000)
        assert len(trips) == 3 and all(0 < t < 60 for t in trips)
        # the client's journal holds each run's submission and the collector's each run's outcome, once,
        # as sealed lines (written whole by one write each)
        lines = journal.read(svc.floor_dir / journal.JOURNAL).lines
        assert all(line.sealed for line in lines)
        submitted = [line.record["run_id"] for line in lines if line.kind == "experiment"]
        assert len(submitted) == 3 and celery_floor.stored_outcomes(svc.floor_dir) == dict.fromkeys(submitted, 1)
        outcome = next(line.record for line in lines if line.kind == "outcome")
        assert outcome["status"] == "done" and len(outcome["result"]["result"]) == 5000
        r = svc.client.redis
        assert r.llen(celery_floor.RESULTS) == r.llen(celery_floor.PROCESSING) == 0
        # an outcome pushed again (a redelivered item) is announced but not stored twice
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(celery_floor.STORED_CHANNEL)
        r.lpush(celery_floor.RESULTS, json.dumps({**outcome, "worker": "again"}))
        deadline = time.monotonic() + 30
        while (msg := sub.get_message(timeout=1)) is None and time.monotonic() < deadline:
            pass
        sub.close()
        assert msg is not None and msg["data"].decode() == outcome["run_id"]
        assert celery_floor.stored_outcomes(svc.floor_dir) == dict.fromkeys(submitted, 1)
        # the broker's part (each run's finished marker, its ended attempt, the pushes' bookkeeping) is in
        # its append-only file: it survives a kill -9 of the broker, and a second push is refused
        svc.broker.kill()
        svc.broker.start()
        r = svc.client.redis
        for run_id in submitted:
            assert r.get(outcomes.finished_key(run_id)) == b"done"
            assert r.get(outcomes.attempt_key(run_id)) == b"0"  # started once, ended once
            assert not outcomes.finish(r, run_id, "done", {}, results=celery_floor.RESULTS)
