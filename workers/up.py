"""``fastdiff up``: everything one machine needs, in one command, stopped cleanly by Ctrl-C or SIGTERM.

Starts, in order: the embedded broker (unless FASTDIFF_BROKER_URL or config.json names one), the
collector (the store's single result writer), the workers (one node, sized to the machine), and the
Streamlit dashboard (``app/main.py``). Every child runs in its own process group with its log in
``$FASTDIFF_HOME/logs``; a child that dies is restarted. Shutdown runs in reverse: dashboard,
workers (warm: running runs get ``--grace`` seconds, then they are stopped and requeued), collector
(it drains and compacts), broker (its append-only file is complete).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from workers.broker import RedisServer
from workers.settings import load_settings

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_RESTARTS = 5  # within RESTART_WINDOW_S: a child that cannot start (port taken, bad config) stops `up`
RESTART_WINDOW_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: pathlib.Path
    proc: subprocess.Popen | None = None
    restart_times: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float, second_signal: int = signal.SIGKILL) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.proc.pid, second_signal)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes on this machine (default: one per GPU, else per CPU core; 0: none)")
    parser.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds running runs get at shutdown")


def main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"workers={args.workers!r} must be an integer >= 0")
    settings = load_settings()
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker = None
    if settings.broker_url is None:
        broker = RedisServer(home / "broker", unix_socket=settings.embedded_socket)
        if broker.ping():
            print(f"broker: embedded Redis already running at {broker.url} (reused, not stopped at exit)")
            broker = None
        else:
            broker.start()
            print(f"broker: embedded Redis {broker.url} (append-only, fsync always): {broker.description}")
    else:
        print(f"broker: {settings.broker_url}")
    url = settings.resolved_broker_url()
    env = {**os.environ, "FASTDIFF_HOME": str(home), "FASTDIFF_BROKER_URL": url,
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    logs = home / "logs"
    cli = [sys.executable, "-m", "workers.cli"]
    children = [Child("collector", cli + ["collector"], env, logs / "collector.log")]
    if args.workers != 0:
        worker_argv = cli + ["worker"] + (["--concurrency", str(args.workers)] if args.workers else [])
        children.append(Child("workers", worker_argv, env, logs / "workers.log"))
    dashboard = REPO / "app" / "main.py"
    if not args.no_dashboard:
        if dashboard.exists():
            children.append(Child("dashboard", [
                sys.executable, "-m", "streamlit", "run", str(dashboard), "--server.address", args.host,
                "--server.port", str(args.port), "--server.headless", "true",
                "--browser.gatherUsageStats", "false"], env, logs / "dashboard.log"))
        else:
            print(f"dashboard: {dashboard} does not exist yet; not started")
    status = 0
    try:
        for child in children:
            child.start()
            print(f"{child.name}: pid {child.proc.pid}, log {child.log}")
        if any(c.name == "dashboard" for c in children):
            print(f"\n  fastdiff dashboard: http://{args.host}:{args.port}\n")
        print("Ctrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            for child in children:
                if not child.alive():
                    now = time.monotonic()
                    child.restart_times = [t for t in child.restart_times if now - t < RESTART_WINDOW_S] + [now]
                    if len(child.restart_times) > MAX_RESTARTS:
                        print(f"{child.name} exited {MAX_RESTARTS + 1} times within {RESTART_WINDOW_S:.0f} s "
                              f"(last code {child.proc.returncode}); giving up. See {child.log}", flush=True)
                        status = 1
                        stop.set()
                        break
                    print(f"{child.name} exited (code {child.proc.returncode}); restarting, see {child.log}",
                          flush=True)
                    child.start()
    finally:
        print("stopping ...", flush=True)
        for child in reversed(children):
            # Workers: SIGTERM is Celery's warm shutdown; then SIGQUIT (cold) requeues what still runs.
            child.stop(args.grace if child.name == "workers" else 10.0,
                       signal.SIGQUIT if child.name == "workers" else signal.SIGKILL)
            print(f"{child.name}: stopped", flush=True)
        if broker is not None:
            broker.stop()
            print("broker: stopped", flush=True)
    return status
