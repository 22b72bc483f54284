"""Every broker command of a few no-op round trips, on one timeline (docs/bench-service.md).

    python tools/trace_round_trip.py [--broker redis|embedded] [--trips 20] [--show 2]

Starts a service like ``fastdiff bench service`` does (two workers of one torch thread, a
collector), warms it, times ``--trips`` round trips under the broker's MONITOR, and prints, for the
``--show`` median ones, each command the broker received during the trip: milliseconds since the
client's call, who sent it (client / worker main process / worker child / collector, told apart by
connection) and the command. The gaps between commands are the processes' own work; a durable
write's cost is the gap after it on the same connection. Then the per-who medians over all trips.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from workers.bench_service import NOOP, SWEEP_BASE, monitored
from workers.local_service import LocalService


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=["redis", "embedded"], default="redis")
    ap.add_argument("--trips", type=int, default=20)
    ap.add_argument("--show", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fdtrace-") as tmp, \
            LocalService(tmp, args.broker, max_run_s=600, fsync="always", env={"OMP_NUM_THREADS": "1"}) as svc:
        svc.worker("w1"), svc.worker("w2"), svc.collector()
        svc.wait_workers(["w1", "w2"])
        for spec in (SWEEP_BASE, NOOP):
            _, warm = svc.client.submit([spec, spec], "warm-up")
            svc.client.wait(warm, timeout=300)
        trips = []
        with monitored(svc) as events:
            for _ in range(args.trips):
                t0, t = time.time(), time.perf_counter()
                _, (run_id,) = svc.client.submit(NOOP, "trace")
                svc.client.wait([run_id], timeout=120)
                trips.append((time.perf_counter() - t, run_id, t0, time.time()))
    print(f"round trips: median {1e3 * statistics.median(x[0] for x in trips):.1f} ms, "
          f"min {1e3 * min(x[0] for x in trips):.1f} ms over {len(trips)}")
    for took, run_id, t0, t1 in sorted(trips)[len(trips) // 2:len(trips) // 2 + args.show]:
        print(f"\n--- {run_id}: {1e3 * took:.1f} ms")
        last: dict[str, float] = {}
        for e in events:
            if t0 <= e["time"] <= t1 + 0.001:
                who = f"{e.get('client_address', '?')}:{e.get('client_port', '')}"
                gap = 1e3 * (e["time"] - last.get(who, t0))
                last[who] = e["time"]
                print(f"{1e3 * (e['time'] - t0):8.2f}  +{gap:6.2f}  {who:>22}  {e['command'][:110]}")


if __name__ == "__main__":
    main()
