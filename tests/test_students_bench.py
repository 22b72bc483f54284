"""``fastdiff bench students`` measured sequentially: the looks stop where the gates decide, the counts are
the rollouts drawn, and the over-seed summary reads the stored runs (cheap: 1-4 step students only)."""

from __future__ import annotations

import json

import pytest
import torch

from fastdiff_core.students.bench import BENCH_JSON, COMPARISONS, comparisons, summarise
from fastdiff_core.students.card import StudentProtocol, counts_of, measure
from fastdiff_core.students.driving import load_shipped, student_frame_sampler


SCENES = ("child_at_curb", "hesitant_no_signal", "walk_signal")  # three scenes keep the test cheap


def _sampler(name: str, steps: int):
    student, facts = load_shipped(name, steps)
    return student_frame_sampler(student, facts, steps)


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    # any sampled counts can be a two-sample reference; consistency x 4 at a fixed 250 per scene is cheap
    return counts_of(measure(None, StudentProtocol(n=250, seed=3, scenes=SCENES, sample_metric_scenes=()), None,
                             frame_sampler=_sampler("consistency", 4)))


def test_a_tail_deleting_student_fails_at_the_first_look(reference):
    m = measure(None, StudentProtocol(cap=1000, seed=3, scenes=SCENES, sample_metric_scenes=()), reference,
                frame_sampler=_sampler("dmd", 1))
    assert m["mode"] == "sequential" and m["gate_truth"]["outcome"] == "FAIL"
    assert m["gate_truth"]["method"] == "sequential" and m["gate_teacher"]["method"] == "sequential"
    assert all(c["n"] == 250 == sum(c["counts"].values()) for c in m["scenes"].values())
    assert m["n_per_scene"] == 250 and m["nfe_per_frame"] == 1


def test_undecided_scenes_are_sampled_up_to_the_cap_and_no_further(reference):
    cap = 400  # looks at 250, 375, 400
    m = measure(None, StudentProtocol(cap=cap, seed=3, scenes=SCENES, sample_metric_scenes=()), reference,
                frame_sampler=_sampler("consistency", 4))
    ns = {s: c["n"] for s, c in m["scenes"].items()}
    assert set(ns.values()) <= {250, 375, 400} and max(ns.values()) <= cap
    assert all(sum(c["counts"].values()) == c["n"] for c in m["scenes"].values())
    assert m["n_per_scene"] == pytest.approx(sum(ns.values()) / len(ns))
    if m["gate_truth"]["outcome"] == "UNDECIDED":  # nothing failed: every undecided scene ran to the cap
        open_scenes = {u["scene"] for u in m["gate_truth"]["undecided"]}
        assert all(ns[s] == cap for s in open_scenes)
    # the tail rate is the mean of per-scene rates (scenes may stop at different n)
    rates = [c["counts"]["darts"] / c["n"] for c in m["scenes"].values()]
    assert m["tail_rate"] == pytest.approx(sum(rates) / len(rates))


def test_the_shipped_bench_summary_has_one_outcome_per_seed_and_equal_tv_rows():
    data = json.loads(BENCH_JSON.read_text())
    seeds = [run["seed"] for run in data["runs"].values()]
    assert len(seeds) >= 3
    rows = summarise(data)
    students = [r for r in rows if r["kind"] == "student"]
    assert students and all(r["seeds"] == seeds for r in rows)
    for r in rows:
        assert all(o in ("PASS", "FAIL", "UNDECIDED") for o in r["gate_truth"])
        assert 250 <= r["mean_rollouts"] <= (data["protocol"]["cap"] or data["protocol"]["n"])
        mean, lo, hi = r["mean_tv"]
        assert lo <= mean <= hi
    for r in students:
        e = r["equal_tv"]
        assert e is not None and e["seeds"] == len(seeds)
        if e["estimable"] and e["bound"] is None:
            assert e["teacher_nfe_lo"] <= e["teacher_nfe"] <= e["teacher_nfe_hi"]
    assert {(c["a"], c["b"]) for c in comparisons(data)} == {
        (f"{a[0]} x {a[1]}", f"{b[0]} x {b[1]}") for a, b in COMPARISONS}
