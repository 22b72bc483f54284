"""The shipped teacher does not fail the release gate (every CI run), and its card states what it measured."""

import json

import pytest
import torch

from fastdiff_core.metrics.gate import RELEASE_GATE
from fastdiff_core.models.card import CI_PROTOCOL, measure_teacher
from fastdiff_core.models.teacher import DEFAULT_TEACHER, TEACHERS, load_teacher, teacher_stem


@pytest.mark.parametrize("prediction", TEACHERS)
def test_shipped_weights_have_a_card_with_command_time_and_metrics(prediction):
    stem = teacher_stem(prediction)
    assert stem.with_suffix(".safetensors").stat().st_size < 8_000_000  # small
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["command"].startswith("fastdiff train teacher")
    stats = meta["stats"]
    # Training cost is a figure the card reports, not a test target (speed targets are checked by commands
    # that print figures). The shipped weights predate the cpu_seconds recorder: then the card says so.
    assert stats["train_seconds"] > 0
    assert "cpu_seconds" in stats or any("CPU time was not recorded" in n for n in meta.get("notes", []))
    assert set(meta["measured"]["scenes"]) and "passed" in meta["measured"]["gate"]
    card = stem.with_suffix(".md").read_text()
    assert meta["command"] in card and "Release gate" in card and "training time" in card
    assert load_teacher(prediction).prediction == prediction


@pytest.mark.slow
def test_shipped_teacher_does_not_fail_the_release_gate():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = measure_teacher(load_teacher(DEFAULT_TEACHER), CI_PROTOCOL)
    finally:
        torch.set_num_threads(threads)
    # at the CI protocol's 1,200 rollouts per scene the +-2 point branch bands cannot be shown (that takes
    # ~10,000, docs/gate.md), so CI asserts what 1,200 can: no check is shown outside its band
    assert m["gate"]["outcome"] in ("PASS", "UNDECIDED"), m["gate"]["failures"]
    assert m["max_tv"] <= RELEASE_GATE.tv_tolerance
