"""``fastdiff bench dashboard``: how long each dashboard page takes to render over N stored runs.

Fills a fresh store (a temporary FASTDIFF_HOME unless ``--home`` is given) with N real runs through
the store's write path (``Store.new_experiment`` as the client records a submission, ``record_result``
in batches inside ``batched_writes`` as the collector stores results, then ``compact``): sweeps of at
most 1,000 runs over solver x grid x steps x seed, plus four single-run experiments. Every distinct
computation (spec without its name) is executed once on the mixture world with
``fastdiff_core.run.execute``; a 1,000-run sweep is 1,000 computations, so its Pareto chart has as
many distinct points as a real sweep's (sweeps after the first, at more than 1,000 runs, repeat the
first's seeds: the same spec stores the same result, a seeded CPU run being deterministic). Then it renders every page with Streamlit's AppTest (the server-side script run a browser waits for)
and, when Debian's chromium is present, in a real headless browser (navigation to an idle page).
Prints the median and max seconds per page: in the browser, until the first content (the page's
heading), until idle, until every chart is drawn, and from typing a value to the bill showing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time

from fastdiff_cli.args import int_range, writable_file
from workers.serving import dashboard_only

REPO = pathlib.Path(__file__).resolve().parents[1]
BATCH = 64  # results per collector batch (workers.collector.BATCH)
RENDERED = re.compile(r"Rendered on the server in ([0-9.]+) s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int_range(1, 1_000_000), default=1000, help="stored runs to render over (default 1000)")
    parser.add_argument("--samples", type=int_range(1, 1_000_000), default=64, help="samples per filled run (default 64)")
    parser.add_argument("--repeat", type=int_range(1, 10_000), default=5, help="renders per page (default 5)")
    parser.add_argument("--home", default=None, help="reuse this FASTDIFF_HOME (filled once, kept)")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium timing")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures to this JSON file")


SWEEP_RUNS = 1000  # runs per sweep experiment (a store of 100,000 runs holds 100 sweeps)


def fill(store, n: int, samples: int) -> tuple[str, str]:
    """Record n real mixture runs: sweeps of at most SWEEP_RUNS runs, then 4 single-run experiments.
    Returns (the first sweep's id, the last single run's experiment id)."""
    from fastdiff_core import catalog
    from fastdiff_core.run import execute
    from fastdiff_core.spec import RunSpec

    solvers = [s for s, info in catalog.SOLVERS.items() if not info.adaptive]
    grids = [g for g in catalog.GRIDS if g in catalog.FIXED_GRIDS]  # (tuned: steps 3-10 only)
    base = RunSpec(samples=samples, regime="offline", device="cpu")
    executed: dict[str, object] = {}

    def result_of(spec: RunSpec):
        key = spec.replace(name="").to_json()
        if key not in executed:
            executed[key] = execute(spec.replace(name=""))
        return dataclasses.replace(executed[key], spec=spec)

    combos = list(itertools.product(grids, (3, 5, 8, 12, 20), solvers))
    remaining, sweeps, t0, k = n - 4, [], time.perf_counter(), 0
    while remaining > 0:
        size = min(SWEEP_RUNS, remaining)
        seeds = list(range(-(-size // len(combos))))  # seeds, not names: every run is its own point on the page
        grid = list(itertools.islice(itertools.product(seeds, combos), size))
        specs = [base.replace(grid=g, steps=st_, solver=sv, seed=c) for c, (g, st_, sv) in grid]
        axes = {"seed": list(dict.fromkeys(c for c, _ in grid)), "grid": list(dict.fromkeys(g for _, (g, _, _) in grid)),
                "steps": list(dict.fromkeys(x for _, (_, x, _) in grid)), "solver": list(dict.fromkeys(v for *_, (_, _, v) in grid))}
        exp, run_ids = store.new_experiment(f"bench sweep {len(sweeps) + 1} ({size} runs)", specs, axes)
        sweeps.append(exp)
        for i in range(0, size, BATCH):
            with store.batched_writes():
                for rid, spec in zip(run_ids[i:i + BATCH], specs[i:i + BATCH]):
                    store.record_result(rid, "done", result_of(spec), worker="bench")
        remaining, k = remaining - size, k + size
        if k % (10 * SWEEP_RUNS) == 0 or remaining <= 0:  # the collector compacts as it goes; 10 sweeps at a time here
            store.compact()
        print(f"  filled {k}/{n - 4} sweep runs ({len(executed)} executed, {time.perf_counter() - t0:.0f} s)", flush=True)
    single = None
    for j in range(4):
        spec = base.replace(solver="dpmpp_2m", steps=10 + j, name=f"single {j}")
        single, (rid,) = store.new_experiment(f"single {j}", spec)
        store.record_result(rid, "done", result_of(spec), worker="bench")
    store.compact()
    return sweeps[0], single


def time_pages(sweep_exp: str, single_exp: str, repeat: int) -> dict[str, list[float]]:
    from streamlit.testing.v1 import AppTest

    from app import connection
    from store import Store

    s = Store()
    single_run = s.experiment(single_exp)["run_ids"][0]
    two = ",".join(s.experiment(sweep_exp)["run_ids"][:2])
    pages = {
        "Explore (a finished run)": ("explore", {"run": single_run}),
        "Sweep (1 sweep, Pareto + grid)": ("sweep", {"sweep": sweep_exp}),
        "Compare (2 runs)": ("compare", {"runs": two}),
        "Experiments (list)": ("experiments", {}),
        "Experiments (the sweep selected)": ("experiments", {"sel": sweep_exp}),
        "Experiments (runs table: filter, sort, baseline)": ("experiments", {"filter": "steps>=8", "sort": "-rmse",
                                                                             "base": single_run}),
        "Budget calculator": ("budget_calculator", {}),
        "Shared link (?exp=sweep)": ("shared", {"exp": sweep_exp}),
    }
    out: dict[str, list[float]] = {}
    main = sys.modules.get("__main__")
    for label, (view, params) in pages.items():
        times = []
        for _ in range(repeat + 1):  # the first render warms imports and caches; not counted
            connection._store.clear()
            at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
            for k, v in params.items():
                at.query_params[k] = v
            if view != "shared":
                at.switch_page(f"views/{view}.py")
            at.run()
            if at.exception:
                raise RuntimeError(f"{label}: {at.exception[0].value}")
            times.append(server_seconds([c.value for c in at.caption]))
        out[label] = times[1:]
        print(f"  rendered {label}: {times}", flush=True)  # progress: the first render warms caches
        if main is not None:
            sys.modules["__main__"] = main
    return out


def server_seconds(captions: list[str]) -> float:
    """The page's own figure: app/main.py captions every page with its server render time."""
    for text in captions:
        m = RENDERED.search(text)
        if m:
            return float(m.group(1))
    raise RuntimeError(f"no 'Rendered on the server in …' caption among {captions[-3:]}")


IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
CHARTS_DRAWN = ("() => { const c = [...document.querySelectorAll('[data-testid=stPlotlyChart]')];"
                " return c.length > 0 && c.every(e => e.querySelector('svg.main-svg')); }")
LOADED = "() => !document.querySelector('[data-testid=stMain] [data-testid=stSkeleton]')"
BILL_SHOWS = ("v => { const m = [...document.querySelectorAll('[data-testid=stMetric]')]"
              ".find(e => e.innerText.includes('per frame'));"
              " return !!m && m.querySelector('[data-testid=stMetricValue]').innerText.trim() === v; }")


def _first_page(page, base: str) -> None:
    """Wait for the server to answer with an idle page (it starts while we launch the browser)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            page.goto(base + "/budget", timeout=5000)
            page.wait_for_selector(IDLE, timeout=60000)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _server_figure(page, server: list[float]) -> None:
    caption = page.get_by_text(RENDERED)  # absent on a page that ended in an empty state
    if caption.count():
        server.append(server_seconds([caption.first.inner_text()]))


def _loads(page, base: str, urls: dict[str, str], repeat: int, server: list[float]) -> dict[str, list[float]]:
    """Per page: navigation until the heading (first content), until idle, until every chart is drawn."""
    out: dict[str, list[float]] = {}
    for label, path in urls.items():
        first, times, drawn = [], [], []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            page.goto(base + path)
            page.wait_for_selector("[data-testid=stMain] h1", timeout=600_000)
            first.append(time.perf_counter() - t0)
            page.wait_for_selector(IDLE, timeout=600_000)
            times.append(time.perf_counter() - t0)
            # A lazily loaded element (plotly.js among them) is a skeleton until its chunk has loaded; count
            # the charts after that, or a load whose charts were still skeletons at idle would be left out.
            page.wait_for_function(LOADED, timeout=600_000)
            if page.locator("[data-testid=stPlotlyChart]").count():
                page.wait_for_function(CHARTS_DRAWN, timeout=600_000)
                drawn.append(time.perf_counter() - t0)
            _server_figure(page, server)
        out[f"first content {label}"], out[f"load {label}"] = first[1:], times[1:]
        print(f"  loaded {label}: first content {first}, idle {times}, charts {drawn}", flush=True)
        if drawn[1:]:
            out[f"all charts drawn {label}"] = drawn[1:]
    return out


def _widget_to_bill(page, base: str, repeat: int) -> list[float]:
    """Type a step count on Explore until the bill's 'per frame' shows its NFE (Euler: one per step)."""
    page.goto(base + "/?solver=euler")
    page.wait_for_selector(IDLE, timeout=600_000)
    steps = page.get_by_role("spinbutton", name="Steps", exact=True)
    times = []
    for i in range(repeat + 1):
        value = str(7 + i % 2 * 2)
        t0 = time.perf_counter()
        steps.fill(value)
        steps.press("Enter")
        page.wait_for_function(BILL_SHOWS, arg=value, timeout=600_000)
        times.append(time.perf_counter() - t0)
        page.wait_for_selector(IDLE, timeout=600_000)
    return times[1:]


def _switches(page, base: str, repeat: int, server: list[float]) -> dict[str, list[float]]:
    """In-app navigation (what a user does most): the sidebar link, no page reload."""
    out: dict[str, list[float]] = {}
    page.goto(base + "/experiments")
    page.wait_for_selector(IDLE, timeout=600_000)
    for title in ("Sweep", "Compare", "Experiments", "Budget calculator", "Explore"):
        times = []
        for _ in range(repeat + 1):
            away = "Budget calculator" if title != "Budget calculator" else "Explore"
            page.get_by_role("link", name=away, exact=True).click()
            page.wait_for_selector(IDLE, timeout=600_000)
            page.wait_for_timeout(200)
            t0 = time.perf_counter()
            page.get_by_role("link", name=title, exact=True).click()
            page.wait_for_selector(f"[data-testid=stMain] h1:has-text('{title}')", timeout=600_000)
            page.wait_for_selector(IDLE, timeout=600_000)
            times.append(time.perf_counter() - t0)
            _server_figure(page, server)
        out[f"switch to {title}"] = times[1:]
    return out


def time_browser(home: pathlib.Path, sweep_exp: str, single_exp: str, repeat: int) -> dict[str, list[float]]:
    """First content, idle and charts drawn per page, widget to bill and page switches, in headless
    Chromium against a real `streamlit run app/main.py` over ``home``."""
    from playwright.sync_api import sync_playwright

    from store import Store

    run_id = Store().experiment(single_exp)["run_ids"][0]
    urls = {"Explore (a finished run)": f"/?run={run_id}", "Sweep (1 sweep, Pareto + grid)": f"/sweep?sweep={sweep_exp}",
            "Experiments (list + runs table)": "/experiments",
            "Experiments (runs table: filter, sort, baseline)": f"/experiments?filter=steps>=8&sort=-rmse&base={run_id}",
            "Budget calculator": "/budget", "Shared link (?exp=sweep)": f"/?exp={sweep_exp}"}
    server: list[float] = []
    with dashboard_only(home) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(600_000)  # a loaded machine: every wait is measured, none may give up early
        _first_page(page, base)
        out = _loads(page, base, urls, repeat, server)
        out["widget to bill (Explore, Steps)"] = _widget_to_bill(page, base, repeat)
        out.update(_switches(page, base, repeat, server))
        browser.close()
    out["(server render inside those, all pages)"] = server
    return out


def _report(title: str, figures: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"  {'page':<64} {'median s':>9} {'max s':>7}")
    for label, times in figures.items():
        print(f"  {label:<64} {statistics.median(times):>9.3f} {max(times):>7.3f}")


def main(args: argparse.Namespace) -> int:
    if args.runs < 5:
        raise ValueError(f"runs={args.runs!r} must be >= 5")
    home = pathlib.Path(args.home) if args.home else pathlib.Path(tempfile.mkdtemp(prefix="fdbench-", dir="/tmp"))
    os.environ["FASTDIFF_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from store import Store

    s = Store()
    marker = home / "bench_dashboard.json"
    try:
        if marker.exists():
            ids = json.loads(marker.read_text())
            sweep_exp, single_exp = ids["sweep"], ids["single"]
        else:
            print(f"filling {home} with {args.runs} real mixture runs ({args.samples} samples each) ...", flush=True)
            t0 = time.perf_counter()
            sweep_exp, single_exp = fill(s, args.runs, args.samples)
            print(f"filled in {time.perf_counter() - t0:.0f} s", flush=True)
            marker.write_text(json.dumps({"sweep": sweep_exp, "single": single_exp}))
        n = s.runs().height
        load = os.getloadavg()
        print(f"store: {n} runs in {s.experiments().height} experiments; machine load average "
              f"{load[0]:.1f} on {os.cpu_count()} CPUs (shared)")
        figures = {"stored_runs": n, "load_average": load[0], "cpus": os.cpu_count(), "apptest": time_pages(sweep_exp, single_exp, args.repeat)}
        _report(f"Server render time (the page's own figure, via AppTest), {n} stored runs, {args.repeat} renders each",
                figures["apptest"])
        if not args.no_browser and os.path.exists("/usr/bin/chromium"):
            figures["browser"] = time_browser(home, sweep_exp, single_exp, args.repeat)
            _report("Headless Chromium (software rendering): until the page is idle", figures["browser"])
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    return 0
