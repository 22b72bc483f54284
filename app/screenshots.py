"""Refresh the dashboard screenshots in docs/: `python -m app.screenshots` (needs Debian's chromium).

Starts `fastdiff up` on a loopback port it binds itself with a fresh data directory, drives the pages the way a
user does (a guided run in Explore, the sequential gate's fields, a solver x steps sweep and the Queue
while it runs, a comparison, the runs table with tags and a pinned baseline), takes a screenshot of
each page (Explore also in the dark theme and at 400 px), then stops everything it started.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _idle(page) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=300_000)
    time.sleep(1.0)


def _shoot(page, out: pathlib.Path, width: int = 1400) -> None:
    # Streamlit scrolls inside its own container: size the viewport to the content, then shoot.
    page.set_viewport_size({"width": width, "height": 900})
    time.sleep(0.5)
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": width, "height": min(max(int(height) + 40, 900), 12000)})  # the whole page, not cut
    time.sleep(0.8)
    page.screenshot(path=str(out))
    print(f"wrote {out}")


def explore(browser, page, base: str, out: pathlib.Path) -> str:
    """A guided run in Explore (light, dark, 400 px) and the sequential gate's fields; returns the share link."""
    # DDIM half-way to ancestral (eta 0.5: its options open under the solver), 6 steps.
    page.goto(f"{base}/?solver=ddim&opt.eta=0.5&steps=6&samples=4000&name=ddim%20eta%200.5%2C%206%20steps")
    run = page.get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=300_000)  # a loaded machine takes a while to draw the first page
    _idle(page)
    run.click()
    page.locator("[data-testid=stTable]").first.wait_for(timeout=300_000)
    _idle(page)
    _shoot(page, out / "explore.png")
    # The same result in the dark theme, and at 400 px (a phone): the browser's settings, a fresh session.
    for name, options, width in (("explore-dark.png", {"color_scheme": "dark"}, 1400), ("explore-400.png", {}, 400)):
        other = browser.new_context(viewport={"width": width, "height": 1000}, **options).new_page()
        other.goto(page.url)
        other.locator("[data-testid=stTable]").first.wait_for(timeout=300_000)
        _idle(other)
        _shoot(other, out / name, width)
        other.context.close()
    share = page.locator("a[href*='?exp=']").first.get_attribute("href") or ""
    # Closed-loop driving with the sequential coverage gate: looks of 40 x 2 rollouts, at most 800, alpha 0.05.
    page.goto(f"{base}/?world=driving&scene=red_light_jaywalker&solver=heun&steps=3&samples=40&horizon=3&futures=2"
              "&regime=closed_loop&gate_cap=800&gate_alpha=0.05")
    _idle(page)
    _shoot(page, out / "explore-gate.png")
    return share


def sweep(page, base: str, out: pathlib.Path) -> None:
    """A 4 solvers x 4 step counts sweep; the Queue page while it runs; its results with a point clicked."""
    # 20,000 rollouts a run: enough work that the Queue page catches the sweep running and queued (at 1,000
    # a quiet machine had finished it before the page drew, and the screenshot showed an empty queue).
    page.goto(f"{base}/sweep?samples=20000")
    page.get_by_role("button", name="Queue sweep").wait_for(timeout=300_000)
    _idle(page)
    page.get_by_role("button", name="Queue sweep").click()
    page.wait_for_url("**sweep=e*", timeout=120_000)
    results = page.url
    page.goto(f"{base}/queue")
    page.locator("[data-testid=stMain] h1:has-text('Queue')").wait_for(timeout=60_000)
    page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=60_000)  # the queue's table, not its empty state
    _idle(page)
    _shoot(page, out / "queue.png")
    page.goto(results)
    page.locator("[data-testid=stPlotlyChart]").first.wait_for(timeout=600_000)
    _idle(page)
    chart = page.locator("[data-testid=stPlotlyChart]").first
    chart.locator(".scatterlayer .trace").nth(1).locator("path.point").nth(1).click(force=True)
    _idle(page)
    _shoot(page, out / "sweep.png")


def stored_pages(browser, page, base: str, home: pathlib.Path, share: str, out: pathlib.Path) -> None:
    """Compare, Experiments (the sweep; the runs table tagged, a baseline pinned), Budget, the shared link."""
    from store import Store

    s = Store(home / "store")
    runs = s.runs()
    four = runs.filter((runs["steps"] == 4) & (runs["status"] == "done"))["run_id"].to_list()[:4]
    sweep_exp = runs.filter(runs["steps"] == 4)["exp_id"][0]
    s.set_tags(four[0], ["baseline"])
    s.set_note(four[0], "the solver we ship today")
    for rid in four[1:3]:
        s.set_tags(rid, ["candidate"])
    shots = {"compare.png": f"/compare?runs={','.join(four)}", "experiments.png": f"/experiments?sel={sweep_exp}",
             "runs.png": f"/experiments?base={four[0]}&color=solver&sort=tail_rate_error&filter=steps<=8"
                         "&cols=run_id,experiment,tags,solver,steps,nfe_counted,tail_rate,tail_rate_error,verdict",
             "budget.png": "/budget"}
    for name, path in shots.items():
        page.goto(base + path)
        _idle(page)
        _shoot(page, out / name)
    fresh = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    fresh.goto(base + share[share.index("/?"):] if "/?" in share else f"{base}/{share}")
    fresh.locator("[data-testid=stTable]").first.wait_for(timeout=60_000)
    _idle(fresh)
    _shoot(fresh, out / "shared.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screenshots", description=__doc__)
    parser.add_argument("--out", default=str(REPO / "docs"), help="directory for the PNGs (default docs/)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from workers.serving import fastdiff_up  # `fastdiff up` on a port it binds and reports

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    home = pathlib.Path(tempfile.mkdtemp(prefix="fdshots-", dir="/tmp"))
    try:
        with fastdiff_up(home, workers=2) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            share = explore(browser, page, base, out)
            sweep(page, base, out)
            stored_pages(browser, page, base, home, share, out)
            browser.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
