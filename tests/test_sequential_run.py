"""A driving run with a sequential coverage gate (RunSpec.gate_cap): it samples looks until the gate
decides or hits its cap, bills exactly the rollouts it drew, records why it stopped, reproduces under
its seed, and its worst case (the cap) is what the limits, the projected bill and the run guard see."""

import pytest

from fastdiff_core import budget
from fastdiff_core.limits import RunLimits
from fastdiff_core.run import execute
from fastdiff_core.spec import RunResult, RunSpec, check_run_limits

DRIVING = dict(world="driving", scene="child_at_curb", horizon=6, world_options={"k": 3})


def test_a_tail_deleting_sampler_stops_early_bills_what_it_drew_and_reproduces():
    # Euler at 8 NFE/frame deletes child_at_curb's dart-out tail (truth 0.139 at H = 6; docs/coverage.md)
    # (and leaks implausible rollouts); seed 3 is one whose FAIL names the tail (4 looks of 25)
    spec = RunSpec(**DRIVING, solver="euler", steps=8, samples=25, gate_cap=1000, regime="closed_loop", seed=3)
    res = execute(spec)
    seq = res.info["sequential"]
    drawn = seq["rollouts"]["child_at_curb"]
    assert seq["outcome"] == "FAIL" and seq["stopped"] == "decided" and seq["cap"] == 1000
    assert drawn == 25 * seq["looks"] < 1000 and res.metrics["rollouts_drawn"] == drawn
    assert "darts" in {f["label"] for f in res.info["gate_failures"] if f["check"] == "tail"}
    # the bill counts every rollout drawn, no more: S x C x H x rollouts
    assert res.nfe_counted == res.nfe_formula == 8 * 1 * 6 * drawn
    assert sum(r["count"] for r in res.histograms) == drawn and res.metrics["cycles"] == drawn
    projected, measured = budget.stored_verdicts(res.verdict)
    assert measured.check("coverage").status == "fail" and "sequential: decided" in measured.check("coverage").text
    assert measured.check("cost").value == pytest.approx(projected.check("cost").value)  # NFE per cycle agrees
    assert budget.measured_from(res).nfe_per_cycle == 8 * 6
    # the same seed reproduces the run bit for bit; the first look is the fixed-n run of one look
    again = execute(spec)
    for field in ("histograms", "samples", "nfe_counted"):
        assert getattr(again, field) == getattr(res, field)
    assert again.info["sequential"] == seq and again.info["counts"] == res.info["counts"]
    fixed = execute(spec.replace(gate_cap=None))
    assert fixed.samples == res.samples and "sequential" not in fixed.info
    assert RunResult.from_json(res.to_json()).info["sequential"] == seq


def test_without_a_cap_the_run_is_the_fixed_one():
    spec = RunSpec(**DRIVING, solver="euler", steps=2, samples=30)
    assert spec.gate_cap is None and spec.gate_alpha == 0.05 and spec.max_cycles == 30
    assert RunSpec.from_dict({k: v for k, v in spec.to_dict().items() if not k.startswith("gate_")}) == spec
    res = execute(spec)
    assert res.nfe_counted == res.nfe_formula == budget.bill_for(spec).per_run == 2 * 6 * 30
    assert "sequential" not in res.info and "sequential" not in res.info["gate"]["text"]


def test_the_cap_worst_case_is_billed_limited_and_guarded_before_the_run():
    spec = RunSpec(**DRIVING, solver="euler", steps=8, samples=200, gate_cap=4000)
    bill = budget.bill_for(spec)
    assert bill.cycles == spec.max_cycles == 4000 and bill.per_run == 8 * 6 * 4000
    assert any("at most 4,000 cycles" in note for note in bill.notes)
    work = budget.work_of(spec, bill)
    assert work.rollouts == 4000 and work.nfe == bill.per_run
    assert budget.work_of(spec, bill, cycles=400).rollouts == 400
    # the limits see the cap, not one look
    check_run_limits(spec.replace(gate_cap=None), RunLimits(max_run_nfe=10_000))
    with pytest.raises(ValueError, match=r"gate_cap / \(plans x futures\) = 8 x 1 x 6 x 1 x 1 x 4000 = 192,000"):
        check_run_limits(spec, RunLimits(max_run_nfe=100_000))
    with pytest.raises(ValueError, match="rollout frames gate_cap"):
        check_run_limits(spec, RunLimits(max_rollouts=20_000))
    # the guard refuses on the cap's worst case
    slow = budget.RuntimeModel((0.0, 0.05, 0.0, 0.0), 0.1, 10, "driving")  # 20 NFE/s: 8 min a look, 2.7 h the cap
    fixed = spec.replace(gate_cap=None)
    assert budget.run_guard(slow.estimate(budget.work_of(fixed, budget.bill_for(fixed)))) is None
    assert "refused" in budget.run_guard(slow.estimate(work))
    # a sequential run's NFE per cycle needs the cycles it drew
    with pytest.raises(ValueError, match="gate_cap=4000"):
        budget.counted_per_cycle(spec, 4800.0, 4800.0)
    assert budget.counted_per_cycle(spec, 4800.0, 4800.0, 100.0) == 48.0


@pytest.mark.parametrize("changes,message", [
    (dict(gate_cap=300), r"gate_cap=300 must be null or a multiple of samples x plans x futures = 200 x 1 x 1 = 200"),
    (dict(gate_cap="4000"), r"gate_cap='4000' must be null or a multiple"),
    (dict(gate_cap=True), r"gate_cap=True must be null or a multiple"),
    (dict(gate_cap=100), r"gate_cap=100 must be null or a multiple"),
    (dict(gate_alpha=0.5), r"gate_alpha=0.5 must be a number in \(0, 0.5\)"),
    (dict(gate_alpha=0), r"gate_alpha=0 must be a number in \(0, 0.5\)"),
    (dict(gate_alpha="0.05"), r"gate_alpha='0.05' must be a number"),
])
def test_gate_fields_are_validated_naming_field_value_and_allowed(changes, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**{**DRIVING, "samples": 200, **changes})


@pytest.mark.parametrize("spec,message", [
    (dict(world="mixture", samples=100, gate_cap=1000),
     r"gate_cap=1000 is not supported by world='mixture'.*no coverage gate.*allowed: null"),
    (dict(**DRIVING, samples=10, importance="tail", gate_cap=100),
     r"importance='tail' with gate_cap=100.*allowed: importance 'off', or gate_cap null"),
])
def test_worlds_and_runners_without_a_sequential_gate_refuse_a_cap(spec, message):
    # (planning runs, speed-ups and the user-model world sample sequentially: tests/test_sequential_planning.py)
    with pytest.raises(ValueError, match=message):
        RunSpec(**spec).runnable()


def test_gate_alpha_reaches_the_verdict():
    # the tail's band is [0.09, 0.15]: at 0.072 of 2,000 its upper bound is ~0.083 at alpha 0.2 / 3 (FAIL)
    # and ~0.093 at alpha 0.001 / 3 (UNDECIDED)
    rows = [{"group": "s", "label": "darts", "n": 2000, "rate": 0.072, "truth": 0.12},
            {"group": "s", "label": "waits", "n": 2000, "rate": 0.88, "truth": 0.88}]
    strict = budget.judge_spec(RunSpec(samples=10, gate_alpha=0.001), histograms=rows).check("coverage")
    loose = budget.judge_spec(RunSpec(samples=10, gate_alpha=0.2), histograms=rows).check("coverage")
    assert "alpha 0.001" in strict.text and "alpha 0.2" in loose.text
    assert (strict.status, loose.status) == ("undecided", "fail")


def test_neighbouring_seeds_share_no_look():
    from fastdiff_core.worlds.driving.runner import _look_seed

    # the generator seeds of 40 looks (of one batch: up to world_options.batch rollouts), per spec seed
    taken = [{_look_seed(seed, k) for k in range(40)} for seed in range(3)]
    assert all(len(t) == 40 for t in taken) and not (taken[0] & taken[1] or taken[1] & taken[2] or taken[0] & taken[2])
    assert _look_seed(7, 0) == 7 and 0 <= _look_seed(2**63 - 1, 5) < 2**63
