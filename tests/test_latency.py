"""Latency measurement: warm-up is not timed, repeats give a median and spread, the device is named."""

import time

import pytest
import torch

from fastdiff_core.latency import device_name, measure, measure_interleaved, time_forward


def test_measure_excludes_warmup_and_reports_spread():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 2 else 0.002)  # slow warm-up (lazy init), fast steady state

    t = measure(fn, what="frame", batch=8, device="cpu", warmup=2, repeats=5)
    assert len(calls) == 7
    assert 0.0015 < t.median_s < 0.03  # the warm-up's 50 ms is not in the figure
    assert t.p10_s <= t.median_s <= t.p90_s and t.repeats == 5 and t.batch == 8
    row = t.row()
    assert row["what"] == "frame" and row["seconds"] == t.median_s and row["device"].startswith("cpu")


def test_interleaved_ratio_and_forward_timing():
    ts = measure_interleaved({"fast": lambda: time.sleep(0.01), "slow": lambda: time.sleep(0.06)},
                             batch=1, device="cpu", repeats=5)
    assert ts["slow"].median_s / ts["fast"].median_s > 2.0  # scheduler jitter on a loaded machine is ~ms
    net = torch.nn.Linear(4, 4)
    t = time_forward(lambda x, t, c: net(x), torch.randn(16, 4), torch.zeros(16), None, repeats=3)
    assert t.what == "nfe" and t.batch == 16 and t.median_s > 0


def test_device_name_and_validation():
    assert "threads" in device_name("cpu")
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, what="x", batch=1, device="cpu", repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        measure(lambda: None, what="x", batch=1, device="cpu", warmup=-1)
