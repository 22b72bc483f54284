"""Fault tests with real processes: one real ``fastdiff up`` (embedded redis-server, collector, a Celery
worker node) and, per test, a 2-run sweep during which one part is killed -9 (or ``up`` gets Ctrl-C).

Every submitted run must be stored exactly once, none lost, and the runs that were running when the
fault hit stored within 60 s. The rows are the ones ``fastdiff bench faults`` prints (same functions).
Heartbeats are 1 s here (a node silent 3 s is dead), set through the environment of ``up``.
"""

from __future__ import annotations

import pytest

from workers.faults import FAULTS, UpService, run_fault

pytestmark = [pytest.mark.service, pytest.mark.slow, pytest.mark.xdist_group("faults")]  # one `fastdiff up` for all

GRACE_S = 60.0  # longer than a run: Ctrl-C lets the running run finish (warm shutdown)
RECOVERY_S = 60.0
N_RUNS = 2  # a sweep, as short as one: the fault hits its first run, the second runs after


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    svc = UpService(tmp_path_factory.mktemp("faults", numbered=True))
    try:
        svc.start(GRACE_S)
        svc.wait_ready()
        yield svc
    finally:
        svc.close()


def check(row, failed: int = 0) -> None:
    assert row.stored == row.submitted == N_RUNS, row
    assert row.duplicated == 0 and row.reexecuted == 0 and row.lost == 0, row
    assert row.failed == failed, row
    assert row.recovery_s <= RECOVERY_S, row


@pytest.mark.parametrize("fault", ["pool_child", "node", "collector", "broker", "up"])
def test_kill_9_mid_sweep_stores_every_run_once(up, fault):
    check(run_fault(up, fault, seed0=100 * (1 + FAULTS.index(fault)), n_runs=N_RUNS, grace_s=GRACE_S))


def test_ctrl_c_mid_run_lets_the_run_finish_within_grace(up):
    row = run_fault(up, "ctrl_c", seed0=7000, n_runs=N_RUNS, grace_s=GRACE_S)
    check(row)
    assert row.stored_before_exit == 1, row  # warm shutdown: the pool process was not signalled


def test_a_run_whose_worker_dies_twice_is_stored_failed_and_not_redelivered(up):
    row = run_fault(up, "deaths", seed0=8000, n_runs=N_RUNS, grace_s=GRACE_S)
    check(row, failed=1)
    assert "died 2 times" in row.note and "not retried" in row.note, row
    assert up.client.redis.llen("fastdiff") == 0 and up.client.redis.hlen("unacked") == 0
