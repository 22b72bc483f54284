"""Latency measurement: median and spread after warm-up, on a named device.

Every figure the product quotes about time comes from ``measure``: the callable runs ``warmup`` times
untimed (allocator, caches, lazy init, torch.compile), then ``repeats`` times timed, each timing
closed by ``torch.cuda.synchronize`` on CUDA so GPU work is not mistaken for free. A ``Timing`` is
what was measured (``what``: nfe | frame | rollout | cycle | forward ...), at which batch size (rows
through the network per forward), on which device, as median, 10th / 90th percentiles and a
distribution-free interval for the median, with the thread count and the machine's load average
recorded beside it: on a shared machine the same call can take 10x longer a minute later, and a
verdict on one timing is a coin toss (``budget.latency_check`` says UNDECIDED unless the interval decides).
The projection to production-size models lives in ``fastdiff_core.budget`` (torch-free).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from fastdiff_core.budget import LatencySample
from fastdiff_core.metrics.intervals import median_interval, quantile

MEDIAN_CONFIDENCE = 0.95


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """A device as a latency figure must name it: GPU model, or CPU model and threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu:{cpu} ({torch.get_num_threads()} threads of {os.cpu_count()})"


@dataclass(frozen=True)
class Timing:
    """One measured latency: seconds per call of ``what`` at ``batch`` rows, median and spread."""

    what: str
    batch: int
    median_s: float
    p10_s: float
    p90_s: float
    repeats: int
    device: str
    nfe: float = 0.0  # per-sample NFE inside one timed call (0 when not a sampling call)
    lo_s: float | None = None  # interval for the median (``median_interval``), None for one timing
    hi_s: float | None = None
    confidence: float | None = None
    threads: int | None = None  # torch intra-op threads while timing
    load: float | None = None  # 1-minute load average after timing (cores busy on the machine)

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: relative spread."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0

    def row(self) -> dict[str, Any]:
        """The RunResult.latency row: {what, seconds, batch, device} plus the spread."""
        d = asdict(self)
        d["seconds"] = self.median_s
        return d

    def sample(self) -> LatencySample:
        """The timing as a verdict reads it."""
        return LatencySample(self.median_s, self.lo_s, self.hi_s, self.confidence, self.repeats, self.device,
                             self.threads, self.load)


def timing_from(values: list[float], *, what: str, batch: int, device: torch.device | str, nfe: float = 0.0) -> Timing:
    """A Timing from raw timings in seconds (sorted here): median, percentiles, the median's interval,
    threads and machine load."""
    ts = sorted(float(v) for v in values)
    if not ts:
        raise ValueError("values=[] must hold at least one timing")
    ci = median_interval(ts, MEDIAN_CONFIDENCE)
    return Timing(what, int(batch), statistics.median(ts), quantile(ts, 0.1), quantile(ts, 0.9), len(ts),
                  device_name(device), float(nfe), *(ci if ci else (None, None, None)), torch.get_num_threads(),
                  machine_load())


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def measure(fn: Callable[[], Any], *, what: str, batch: int, device: torch.device | str,
            warmup: int = 2, repeats: int = 7, nfe: float = 0.0) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones (synchronised on CUDA)."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be an integer >= 0")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 1")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return timing_from(times, what=what, batch=batch, device=device, nfe=nfe)


def time_forward(net: Callable, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, *,
                 warmup: int = 3, repeats: int = 11) -> Timing:
    """One network forward at batch ``x_t.shape[0]`` (= the latency of one sequential NFE at that batch)."""

    def call() -> None:
        with torch.inference_mode():
            net(x_t, t, cond)

    return measure(call, what="nfe", batch=x_t.shape[0], device=x_t.device, warmup=warmup, repeats=repeats,
                   nfe=1.0)


def measure_interleaved(fns: dict[str, Callable[[], Any]], *, batch: dict[str, int] | int, device: torch.device | str,
                        warmup: int = 1, repeats: int = 5, nfe: dict[str, float] | None = None) -> dict[str, Timing]:
    """Time several callables round-robin (A B C A B C ...), so a ratio between them is not skewed by
    load that changes during the run (a shared machine). Same warm-up / synchronisation as ``measure``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 1")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[k].append(time.perf_counter() - t0)
    return {k: timing_from(ts, what=k, batch=batch[k] if isinstance(batch, dict) else batch, device=device,
                           nfe=float((nfe or {}).get(k, 0.0))) for k, ts in times.items()}
