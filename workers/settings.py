"""Service settings: where data lives, which broker, how long a run may take. Torch-free.

Read from the environment first, then ``$FASTDIFF_HOME/config.json``, then defaults:

    FASTDIFF_HOME           data directory (default ./var): store/, broker/ (embedded Redis), logs/
    FASTDIFF_BROKER_URL     redis://host:port/db or redis+socket:///path; unset -> the embedded broker
    FASTDIFF_MAX_RUN_S      longest allowed run (soft time limit), default 3600
    FASTDIFF_MAX_MEMORY_MB  a worker child is replaced after a task leaves it above this, default 4096
    FASTDIFF_HEARTBEAT_S    how often a worker node says it is alive and which runs it holds, default 10
    FASTDIFF_MAX_WORKER_DEATHS  a run whose worker process dies this many times is stored failed, default 2
    FASTDIFF_DASHBOARD_SECRET  the dashboard's login secret (>= 16 characters); required to serve it
                            beyond loopback (docs/security.md). Prefer the environment to config.json.

What one run may cost (FASTDIFF_MAX_RUN_NFE, _MAX_ROLLOUTS, _MAX_PEAK_MB, _CHUNK_ROLLOUTS, _MAX_SWEEP_RUNS)
is read by ``fastdiff_core.limits`` wherever a RunSpec is validated: docs/limits.md.

The time limits are the submitting machine's: they travel in each task message, so every worker
applies the same ones. A node that stops heartbeating for ``node_ttl_s`` (3 heartbeats) is dead: any
live node, and the collector, requeue the runs it held (``workers.supervision``). The broker's
visibility timeout, derived from the longest run, is only the backstop.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any

EMBEDDED_SOCKET = "broker/redis.sock"
MAX_UNIX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux
MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class ServiceSettings:
    home: pathlib.Path
    broker_url: str | None
    max_run_s: float
    max_memory_mb: int
    heartbeat_s: float = 10.0
    max_worker_deaths: int = 2
    dashboard_secret: str | None = None

    @property
    def node_ttl_s(self) -> float:
        """A node silent this long is dead; its runs are requeued within this plus one heartbeat."""
        return 3 * self.heartbeat_s

    @property
    def soft_time_limit_s(self) -> float:
        return self.max_run_s

    @property
    def hard_time_limit_s(self) -> float:
        return self.max_run_s + max(2.0, 0.1 * self.max_run_s)

    @property
    def visibility_timeout_s(self) -> int:
        # Longer than the longest run (hard limit) with margin: redelivery means the worker is gone.
        return int(1.5 * self.hard_time_limit_s) + 1

    @property
    def embedded_socket(self) -> pathlib.Path:
        return self.home / EMBEDDED_SOCKET

    @property
    def store_root(self) -> pathlib.Path:
        return self.home / "store"

    def resolved_broker_url(self) -> str:
        """The configured URL, else the embedded broker's socket under FASTDIFF_HOME."""
        return self.broker_url or socket_url(self.embedded_socket)


def socket_url(path: pathlib.Path) -> str:
    if len(str(path)) > MAX_UNIX_SOCKET_PATH:
        raise ValueError(f"FASTDIFF_HOME={str(path.parent.parent)!r} is too long for a Unix socket path "
                         f"({len(str(path))} > {MAX_UNIX_SOCKET_PATH} characters); use a shorter data directory")
    return f"redis+socket://{path}"


def redis_py_url(url: str) -> str:
    """Celery/kombu spell a Unix socket redis+socket:///path; redis-py spells it unix:///path."""
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://"):]
    return url


def shown_url(url: str) -> str:
    """``url`` for a message or a log: its password (redis://:secret@host) replaced by ***."""
    return re.sub(r"^(\w[\w+]*://[^:/@]*:)[^@/]*@", r"\1***@", url) if isinstance(url, str) else repr(url)


def check_broker_url(url: str) -> str:
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "redis+socket://", "unix://")):
        raise ValueError(f"broker_url={shown_url(url)!r} must be a Redis URL: redis://host:port/db, rediss://..., "
                         "or redis+socket:///path/to/redis.sock")
    return "redis+socket://" + url[len("unix://"):] if url.startswith("unix://") else url


def broker_url_argument(text: str) -> str:
    """``--broker`` as argparse reads it: a bad URL is an argument error naming the flag."""
    try:
        return check_broker_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(name: str, value: Any, kind: type) -> Any:
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a positive {kind.__name__}") from None
    if not v > 0:
        raise ValueError(f"{name}={value!r} must be a positive {kind.__name__}")
    return v


def load_settings(env: dict[str, str] | None = None) -> ServiceSettings:
    env = dict(os.environ if env is None else env)
    home = pathlib.Path(env.get("FASTDIFF_HOME", "var")).resolve()
    config: dict[str, Any] = {}
    cfg_path = home / "config.json"
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
        allowed = {"broker_url", "max_run_s", "max_memory_mb", "heartbeat_s", "max_worker_deaths",
                   "dashboard_secret"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValueError(f"{cfg_path} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    url = env.get("FASTDIFF_BROKER_URL") or config.get("broker_url") or None
    return ServiceSettings(
        home=home,
        broker_url=check_broker_url(url) if url else None,
        max_run_s=_positive("max_run_s", env.get("FASTDIFF_MAX_RUN_S", config.get("max_run_s", 3600)), float),
        max_memory_mb=_positive("max_memory_mb",
                                env.get("FASTDIFF_MAX_MEMORY_MB", config.get("max_memory_mb", 4096)), int),
        heartbeat_s=_positive("heartbeat_s", env.get("FASTDIFF_HEARTBEAT_S", config.get("heartbeat_s", 10)), float),
        max_worker_deaths=_positive("max_worker_deaths", env.get("FASTDIFF_MAX_WORKER_DEATHS",
                                                                 config.get("max_worker_deaths", 2)), int),
        dashboard_secret=check_secret(env.get("FASTDIFF_DASHBOARD_SECRET") or config.get("dashboard_secret") or None),
    )


def check_secret(secret: Any) -> str | None:
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH):
        raise ValueError(f"dashboard_secret must be a string of at least {MIN_SECRET_LENGTH} characters "
                         f"(got {'a non-string' if not isinstance(secret, str) else f'{len(secret)} characters'}); "
                         "e.g. FASTDIFF_DASHBOARD_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe())')")
    return secret


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches ('' and 0.0.0.0 mean every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_dashboard_host(host: str, secret: str | None) -> None:
    """Refuse to serve the dashboard beyond loopback without a secret (it can delete and queue runs)."""
    if not is_loopback(host) and secret is None:
        raise ValueError(f"host={host!r} serves the dashboard beyond this machine, which needs a login secret: "
                         "set FASTDIFF_DASHBOARD_SECRET (>= 16 characters, see docs/security.md) or use "
                         "--host 127.0.0.1")
