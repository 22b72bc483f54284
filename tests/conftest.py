import os
import sys

import pytest

# `./dev test` runs the suite in parallel worker processes (pytest-xdist, one per core): each worker
# keeps torch to one intra-op thread, or two workers' OpenMP pools oversubscribe the cores and small
# ops stall. Set before any test module imports torch; a value the caller set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest installs the page script as ``__main__``; restore the real one so that a later
    test spawning processes (multiprocessing 'spawn' re-imports ``__main__``) does not run a page."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDIFF_HOME", str(tmp_path))
    monkeypatch.delenv("FASTDIFF_BROKER_URL", raising=False)
    from app import connection

    connection._store.clear()
    connection._client.clear()
    yield tmp_path
    connection._store.clear()
    connection._client.clear()


def pytest_collection_modifyitems(config, items):
    """Service and browser tests start real processes (brokers, workers, Chromium) and take tens of
    seconds each: they count as slow, so ``./dev test -m "not slow"`` is the fast loop.

    Slow tests run first (a stable sort: the order within them and within the rest is kept), so that
    parallel workers start the long ones early and the short ones fill in around them, instead of one
    worker finishing a two-minute test alone at the end."""
    for item in items:
        if item.get_closest_marker("service") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
