"""The fair queue (workers/fairqueue.py) with a real redis-server, then the whole service for real
(embedded broker, Celery worker processes, the collector): batched sweeps store exactly what runs
sent one by one store, cancelling one run of a batch cancels only it, and an interactive run
overtakes a queued sweep. Queue order and positions are checked on the broker's own lists."""

from __future__ import annotations

import json

import pytest

from fastdiff_core.spec import RunSpec
from store import ids
from workers import fairqueue, outcomes, supervision
from workers.broker import RedisServer
from workers.local_service import LocalService

MAX_RUN_S = 30


@pytest.fixture
def r(tmp_path):
    server = RedisServer(tmp_path / "b", unix_socket=tmp_path / "b" / "r.sock").start()
    with server.client() as c:
        yield c
    server.kill()


def runs_of(n: int) -> list[tuple[str, str]]:
    return [(ids.new_id("r"), RunSpec(samples=8, steps=2, seed=i).to_json()) for i in range(n)]


def test_sweeps_are_batched_and_dispatched_round_robin_up_to_the_live_capacity(r):
    a, b = ids.new_id("e"), ids.new_id("e")
    runs_a, runs_b = runs_of(40), runs_of(3)
    batches_a = fairqueue.enqueue_sweep(r, a, "ann", runs_a)
    fairqueue.enqueue_sweep(r, b, "bob", runs_b)
    assert [len(x["runs"]) for x in batches_a] == [5] * 8  # 40 runs: 8 batches of 5
    sent: list[dict] = []

    def send(batch):  # what send_batch does to the broker's list, minus Celery's envelope
        sent.append(batch)
        r.lpush(fairqueue.SWEEP_KEY, json.dumps(batch))

    # No live worker node: capacity 1, so one batch waits in the broker and the rest stay in lanes.
    assert fairqueue.dispatch(r, send) == 1 and fairqueue.dispatch(r, send) == 0
    # A node with 3 processes heartbeats: 3 may wait.
    with r.pipeline() as p:
        fairqueue.note_node(p, "w@x", 3, ttl_s=30)
        p.execute()
    assert fairqueue.capacity(r) == 3
    assert fairqueue.dispatch(r, send) == 2
    r.delete(fairqueue.SWEEP_KEY)  # the workers took them
    assert fairqueue.dispatch(r, send, slots=100) == 11 - 3 + 0  # the rest, all lanes drained
    owners = [x["exp_id"] for x in sent]
    # Round robin: B's three one-run batches are interleaved with A's, not queued behind all of A's.
    assert owners[:6] == [a, b, a, b, a, b] and owners[6:] == [a] * 5
    assert sorted(rid for x in sent for rid, _ in x["runs"]) == sorted(rid for rid, _ in runs_a + runs_b)
    assert r.llen(fairqueue.RING) == 0


def test_queue_positions_follow_the_service_order(r):
    a, b = ids.new_id("e"), ids.new_id("e")
    runs_a, runs_b = runs_of(16), runs_of(2)
    fairqueue.enqueue_sweep(r, a, "ann", runs_a)
    fairqueue.enqueue_sweep(r, b, "bob", runs_b)
    rows = {x["run_id"]: x for x in fairqueue.snapshot(r)}
    assert len(rows) == 18 and {x["state"] for x in rows.values()} == {"queued"}
    # A's first batch (2 runs), then B's first run, A's second batch, B's second run, ...
    assert rows[runs_a[0][0]]["position"] == 1 and rows[runs_a[1][0]]["position"] == 2
    assert rows[runs_b[0][0]]["position"] == 3 and rows[runs_a[2][0]]["position"] == 4
    assert rows[runs_b[1][0]]["position"] == 6 and rows[runs_a[15][0]]["position"] == 18
    assert all(x["est_start_s"] is None for x in rows.values())  # no run has finished: no estimate yet
    r.lpush(fairqueue.RECENT, 2.0, 4.0, 3.0)  # median 3 s per run, one process
    rows = {x["run_id"]: x for x in fairqueue.snapshot(r)}
    assert rows[runs_b[0][0]]["est_start_s"] == pytest.approx(6.0)
    assert rows[runs_a[0][0]]["owner"] == "ann" and rows[runs_b[0][0]]["kind"] == "sweep"


def test_a_malformed_batch_is_refused_naming_what_is_wrong():
    good = {"batch_id": "b0123456789ab", "exp_id": "e0123456789ab", "runs": [["r0123456789ab", "{}"]]}
    assert fairqueue.check_batch(good) == good
    for bad, field in [({**good, "batch_id": "../x"}, "batch_id"), ({**good, "exp_id": 3}, "exp_id"),
                       ({**good, "runs": []}, "runs"), ({**good, "runs": [["../r", "{}"]]}, "runs"),
                       ({**good, "extra": 1}, "batch="), ([1], "batch=")]:
        with pytest.raises(ValueError, match=field):
            fairqueue.check_batch(bad)


def take_without_ack(client) -> list:
    """What a worker node's consumer does with acks_late: kombu takes one message from the broker and
    books it as delivered and unacknowledged (its Redis transport's own code, no worker process)."""
    from kombu import Consumer, Queue

    got: list = []
    conn = client.celery.connection_for_read()
    consumer = Consumer(conn.default_channel, queues=[Queue(fairqueue.QUEUE)], accept=["json"],
                        callbacks=[lambda body, message: got.append(message)])
    consumer.qos(prefetch_count=1)
    with consumer:
        conn.drain_events(timeout=10)
    return got


def test_a_run_taken_by_a_worker_and_not_started_shows_as_dispatched(tmp_path):
    from workers.client import ServiceClient

    server = RedisServer(tmp_path / "b", unix_socket=tmp_path / "b" / "r.sock").start()
    client = ServiceClient(server.url, str(tmp_path / "store"), owner="ann@x")
    try:
        _, (run_id,) = client.submit(RunSpec(samples=8, steps=2, seed=0), "one")
        (row,) = client.queue()
        assert (row["run_id"], row["state"], row["position"], row["kind"]) == (run_id, "queued", 1, "interactive")
        (message,) = take_without_ack(client)
        (row,) = client.queue()
        assert (row["state"], row["position"], row["est_start_s"]) == ("dispatched", None, None)
        assert client.progress(run_id)["status"] == "queued"  # the store's word until the worker starts it
        from app import queue_view

        assert queue_view.queue_rows([row], "ann@x")[0]["where"] == "taken by a worker, starting"
        message.requeue()  # handed back (a worker that shuts down): queued again, first in line
        (row,) = client.queue()
        assert (row["state"], row["position"]) == ("queued", 1)
    finally:
        client.close()
        server.kill()



def test_wait_keeps_its_connection_between_waits_and_is_woken_by_its_own_runs_announcement(tmp_path):
    """``ServiceClient.wait`` unsubscribes when done and subscribes again on the same connection (a new
    connection per wait cost a handshake on every round trip); an announcement made while nobody waits,
    or one of another run, changes nothing. Outcomes go the real way: ``outcomes.finish`` as a worker
    pushes them, the collector's ``_take`` storing and announcing them."""
    import threading
    import time

    from workers import collector
    from workers.client import ServiceClient

    server = RedisServer(tmp_path / "b", unix_socket=tmp_path / "b" / "r.sock").start()
    client = ServiceClient(server.url, str(tmp_path / "store"), owner="ann@x")
    r = server.client()
    try:
        _, rids = client.store.new_experiment("four", [RunSpec(samples=8, steps=2, seed=i) for i in range(4)])

        def stored(rid: str) -> None:
            outcomes.finish(r, rid, "failed", error=f"E: {rid}", worker="w")
            collector._take(client.store, r, [r.lmove(outcomes.RESULTS, outcomes.PROCESSING, "RIGHT", "LEFT")])

        stored(rids[0])
        assert client.wait([rids[0]], timeout=10)[rids[0]]["error"] == f"E: {rids[0]}"
        connections = r.info("stats")["total_connections_received"]
        stored(rids[1])  # announced while nobody waits
        for rid in rids[2:]:
            later = threading.Timer(0.2, stored, [rid])  # announced while wait() sleeps on the channel
            later.start()
            assert client.wait([rid], timeout=10)[rid]["error"] == f"E: {rid}"
            later.join()
        assert client.wait(rids, timeout=10).keys() == set(rids)
        assert r.info("stats")["total_connections_received"] == connections
        deadline = time.monotonic() + 10  # the unsubscribe is sent, not waited for: no listener stays
        while r.pubsub_numsub(outcomes.STORED_CHANNEL)[0][1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.pubsub_numsub(outcomes.STORED_CHANNEL)[0][1] == 0
    finally:
        client.close()
        r.close()
        server.kill()

def test_the_queue_view_lists_the_records_without_scanning_the_keyspace(r):
    """Every run leaves keys for 30 days (its finished marker, its attempt count): ``snapshot`` (the Queue
    page, a queued run's ``progress``) reads the list of runs with a record, never a SCAN of all keys
    (1.2 s at 200,000 keys). Records join the list where they are written and leave it with the outcome."""
    with r.pipeline(transaction=False) as p:
        for i in range(5000):
            p.set(f"fastdiff:finished:r{i:012x}", "done")
        p.execute()
    exp_id, (one, done), sweep = ids.new_id("e"), runs_of(2), runs_of(3)
    fairqueue.record_interactive(r, one[0], exp_id, "ann@x", outcomes.finished_key(one[0]))
    fairqueue.record_interactive(r, done[0], exp_id, "ann@x", outcomes.finished_key(done[0]))
    fairqueue.enqueue_sweep(r, ids.new_id("e"), "bob@x", sweep)
    started = ids.new_id("r")  # a run whose record the worker's start writes (requeued, say)
    supervision.begin_run(r, started, "w1@h", "cpu")
    outcomes.finish(r, done[0], "done", {}, worker="w1@h")
    r.expire(fairqueue.record_key(sweep[2][0]), 1)  # a record that expires (30 days on) ...
    r.delete(fairqueue.record_key(sweep[2][0]))     # ... is gone
    calls = r.info("stats")["total_commands_processed"]
    rows = fairqueue.snapshot(r)
    assert {x["run_id"] for x in rows} == {one[0], sweep[0][0], sweep[1][0], started}
    assert r.info("stats")["total_commands_processed"] - calls < 40  # a handful of reads, not 500 SCANs
    assert "cmdstat_scan" not in r.info("commandstats")
    assert {x.decode() for x in r.smembers(fairqueue.RECORDS)} == {one[0], sweep[0][0], sweep[1][0], started}


def test_the_runs_waiting_in_lanes_are_read_from_the_ring_without_scanning_the_keyspace(r):
    """``lane_run_ids`` (the collector's check for lost runs, a client's retried enqueue) reads the lanes
    the ring names, never a SCAN of every key; what it returns follows the lanes through enqueue,
    dispatch (a lane emptied leaves the ring) and a batch handing its unstarted runs back."""
    with r.pipeline(transaction=False) as p:
        for i in range(5000):
            p.set(f"fastdiff:finished:r{i:012x}", "done")
        p.execute()
    a, b = ids.new_id("e"), ids.new_id("e")
    runs_a, runs_b = runs_of(1), runs_of(16)  # 1 batch of 1 run; 8 batches of 2 runs
    fairqueue.enqueue_sweep(r, a, "ann", runs_a)
    fairqueue.enqueue_sweep(r, b, "bob", runs_b)
    assert fairqueue.lane_run_ids(r) == {rid for rid, _ in runs_a + runs_b}
    sent: list[dict] = []

    def send(batch: dict) -> None:
        sent.append(batch)
        r.lpush(fairqueue.SWEEP_KEY, json.dumps(batch))

    assert fairqueue.dispatch(r, send, slots=3) == 3  # a's only batch, then b's first two
    assert fairqueue.lane_run_ids(r) == {rid for rid, _ in runs_b} - {rid for x in sent for rid, _ in x["runs"]}
    assert a.encode() not in r.lrange(fairqueue.RING, 0, -1)  # a's lane is empty: out of the ring
    taken_b = next(x for x in sent if x["exp_id"] == b)
    fairqueue.yield_rest(r, taken_b, taken_b["runs"][1:])  # ran one run, handed the other back
    waiting = fairqueue.lane_run_ids(r)
    assert taken_b["runs"][1][0] in waiting and taken_b["runs"][0][0] not in waiting and len(waiting) == 13
    calls = r.info("stats")["total_commands_processed"]
    fairqueue.lane_run_ids(r)
    assert r.info("stats")["total_commands_processed"] - calls < 10
    assert "cmdstat_scan" not in r.info("commandstats")


def test_the_interactive_record_written_after_the_send_never_outlives_the_run(r):
    rid, exp_id = ids.new_id("r"), ids.new_id("e")
    marker = outcomes.finished_key(rid)
    # The worker started the run before the client's record arrived: its 'running' fields stay.
    supervision.begin_run(r, rid, "w1@h", "cpu")
    assert fairqueue.record_interactive(r, rid, exp_id, "ann@x", marker) is True
    assert {k: fairqueue.record(r, rid)[k] for k in ("state", "worker", "owner", "kind")} == {
        "state": "running", "worker": "w1@h", "owner": "ann@x", "kind": "interactive"}
    # The run finished before the record arrived: no record comes back (it would show queued for 30 days).
    other = ids.new_id("r")
    assert outcomes.finish(r, other, "failed", error="boom", worker="w1@h", end_attempt=True) is True
    assert fairqueue.record_interactive(r, other, exp_id, "ann@x", outcomes.finished_key(other)) is False
    assert fairqueue.record(r, other) == {} and [x["run_id"] for x in fairqueue.snapshot(r)] == [rid]



def test_a_start_sent_before_the_run_is_answered_after_it_with_what_begin_run_finds(r):
    """``send_begin`` (a worker's first delivery computes while the start is made durable): the answer
    read later is what ``begin_run`` finds (a fresh run; a second attempt counting the first; a cancelled
    run, which counts no attempt), and the connection goes back to the pool either way."""
    rid = ids.new_id("r")
    answer = supervision.send_begin(r, rid, "w1@h", "cpu")
    assert fairqueue.record(r, rid)["state"] == "running"  # done by the broker before the answer is read
    assert answer() == supervision.Begun(False, False, 0, False)
    assert supervision.send_begin(r, rid, "w1@h", "cpu")().deaths == 1  # the first attempt never ended
    other = ids.new_id("r")
    r.set(outcomes.cancelled_key(other), 1)
    assert supervision.send_begin(r, other, "w1@h", "cpu")() == supervision.Begun(False, True, 0, False)
    assert r.get(outcomes.attempt_key(other)) is None
    pool = r.connection_pool
    assert not pool._in_use_connections

# ---------------------------------------------------------------------------------------------
# the whole service
# ---------------------------------------------------------------------------------------------

DETERMINISTIC = ("nfe_counted", "nfe_formula", "histograms", "samples")
TIMING_METRICS = {"threads", "load_1m", "setup_s"}  # setup_s: seconds loading what the process keeps


def numbers(result: dict) -> dict:
    """What a run computed (everything but its timings and the machine's load)."""
    return {**{k: result[k] for k in DETERMINISTIC},
            "metrics": {k: v for k, v in result["metrics"].items() if k not in TIMING_METRICS}}


@pytest.fixture
def service(tmp_path):
    s = LocalService(tmp_path, "embedded", max_run_s=MAX_RUN_S, heartbeat_s=1)
    yield s
    s.close()


@pytest.mark.service
def test_a_batched_sweep_stores_what_the_same_runs_sent_one_by_one_store_and_cancel_takes_one_run(service):
    specs = [RunSpec(samples=32, steps=s, solver=solver, seed=k)
             for solver in ("euler", "heun") for s in (2, 3, 4, 5) for k in (3, 4)]
    # Submitted before any worker exists: the sweep waits in its lane, in batches of several runs.
    exp_id, batched = service.client.submit(specs, "batched")
    lanes = [json.loads(x)["runs"] for x in service.client.redis.lrange(fairqueue.lane_key(exp_id), 0, -1)]
    waiting = [json.loads(x) for x in service.client.redis.lrange(fairqueue.SWEEP_KEY, 0, -1)]
    assert len(waiting) == 1 and len(lanes) == 7  # 16 runs, 8 batches: one dispatched (no worker: capacity 1)
    assert all(len(b) == 2 for b in lanes)
    victim = lanes[1][0][0]
    assert service.client.cancel(victim) is True
    service.worker("w1"), service.collector()
    one_by_one = [service.client.submit(s, f"single {i}")[1][0] for i, s in enumerate(specs)]
    stored = service.client.wait(batched + one_by_one, timeout=240)
    for b, single in zip(batched, one_by_one):
        if b == victim:
            continue
        assert stored[b]["status"] == stored[single]["status"] == "done", (stored[b]["error"], stored[single]["error"])
        assert numbers(stored[b]["result"]) == numbers(stored[single]["result"])
    assert stored[victim]["status"] == "cancelled"
    assert [stored[b]["status"] for b in batched].count("done") == len(specs) - 1
    assert fairqueue.snapshot(service.client.redis) == []  # nothing left queued or running


@pytest.mark.service
def test_an_interactive_run_starts_before_the_queued_sweeps_remaining_runs(service):
    service.worker("w1", concurrency=1), service.collector()
    service.wait_workers(["w1"])
    _, warm = service.client.submit(RunSpec(samples=32, steps=2, seed=0), "warm")  # torch, the reference
    service.client.wait(warm, timeout=120)
    _, sweep = service.client.submit([RunSpec(samples=32, steps=2 + i % 20, seed=0) for i in range(60)], "sweep")
    service.client.wait(sweep[:1], timeout=120)  # the sweep is running
    _, (interactive,) = service.client.submit(RunSpec(samples=32, steps=3, seed=0), "interactive")
    # counted once the submission has returned (the interactive run is then waiting at the front): sweep
    # runs that finish while a loaded machine is still inside submit() are not the scheduler's doing
    done_before = sum(outcomes.is_finished(service.client.redis, s) for s in sweep)
    row = next((x for x in service.client.queue() if x["run_id"] == interactive), None)
    if row is not None:  # else it already ran
        assert row["kind"] == "interactive"
        # ahead of every waiting sweep run: running, next, or already taken by the worker and not yet marked
        # running (submit() has returned, so its message was sent: no position means it left the queue)
        assert row["state"] == "running" or row["position"] in (1, None), row
    stored = service.client.wait([interactive, *sweep], timeout=240)
    assert all(run["status"] == "done" for run in stored.values())
    finished = {rid: run["finished"] for rid, run in stored.items()}  # one collector: storage order
    before = sum(finished[s] < finished[interactive] for s in sweep)
    # Stored before the interactive run: the sweep's runs finished when it was counted, plus the run
    # the worker was executing then, one that may start in that instant, and one more for a finish
    # marked between two reads of the count. Everything else of the sweep comes after it.
    assert before <= done_before + 3, (before, done_before)
    assert len(sweep) - before >= 10, "the sweep ran out before the interactive run was submitted"


def test_the_queue_view_shows_position_estimate_and_whose_run_it_is():
    from app import queue_view

    rows = [{"run_id": "r0123456789ab", "exp_id": "e0123456789ab", "owner": "ann@x", "kind": "sweep",
             "state": "running", "position": None, "est_start_s": None, "worker": "w1@h", "done": 3, "total": 8,
             "experiment": "steps *sweep*"},
            {"run_id": "r0123456789ac", "exp_id": "e0123456789ac", "owner": "bob@y", "kind": "interactive",
             "state": "queued", "position": 2, "est_start_s": 12.4, "worker": None, "experiment": "one"},
            {"run_id": "r0123456789ad", "exp_id": "e0123456789ac", "owner": "ann@x", "kind": "sweep",
             "state": "queued", "position": 9, "est_start_s": 600.0, "worker": None, "experiment": "late"}]
    out = queue_view.queue_rows(rows, "ann@x")
    assert [r["where"] for r in out] == ["on w1@h · 3/8", "position 2 · starts in about 12 s",
                                         "position 9 · starts in about 10 min"]
    assert [r["owner"] for r in out] == ["ann@x (you)", "bob@y", "ann@x (you)"]
    assert out[0]["experiment"] == r"steps \*sweep\*"  # a name is shown as typed, never as markdown
    assert queue_view.waiting_text(None, None) == ""


def test_the_queue_page_lists_every_users_runs_and_cancels_only_ones_own(home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.apptest_support import VIEWS, texts
    from workers.client import ServiceClient

    server = RedisServer(home / "broker", unix_socket=home / "broker" / "redis.sock").start()
    try:
        monkeypatch.setenv("FASTDIFF_BROKER_URL", server.url)
        mine = ServiceClient()  # the dashboard's own client submits as the server's user@host
        theirs = ServiceClient(owner="someone@else")
        _, my_runs = mine.submit([RunSpec(samples=8, steps=2, seed=i) for i in range(3)], "my sweep")
        _, their_runs = theirs.submit([RunSpec(samples=8, steps=2, seed=i) for i in range(2)], "their sweep")
        at = AppTest.from_file(str(VIEWS / "queue.py"), default_timeout=60).run()
        assert not at.exception
        table = at.dataframe[0].value
        assert sorted(table["run"]) == sorted(my_runs + their_runs)  # every user's runs, no worker alive
        assert min(table["where"]).startswith("position 1")
        assert "0 running · 5 queued" in texts(at)
        assert set(at.multiselect(key="queue.chosen").options) == set(my_runs)  # cancel: one's own runs only
        at.multiselect(key="queue.chosen").set_value([my_runs[1]]).run()
        at.button(key="queue.cancel").click().run()
        # cancelled (its outcome is on its way to the collector) and gone from the queue; nothing else
        assert [outcomes.is_cancelled(mine.redis, r) for r in my_runs + their_runs] == [False, True, False, False, False]
        assert "0 running · 4 queued" in texts(at.run())
        with pytest.raises(PermissionError, match="belongs to 'someone@else'"):
            mine.cancel(their_runs[0], owner=mine.owner)
        mine.close(), theirs.close()
    finally:
        server.kill()


@pytest.mark.service
def test_two_homes_share_one_password_protected_tcp_redis(tmp_path):
    """Beyond one machine, on one: home A holds the store, the collector and the submitting client;
    home B (another FASTDIFF_HOME, as on a GPU box) runs only a worker node that joins A's broker over
    TCP with a password. Runs submitted in A are executed in B and stored once in A."""
    import redis as redis_py

    from workers.broker import system_binary

    server = RedisServer(tmp_path / "broker", binary=system_binary(), password="a long shared secret/+@:").start()
    a = LocalService(tmp_path / "a", server=server, max_run_s=MAX_RUN_S, heartbeat_s=1)
    b = LocalService(tmp_path / "b", server=server, max_run_s=MAX_RUN_S, heartbeat_s=1)
    try:
        assert server.url.startswith("redis://:") and server.port is not None
        with pytest.raises(redis_py.AuthenticationError):  # no password, no broker
            redis_py.Redis(port=server.port).ping()
        b.worker("gpu1"), a.collector()
        b.wait_workers(["gpu1"])
        _, run_ids = a.client.submit([RunSpec(samples=16, steps=2, seed=i) for i in range(4)], "two homes")
        stored = a.client.wait(run_ids, timeout=180)
        assert [stored[r]["status"] for r in run_ids] == ["done"] * 4
        assert {stored[r]["worker"] for r in run_ids} == {"gpu1@local"}
        assert a.store.runs(run_ids=run_ids, status="done").height == 4
        assert b.store.runs().height == 0
    finally:
        b.close(), a.close()
        server.kill()


def test_start_estimates_schedule_behind_running_and_dispatched_runs():
    now = 1000.0
    rows = [
        # half done after 4 s: 4 s left, by its own progress (not the typical run's 3 s)
        {"state": "running", "started": now - 4.0, "done": 5, "total": 10},
        # no progress reported yet, started 1 s ago: the typical 3 s less 1 s
        {"state": "running", "started": now - 1.0, "done": None, "total": None},
        {"state": "dispatched"},  # taken by a worker: runs before every queued run
        {"state": "queued"}, {"state": "queued"}, {"state": "queued"},
    ]
    # two processes, free at 4 and 2 s; the dispatched run takes the one free at 2 (until 5); the queued
    # runs then start at 4 (until 7), 5 (until 8) and 7.
    assert fairqueue.start_estimates(rows, 3.0, 2, now) == [None, None, None, 4.0, 5.0, 7.0]
    # a third, idle process takes the dispatched run at once (until 3): the queued runs start at 2, 3 and 4
    assert fairqueue.start_estimates(rows, 3.0, 3, now) == [None, None, None, 2.0, 3.0, 4.0]
    # before any run has finished there is no typical run time: no estimate
    assert fairqueue.start_estimates(rows, None, 2, now) == [None] * 6
    # a run past its typical time without progress is taken as about to finish, never as negative
    late = [{"state": "running", "started": now - 60.0}, {"state": "queued"}]
    assert fairqueue.start_estimates(late, 3.0, 1, now) == [None, 0.0]
