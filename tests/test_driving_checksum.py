"""Issue 15 item 1, "a checksum recorded with every run": a driving run records the sha256 of the shipped
teacher's weights it loaded, through both runners (P = 1, and the planning runner a P x R fan-out takes)."""

from __future__ import annotations

import hashlib

import pytest

from fastdiff_core.models.teacher import teacher_stem
from fastdiff_core.run import execute
from fastdiff_core.spec import RunSpec


@pytest.mark.parametrize("plans", [1, 2])
def test_a_driving_run_records_the_sha256_of_the_teacher_it_loaded(plans):
    spec = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=2, samples=4, horizon=2,
                   plans=plans, futures=2, world_options={"teacher": "x0"})
    want = hashlib.sha256(teacher_stem("x0").with_suffix(".safetensors").read_bytes()).hexdigest()
    assert execute(spec).info["model_checksum"] == want
