"""Supervision pieces against real redis-server processes: requeueing a dead node's messages, the
death count, submit reconciliation after a broker failure, the time limit a message carries, and
one ``fastdiff up`` per FASTDIFF_HOME. (The whole-service faults are in test_faults.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fastdiff_core.spec import RunSpec
from workers import supervision
from workers.broker import RedisServer
from workers.celery_app import QUEUE
from workers.client import ServiceClient
from workers.local_service import REPO, LocalService

pytestmark = pytest.mark.service


@pytest.fixture
def broker(tmp_path):
    server = RedisServer(tmp_path / "b", unix_socket=tmp_path / "b" / "r.sock").start()
    yield server
    server.kill()


def unacked(r, tag: str, run_id: str, since: float) -> None:
    """What kombu's Redis transport books when it delivers a message to a worker."""
    msg = {"body": "", "headers": {"id": run_id}, "properties": {"delivery_info": {"routing_key": QUEUE}}}
    r.hset(supervision.UNACKED, tag, json.dumps([msg, QUEUE, QUEUE]))
    r.zadd(supervision.UNACKED_INDEX, {tag: since})


def test_a_dead_nodes_messages_are_requeued_and_a_live_nodes_are_not(broker):
    r = broker.client()
    now = time.time()
    unacked(r, "t-dead", "run-dead", now - 10)     # held by a node that stopped heartbeating
    unacked(r, "t-live", "run-live", now - 10)     # held by a live node
    unacked(r, "t-young", "run-young", now - 1)    # just delivered: its node may not have claimed it yet
    supervision.heartbeat(r, "live@x", ["t-live"], ttl_s=30)
    assert supervision.live_claims(r) == ({"live@x"}, {"t-live"})
    assert supervision.requeue_orphans(r, older_than_s=3, now=now) == ["run-dead"]
    assert set(r.hkeys(supervision.UNACKED)) == {b"t-live", b"t-young"}
    (raw,) = r.lrange(QUEUE, 0, -1)
    assert json.loads(raw)["headers"] == {"id": "run-dead", "redelivered": True}
    assert supervision.requeue_orphans(r, older_than_s=3, now=now) == []  # once
    assert supervision.held_run_ids(r) == {"run-dead", "run-live", "run-young"}
    supervision.heartbeat(r, "live@x", ["t-live"], ttl_s=0.2)
    time.sleep(0.4)  # the live node stops heartbeating: now its message goes back too
    assert supervision.requeue_orphans(r, older_than_s=3) == ["run-live"]


def test_a_node_of_the_version_before_the_node_list_keeps_its_runs_during_a_rolling_upgrade(broker):
    """A node of the version before ``NODES`` writes only its key: its messages are not orphans. The
    reaper looks for such nodes (a SCAN) only when some message is about to go back, never on every beat."""
    r = broker.client()
    now = time.time()
    unacked(r, "t-old", "run-old", now - 10)
    r.set(supervision.node_key("old@x"), json.dumps(["t-old"]), px=30_000)  # what the old heartbeat wrote
    supervision.heartbeat(r, "new@x", [], ttl_s=30)
    assert supervision.requeue_orphans(r, older_than_s=3, now=now) == []
    assert r.hkeys(supervision.UNACKED) == [b"t-old"]
    r.delete(supervision.node_key("old@x"))  # the old node died
    assert supervision.requeue_orphans(r, older_than_s=3, now=now) == ["run-old"]
    r.config_resetstat()
    supervision.heartbeat(r, "new@x", [], ttl_s=30)
    assert supervision.requeue_orphans(r, older_than_s=3, now=now) == []  # nothing to requeue: no SCAN
    assert "cmdstat_scan" not in r.info("commandstats")


def test_live_claims_read_the_node_list_not_the_keyspace(broker):
    """Every run leaves keys behind for 30 days (its finished marker, its attempt count): finding the live
    nodes must not SCAN them (one round trip per ten keys: 1.4 s at 200,000 keys, every heartbeat of
    every node and of the collector)."""
    r = broker.client()
    with r.pipeline(transaction=False) as p:
        for i in range(5000):
            p.set(f"fastdiff:finished:r{i:012x}", "done")
        p.execute()
    supervision.heartbeat(r, "a@x", ["t1"], ttl_s=30)
    supervision.heartbeat(r, "b@x", ["t2", "t3"], ttl_s=0.2)
    calls = r.info("stats")["total_commands_processed"]
    assert supervision.live_claims(r) == ({"a@x", "b@x"}, {"t1", "t2", "t3"})
    assert r.info("stats")["total_commands_processed"] - calls <= 3  # the two reads (and the INFO)
    deadline = time.monotonic() + 10
    while r.exists(supervision.node_key("b@x")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervision.live_claims(r) == ({"a@x"}, {"t1"})  # b's key expired: listed, not alive


def test_the_death_count_counts_attempts_that_never_ended(broker):
    r = broker.client()
    assert supervision.begin_attempt(r, "r1") == 0
    supervision.end_attempt(r, "r1")  # finished normally
    assert supervision.begin_attempt(r, "r1") == 0  # ... then its process dies
    assert supervision.begin_attempt(r, "r1") == 1  # and again
    assert supervision.begin_attempt(r, "r1") == 2


def test_submit_reconciles_after_a_broker_failure(tmp_path, broker):
    client = ServiceClient(broker.url, str(tmp_path / "store"), reconcile_s=20)
    specs = [RunSpec(samples=8, steps=2, seed=i) for i in range(4)]
    _, run_ids = client.store.new_experiment("interrupted", specs, None)
    pairs = [(rid, s.to_json()) for rid, s in zip(run_ids, specs)]
    client._send(pairs[:2])  # sent (fsynced) before the broker died in the middle of the submission
    broker.kill()
    restart = threading.Timer(1.5, broker.start)
    restart.start()
    client._send(pairs, reconcile=True)  # the retry: waits for the broker, sends only what it does not hold
    restart.join()
    r = broker.client()
    queued = [json.loads(m)["headers"]["id"] for m in r.lrange(QUEUE, 0, -1)]
    assert sorted(queued) == sorted(run_ids)  # each exactly once
    assert client.store.runs()["status"].to_list() == ["queued"] * 4  # none recorded failed
    client.close()


def test_submit_to_a_dead_broker_records_nothing_and_a_long_outage_leaves_runs_queued(tmp_path, broker):
    client = ServiceClient(broker.url, str(tmp_path / "store"), reconcile_s=1)
    _, run_ids = client.store.new_experiment("cut", [RunSpec(samples=8, steps=2)], None)
    broker.kill()
    with pytest.raises(RuntimeError, match="unreachable.*nothing was submitted"):
        client.submit(RunSpec(samples=8, steps=2), "refused")
    assert client.store.experiments().height == 1
    with pytest.raises(RuntimeError, match=r"1 of 1 runs are recorded 'queued'"):
        client._send([(run_ids[0], RunSpec(samples=8, steps=2).to_json())])
    assert client.store.run(run_ids[0])["status"] == "queued"  # not failed: the collector sends it later
    client.close()


def test_the_time_limit_travels_with_the_task(tmp_path, monkeypatch):
    """A worker allowing 30 s applies the 0.5 s its submitter set: the run is stored failed for it."""
    with LocalService(tmp_path, "embedded", max_run_s=30) as service:
        service.worker("w1"), service.collector()
        service.wait_workers(["w1"])
        monkeypatch.setenv("FASTDIFF_MAX_RUN_S", "0.5")
        client = ServiceClient(service.broker.url, str(service.home / "store"))
        _, (run_id,) = client.submit(RunSpec(samples=20_000, steps=50, seed=4242), "short limit")
        (raw,) = service.client.redis.lrange(QUEUE, 0, -1) or [None]
        if raw is not None:  # not yet taken by the worker
            assert json.loads(raw)["headers"]["timelimit"] == [2.5, 0.5]
        runs = service.wait_finished([run_id], timeout=120)
        assert runs["status"].to_list() == ["failed"]
        assert "time limit exceeded (0.5 s)" in runs["error"][0] or "hard time limit exceeded (2.5 s)" in runs["error"][0]
        client.close()


def test_one_up_per_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BROKER_URL"}
    env.update(PYTHONPATH=str(REPO), FASTDIFF_HOME=str(tmp_path / "home"))
    argv = [sys.executable, "-m", "workers.cli", "up", "--workers", "0", "--no-dashboard"]
    first = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, text=True)
    try:
        for line in first.stdout:
            if "Ctrl-C stops everything" in line:
                break
        second = subprocess.run(argv, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"another `fastdiff up` (pid {first.pid}) is running" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGINT)
        assert first.wait(60) == 0


def test_a_failure_the_soft_limit_caused_is_recognised_through_its_chain():
    """The soft time limit that fires inside an import surfaces as another exception (ImportError) whose
    __context__ is the limit: the worker stores it as the time limit, not as an import error."""
    from celery.exceptions import SoftTimeLimitExceeded

    from workers.tasks import _caused_by

    def fails_during_limit():
        try:
            raise SoftTimeLimitExceeded()
        except SoftTimeLimitExceeded:
            raise ImportError("initialization failed")

    with pytest.raises(ImportError) as caught:
        fails_during_limit()
    assert _caused_by(caught.value, SoftTimeLimitExceeded)
    assert _caused_by(SoftTimeLimitExceeded(), SoftTimeLimitExceeded)
    assert not _caused_by(ImportError("initialization failed"), SoftTimeLimitExceeded)
