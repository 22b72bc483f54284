"""./dev's apt-get waits for another apt-get's package lock (bounded) instead of failing.

The lock is a private copy of dpkg's (apt-get -o Dir::State::status=...), so no real apt-get on this
machine is ever blocked by the test; apt-get takes the same fcntl lock on it that it takes on
/var/lib/dpkg/lock-frontend."""

import fcntl
import os
import pathlib
import shutil
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("apt-get") is None or not pathlib.Path("/var/lib/dpkg/status").exists() or os.geteuid() != 0,
    reason="./dev installs system packages only with Debian's apt-get as root",
)


def run_dev_apt_get(tmp_path, hold_s: float, wait_s: int) -> tuple[subprocess.CompletedProcess, bool]:
    status = tmp_path / "status"
    shutil.copy("/var/lib/dpkg/status", status)
    lock = open(tmp_path / "lock-frontend", "w")
    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    released = threading.Event()

    def release():
        released.wait(hold_s)
        lock.close()

    t = threading.Thread(target=release)
    t.start()
    try:
        out = subprocess.run([str(ROOT / "dev"), "apt-get", "-o", f"Dir::State::status={status}", "check"],
                             check=False, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "FASTDIFF_APT_WAIT_S": str(wait_s)})
    finally:
        still_held = not lock.closed
        released.set()
        t.join()
    return out, still_held


def test_apt_get_waits_for_the_package_lock_then_runs(tmp_path):
    out, still_held = run_dev_apt_get(tmp_path, hold_s=4, wait_s=120)
    assert out.returncode == 0, out.stderr
    assert "holds the package lock; waiting" in out.stderr
    assert not still_held  # it finished only after the lock was let go


def test_apt_get_gives_up_with_a_message_when_the_lock_stays_held(tmp_path):
    out, still_held = run_dev_apt_get(tmp_path, hold_s=120, wait_s=2)
    assert out.returncode == 1
    assert "still held after 2 s" in out.stderr
    assert still_held
