"""Round trips of two checkouts' services measured at the same time (docs/bench-service.md).

    python tools/round_trips_side_by_side.py OLD_TREE NEW_TREE        # e.g. git archive 199b0ec | tar -x -C old
    python tools/round_trips_side_by_side.py --methods NEW_TREE      # one tree: polled vs announced, interleaved

On a shared machine the load moves a round trip by 2x from one minute to the next, so two versions
only compare when measured side by side: each tree gets its own service (embedded broker, two
workers of one torch thread, a collector) in its own process; both warm up, wait for each other,
then time 30 no-op round trips each way, interleaved: announced (``ServiceClient.wait``, what
``fastdiff bench service`` times) and seen by polling the store every 1 ms (what the old bench did).
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

N = 30


def measure(tree: str, ready_dir: str, peers: list[str], methods: bool) -> None:
    sys.path.insert(0, tree)
    from workers.bench_service import NOOP, SWEEP_BASE
    from workers.local_service import LocalService

    def polled(svc) -> float:
        t = time.perf_counter()
        _, (run_id,) = svc.client.submit(NOOP, "round trip")
        while (run := svc.store.run(run_id)) is None or run["status"] == "queued":
            time.sleep(0.001)
        return time.perf_counter() - t

    def announced(svc) -> float:
        t = time.perf_counter()
        _, (run_id,) = svc.client.submit(NOOP, "round trip")
        svc.client.wait([run_id], timeout=120)
        return time.perf_counter() - t

    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: one thread per process
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as root, LocalService(root, "embedded") as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector()
        svc.wait_workers(["w1", "w2"])
        for warm in ([SWEEP_BASE, SWEEP_BASE], [NOOP, NOOP]):
            svc.wait_finished(svc.client.submit(warm, "warm-up")[1], timeout=300)
        pathlib.Path(ready_dir, pathlib.Path(tree).name).touch()
        while not all(pathlib.Path(ready_dir, p).exists() for p in peers):
            time.sleep(0.1)
        a, b = (sorted(x) for x in zip(*[(polled(svc), announced(svc)) for _ in range(N)]))
        print(f"{tree}: load {os.getloadavg()[0]:.1f}: announced round trip median {1e3 * statistics.median(b):.1f} ms "
              f"(p90 {1e3 * b[int(0.9 * (N - 1))]:.1f} ms), polled {1e3 * statistics.median(a):.1f} ms "
              f"(p90 {1e3 * a[int(0.9 * (N - 1))]:.1f} ms); {N} each, interleaved", flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        measure(argv[1], argv[2], argv[3].split(","), argv[4] == "1")
        return 0
    methods = argv[:1] == ["--methods"]
    trees = [str(pathlib.Path(t).resolve()) for t in (argv[1:] if methods else argv)]
    if len(trees) != (1 if methods else 2) or not all(pathlib.Path(t, "workers").is_dir() for t in trees):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as ready:
        names = ",".join(pathlib.Path(t).name for t in trees)
        procs = [subprocess.Popen([sys.executable, __file__, "--child", t, ready, names, "1" if methods else "0"],
                                  env={**os.environ, "PYTHONPATH": t}, cwd=t) for t in trees]
        return max(p.wait() for p in procs)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
