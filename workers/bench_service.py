"""``fastdiff bench service``: what the queue costs, measured in one run.

1. Round trip of a no-op-sized run (submit -> worker -> results channel -> collector -> readable in
   the store; the client wakes on the collector's announcement, no polling), beside a bare Redis
   PING round trip to the same server, for Debian's redis-server on a loopback port and the
   embedded broker on a Unix socket, both with fsync on every write. Where the time goes: the
   broker's own MONITOR stream timestamps each stage of a few traced round trips. Beside it, in
   turn with it, the floor of the queue's own choices (``workers.celery_floor``): a bare Celery
   no-op with the same guarantees (prefork pool, late acknowledgement, the same broker, a durable
   reply the client waits for) and nothing of fastdiff's; and the guarantees floor: that no-op plus
   exactly the durable steps fastdiff promises per run (the run journalled before submit returns, its
   start recorded, its outcome pushed, stored once by a single-writer collector, the client woken),
   each by the real primitive, with no spec checks, no run and no verdicts.
2. Throughput of a 100-run sweep of tiny runs on 2 worker processes (batched, through each broker)
   vs the same specs executed one after another in this process.
3. The wait of an interactive run submitted while that 100-run sweep is queued, against its round
   trip on an idle queue.
4. Store reads with 1,000 stored runs (the sweep's real results, imported as 10 bundles).

Every worker is warmed (torch imported, the mixture's reference solved) before anything is timed,
as a long-running worker would be. Prints Markdown tables; ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from fastdiff_cli.args import int_range, writable_file
from fastdiff_core.spec import RunSpec
from workers import celery_floor
from workers.broker import system_binary
from workers.local_service import LocalService
from workers.settings import redis_py_url

NOOP = RunSpec(samples=1, steps=1, solver="euler", seed=7)
INTERACTIVE = RunSpec(samples=64, steps=4, solver="euler", seed=0)
SWEEP_BASE = RunSpec(samples=64, steps=2, seed=0)
SWEEP_AXES = {"solver": ["euler", "heun", "ddim", "dpmpp_2m", "unipc"], "steps": list(range(2, 22))}
# The stages of a round trip as the broker sees them (MONITOR), in order.
STAGES = ("submit", "delivery", "execution", "collector", "wake")


def _round_trip(svc: LocalService, spec: RunSpec) -> tuple[float, str, float, float]:
    """(seconds, run id, wall clock at the call, wall clock at the return) of one submit -> stored."""
    t0, t = time.time(), time.perf_counter()
    _, (run_id,) = svc.client.submit(spec, "round trip")
    run = svc.client.wait([run_id], timeout=120)[run_id]
    took = time.perf_counter() - t
    if run["status"] != "done":
        raise RuntimeError(f"round-trip run {run_id} ended {run['status']}: {run['error']}")
    return took, run_id, t0, time.time()


def _ping_ms(url: str, n: int = 200) -> tuple[float, float]:
    """Median milliseconds of a bare PING round trip and of one durable write (LPUSH: with
    appendfsync always, Redis fsyncs before it answers) to the same server."""
    with redis.Redis.from_url(redis_py_url(url)) as r:
        out = []
        for op in (r.ping, lambda: r.lpush("fastdiff:bench:write", 1)):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                op()
                times.append(time.perf_counter() - t)
            out.append(1e3 * statistics.median(times))
        r.delete("fastdiff:bench:write")
    return out[0], out[1]


def _fsync_ms(directory: pathlib.Path, n: int = 100) -> float:
    """Median milliseconds of appending a line to a file in ``directory`` and fsyncing it (what one
    journal write of the store costs on this disk)."""
    path = directory / "bench-fsync.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 200 + b"\n")
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return 1e3 * statistics.median(times)


@contextlib.contextmanager
def monitored(svc: LocalService) -> Iterator[list[dict[str, Any]]]:
    """Every command the service's broker receives inside the block (its MONITOR stream: time,
    client_address, client_port, command), in order; complete once the block has exited."""
    events: list[dict[str, Any]] = []
    ready, token = threading.Event(), f"fastdiff-bench-end-{os.getpid()}-{time.time()}"

    def watch() -> None:
        with redis.Redis.from_url(redis_py_url(svc.broker.url)) as mon, mon.monitor() as m:
            ready.set()
            for cmd in m.listen():
                if token in cmd["command"]:
                    return
                events.append(cmd)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    ready.wait(10)
    try:
        yield events
    finally:
        svc.client.redis.echo(token)  # the watcher stops when it reads this
        th.join(30)


def traced_round_trips(svc: LocalService, spec: RunSpec, n: int) -> dict[str, float]:
    """Median milliseconds of each stage over ``n`` round trips, from the broker's MONITOR stream:
    submit (call -> the message is in the queue), delivery (-> the task starts its attempt: BRPOP,
    kombu's bookkeeping, Celery handing it to a pool process, the spec parsed), execution (-> the
    outcome is pushed), collector (-> stored and announced, or the client's return when it read the
    result before the announcement reached it: the collector announces while its write is fsynced),
    wake (-> the client returns)."""
    with monitored(svc) as seen:
        trips = [_round_trip(svc, spec) for _ in range(n)]
        deadline = time.monotonic() + 10  # the last announcement may follow the client's return
        while time.monotonic() < deadline and not any(
                c["command"].startswith("PUBLISH fastdiff:stored") and trips[-1][1] in c["command"] for c in seen):
            time.sleep(0.01)
    events = [(cmd["time"], cmd["command"]) for cmd in seen]
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for _, run_id, t_call, t_back in trips:
        mine = [(t, c) for t, c in events if run_id in c]
        queued = next(t for t, c in mine if c.startswith("LPUSH fastdiff "))
        begun = next(t for t, c in mine if c.startswith("EVAL") and "local waiting" in c)
        pushed = next(t for t, c in mine if c.startswith("EVAL") and "local pushed" in c)
        stored = min(t_back, next(t for t, c in mine if c.startswith("PUBLISH fastdiff:stored")))
        for stage, (a, b) in zip(STAGES, [(t_call, queued), (queued, begun), (begun, pushed), (pushed, stored),
                                          (stored, t_back)]):
            per_stage[stage].append(1e3 * (b - a))
    return {s: statistics.median(v) for s, v in per_stage.items()}


def _p90_ms(seconds: list[float]) -> float:
    return 1e3 * sorted(seconds)[int(0.9 * (len(seconds) - 1))]


def _timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_broker(kind: str, root: str, round_trips: int, n_runs: int, result_bytes: int) -> dict[str, Any]:
    # Two worker processes share the cores: one torch thread each per core's share, as `fastdiff worker`
    # sizes itself when it is the machine's only worker node.
    threads = str(max(1, (os.cpu_count() or 2) // 2))
    with LocalService(root, kind, max_run_s=600, fsync="always", env={"OMP_NUM_THREADS": threads}) as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector(), svc.floor_worker("f1"), svc.floor_worker("f2")
        svc.floor_collector()
        svc.wait_workers(["w1", "w2", "f1", "f2"])
        floor = celery_floor.floor_app(svc.broker.url)
        spec_json = NOOP.to_json()

        def guarantees(n: int) -> list[float]:
            return celery_floor.guarantees_round_trips(floor, n, svc.floor_dir, spec_json, result_bytes)

        celery_floor.round_trips(floor, 2), guarantees(2)  # warm the floor's pool processes
        # warm both workers: a two-run sweep is two one-run batches, one per process
        _, warm = svc.client.submit([SWEEP_BASE, SWEEP_BASE], "warm-up")
        svc.client.wait(warm, timeout=300)
        _, warm = svc.client.submit([NOOP, NOOP], "warm-up")
        svc.client.wait(warm, timeout=300)
        ping, write = _ping_ms(svc.broker.url)
        store_fsync = _fsync_ms(svc.store.root)
        # The no-op round trip and both floors, one of each in turn: all see the same load.
        trips, floors, guaranteed = [], [], []
        for _ in range(round_trips):
            floors += celery_floor.round_trips(floor, 1)
            guaranteed += guarantees(1)
            trips.append(_round_trip(svc, NOOP)[0])
        for name in ("f1", "f2", "floor-collector"):  # nothing of the floors stays beside what follows
            svc.kill(name)
        stages = traced_round_trips(svc, NOOP, min(10, round_trips))
        idle = statistics.median(_round_trip(svc, INTERACTIVE)[0] for _ in range(5))
        specs = _sweep_specs(n_runs)
        t = time.perf_counter()
        exp_id, run_ids = svc.client.submit(specs, "throughput")
        runs = svc.client.wait(run_ids, timeout=3600)
        sweep_s = time.perf_counter() - t
        failed = [r["error"] for r in runs.values() if r["status"] != "done"]
        if failed:
            raise RuntimeError(f"sweep runs failed: {failed[:3]}")
        bundle = svc.store.export_bundle(exp_id, f"{root}/sweep.zip")
        # the interactive run behind a queued 100-run sweep: submitted once the sweep is running
        _, behind = svc.client.submit(specs, "queued sweep")
        svc.client.wait(behind[:1], timeout=300)
        waited, run_id, _, _ = _round_trip(svc, INTERACTIVE)
        stored = svc.client.wait(behind, timeout=3600)
        after = sum(stored[b]["finished"] > svc.store.run(run_id)["finished"] for b in behind)
    return {"broker": kind, "ping_ms": ping, "durable_write_ms": write, "store_fsync_ms": store_fsync, "round_trip_ms": 1e3 * statistics.median(trips),
            "round_trip_p90_ms": _p90_ms(trips), "celery_floor_ms": 1e3 * statistics.median(floors),
            "celery_floor_p90_ms": _p90_ms(floors), "guarantees_floor_ms": 1e3 * statistics.median(guaranteed),
            "guarantees_floor_p90_ms": _p90_ms(guaranteed), "stages_ms": stages,
            "sweep_s": sweep_s, "workers": sorted({r["worker"] for r in runs.values()}), "bundle": str(bundle),
            "interactive_idle_ms": 1e3 * idle, "interactive_behind_sweep_ms": 1e3 * waited,
            "sweep_runs_after_interactive": after}


def bench_capacity(root: str, n_runs: int = 500, n_writes: int = 2000) -> dict[str, float]:
    """What one broker and one collector can take, on this machine, with the embedded broker fsyncing
    every write: (1) the broker's durable write rate, sequential from one client and from 16 clients
    at once (Redis fsyncs once per event-loop pass, so concurrent writers share an fsync); (2) the
    collector's storing rate: ``n_runs`` real outcomes (one real RunResult, sent for ``n_runs`` real
    submitted runs through ``outcomes.finish``, as workers push them) drained by the real collector
    process into the store; (3) the Redis commands one run costs (MONITOR over a real round trip)."""
    from concurrent.futures import ThreadPoolExecutor

    from fastdiff_core.run import execute
    from workers import outcomes

    result = execute(SWEEP_BASE).to_dict()
    with LocalService(root, "embedded", max_run_s=600, fsync="always") as svc:
        r = svc.client.redis
        t = time.perf_counter()
        for i in range(n_writes):
            r.lpush("bench:writes", i)
        sequential = n_writes / (time.perf_counter() - t)
        pool = redis.ConnectionPool.from_url(redis_py_url(svc.broker.url), max_connections=16)

        def writer(k: int) -> None:
            c = redis.Redis(connection_pool=pool)
            for i in range(n_writes // 16):
                c.lpush("bench:writes", i)

        t = time.perf_counter()
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(writer, range(16)))
        concurrent = 16 * (n_writes // 16) / (time.perf_counter() - t)
        _, run_ids = svc.store.new_experiment("capacity", [SWEEP_BASE] * n_runs)
        t = time.perf_counter()
        for rid in run_ids:
            outcomes.finish(r, rid, "done", result, worker="bench", end_attempt=True, wall_s=0.1)
        push_s = time.perf_counter() - t
        svc.collector()
        t = time.perf_counter()
        svc.client.wait(run_ids, timeout=3600)
        drain_s = time.perf_counter() - t
    return {"redis_writes_per_s_sequential": sequential, "redis_writes_per_s_16_clients": concurrent,
            "finish_per_s": n_runs / push_s, "collector_runs_per_s": n_runs / drain_s,
            "result_bytes": float(len(json.dumps(result)))}


def _sweep_specs(n_runs: int) -> list[RunSpec]:
    from workers.client import grid

    specs = grid(SWEEP_BASE, SWEEP_AXES)
    return (specs * (n_runs // len(specs) + 1))[:n_runs]


def bench_in_process(n_runs: int) -> tuple[float, float, int, int]:
    """(seconds for the sweep's runs one after another, median milliseconds of the no-op run, torch
    threads used, characters of the no-op's result JSON) in this process, with whichever thread count is faster here (1, or torch's default:
    on a loaded machine two intra-op threads can be many times slower than one)."""
    import torch

    from fastdiff_core.run import execute

    specs = _sweep_specs(n_runs)
    default = torch.get_num_threads()
    best = (float("inf"), default)
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        execute(SWEEP_BASE)  # warm, like the workers
        t = time.perf_counter()
        for spec in specs[:10]:
            execute(spec)
        best = min(best, (time.perf_counter() - t, threads))
    torch.set_num_threads(best[1])
    noop_bytes = len(json.dumps(execute(NOOP).to_dict()))
    noop_ms = 1e3 * _timed(lambda: execute(NOOP), 11)
    t = time.perf_counter()
    for spec in specs:
        execute(spec)
    took = time.perf_counter() - t
    torch.set_num_threads(default)
    return took, noop_ms, best[1], noop_bytes


def bench_store_reads(bundle: str, root: str, copies: int = 10) -> dict[str, float]:
    from store import Store

    store = Store(root)
    for _ in range(copies):
        store.import_bundle(bundle)
    ids = store.runs()["run_id"].to_list()

    def page() -> None:  # what a results page reads
        store.experiments()
        store.runs()
        store.metrics(ids)
        store.histograms(ids)
        store.latency(ids)

    fresh = _timed(page, 3)
    t = time.perf_counter()
    store.compact()
    compact_s = time.perf_counter() - t
    return {"runs": len(ids), "page_uncompacted_s": fresh, "compact_s": compact_s, "page_s": _timed(page, 5),
            "runs_s": _timed(store.runs, 5), "histograms_s": _timed(lambda: store.histograms(ids), 5)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int_range(1, 100_000), default=100, help="runs in the throughput sweep (default 100)")
    parser.add_argument("--round-trips", type=int_range(1, 100_000), default=30, help="timed no-op round trips per broker")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures to this JSON file")


def _print_round_trips(results: list[dict[str, Any]], names: dict[str, str]) -> None:
    print("| broker | PING | durable write (LPUSH) | store fsync | bare Celery no-op, median (p90) | "
          "guarantees floor, median (p90) | no-op round trip, median (p90) | "
          + " | ".join(f"{s}, ms" for s in STAGES) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(STAGES))
    for r in results:
        print(f"| {names[r['broker']]} | {r['ping_ms']:.2f} ms | {r['durable_write_ms']:.2f} ms | {r['store_fsync_ms']:.2f} ms | "
              f"{r['celery_floor_ms']:.1f} ms ({r['celery_floor_p90_ms']:.1f} ms) | "
              f"{r['guarantees_floor_ms']:.1f} ms ({r['guarantees_floor_p90_ms']:.1f} ms) | "
              f"{r['round_trip_ms']:.1f} ms ({r['round_trip_p90_ms']:.1f} ms) | "
              + " | ".join(f"{r['stages_ms'][s]:.1f}" for s in STAGES) + " |")


def main(args: argparse.Namespace) -> int:
    # Debian's Redis (when installed) and the embedded one, both fsyncing every write: an accepted run
    # survives a broker crash.
    kinds = (["redis"] if system_binary() else []) + ["embedded"]
    results = []
    with tempfile.TemporaryDirectory(prefix="fdbench-") as tmp:
        print(f"[in-process] the {args.runs} sweep runs, one after another ...", flush=True)
        local_s, noop_ms, local_threads, noop_bytes = bench_in_process(args.runs)
        for kind in kinds:
            print(f"[{kind}] round trips, a {args.runs}-run sweep on 2 workers, an interactive run behind it ...",
                  flush=True)
            results.append(bench_broker(kind, f"{tmp}/{kind}", args.round_trips, args.runs, noop_bytes))
        print("[capacity] broker write rate, collector storing rate ...", flush=True)
        capacity = bench_capacity(f"{tmp}/capacity")
        print("[store] 1,000 stored runs ...", flush=True)
        reads = bench_store_reads(results[-1]["bundle"], f"{tmp}/reads", copies=max(1, 1000 // args.runs))
    load = os.getloadavg()[0]
    names = {"redis": "Debian redis-server, TCP loopback", "embedded": "embedded broker, Unix socket"}
    print()
    print(f"machine: {os.cpu_count()} CPU cores, load average {load:.1f} at the end; {args.round_trips} round trips "
          f"per broker; appendfsync always; the no-op run executes in {noop_ms:.1f} ms in-process")
    print()
    _print_round_trips(results, names)
    print()
    print(f"| broker | {args.runs}-run sweep, 2 workers | runs/s | vs in-process | interactive run: idle queue | "
          f"behind the queued sweep | sweep runs stored after it |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {names[r['broker']]} | {r['sweep_s']:.2f} s | {args.runs / r['sweep_s']:.1f} | "
              f"{local_s / r['sweep_s']:.2f}x | {r['interactive_idle_ms']:.0f} ms | "
              f"{r['interactive_behind_sweep_ms']:.0f} ms | {r['sweep_runs_after_interactive']} of {args.runs} |")
    print(f"| in-process, sequential, {local_threads} torch thread(s) | {local_s:.2f} s | {args.runs / local_s:.1f} | 1.00x | - | - | - |")
    print()
    print(f"store, {reads['runs']} runs: one page (experiments + runs + metrics + histograms + latency of all) "
          f"{1e3 * reads['page_s']:.0f} ms compacted, {1e3 * reads['page_uncompacted_s']:.0f} ms from "
          f"uncompacted files; runs() {1e3 * reads['runs_s']:.0f} ms; histograms(all) "
          f"{1e3 * reads['histograms_s']:.0f} ms; compaction {1e3 * reads['compact_s']:.0f} ms")
    print()
    print(f"capacity (embedded broker, appendfsync always): {capacity['redis_writes_per_s_sequential']:,.0f} durable "
          f"writes/s from one client, {capacity['redis_writes_per_s_16_clients']:,.0f}/s from 16; outcomes pushed "
          f"{capacity['finish_per_s']:,.0f}/s; the collector stored {capacity['collector_runs_per_s']:,.0f} runs/s "
          f"({capacity['result_bytes'] / 1e3:.1f} kB each)")
    if args.json:
        out = {"load_average": load, "noop_execute_ms": noop_ms, "in_process_s": local_s, "runs": args.runs,
               "round_trip_ms": {r["broker"]: r["round_trip_ms"] for r in results},
               "celery_floor_ms": {r["broker"]: r["celery_floor_ms"] for r in results},
               "guarantees_floor_ms": {r["broker"]: r["guarantees_floor_ms"] for r in results},
               "ping_ms": {r["broker"]: r["ping_ms"] for r in results},
               "durable_write_ms": {r["broker"]: r["durable_write_ms"] for r in results},
               "store_fsync_ms": {r["broker"]: r["store_fsync_ms"] for r in results}, "in_process_threads": local_threads,
               "throughput_vs_in_process": {r["broker"]: local_s / r["sweep_s"] for r in results},
               "brokers": [{k: v for k, v in r.items() if k != "bundle"} for r in results], "store": reads,
               "capacity": capacity}
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    return 0
