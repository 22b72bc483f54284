"""End to end in a real headless Chromium: `fastdiff up` (embedded broker, collector, one worker, the
dashboard), run a small experiment from Explore, wait for its histogram, then open the share link in
a fresh browser context and read the same numbers.

The dashboard binds a port the system picks (--port 0) and `fastdiff up` prints it; everything listens
on loopback, and the launcher's process group is stopped at the end (it stops its children in order).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile
import time

import pytest

from fastdiff_core.spec import RunSpec
from workers.serving import fastdiff_up

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.service]


@pytest.fixture(scope="module")
def dashboard():
    """A running `fastdiff up` on a loopback port it binds itself, with its own data directory; yields the base URL.
    One per module: the browser tests share it (each makes its own experiments), which keeps the suite short."""
    home = pathlib.Path(tempfile.mkdtemp(prefix="fdui-", dir="/tmp"))  # short: the broker's Unix socket
    try:
        with fastdiff_up(home, workers=1) as base:
            yield base, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def idle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=180_000)


def settled(page) -> None:
    """``idle`` and no element still drawn stale (faded) from a previous run: a rerun that has not yet
    reached the browser leaves notRunning on the app while the old elements are faded, which is what axe
    would then measure (CI at load: contrast failures on faded captions of the page being re-entered)."""
    idle(page)
    page.wait_for_function("!document.querySelector('[data-stale=true]')", timeout=180_000)
    idle(page)


def table_rows(page, header: str, timeout: float = 180_000) -> list[list[str]]:
    """The cells of the page's st.table whose header has ``header`` (waits for it)."""
    table = page.locator("[data-testid=stTable] table", has=page.locator("thead", has_text=header)).first
    table.wait_for(timeout=timeout)
    return [[c.inner_text().strip() for c in row.locator("td, th").all()] for row in table.locator("tbody tr").all()]


def table_dicts(page, header: str, timeout: float = 180_000) -> list[dict[str, str]]:
    """``table_rows`` keyed by the column names (an index column, when drawn, is keyed '')."""
    table = page.locator("[data-testid=stTable] table", has=page.locator("thead", has_text=header)).first
    table.wait_for(timeout=timeout)
    names = [c.inner_text().strip() for c in table.locator("thead th").all()]
    return [dict(zip(names, r)) for r in table_rows(page, header, timeout)]


def histogram_rows(page) -> list[list[str]]:
    return table_rows(page, "95% interval")


@pytest.fixture(scope="module")
def browser():
    """One headless Debian Chromium for the module's tests (each test opens its own contexts)."""
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: ./dev test installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_run_then_share_link_shows_the_same_numbers(dashboard, browser):
    base, _home = dashboard
    page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    page.goto(f"{base}/?samples=400&steps=6&solver=euler&name=browser%20e2e")
    idle(page)
    page.get_by_role("button", name="Run", exact=True).click()
    rows = histogram_rows(page)  # waits for the worker's result
    idle(page)
    assert rows and all(len(r) == len(rows[0]) for r in rows)
    text = page.locator("[data-testid=stMain]").inner_text()
    assert "NFE counted / sample" in text and "Measured verdict — offline" in text
    counted = page.locator("[data-testid=stMetric]", has_text="NFE counted / sample")
    assert counted.locator("[data-testid=stMetricValue]").inner_text().strip() == "6"
    dashboard_formula = page.locator("[data-testid=stMetric]", has_text="formula (dashboard)")
    assert "= counted" in dashboard_formula.inner_text()
    link = page.locator("a[href*='?exp=']").first.get_attribute("href")
    assert link and "exp=e" in link

    # The share link, in a fresh context (no cookies, no session): read-only, same numbers.
    other = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    other.goto(base + link[link.index("/?"):] if "/?" in link else base + "/" + link)
    shared_rows = histogram_rows(other)
    idle(other)
    assert shared_rows == rows
    shared_text = other.locator("[data-testid=stMain]").inner_text()
    assert "browser e2e" in shared_text and "read-only" in shared_text
    assert other.get_by_role("button", name="Run", exact=True).count() == 0
    assert other.locator("[data-testid=stSidebarNav]").count() == 0


def result_verdicts(page) -> dict:
    """What a result page says about the verdicts: the verdict table, and the branch table's tail and rates."""
    branches = table_dicts(page, "95% interval")
    verdicts = {r["check"]: {k: v for k, v in r.items() if k} for r in table_dicts(page, "measured how")}
    return {"verdicts": verdicts, "tail": [r["branch"] for r in branches if r["branch"].endswith("(tail)")],
            "rates": {r["branch"].removesuffix(" (tail)"): (r["rate"], r["95% interval"]) for r in branches}}


def run_once(page) -> str:
    """Click Run, wait for the result, return the run id from the URL."""
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url("**run=r*", timeout=60_000)
    histogram_rows(page)
    idle(page)
    return page.url.split("run=")[1].split("&")[0]


def test_projected_and_measured_verdicts_agree_on_the_result_page_compare_and_links(dashboard, browser):
    """A closed-loop driving run, in real Chromium against the real service: the result page, a fresh
    `?run=` link, the `?exp=` share link and compare show the same cost, tail and rates; the run's
    projected and measured cost agree; the `?run=` link shows the run's own spec in the form."""

    base, _home = dashboard
    spec = ("world=driving&scene=red_light_jaywalker&solver=heun&steps=3&samples=40&horizon=3&futures=2"
            "&regime=closed_loop")
    page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
    page.goto(f"{base}/?{spec}&name=verdict%20e2e")
    idle(page)
    main = page.locator("[data-testid=stMain]")
    assert "Projected verdict (before the run)" in main.inner_text()
    rid = run_once(page)
    mine = result_verdicts(page)
    cost = mine["verdicts"]["cost (binding)"]
    assert cost["projected"].split(" ")[-1] == cost["measured"].split(" ")[-1]  # counted == billed: one $
    assert cost["measured how"] == "measured" and cost["measured"].split(" ")[-1].startswith("$")
    assert mine["tail"] == ["darts (tail)"]  # the declared tail, though 'crosses' is rarer here
    text = main.inner_text()
    assert text.count("Measured verdict") == 1 and "Worker's verdict" not in text
    share = page.locator("a[href*='?exp=']").first.get_attribute("href")

    # a second run (another horizon) for compare
    page.goto(f"{base}/?{spec.replace('horizon=3', 'horizon=2')}&name=verdict%20e2e%202")
    idle(page)
    rid2 = run_once(page)

    fresh = browser.new_context(viewport={"width": 1400, "height": 2400})
    linked = fresh.new_page()
    linked.goto(f"{base}/?run={rid}")
    assert result_verdicts(linked) == mine
    idle(linked)
    # the form mirrors its state into the URL: the run's own spec, not the default mixture form
    for field in ("world=driving", "scene=red_light_jaywalker", "solver=heun", "steps=3", "horizon=3"):
        assert field in linked.url, linked.url
    assert linked.get_by_role("spinbutton", name="Steps", exact=True).input_value() == "3"
    assert linked.get_by_label("Horizon H (frames)").input_value() == "3"

    shared = fresh.new_page()
    shared.goto(base + share[share.index("/?"):] if "/?" in share else base + "/" + share)
    assert result_verdicts(shared) == mine

    cmp = fresh.new_page()
    cmp.goto(f"{base}/compare?runs={rid},{rid2}")
    rows = table_dicts(cmp, "tail rate", timeout=60_000)
    row = next(r for r in rows if rid[:7] in r["run"])
    assert row["cost"] == cost["measured"].split(" ")[-1] and row["tail"] == "darts"
    assert row["tail rate"].split(" ")[0] == mine["rates"]["darts"][0]
    assert row["tail rate"].split(" ", 1)[1] == mine["rates"]["darts"][1]
    assert row["measured"] == mine["verdicts"]["overall"]["measured"]
    assert row["projected"] == mine["verdicts"]["overall"]["projected"]


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def alerts(page, kind: str) -> list[str]:
    """The texts of the page's st.error / st.warning / st.info boxes of ``kind`` ('Error', 'Info', ...)."""
    return [a.inner_text() for a in page.locator(f"[data-testid=stAlertContent{kind}]").all()]


def test_links_out_of_range_double_click_in_flight_and_cancel(dashboard, browser):
    """Issue 18 item 7 in real Chromium against the real service: link values out of range are refused
    with the field and the range named (Explore and the Budget calculator), never coerced; a double-click
    on Run makes one experiment; Run is disabled while that run is in flight; a user's cancel reads as
    cancelled, not as an error."""
    from store import Store

    base, home = dashboard
    page = browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
    page.goto(f"{base}/?steps=99999999999&guidance_scale=inf&samples=1e308")
    idle(page)
    refused = " ".join(alerts(page, "Error"))
    assert "Steps (steps)='99999999999' in the link is not allowed; expected an integer in [1, 1000]" in refused
    assert "Guidance scale (guidance_scale)='inf'" in refused and "expected a number in [0.0, 50.0]" in refused
    assert "(samples)='1e308'" in refused
    assert page.get_by_role("button", name="Run", exact=True).count() == 0
    expect(page.get_by_role("spinbutton", name="Steps", exact=True)).to_have_value("20", timeout=60_000)  # the default
    page.goto(f"{base}/budget?S=1e12")
    idle(page)
    assert "S (NFE per frame) (S)='1e12' in the link is not allowed" in " ".join(alerts(page, "Error"))
    expect(page.get_by_label("S (NFE per frame)")).to_have_value("4", timeout=60_000)

    # A driving run long enough to be seen in flight and cancelled (~10 s alone on this machine; the first
    # version, ~3 s, could finish between the in-flight check and the click on a loaded CI box), double-clicked.
    spec = "world=driving&scene=red_light_jaywalker&solver=heun&steps=6&samples=2000&horizon=8&futures=2"
    page.goto(f"{base}/?{spec}&regime=closed_loop&name=double%20click")
    idle(page)
    before = Store(home / "store").experiments().height
    page.get_by_role("button", name="Run", exact=True).dblclick()
    page.wait_for_url("**run=r*", timeout=60_000)
    # One Run button, disabled (while the page reruns, the previous render's button can still be drawn)
    page.wait_for_function("() => { const r = [...document.querySelectorAll('button')].filter("
                           "b => b.innerText.trim().endsWith('Run')); return r.length == 1 && r[0].disabled; }",
                           timeout=60_000)
    run = page.get_by_role("button", name="Run", exact=True)
    assert "is in flight" in page.locator("[data-testid=stMain]").inner_text()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled: this run was stopped").wait_for(timeout=120_000)
    idle(page)
    assert not [t for t in alerts(page, "Error") if "cancel" in t.lower()]
    assert "Full error" not in page.locator("[data-testid=stMain]").inner_text()
    assert not run.is_disabled()  # the run is final: Run is back
    exps = Store(home / "store").experiments()
    assert exps.height == before + 1 and exps.filter(exps["name"] == "double click").height == 1


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(page) -> list[str]:
    """axe-core (the build the axe-playwright-python package ships) run inside the page: the serious and
    critical WCAG 2.1 A/AA violations, one line each."""
    import importlib.resources

    page.evaluate(importlib.resources.files("axe_playwright_python").joinpath("axe.min.js").read_text())
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {n['html'][:120]}" for v in result["violations"]
            if v["impact"] in ("serious", "critical") for n in v["nodes"]]


def test_accessibility_tab_order_and_narrow_layout(dashboard, browser):
    """Issue 18 items 6 and 3 in real Chromium: axe-core finds no serious or critical WCAG 2.1 AA
    violation (contrast, labels, names, ...) on any page in the light or the dark theme; Run is three
    Tab stops from the page's skip link; at 400 px the page does not scroll sideways and Run with the
    bill's line sits in the first screen; the first screen's planning example opens runnable."""
    from store import Store

    base, home = dashboard
    exp = Store(home / "store").create_experiment("a11y shared", [RunSpec(solver="heun", steps=4)])
    for scheme in ("light", "dark"):
        page = browser.new_context(viewport={"width": 1400, "height": 1600}, color_scheme=scheme).new_page()
        page.goto(base + "/")
        page.locator("[data-testid=stMain] h1:has-text('Explore')").wait_for(timeout=60_000)
        settled(page)
        for title in ("Explore", "Sweep", "Compare", "Experiments", "Queue", "Budget calculator"):
            page.get_by_role("link", name=title, exact=True).click()  # in-app: no reload, a quicker test
            page.locator(f"[data-testid=stMain] h1:has-text('{title}')").wait_for(timeout=60_000)
            settled(page)
            assert axe_violations(page) == [], (scheme, title)
        page.goto(f"{base}/?exp={exp}")
        page.locator("[data-testid=stMain] h1:has-text('a11y shared')").wait_for(timeout=60_000)
        settled(page)
        assert axe_violations(page) == [], (scheme, "shared view")
        page.context.close()

    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    page.goto(base + "/")
    run = page.get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=60_000)
    idle(page)
    page.keyboard.press("Tab")  # the first Tab stop is Streamlit's "Skip to main content"
    assert page.evaluate("document.activeElement.innerText").strip() == "Skip to main content"
    page.keyboard.press("Enter")
    for stops in range(1, 6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.innerText").strip().endswith("Run"):
            break
    else:
        raise AssertionError("Run is not within 5 Tab stops of the skip link")
    assert stops + 1 <= 5  # the skip link's stop included

    # the planning example loads runnable (within the world's support and the run guard)
    page.get_by_role("button", name="Example: In-the-loop planning").click()
    idle(page)
    expect(page.get_by_role("spinbutton", name="Plans P")).to_have_value("10", timeout=60_000)
    assert not run.is_disabled()  # no refusal by the world or the run guard

    page.set_viewport_size({"width": 400, "height": 900})
    idle(page)
    main = page.locator("[data-testid=stMain]")
    assert page.evaluate("(() => { const m = document.querySelector('[data-testid=stMain]');"
                         " return m.scrollWidth <= m.clientWidth; })()")
    box = run.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 900, box  # Run in the first screen
    assert "NFE per cycle" in main.inner_text()
    page.context.close()


def runs_grid_cells(page, rows: int) -> list[str]:
    """The text of every cell of the Runs table (glide's accessible grid under the canvas), row by row,
    once it has ``rows`` rows."""
    grid = page.locator("[data-testid=stDataFrame]", has=page.locator("td", has_text=re.compile(r"^r[0-9a-f]{12}$"))).last
    grid.locator("table[role=grid]").wait_for(state="attached", timeout=60_000)
    page.wait_for_function("([g, n]) => g.querySelector('table[role=grid]').getAttribute('aria-rowcount') == n + 1",
                           arg=[grid.element_handle(), rows], timeout=60_000)
    return grid.evaluate("g => [...g.querySelectorAll('td[role=gridcell]')].map(c => c.textContent)")


def test_runs_table_tag_filter_baseline_and_shared_link(dashboard, browser):
    """Issue 18 item 4 in real Chromium: on Experiments, select a run in the Runs table, tag it from the
    page, pin it as the baseline, filter the table by the tag; the URL then holds the table's state and
    a fresh browser opening it sees the same rows, the same baseline and the deltas."""
    from fastdiff_core.run import execute
    from store import Store

    base, home = dashboard
    s = Store(home / "store")
    specs = [RunSpec(samples=32, solver="euler", steps=k) for k in (3, 5, 8)]
    exp, run_ids = s.new_experiment("runs table e2e", specs, sweep={"steps": [3, 5, 8]})
    for rid, spec in zip(run_ids, specs):
        s.record_result(rid, "done", execute(spec), worker="test")
    page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    page.goto(f"{base}/experiments?q=runs%20table%20e2e&sort=steps&cols=run_id,steps,tail_rate")
    page.locator("[data-testid=stMain] h3:has-text('Runs')").wait_for(timeout=60_000)
    settled(page)
    assert [c for c in runs_grid_cells(page, 3) if re.fullmatch(r"r[0-9a-f]{12}", c)] == run_ids  # sorted by steps
    grid = page.locator("[data-testid=stDataFrame]").last
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 14, box["y"] + 35 + 17 + 1 * 35)  # the second row's selection box (steps 5)
    settled(page)
    page.get_by_text(f"Run {run_ids[1]}").wait_for(timeout=60_000)
    page.get_by_role("button", name="Tags and note").click()
    tags = page.get_by_role("combobox", name="Tags", exact=True)
    tags.fill("golden")
    tags.press("Enter")
    settled(page)  # the new tag's rerun has reached the page: a Save clicked during it could be lost (CI, load ~6)
    page.get_by_role("button", name="Save", exact=True).click()
    settled(page)
    deadline = time.monotonic() + 60
    while Store(home / "store").annotations([run_ids[1]])["tags"].to_list() != [["golden"]]:
        assert time.monotonic() < deadline, Store(home / "store").annotations([run_ids[1]])
        time.sleep(0.2)
    page.get_by_role("button", name="Pin as baseline").click()
    settled(page)
    page.get_by_role("combobox", name="Tags (any of)").click()
    page.get_by_role("option", name="golden").click()
    page.keyboard.press("Escape")
    settled(page)
    page.wait_for_url(re.compile(r"tag=golden"), timeout=60_000)
    url = page.url
    assert f"base={run_ids[1]}" in url and "sort=steps" in url and "cols=run_id" in url
    mine = runs_grid_cells(page, 1)
    assert run_ids[1] in mine and run_ids[0] not in mine and run_ids[2] not in mine
    main = page.locator("[data-testid=stMain]").inner_text()
    assert f"Baseline: run {run_ids[1]}" in main and "1 of 3 runs" in main

    other = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    other.goto(url)
    other.locator("[data-testid=stMain] h3:has-text('Runs')").wait_for(timeout=60_000)
    settled(other)
    assert runs_grid_cells(other, 1) == mine
    shared = other.locator("[data-testid=stMain]").inner_text()
    assert f"Baseline: run {run_ids[1]}" in shared and "1 of 3 runs" in shared
    headers = other.locator("[data-testid=stDataFrame]").last.evaluate(
        "g => [...g.querySelectorAll('th')].map(c => c.textContent)")
    assert headers[:4] == ["run_id", "steps", "tail_rate", "Δ tail_rate"] and "tail_rate vs baseline" in headers
    page.context.close()
    other.context.close()
