"""Seconds a process spends loading networks it then keeps (``one_off``), so that a run can report them apart
from its own work: ``run.execute`` records them as ``metrics['setup_s']``, and the run-time model fits a kind's
cost on the seconds without them (the next run on the same worker does not load the network again).

A loader wrapped by ``one_off`` is one that is called only on a cache miss (the caller keeps the result); calls
nested in another ``one_off`` call count once.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_state = {"spent": 0.0, "depth": 0}


def one_off(fn: F) -> F:
    """``fn`` with its wall time added to this process's ``spent()`` (the outermost of nested calls only)."""

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        _state["depth"] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _state["spent"] += time.perf_counter() - t0

    return timed  # type: ignore[return-value]


def spent() -> float:
    """Seconds this process has spent in ``one_off`` loaders so far."""
    return _state["spent"]


# Imported lazily by every run's verdicts and references (scipy.stats for the Clopper-Pearson intervals,
# scipy.integrate for the mixture's exact reference): ~1 s on a quiet core, paid by a process's first run unless
# a worker imports them when it starts (``preload``).
LAZY_IMPORTS = ("scipy.stats", "scipy.integrate")


def preload() -> float:
    """Import ``LAZY_IMPORTS`` now (a worker process at start-up; a benchmark before it times runs); the seconds."""
    t0 = time.perf_counter()
    import scipy.integrate  # noqa: F401
    import scipy.stats  # noqa: F401

    return time.perf_counter() - t0
