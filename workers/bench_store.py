"""``fastdiff bench store``: how long the dashboard's store queries and the collector's compaction take
over a store of N runs, and how many files the store keeps.

Builds the store through the write path the service uses: ``Store.new_experiment`` as the client
records a submission, ``Store.record_result`` in batches of ``BATCH`` inside ``batched_writes`` as
the collector stores results, and ``Store.compact`` after each batch as its compaction thread does.
Half the runs (in whole sweeps) are ``--sweep-size``-run sweeps, the rest single-run experiments,
interleaved. The results are real: ``RESULT_KINDS`` tiny mixture runs executed here
(``fastdiff_core.run.execute``), each stored for the runs of its solver under the run's own spec.

Then, in this process with one ``Store`` held open (as the dashboard's server holds one), each page's
reads are timed (median of ``--repeat``): Experiments (the list and the unreadable count), Explore (a
run opened by link, and the stored runs its run-time estimate fits on), Sweep (a 1,000-run sweep's
runs, metrics and histograms), Compare (the finished runs to pick from, two runs' specs, records,
histograms and metrics). A new process's first query is timed in a real subprocess. Last, rounds of
100 new runs are written and each compaction after them is timed, and the Experiments query right
after it (what a page pays to see the new manifest). ``bench_rows`` returns the figures;
``main`` prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fastdiff_cli.args import int_range, writable_file

BATCH = 64  # results per collector batch (workers.collector.BATCH)
SOLVERS = ("euler", "heun", "dpmpp_2m", "ddim")
NEW_RUNS = 100
REPO = pathlib.Path(__file__).resolve().parents[1]


def real_results(samples: int) -> dict[str, Any]:
    """One executed RunResult per solver in SOLVERS (tiny mixture runs)."""
    from fastdiff_core.run import execute
    from fastdiff_core.spec import RunSpec

    return {s: execute(RunSpec(samples=samples, steps=4, solver=s, seed=0, regime="offline", device="cpu"))
            for s in SOLVERS}


def _spec(results: dict[str, Any], k: int) -> Any:
    base = results[SOLVERS[k % len(SOLVERS)]].spec
    return base.replace(seed=k, steps=2 + k % 7, name=f"bench {k}")


def _fill(store: Any, results: dict[str, Any], n_runs: int, sweep_size: int) -> dict[str, Any]:
    """Submit ``n_runs`` runs (whole sweeps for half of them, single-run experiments for the rest,
    interleaved) and store their results in collector batches, compacting after each batch."""
    n_sweeps = (n_runs // 2) // sweep_size
    n_single = n_runs - n_sweeps * sweep_size
    gap = n_single // (n_sweeps + 1)  # a sweep after every ``gap`` single-run experiments
    plan = [kind for s in range(n_sweeps + 1)
            for kind in ["single"] * (gap if s < n_sweeps else n_single - n_sweeps * gap) + ["sweep"] * (s < n_sweeps)]
    k = 0
    pending: list[tuple[str, Any]] = []
    sweep_ids, single_ids, compactions = [], [], 0

    def drain(force: bool = False) -> None:
        nonlocal compactions
        while len(pending) >= BATCH or (force and pending):
            batch, pending[:] = pending[:BATCH], pending[BATCH:]
            with store.batched_writes():
                for rid, spec in batch:
                    res = results[spec.solver]
                    store.record_result(rid, "done", dataclasses.replace(res, spec=spec), worker="bench@local")
            store.compact()
            compactions += 1

    for kind in plan:
        if kind == "sweep":
            specs = [_spec(results, k + j) for j in range(sweep_size)]
            exp, run_ids = store.new_experiment(f"bench sweep {k}", specs,
                                                {"seed": [s.seed for s in specs]})
            sweep_ids.append(exp)
            k += sweep_size
        else:
            specs = [_spec(results, k)]
            exp, run_ids = store.new_experiment(f"bench single {k}", specs)
            single_ids.append(exp)
            k += 1
        pending.extend(zip(run_ids, specs))
        drain()
    drain(force=True)
    return {"sweeps": sweep_ids, "singles": single_ids, "compactions": compactions, "next": k}


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # the first call fills the Store's caches of the segments (a server's first page view pays it)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


LISTED = ["exp_id", "name", "created", "regime", "world", "sampler", "n_runs", "status", "n_done", "n_failed",
          "n_queued", "imported_from"]  # what the Experiments page asks for
FIRST_QUERY = """
import json, sys, time
t0 = time.perf_counter()
from store import Store
t1 = time.perf_counter()
s = Store(sys.argv[1])
s.experiments(columns=LISTED); s.unreadable()
t2 = time.perf_counter()
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "first_query_ms": 1e3 * (t2 - t1)}))
""".replace("LISTED", repr(LISTED))


def first_query(root: pathlib.Path) -> dict[str, float]:
    """A new process opens the store and lists the experiments: the query alone, the import of the
    store package before it, and the whole process as its parent sees it (interpreter start incl.)."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FIRST_QUERY, str(root)], capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return {**json.loads(out.stdout), "process_ms": 1e3 * (time.perf_counter() - t)}


def count_files(root: pathlib.Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def count_merged_away(root: pathlib.Path) -> int:
    """Segment files the published manifest no longer names (merged into a larger one): still on disk for
    ``store.store.GRACE_S`` seconds, for readers of the previous manifest, then deleted by a compaction."""
    from store import segments

    manifest, _ = segments.load(root)
    live = segments.live_names(root / "segments", manifest)
    return sum(1 for p in (root / "segments").glob("*.parquet") if p.name not in live)


def bench_rows(n_runs: int, root: pathlib.Path, sweep_size: int = 1000, repeat: int = 5, rounds: int = 5,
               samples: int = 16, log: Callable[[str], None] = lambda _: None, reuse: bool = False) -> dict[str, Any]:
    """Build a store of ``n_runs`` runs under ``root`` (``reuse``: take the store already there) and
    measure it; returns the figures (ms)."""
    # long: each page's reads are written out here, beside the others, as the pages make them
    import polars as pl

    from store import Store

    results = real_results(samples)
    store = Store(root)
    t = time.perf_counter()
    if reuse:  # a store this command built before: time it again, as it is
        exps = store.experiments(columns=["exp_id", "created", "n_runs"])
        built = {"sweeps": exps.filter(pl.col("n_runs") == sweep_size).sort("created")["exp_id"].to_list(),
                 "singles": exps.filter(pl.col("n_runs") == 1).sort("created")["exp_id"].to_list(),
                 "compactions": 0, "next": store.runs(columns=["run_id"]).height}
        n_runs = built["next"]
    else:
        built = _fill(store, results, n_runs, sweep_size)
    build_s = time.perf_counter() - t
    files, merged_away = count_files(root), count_merged_away(root)
    log(f"{'opened' if reuse else 'built'} {n_runs:,} runs in {build_s:.0f} s: {len(built['sweeps'])} sweeps of {sweep_size}, "
        f"{len(built['singles']):,} single-run experiments, {built['compactions']} compactions, {files:,} files")
    single_run = store.experiment(built["singles"][-1])["run_ids"][0]
    sweep = built["sweeps"][-1] if built["sweeps"] else built["singles"][-1]
    two = store.experiment(built["singles"][0])["run_ids"] + store.experiment(built["singles"][-1])["run_ids"]

    def experiments() -> None:  # the columns app/views/experiments.py lists
        store.experiments(columns=LISTED)
        store.unreadable()

    def explore() -> None:  # as app.connection.stored_runtime_rows reads for the run-time estimate
        store.run(single_run)
        newest = store.runs(status="done", columns=["run_id", "world"]).filter(pl.col("world") == "mixture")
        ids = newest["run_id"].tail(2000).to_list()
        store.runs(run_ids=ids, columns=["run_id", "spec", "status", "device", "wall_s", "nfe_counted", "nfe_formula"])
        store.metrics(ids)

    def sweep_page() -> None:
        store.experiment(sweep)
        runs = store.runs(exp_id=sweep)
        done = runs.filter(pl.col("status") == "done")["run_id"].to_list()
        store.metrics(done)
        store.histograms(done)
        store.sweeps(sweep)

    def compare() -> None:
        store.runs(status="done", columns=["run_id", "exp_id", "sampler", "solver", "student", "grid", "steps",
                                           "submitted"])
        store.experiments(columns=["exp_id", "name"])
        store.runs(run_ids=two, columns=["run_id", "spec"])
        for rid in two:
            store.run(rid)
        store.histograms(two)
        store.metrics(two)

    figures = {name: _timed(fn, repeat) for name, fn in
               (("experiments_ms", experiments), ("explore_ms", explore), ("sweep_ms", sweep_page),
                ("compare_ms", compare))}
    first = first_query(root)
    compactions, refreshes = [], []
    k = built["next"]
    for _ in range(rounds):
        k = _new_runs(store, results, k)
        t = time.perf_counter()
        store.compact()
        compactions.append(1e3 * (time.perf_counter() - t))
        # What a page pays after each compaction: its process's first read of the new manifest.
        t = time.perf_counter()
        experiments()
        refreshes.append(1e3 * (time.perf_counter() - t))
    total = n_runs + rounds * NEW_RUNS
    files_after = count_files(root)
    return {"runs": n_runs, "sweep_size": sweep_size, "sweeps": len(built["sweeps"]),
            "single_experiments": len(built["singles"]), "batches": built["compactions"], "build_s": build_s,
            **figures, **first, "compaction_ms": statistics.median(compactions), "compaction_max_ms": max(compactions),
            "compactions_ms": compactions, "experiments_after_compaction_ms": statistics.median(refreshes),
            "experiments_after_compaction_max_ms": max(refreshes), "files": files,
            "files_merged_away": merged_away, "files_per_1000_runs": 1000 * (files - merged_away) / n_runs,
            "files_after": files_after, "runs_after": total, "segments": len(store._snapshot().manifest.segments),
            "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file())}


def _new_runs(store: Any, results: dict[str, Any], k: int) -> int:
    """NEW_RUNS new runs, results stored as the collector stores them, not compacted yet: half in one
    sweep, half single-run experiments."""
    half = NEW_RUNS // 2
    specs = [_spec(results, k + j) for j in range(half)]
    _, run_ids = store.new_experiment(f"new sweep {k}", specs, {"seed": [s.seed for s in specs]})
    pairs = list(zip(run_ids, specs))
    for j in range(NEW_RUNS - half):
        spec = _spec(results, k + half + j)
        _, (rid,) = store.new_experiment(f"new single {k + half + j}", spec)
        pairs.append((rid, spec))
    for i in range(0, len(pairs), BATCH):
        with store.batched_writes():
            for rid, spec in pairs[i:i + BATCH]:
                store.record_result(rid, "done", dataclasses.replace(results[spec.solver], spec=spec),
                                    worker="bench@local")
    return k + NEW_RUNS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int_range(2, 10_000_000), default=100_000,
                        help="runs to build the store with (default 100,000)")
    parser.add_argument("--sweep-size", type=int_range(1, 100_000), default=1000,
                        help="runs per sweep (default 1,000); half the runs are in sweeps")
    parser.add_argument("--repeat", type=int_range(1, 1000), default=5, help="timed calls per query (median)")
    parser.add_argument("--rounds", type=int_range(1, 1000), default=5,
                        help=f"compactions timed, each after {NEW_RUNS} new runs (median and max)")
    parser.add_argument("--root", default=None, help="build the store here (default: a temporary directory, removed)")
    parser.add_argument("--reuse", action="store_true",
                        help="time the store an earlier run built under --root again (no build; --runs ignored)")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures to this JSON file")


TARGETS = {"experiments_ms": 100, "compare_ms": 100, "first_query_ms": 300, "compaction_ms": 200}


def main(args: argparse.Namespace) -> int:
    if args.reuse and (args.root is None or not (pathlib.Path(args.root) / "store" / "MANIFEST").exists()):
        print(f"fastdiff bench store: --reuse needs --root holding a store this command built (--root {args.root})",
              file=sys.stderr)
        return 2
    if not args.reuse and args.root is not None and pathlib.Path(args.root).exists() \
            and any(pathlib.Path(args.root).iterdir()):
        print(f"fastdiff bench store: --root {args.root} is not empty; give a new directory (or --reuse)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fdbench-store-") as tmp:
        root = pathlib.Path(args.root or tmp) / "store"
        rows = bench_rows(args.runs, root, args.sweep_size, args.repeat, args.rounds,
                          log=lambda m: print(f"  {m}", flush=True), reuse=args.reuse)
    rows["load_average"] = os.getloadavg()
    from store import store as store_module
    print(f"\nfastdiff bench store: {rows['runs']:,} runs ({rows['sweeps']} sweeps of {rows['sweep_size']:,}, "
          f"{rows['single_experiments']:,} single-run experiments), built in {rows['build_s']:.0f} s; "
          f"load average {rows['load_average'][0]:.1f}\n")
    print("| query | ms | target |\n|---|---:|---:|")
    for key, label in (("experiments_ms", "Experiments"), ("explore_ms", "Explore"), ("sweep_ms", "Sweep"),
                       ("compare_ms", "Compare"), ("first_query_ms", "first query of a new process"),
                       ("process_ms", "  that process, start to answer"),
                       ("compaction_ms", f"compaction after {NEW_RUNS} new runs (median)"),
                       ("compaction_max_ms", "  (max)"),
                       ("experiments_after_compaction_ms", "Experiments, the first read after a compaction (median)"),
                       ("experiments_after_compaction_max_ms", "  (max)")):
        target = f"<= {TARGETS[key]}" if key in TARGETS else ""
        print(f"| {label} | {rows[key]:,.0f} | {target} |")
    print(f"\nfiles: {rows['files']:,} for {rows['runs']:,} runs, of which {rows['files_merged_away']:,} merged away and "
          f"deleted within {store_module.GRACE_S:g} s ({rows['files_per_1000_runs']:.1f} kept per 1,000 runs; "
          f"{rows['segments']} segments, {rows['bytes'] / 2**20:,.0f} MiB after the timed rounds)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0
