"""`fastdiff up` as a child process on a loopback port it binds itself: what the browser tests, the
security test and `python -m app.screenshots` start and stop. Imports no Celery and no torch (the
screenshot tool in app/ uses it).

    with fastdiff_up(home, workers=1) as base:   # base: "http://127.0.0.1:<port the server reported>"
        ...

The port is never picked by the caller and then bound (another process could take it in between):
`fastdiff up --port 0` lets Streamlit bind one and prints the URL once it listens; this reads it from
the log, waits for the health endpoint, and on exit stops the whole process group (SIGTERM, then
SIGKILL after ``stop_s``).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping

REPO = pathlib.Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r"fastdiff dashboard: (http://127\.0\.0\.1:\d+)")


def reported_url(log: pathlib.Path, proc: subprocess.Popen, timeout: float) -> str:
    """The dashboard URL `fastdiff up` prints once Streamlit listens on the port the system gave it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = URL_LINE.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"fastdiff up exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    raise TimeoutError(f"fastdiff up reported no dashboard URL within {timeout} s:\n{log.read_text(errors='replace')}")


def wait_http(url: str, timeout: float) -> None:
    """Until ``url`` answers 200; TimeoutError naming it after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen, stop_s: float = 60.0) -> None:
    """SIGTERM to the process group (`fastdiff up` stops what it started), SIGKILL if it lingers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(stop_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def fastdiff_up(home: pathlib.Path, *, workers: int = 1, env: Mapping[str, str] | None = None,
                start_s: float = 120.0) -> Iterator[str]:
    """`fastdiff up --port 0` over ``home`` (its log: ``home/up.log``) with ``workers`` workers on the
    embedded broker; yields the base URL it reported, then stops it. ``env``: extra variables."""
    home = pathlib.Path(home)
    home.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "PYTHONPATH": str(REPO), "FASTDIFF_HOME": str(home), **(env or {})}
    full.pop("FASTDIFF_BROKER_URL", None)  # the embedded broker of this home, never a configured one
    with open(home / "up.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--host", "127.0.0.1", "--port", "0",
                                 "--workers", str(workers), "--grace", "2"], cwd=REPO, env=full, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = reported_url(home / "up.log", proc, start_s)
            wait_http(f"{base}/_stcore/health", 90)
            yield base
        finally:
            stop(proc)


STREAMLIT_URL = re.compile(r"URL: (http://127\.0\.0\.1:\d+)")


@contextlib.contextmanager
def dashboard_only(home: pathlib.Path, *, start_s: float = 120.0) -> Iterator[str]:
    """The dashboard alone (`streamlit run app/main.py`, no broker, workers or collector: it reads the
    store of ``home``) on a loopback port Streamlit binds (port 0) and reports in its log
    (``home/dashboard-only.log``); yields the base URL once it answers, then stops it."""
    home = pathlib.Path(home)
    env = {**os.environ, "FASTDIFF_HOME": str(home), "PYTHONPATH": str(REPO)}
    with open(home / "dashboard-only.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py"),
                                 "--server.address", "127.0.0.1", "--server.port", "0", "--server.headless", "true",
                                 "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + start_s
            while not (found := STREAMLIT_URL.search((home / "dashboard-only.log").read_text(errors="replace"))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard reported no URL (exit {proc.poll()}); see {log.name}")
                time.sleep(0.1)
            base = found.group(1)
            wait_http(f"{base}/_stcore/health", 90)
            yield base
        finally:
            stop(proc, 30)
