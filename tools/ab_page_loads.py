"""Page loads of two checkouts of the dashboard, interleaved in one headless Chromium (old and new in
turn, the order alternating per round), so both see the same machine load: until the first content,
until idle, until every chart is drawn (the waits of ``fastdiff bench dashboard``).

    python tools/ab_page_loads.py HOME OLD_CHECKOUT NEW_CHECKOUT ROUNDS [PAGE,...] [--json PATH]

HOME is a ``fastdiff bench dashboard --home`` store (it holds bench_dashboard.json); each checkout
serves its own copy of it (``streamlit run <checkout>/app/main.py`` on a port it binds). PAGE: Sweep,
Shared, Explore, ExpSel (Experiments with the sweep selected), Budget; default Sweep,Shared. The first round
warms both servers and is not counted. Prints medians and every load; docs/bench-dashboard.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from workers import bench_dashboard as bd  # noqa: E402
from workers.serving import STREAMLIT_URL, stop, wait_http  # noqa: E402


@contextlib.contextmanager
def serving(checkout: str, home: pathlib.Path) -> Iterator[str]:
    """``checkout``'s dashboard over ``home``; yields its base URL."""
    log = home / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", f"{checkout}/app/main.py", "--server.address", "127.0.0.1",
             "--server.port", "0", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--client.toolbarMode", "viewer"], cwd=checkout, env={**os.environ, "FASTDIFF_HOME": str(home),
                                                                   "PYTHONPATH": checkout},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not (found := STREAMLIT_URL.search(log.read_text(errors="replace"))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{checkout}: the dashboard reported no URL; see {log}")
                time.sleep(0.1)
            wait_http(found.group(1) + "/_stcore/health", 90)
            yield found.group(1)
        finally:
            stop(proc, 30)


def page_paths(home: pathlib.Path) -> dict[str, str]:
    ids = json.loads((home / "bench_dashboard.json").read_text())
    from store import Store

    run_id = Store(home / "store").experiment(ids["single"])["run_ids"][0]
    return {"Sweep": f"/sweep?sweep={ids['sweep']}", "Shared": f"/?exp={ids['sweep']}", "Explore": f"/?run={run_id}",
            "ExpSel": f"/experiments?sel={ids['sweep']}", "Budget": "/budget"}


def load_once(page, url: str) -> dict[str, float]:
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("[data-testid=stMain] h1")
    first = time.perf_counter() - t0
    page.wait_for_selector(bd.IDLE)
    idle = time.perf_counter() - t0
    page.wait_for_function(bd.LOADED)
    if page.locator("[data-testid=stPlotlyChart]").count():
        page.wait_for_function(bd.CHARTS_DRAWN)
    return {"first content": first, "idle": idle, "charts drawn": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=pathlib.Path)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("rounds", type=int)
    ap.add_argument("pages", nargs="?", default="Sweep,Shared")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    paths = page_paths(args.home)
    pages = args.pages.split(",")
    figures: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="ab-pages-") as tmp, contextlib.ExitStack() as stack:
        bases = {}
        for name in ("old", "new"):
            home = pathlib.Path(tmp) / name
            shutil.copytree(args.home, home)
            bases[name] = stack.enter_context(serving(getattr(args, name), home))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(600_000)
        for base in bases.values():
            bd._first_page(page, base)
        for r in range(args.rounds + 1):
            for label in pages:
                for name in ("old", "new") if r % 2 else ("new", "old"):
                    times = load_once(page, bases[name] + paths[label])
                    if r:  # round 0 warms both servers
                        for k, v in times.items():
                            figures[f"{label} {name}"][k].append(v)
            loads.append(os.getloadavg()[0])
        browser.close()
    print(f"{args.rounds} rounds; load average (1 min) {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
    print(f"  {'page':<16}{'first content':>14}{'idle':>8}{'charts drawn':>14}  (medians, s; every load's charts drawn)")
    for key, f in sorted(figures.items()):
        med = [statistics.median(f[k]) for k in ("first content", "idle", "charts drawn")]
        print(f"  {key:<16}{med[0]:>14.3f}{med[1]:>8.3f}{med[2]:>14.3f}  " + " ".join(f"{x:.2f}" for x in f["charts drawn"]))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({k: dict(v) for k, v in figures.items()} | {"load": loads}))


if __name__ == "__main__":
    main()
