"""No-op round trips of two checkouts' services, one of each in turn (docs/bench-service.md).

    python tools/ab_round_trips.py OLD_TREE NEW_TREE [TRIPS] [--broker redis|embedded] [--stored N]

Each tree gets its own service (two workers of one torch thread, a collector; as ``fastdiff bench
service`` starts it) in its own process, warmed; then this process asks them for one round trip at a
time, alternating (OLD, NEW, OLD, ...), so only one service works at any moment and each pair sees the
same machine. Prints both medians and p90s, and the median of the paired differences (NEW - OLD) with
the share of pairs in which NEW was faster. ``--stored N``: each store first holds N no-op runs (one
sweep through the service), so that compactions and the reads after them cost what they do in a
store in use. ``tools/round_trips_side_by_side.py`` runs both at once instead (each then competes with
the other for the cores).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def child(tree: str, broker: str, stored: int) -> None:
    sys.path.insert(0, tree)
    import tempfile

    from workers.bench_service import NOOP, SWEEP_BASE, _round_trip
    from workers.local_service import LocalService

    with tempfile.TemporaryDirectory(prefix="ab-", dir="/tmp") as root, \
            LocalService(root, broker, max_run_s=600, fsync="always", env={"OMP_NUM_THREADS": "1"}) as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector()
        svc.wait_workers(["w1", "w2"])
        for spec in (SWEEP_BASE, NOOP):
            svc.client.wait(svc.client.submit([spec, spec], "warm-up")[1], timeout=300)
        for k in range(0, stored, 500):  # sweeps of at most FASTDIFF_MAX_SWEEP_RUNS' default
            svc.client.wait(svc.client.submit([NOOP] * min(500, stored - k), "stored")[1], timeout=3600)
        for _ in range(5):
            _round_trip(svc, NOOP)
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() != "go":
                break
            print(f"{_round_trip(svc, NOOP)[0]!r}", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], int(argv[3]))
        return 0
    opts = {"--broker": "embedded", "--stored": "0"}
    for flag in opts:
        if flag in argv:
            i = argv.index(flag)
            opts[flag], argv = argv[i + 1], argv[:i] + argv[i + 2:]
    broker, stored = opts["--broker"], int(opts["--stored"])
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    trees, n = [os.path.abspath(t) for t in argv[:2]], int(argv[2]) if len(argv) == 3 else 100
    procs = [subprocess.Popen([sys.executable, __file__, "--child", t, broker, str(stored)], env={**os.environ, "PYTHONPATH": t},
                              cwd=t, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for t in trees]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a service did not start; see its output above")
    times: list[list[float]] = [[], []]
    load0 = os.getloadavg()[0]
    for i in range(n):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate who goes first
            procs[k].stdin.write("go\n")
            procs[k].stdin.flush()
            times[k].append(1e3 * float(procs[k].stdout.readline()))
        time.sleep(0.005)
    for p in procs:
        p.stdin.close()
        p.wait()
    diffs = [b - a for a, b in zip(*times)]
    p90 = [sorted(t)[int(0.9 * (n - 1))] for t in times]
    print(f"{broker} broker, {stored} runs stored, {n} round trips each, alternating; "
          f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for tree, t, q in zip(trees, times, p90):
        print(f"  {tree}: median {statistics.median(t):.1f} ms (p90 {q:.1f} ms; slowest "
              + ", ".join(f"{x:.0f}" for x in sorted(t)[-5:][::-1]) + " ms)")
    print(f"  NEW - OLD per pair: median {statistics.median(diffs):+.1f} ms; NEW faster in "
          f"{sum(d < 0 for d in diffs)} of {n} pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
