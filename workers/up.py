"""``fastdiff up``: everything one machine needs, in one command, stopped cleanly by Ctrl-C or SIGTERM.

Starts, in order: the embedded broker (unless FASTDIFF_BROKER_URL or config.json names one), the
collector (the store's single result writer), the workers (one node, sized to the machine), and the
Streamlit dashboard (``app/main.py``). Every child runs in its own process group with its log in
``$FASTDIFF_HOME/logs``; a child that dies is restarted, the embedded broker included. Shutdown runs
in reverse: dashboard, workers (warm: SIGTERM to the Celery main process alone, so running runs get
``--grace`` seconds; then SIGQUIT, which stops them and hands their messages back), collector (it
drains and compacts), broker (its append-only file is complete).

One ``up`` per FASTDIFF_HOME: it holds ``up.lock`` (flock, released by the kernel however ``up``
ends) and lists its children in ``up.pids.json``. An ``up`` that finds that list left by one that
was killed (kill -9 leaves its children running: each has its own session) stops those stale
children — workers warmly, as above — before starting its own.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from fastdiff_cli.args import float_range, int_range, port
from workers.broker import RedisServer
from workers.settings import ServiceSettings, check_dashboard_host, load_settings, shown_url

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_RESTARTS = 5  # within RESTART_WINDOW_S: a child that cannot start (port taken, bad config) stops `up`
RESTART_WINDOW_S = 60.0
LOCK = "up.lock"
PIDS = "up.pids.json"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: pathlib.Path
    proc: subprocess.Popen | None = None
    restart_times: list[float] = field(default_factory=list)
    # Workers: SIGTERM is Celery's warm shutdown; then SIGQUIT (cold) stops the runs and requeues them.
    second_signal: int = signal.SIGKILL

    def start(self) -> None:
        # Logs name runs, paths and errors: private to the user like the store and the broker (700/600), and
        # every child creates its own files under the same umask.
        self.log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.log.parent, 0o700)
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, umask=0o077)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        if self.alive():
            assert self.proc is not None
            stop_process(self.proc.pid, process_start(self.proc.pid), grace_s, self.second_signal)
            self.proc.wait()


def listening_port(child: Child, log_offset: int, timeout_s: float = 120.0) -> int:
    """The port the dashboard listens on when it was started with port 0: Streamlit binds a port the
    system picks and writes it to its log ("URL: http://host:port") once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.alive():
        with open(child.log, "rb") as f:
            f.seek(log_offset)
            found = re.search(rb"URL: https?://[^\s:]+:(\d+)", f.read())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"the dashboard did not report a listening port within {timeout_s:.0f} s; see {child.log}")


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells it from a later one with its pid;
    None if there is no such process or it has exited (a zombie)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime 22
    return None if fields[0] in ("Z", "X") else int(fields[19])


def stop_process(pid: int, start: int | None, grace_s: float, second_signal: int = signal.SIGKILL) -> None:
    """SIGTERM to the process alone (a Celery main process lets its pool children finish their runs),
    ``second_signal`` to it after ``grace_s``, SIGKILL to its whole group 5 s later."""
    def alive() -> bool:
        return start is not None and process_start(pid) == start

    for sig, wait_s in ((signal.SIGTERM, grace_s), (second_signal, 5.0)):
        if not alive():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    if alive():
        try:
            os.killpg(pid, signal.SIGKILL)  # each child leads its own group: its pool children go too
        except ProcessLookupError:
            pass
        while alive():
            time.sleep(0.05)


def stop_stale(home: pathlib.Path, grace_s: float) -> list[str]:
    """Stop the children a killed ``up`` left running (listed in ``up.pids.json``); returns what it stopped."""
    listing = home / PIDS
    try:
        stale = json.loads(listing.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name in ("dashboard", "workers", "collector", "broker"):
        entry = stale.get(name)
        if not isinstance(entry, dict) or process_start(entry.get("pid", 0)) != entry.get("start"):
            continue
        stop_process(entry["pid"], entry["start"], grace_s if name == "workers" else 10.0,
                     signal.SIGQUIT if name == "workers" else signal.SIGKILL)
        stopped.append(f"{name} (pid {entry['pid']})")
    listing.unlink(missing_ok=True)
    return stopped


def write_pids(home: pathlib.Path, procs: dict[str, subprocess.Popen | None]) -> None:
    listing = {name: {"pid": p.pid, "start": process_start(p.pid)} for name, p in procs.items() if p is not None}
    tmp = home / (PIDS + ".tmp")
    tmp.write_text(json.dumps(listing))
    os.replace(tmp, home / PIDS)


def too_often(times: list[float]) -> bool:
    """Record a restart now; True if that makes more than MAX_RESTARTS within RESTART_WINDOW_S."""
    now = time.monotonic()
    times[:] = [t for t in times if now - t < RESTART_WINDOW_S] + [now]
    return len(times) > MAX_RESTARTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int_range(0, 1024), default=None,
                        help="worker processes on this machine (default: one per GPU, else per CPU core; 0: none)")
    parser.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8501,
                        help="dashboard port (default 8501; 0: one the system picks, printed once it listens)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument("--grace", type=float_range(0.0, 86400.0), default=10.0, help="seconds running runs get at shutdown")


def main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"workers={args.workers!r} must be an integer >= 0")
    if args.grace < 0:
        raise ValueError(f"grace={args.grace!r} must be a number of seconds >= 0")
    settings = load_settings()
    if not args.no_dashboard:
        check_dashboard_host(args.host, settings.dashboard_secret)
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(home)  # held (and released by the kernel) for the life of `up`
    if lock is None:
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stale = stop_stale(home, args.grace)
    if stale:
        print(f"stopped what a previous `up` left running: {', '.join(stale)}", flush=True)
    broker = start_broker(settings, home)
    children = make_children(args, home, settings.resolved_broker_url())

    def record() -> None:
        write_pids(home, {"broker": broker.proc if broker else None, **{c.name: c.proc for c in children}})

    status = 0
    try:
        for child in children:
            offset = child.log.stat().st_size if child.log.exists() else 0
            child.start()
            print(f"{child.name}: pid {child.proc.pid}, log {child.log}")
            if child.name == "dashboard":
                port = args.port or listening_port(child, offset)
                print(f"\n  fastdiff dashboard: http://{args.host}:{port}\n")
        record()
        print("Ctrl-C stops everything.", flush=True)
        status = supervise(children, broker, stop, record)
    finally:
        print("stopping ...", flush=True)
        for child in reversed(children):
            child.stop(args.grace if child.name == "workers" else 10.0)
            print(f"{child.name}: stopped", flush=True)
        if broker is not None:
            broker.stop()
            print("broker: stopped", flush=True)
        (home / PIDS).unlink(missing_ok=True)
    return status


def hold_lock(home: pathlib.Path) -> IO[str] | None:
    """Take ``up.lock`` (one ``up`` per FASTDIFF_HOME) and write this pid into it; None (said on stderr)
    when another ``up`` holds it."""
    lock = open(home / LOCK, "a+")  # noqa: SIM115 - held (and released by the kernel) for the life of `up`
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(f"another `fastdiff up` (pid {lock.read().strip() or '?'}) is running with FASTDIFF_HOME={home}; "
              "stop it first", file=sys.stderr, flush=True)
        return None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def start_broker(settings: ServiceSettings, home: pathlib.Path) -> RedisServer | None:
    """The embedded Redis, started unless a broker is configured or one already answers (reused, then
    not ours to stop); None when ``up`` does not own the broker."""
    if settings.broker_url is not None:
        print(f"broker: {shown_url(settings.broker_url)}")
        return None
    broker = RedisServer(home / "broker", unix_socket=settings.embedded_socket)
    if broker.ping():
        print(f"broker: embedded Redis already running at {broker.url} (reused, not stopped at exit)")
        return None
    broker.start()
    print(f"broker: embedded Redis {broker.url}, pid {broker.proc.pid} (append-only, fsync always): "
          f"{broker.description}")
    return broker


def make_children(args: argparse.Namespace, home: pathlib.Path, url: str) -> list[Child]:
    """The collector, the workers (unless --workers 0) and the dashboard (unless --no-dashboard), in start order."""
    env = {**os.environ, "FASTDIFF_HOME": str(home), "FASTDIFF_BROKER_URL": url,
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    logs = home / "logs"
    cli = [sys.executable, "-m", "workers.cli"]
    children = [Child("collector", cli + ["collector"], env, logs / "collector.log")]
    if args.workers != 0:
        worker_argv = cli + ["worker"] + (["--concurrency", str(args.workers)] if args.workers else [])
        children.append(Child("workers", worker_argv, env, logs / "workers.log", second_signal=signal.SIGQUIT))
    dashboard = REPO / "app" / "main.py"
    if not args.no_dashboard:
        if dashboard.exists():
            children.append(Child("dashboard", [
                sys.executable, "-m", "streamlit", "run", str(dashboard), "--server.address", args.host,
                "--server.port", str(args.port), "--server.headless", "true",
                "--browser.gatherUsageStats", "false",
                # no Deploy button or developer menu for anyone (st.set_option in the app comes too late for it)
                "--client.toolbarMode", "viewer"], env, logs / "dashboard.log"))
        else:
            print(f"dashboard: {dashboard} does not exist yet; not started")
    return children


def supervise(children: list[Child], broker: RedisServer | None, stop: threading.Event,
              record: Callable[[], None]) -> int:
    """Restart whatever exits (the broker included) until ``stop`` is set; 1 when something exits more than
    MAX_RESTARTS times within RESTART_WINDOW_S (``up`` then gives up), else 0."""
    broker_restarts: list[float] = []
    while not stop.wait(0.5):
        if broker is not None and broker.proc.poll() is not None:
            if too_often(broker_restarts):
                print(f"broker exited {MAX_RESTARTS + 1} times within {RESTART_WINDOW_S:.0f} s; giving up. "
                      f"See {broker.data_dir / 'redis.log'}", flush=True)
                return 1
            print(f"broker exited (code {broker.proc.returncode}); restarting", flush=True)
            try:
                broker.start()
            except RuntimeError as e:
                print(f"broker did not restart: {e}", flush=True)
                continue
            record()
        for child in children:
            if not child.alive():
                if too_often(child.restart_times):
                    print(f"{child.name} exited {MAX_RESTARTS + 1} times within {RESTART_WINDOW_S:.0f} s "
                          f"(last code {child.proc.returncode}); giving up. See {child.log}", flush=True)
                    stop.set()
                    return 1
                print(f"{child.name} exited (code {child.proc.returncode}); restarting, see {child.log}",
                      flush=True)
                child.start()
                record()
    return 0
