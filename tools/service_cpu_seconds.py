"""CPU seconds each process of a local service spends on 30 no-op round trips and on a 100-run sweep
(docs/bench-service.md).

    python tools/service_cpu_seconds.py [redis|embedded] [TRIPS] [--no-sweep] [--floor]    # this checkout's code
    PYTHONPATH=OTHER_TREE python tools/service_cpu_seconds.py ...                  # another tree's code

Starts the service as ``fastdiff bench service`` does (two workers of one torch thread, a collector),
warms it, and reads user + system time from /proc for the broker, this client process, each worker
node (main process and pool children) and the collector before and after each phase. CPU seconds
depend less on the machine's load than wall time does, so they say what a round trip costs even on
a busy machine (the clock tick is 10 ms: read them over many trips; per trip they are printed as
milliseconds of CPU per round trip, +-10 ms / TRIPS each). ``--floor``: first the same for TRIPS round
trips of the bare Celery no-op (``workers.celery_floor``) on two floor worker nodes of the same broker,
timed alone (the service idle beside them), so both lines read on the same machine state; then the
same for the guarantees floor (its durable steps on the same nodes, with its own collector process).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from workers.bench_service import NOOP, SWEEP_BASE, _sweep_specs
from workers.local_service import LocalService

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def with_children(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(p))
        except (FileNotFoundError, IndexError):
            continue
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_by_process(svc: LocalService) -> dict[str, float]:
    procs = {"broker": [svc.broker.proc.pid], "client": [os.getpid()],
             **{name: with_children(p.pid) for name, p in svc.procs.items()}}
    return {k: sum(cpu_s(p) for p in v) for k, v in procs.items()}


def report(what: str, n: int, trips: list[float], wall: float, used: dict[str, float]) -> None:
    used = {k: v for k, v in used.items() if v > 0}
    print(f"load {os.getloadavg()[0]:.1f}; {n} {what}: median {1e3 * statistics.median(trips):.1f} ms, "
          f"wall {wall:.2f} s; CPU s:", {k: round(v, 2) for k, v in used.items()},
          f"= CPU ms per round trip: {1e3 * sum(used.values()) / n:.1f}",
          {k: round(1e3 * v / n, 1) for k, v in used.items()}, flush=True)


def floor_trips(svc: LocalService, n: int) -> None:
    import json

    from fastdiff_core.run import execute
    from workers import celery_floor

    svc.floor_worker("f1"), svc.floor_worker("f2"), svc.floor_collector()
    svc.wait_workers(["f1", "f2"])
    app = celery_floor.floor_app(svc.broker.url)
    spec_json, size = NOOP.to_json(), len(json.dumps(execute(NOOP).to_dict()))
    for what, trips_of in (("bare Celery no-op round trips", lambda k: celery_floor.round_trips(app, k)),
                           ("guarantees floor round trips", lambda k: celery_floor.guarantees_round_trips(
                               app, k, svc.floor_dir, spec_json, size))):
        trips_of(4)
        before, t = cpu_by_process(svc), time.perf_counter()
        trips = trips_of(n)
        wall, after = time.perf_counter() - t, cpu_by_process(svc)
        report(what, n, trips, wall, {k: after[k] - before.get(k, 0.0) for k in after})
    for name in ("f1", "f2", "floor-collector"):
        svc.kill(name)


def main() -> None:
    args = [a for a in sys.argv[1:] if a not in ("--no-sweep", "--floor")]
    kind = args[0] if args else "embedded"
    n = int(args[1]) if len(args) > 1 else 30
    with tempfile.TemporaryDirectory() as tmp, \
            LocalService(tmp, kind, max_run_s=600, fsync="always", env={"OMP_NUM_THREADS": "1"}) as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector()
        svc.wait_workers(["w1", "w2"])
        for spec in (SWEEP_BASE, NOOP):
            _, warm = svc.client.submit([spec, spec], "warm-up")
            svc.client.wait(warm, timeout=300)
        if "--floor" in sys.argv:
            floor_trips(svc, n)
        before, t, trips = cpu_by_process(svc), time.perf_counter(), []
        for _ in range(n):
            t1 = time.perf_counter()
            _, (rid,) = svc.client.submit(NOOP, "round trip")
            svc.client.wait([rid], timeout=60)
            trips.append(time.perf_counter() - t1)
        wall, after = time.perf_counter() - t, cpu_by_process(svc)
        report("round trips", n, trips, wall, {k: after[k] - before.get(k, 0.0) for k in after})
        if "--no-sweep" in sys.argv:
            return
        before, t = cpu_by_process(svc), time.perf_counter()
        _, rids = svc.client.submit(_sweep_specs(100), "sweep")
        runs = svc.client.wait(rids, timeout=600)
        wall, after = time.perf_counter() - t, cpu_by_process(svc)
        own = sum(r["result"]["wall_s"] for r in runs.values())
        print(f"load {os.getloadavg()[0]:.1f}; 100-run sweep: {wall:.2f} s wall, the runs' own wall_s {own:.2f} s; CPU s:",
              {k: round(after[k] - before[k], 2) for k in after})


if __name__ == "__main__":
    main()
