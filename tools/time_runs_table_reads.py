"""Seconds of the runs table's store reads over every stored run, in a new process: opening the store
(which upgrades a format-4 store), then, twice with a new ``Store``, what app/runs_view.render reads.

    PYTHONPATH=$PWD python tools/time_runs_table_reads.py <store root>
"""

from __future__ import annotations

import pathlib
import sys
import time


def main(root: str) -> None:
    from app import runs_table, runs_view
    from store import Store, segments

    print("format before:", segments.format_of(pathlib.Path(root)), flush=True)
    t = time.perf_counter()
    Store(root)
    print(f"Store() incl. upgrade {time.perf_counter() - t:.2f} s", flush=True)
    for k in range(2):
        s, lap, t0 = Store(root), {}, time.perf_counter()
        t = time.perf_counter()
        exps = s.experiments()
        lap["experiments"], t = time.perf_counter() - t, time.perf_counter()
        runs = s.runs(columns=runs_view.STORE_COLUMNS)
        lap["runs"], t = time.perf_counter() - t, time.perf_counter()
        res, names = s.run_columns(runs["run_id"])
        lap["run_columns"], t = time.perf_counter() - t, time.perf_counter()
        frame = runs_table.build(runs, res, dict(zip(exps["exp_id"], exps["name"])), s.annotations(runs["run_id"]))
        lap["build"] = time.perf_counter() - t
        print(f"[{k}] " + " ".join(f"{n} {v:.3f}" for n, v in lap.items()) + f" total {time.perf_counter() - t0:.3f} s; "
              f"{frame.height} rows x {frame.width} columns, {len(names)} metrics", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
