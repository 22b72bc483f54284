"""``fastdiff bench faults``: kill each part of a running ``fastdiff up`` mid-sweep and count what survives.

One real ``fastdiff up`` (embedded redis-server, collector, one Celery worker node of one process, no
dashboard) in a fresh directory; per fault, a small sweep of mixture runs (fresh seeds, so each run
solves its own reference ODE and lasts a few seconds), and once one of its runs is running:

    pool_child   kill -9 of the Celery pool process running the run (Celery redelivers it at once)
    node         kill -9 of the whole worker node (`up` starts a new one; its heartbeat requeues the
                 dead node's run once the dead node has been silent for node_ttl_s)
    collector    kill -9 of the collector (`up` restarts it; it finishes what it had taken)
    broker       kill -9 of the embedded redis-server (`up` restarts it from its append-only file)
    up           kill -9 of `up` itself; a new `up` stops what the old one left and starts afresh
    ctrl_c       SIGINT to `up` (Ctrl-C) with a --grace shorter than the run: the run is stopped,
                 requeued, and completed by the next `up`
    ctrl_c_grace the same with a --grace longer than the run: it finishes before `up` exits
    deaths       the pool process is killed each time the run starts: after max_worker_deaths (2)
                 the run is stored failed with the reason and not delivered again

Per row: runs submitted, stored (exactly one record each), duplicated (extra records; and runs
executed to completion more than once, read from the worker log), lost (never stored), failed, and
recovery: seconds from the fault until every run that was running at that moment is stored. The
tests (tests/test_faults.py) run the same functions and assert on the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Self

import redis

from fastdiff_cli.args import int_range, writable_file
from fastdiff_core.spec import RunSpec
from workers import fairqueue, supervision
from workers.celery_app import QUEUE
from workers.client import ServiceClient
from workers.settings import socket_url
from workers.up import PIDS

REPO = pathlib.Path(__file__).resolve().parents[1]
KILLS_THE_RUN = ("pool_child", "node", "up", "ctrl_c")  # the process running the run dies (or may)
FAULTS = ("pool_child", "node", "collector", "broker", "up", "ctrl_c", "ctrl_c_grace", "deaths")
# Short supervision clocks: a node silent 3 s is dead; runs may take 120 s before their limit.
FAULT_ENV = {"FASTDIFF_HEARTBEAT_S": "1", "FASTDIFF_MAX_RUN_S": "120", "FASTDIFF_MAX_WORKER_DEATHS": "2"}


@dataclass
class FaultRow:
    fault: str
    submitted: int
    stored: int
    duplicated: int  # records beyond one per run
    reexecuted: int  # runs executed to completion more than once (worker log)
    lost: int
    failed: int
    recovery_s: float
    requeued_s: float | None = None  # faults that kill the run's process: until it is back in the queue
    stored_before_exit: int | None = None  # Ctrl-C rows: running runs stored before `up` exited
    note: str = ""


class UpService:
    """A ``fastdiff up --no-dashboard --workers 1`` in ``home``, with its own env and log."""

    def __init__(self, home: pathlib.Path, env: dict[str, str] | None = None):
        self.home = pathlib.Path(home).resolve()
        self.env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BROKER_URL"}
        self.env.update(PYTHONPATH=str(REPO), FASTDIFF_HOME=str(self.home), **FAULT_ENV, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._client: ServiceClient | None = None

    @property
    def log(self) -> pathlib.Path:
        return self.home / "up.log"

    def start(self, grace_s: float = 1.0, timeout: float = 120) -> Self:
        self.home.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        mark = "Ctrl-C stops everything."
        before = self.log.read_text().count(mark) if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "up", "--workers", "1", "--no-dashboard", "--grace",
                 str(grace_s)], env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.log.read_text().count(mark) <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`fastdiff up` did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            self._client = ServiceClient(socket_url(self.home / "broker" / "redis.sock"), str(self.home / "store"))
        return self._client

    def pids(self) -> dict[str, int]:
        """The children `up` lists: broker, collector, workers (the Celery main process)."""
        return {name: entry["pid"] for name, entry in json.loads((self.home / PIDS).read_text()).items()}

    def pool_children(self) -> list[int]:
        main = self.pids()["workers"]
        found = []
        for task in pathlib.Path(f"/proc/{main}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
        return found

    def wait_ready(self, timeout: float = 120) -> None:
        """Until a worker node answers a ping (its pool process has imported torch)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.celery.control.ping(timeout=0.5):
                    return
            except Exception:  # noqa: BLE001 - the broker is (re)starting
                time.sleep(0.2)
        raise TimeoutError(f"no worker answered within {timeout} s; logs in {self.home / 'logs'}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120) -> int:
        """Ctrl-C (SIGINT to `up` alone, as a terminal sends it) and wait; returns `up`'s exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop `up` and anything a killed `up` left behind (what a new `up` would stop)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.stop(timeout=60)
        from workers.up import stop_stale

        stop_stale(self.home, 1.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep(seed0: int, n: int) -> list[RunSpec]:
    """n tiny mixture runs with fresh seeds: each solves its own reference ODE (a few seconds)."""
    return [RunSpec(samples=64, steps=4, seed=seed0 + i) for i in range(n)]


def _running(svc: UpService, run_ids: list[str], timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in run_ids if svc.client.progress(r)["status"] == "running"]
        if running:
            return running
        time.sleep(0.05)
    raise TimeoutError(f"no run of {run_ids} started within {timeout} s; logs in {svc.home / 'logs'}")


def _executions(svc: UpService) -> dict[str, int]:
    """Executions run to the end per run id, from the worker log (Celery's 'succeeded' line with our summary),
    whether or not their outcome was the one kept: a second one is wasted work, even though the
    results channel keeps only the first outcome."""
    text = (svc.home / "logs" / "workers.log").read_text(errors="replace")
    counts: dict[str, int] = {}
    for run_id in re.findall(r"'run_id': '([^']+)', 'status': '(?:done|failed|cancelled)', 'pushed': ", text):
        counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def _holders(svc: UpService, run_ids: list[str]) -> dict[str, str]:
    """Where the broker holds each run: 'queue' (waiting, alone, in a batch or in its sweep's lane), or
    the delivery tag of the node holding it."""
    r, wanted, out = svc.client.redis, set(run_ids), {}
    for key in (QUEUE, fairqueue.SWEEP_KEY):
        for raw in r.lrange(key, 0, -1):
            out.update((rid, "queue") for rid in fairqueue.raw_run_ids(raw) if rid in wanted)
    out.update((rid, "queue") for rid in fairqueue.lane_run_ids(r) & wanted)
    for tag, raw in r.hgetall(supervision.UNACKED).items():
        out.update((rid, tag.decode()) for rid in fairqueue.raw_run_ids(raw, unacked=True) if rid in wanted)
    return out


def _wait_stored(svc: UpService, run_ids: list[str], timeout: float,
                 victims: dict[str, str] | None = None) -> tuple[dict[str, float], float | None]:
    """When (time.monotonic()) each run was first seen stored; stops at ``timeout``. With ``victims``
    (run id -> delivery tag at the fault), also when all of them were back: in the queue, held under
    a new delivery tag (redelivered), or stored."""
    seen: dict[str, float] = {}
    back = None
    deadline = time.monotonic() + timeout
    while len(seen) < len(run_ids) and time.monotonic() < deadline:
        if victims and back is None:
            try:
                now = _holders(svc, list(victims))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                now = {}
            if all(rid in seen or now.get(rid, tag) != tag for rid, tag in victims.items()):
                back = time.monotonic()
        for rid in run_ids:
            if rid not in seen:
                run = svc.client.store.run(rid)
                if run is not None and run["status"] != "queued":
                    seen[rid] = time.monotonic()
        time.sleep(0.1)
    return seen, back


def _kill(pid: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def inject(svc: UpService, fault: str, running: list[str], grace_s: float) -> int | None:
    """Apply one fault to the live service; for Ctrl-C, returns how many running runs were stored
    before `up` exited."""
    pids = svc.pids()
    if fault == "pool_child":
        _kill(svc.pool_children()[0])
    elif fault == "node":
        _kill(pids["workers"], group=True)  # the Celery main process and its pool child
    elif fault in ("collector", "broker"):
        _kill(pids[fault])
    elif fault == "up":
        _kill(svc.proc.pid)
        svc.proc.wait()
        svc.start(grace_s)
    elif fault in ("ctrl_c", "ctrl_c_grace"):
        if svc.stop() != 0:
            raise RuntimeError(f"`up` did not exit cleanly after Ctrl-C:\n{svc.log.read_text()[-3000:]}")
        stored = sum(svc.client.store.run(r)["status"] != "queued" for r in running)
        svc.start(grace_s)
        return stored
    elif fault == "deaths":
        key = supervision.attempt_key(running[0])
        for attempt in (1, 2):  # kill the pool process once the attempt has started (the counter says so)
            deadline = time.monotonic() + 120
            while int(svc.client.redis.get(key) or 0) < attempt and time.monotonic() < deadline:
                time.sleep(0.05)
            _kill(svc.pool_children()[0])
    else:
        raise ValueError(f"fault={fault!r} is not one of {list(FAULTS)}")
    return None


def run_fault(svc: UpService, fault: str, seed0: int, n_runs: int = 3, grace_s: float = 1.0,
              timeout: float = 180) -> FaultRow:
    """Submit a sweep of ``n_runs``, apply ``fault`` while one of its runs is running, and count."""
    exp_id, run_ids = svc.client.submit(sweep(seed0, n_runs), f"fault {fault}")
    running = _running(svc, run_ids)
    victims = None
    if fault in KILLS_THE_RUN:
        held = _holders(svc, running)
        victims = {rid: held[rid] for rid in running if held.get(rid, "queue") != "queue"}
    t_fault = time.monotonic()
    stored_before_exit = inject(svc, fault, running, grace_s)
    seen, back = _wait_stored(svc, run_ids, timeout, victims)
    runs = svc.client.store.runs(exp_id)
    stored_ids = [r for r, s in zip(runs["run_id"], runs["status"]) if s != "queued"]
    executions = _executions(svc)
    recovered = [seen[r] for r in running if r in seen]
    recovery = max(recovered) - t_fault if len(recovered) == len(running) else float("inf")
    note = ""
    if fault == "deaths":
        note = str(svc.client.store.run(running[0])["error"]).splitlines()[0]
    elif stored_before_exit is not None:
        note = (f"grace {grace_s:.0f} s: {stored_before_exit} of {len(running)} running run(s) finished before "
                "`up` exited" + ("" if stored_before_exit == len(running) else "; the rest requeued, done after restart"))
    return FaultRow(fault=fault, submitted=len(run_ids), stored=len(set(stored_ids)),
                    duplicated=len(stored_ids) - len(set(stored_ids)),
                    reexecuted=sum(executions.get(r, 0) > 1 for r in run_ids),
                    lost=len(set(run_ids) - set(stored_ids)),
                    failed=int((runs["status"] == "failed").sum()), recovery_s=round(recovery, 1),
                    requeued_s=None if back is None else round(back - t_fault, 1),
                    stored_before_exit=stored_before_exit, note=note)


def table(rows: list[FaultRow]) -> str:
    lines = [("| fault (kill -9 unless said) | submitted | stored | duplicated | re-executed | lost | failed "
              "| requeued (s) | recovery (s) | note |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        requeued = "-" if r.requeued_s is None else f"{r.requeued_s:.1f}"
        lines.append(f"| {r.fault} | {r.submitted} | {r.stored} | {r.duplicated} | {r.reexecuted} | {r.lost} "
                     f"| {r.failed} | {requeued} | {r.recovery_s:.1f} | {r.note} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--runs", type=int_range(1, 1000), default=3, help="runs per fault's sweep (default 3)")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the rows to this JSON file")


def main(args: argparse.Namespace) -> int:
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        raise ValueError(f"faults={args.faults!r}: {bad or 'none given'} not in {list(FAULTS)}")
    if args.runs < 1:
        raise ValueError(f"runs={args.runs!r} must be an integer >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fdfaults-", dir="/tmp") as tmp, UpService(pathlib.Path(tmp)) as svc:
        t = time.monotonic()
        svc.start()
        svc.wait_ready()
        print(f"`fastdiff up` ready in {time.monotonic() - t:.1f} s", flush=True)
        for i, fault in enumerate(faults):
            grace = 60.0 if fault == "ctrl_c_grace" else 1.0
            if fault == "ctrl_c_grace":  # the grace is `up`'s argument: restart it with a long one
                svc.stop()
                svc.start(grace)
                svc.wait_ready()
            rows.append(run_fault(svc, fault, seed0=1000 * (i + 1), n_runs=args.runs, grace_s=grace))
            print(f"{fault}: {rows[-1]}", flush=True)
            if fault == "ctrl_c_grace":
                svc.stop()
                svc.start(1.0)
    print()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"heartbeat {FAULT_ENV['FASTDIFF_HEARTBEAT_S']} s (node dead after 3), {args.runs} runs per fault")
    print()
    print(table(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0
