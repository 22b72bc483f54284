"""The server-side budget: RunSpec refuses a run whose NFE bill, rollout frames or estimated peak memory
exceeds the configured limits, names the fields, the product and the limit, and accepts a run at the limit."""

from __future__ import annotations

import pytest

from fastdiff_core import budget
from fastdiff_core.limits import ROW_MEMORY, RunLimits, peak_memory_mb
from fastdiff_core.spec import RunResult, RunSpec, check_run_limits

DRIVING = dict(world="driving", scene="walk_signal")


def test_defaults_and_environment():
    assert RunLimits.from_env({}) == RunLimits()
    lim = RunLimits.from_env({"FASTDIFF_MAX_RUN_NFE": "2e6", "FASTDIFF_MAX_ROLLOUTS": "1e5",
                              "FASTDIFF_MAX_PEAK_MB": "512.5", "FASTDIFF_CHUNK_ROLLOUTS": "256",
                              "FASTDIFF_MAX_SWEEP_RUNS": "10"})
    assert lim == RunLimits(max_run_nfe=2e6, max_rollouts=100_000, max_peak_mb=512.5, chunk_rollouts=256,
                            max_sweep_runs=10)


@pytest.mark.parametrize("name,raw", [("FASTDIFF_MAX_RUN_NFE", "lots"), ("FASTDIFF_MAX_ROLLOUTS", "1.5"),
                                      ("FASTDIFF_MAX_PEAK_MB", "-1"), ("FASTDIFF_CHUNK_ROLLOUTS", "0"),
                                      ("FASTDIFF_MAX_SWEEP_RUNS", "nan")])
def test_bad_setting_names_the_variable(name, raw):
    with pytest.raises(ValueError, match=rf"^{name}='{raw}' must be a positive"):
        RunLimits.from_env({name: raw})


@pytest.mark.parametrize("fanout", [
    dict(horizon=1000, plans=1000, futures=1000, samples=1),     # H x P x R = 1e9 (finding)
    dict(horizon=6, plans=10_000, futures=10_000, samples=1),    # P = R = 1e4 at H = 6: 19.2 GB (finding)
    dict(horizon=1, plans=10_000, futures=10_000, samples=10_000),  # samples x P x R = 1e12 (finding)
])
def test_the_reported_runaway_specs_are_refused_at_every_entry(fanout, monkeypatch):
    monkeypatch.delenv("FASTDIFF_MAX_RUN_NFE", raising=False)
    d = {**DRIVING, **fanout, "steps": 1, "solver": "euler"}
    with pytest.raises(ValueError, match="exceeds FASTDIFF_MAX_"):
        RunSpec(**d)
    with pytest.raises(ValueError, match="exceeds FASTDIFF_MAX_"):
        RunSpec.from_dict(d)
    small = RunSpec(**DRIVING)
    with pytest.raises(ValueError, match="exceeds FASTDIFF_MAX_"):
        small.replace(**fanout)


def _spec(**kw) -> RunSpec:
    return RunSpec(**{**DRIVING, "solver": "heun", "steps": 10, "guidance_scale": 2.0, **kw},
                   enforce_limits=False)


def test_nfe_refusal_names_fields_product_and_limit():
    spec = _spec(horizon=3, plans=2, futures=5, samples=7)
    nfe = budget.bill_for(spec).per_run
    assert nfe == 19 * 2 * 3 * 10 * 7
    check_run_limits(spec, RunLimits(max_run_nfe=nfe))  # at the limit: accepted
    with pytest.raises(ValueError) as e:
        check_run_limits(spec, RunLimits(max_run_nfe=nfe - 1))
    msg = str(e.value)
    assert msg.startswith("NFE bill S x C x horizon x plans x futures x samples = 19 x 2 x 3 x 2 x 5 x 7 = 7,980")
    assert "steps=10" in msg and "solver='heun'" in msg and "FASTDIFF_MAX_RUN_NFE=7,979" in msg
    assert "\n" not in msg


def test_nfe_bound_uses_the_guidance_interval_upper_bound():
    """Without the grid's sigmas (torch-free) a guidance interval is billed as guided everywhere."""
    spec = _spec(guidance_interval=(0.5, 2.0))
    assert budget.bill_for(spec, guided_fraction=1.0).per_run == 19 * 2 * 1000
    check_run_limits(spec, RunLimits(max_run_nfe=19 * 2 * 1000))
    with pytest.raises(ValueError, match="= 38,000 .*exceeds FASTDIFF_MAX_RUN_NFE"):
        check_run_limits(spec, RunLimits(max_run_nfe=19 * 2 * 1000 - 1))


def test_picard_is_limited_at_its_worst_case_of_window_evaluations_per_step():
    """Picard may evaluate up to `window` steps per sequential step (its re-evaluations are billed): the
    NFE limit and the peak-memory estimate take that worst case before the run."""
    spec = RunSpec(world="driving", scene="child_at_curb", solver="euler", steps=8, horizon=6, plans=2, futures=10,
                   samples=3, parallel="picard", parallel_options={"window": 4})
    sequential = budget.bill_for(spec).per_run
    assert sequential == 8 * 6 * 20 * 3
    check_run_limits(spec, RunLimits(max_run_nfe=4 * sequential))
    with pytest.raises(ValueError, match=r"x window \(Picard's worst case\) = 8 x 1 x 6 x 2 x 10 x 3 x 4 = 11,520"):
        check_run_limits(spec, RunLimits(max_run_nfe=4 * sequential - 1))
    check_run_limits(spec.replace(parallel="off", parallel_options={}), RunLimits(max_run_nfe=sequential))


def test_rollout_refusal_names_fields_product_and_limit():
    spec = _spec(horizon=6, plans=4, futures=25, samples=10)
    check_run_limits(spec, RunLimits(max_rollouts=6000))
    with pytest.raises(ValueError) as e:
        check_run_limits(spec, RunLimits(max_rollouts=5999))
    assert str(e.value).startswith("rollout frames samples x plans x futures x horizon = 10 x 4 x 25 x 6 = 6,000 "
                                   "exceeds FASTDIFF_MAX_ROLLOUTS=5,999")


def test_peak_memory_refusal_and_acceptance_at_the_limit():
    spec = _spec(horizon=6, plans=100, futures=100, samples=10, dtype="float64")
    peak = peak_memory_mb("driving", rollouts=100_000, horizon=6, chunk=4096, guidance_passes=2.0, itemsize=8)
    check_run_limits(spec, RunLimits(max_peak_mb=peak))
    with pytest.raises(ValueError) as e:
        check_run_limits(spec, RunLimits(max_peak_mb=peak - 0.01))
    msg = str(e.value)
    assert msg.startswith(f"estimated peak memory {peak:,.0f} MiB for samples x plans x futures = 100,000 rollouts "
                          "of horizon=6 frames (dtype='float64', 4096 rollouts per forward) exceeds FASTDIFF_MAX_PEAK_MB")


def test_peak_memory_model_is_bounded_by_the_chunk():
    """The working term stops growing at the chunk; only the kept frames grow with the fan-out."""
    est = lambda n, chunk: peak_memory_mb("driving", rollouts=n, horizon=1, chunk=chunk,  # noqa: E731
                                          guidance_passes=1.0, itemsize=4)
    big, bigger = est(10**6, 1024), est(2 * 10**6, 1024)
    kept_per_rollout = (bigger - big) / 10**6
    assert est(10**6, 4096) - big == pytest.approx((4096 - 1024) * ROW_MEMORY["driving"].working_per_row / 2**20)
    assert est(3 * 10**6, 1024) - bigger == pytest.approx(kept_per_rollout * 10**6)


def test_chunk_setting_and_world_batch_bound_the_working_set():
    spec = _spec(plans=100, futures=100, samples=1, world_options={"batch": 512})
    small = peak_memory_mb("driving", rollouts=10_000, horizon=1, chunk=512, guidance_passes=2.0, itemsize=4)
    check_run_limits(spec, RunLimits(max_peak_mb=small, chunk_rollouts=4096))
    with pytest.raises(ValueError, match="512 rollouts per forward"):
        check_run_limits(spec, RunLimits(max_peak_mb=small - 0.01, chunk_rollouts=4096))


def test_environment_limits_apply_to_json_specs(monkeypatch):
    monkeypatch.setenv("FASTDIFF_MAX_ROLLOUTS", "99")
    RunSpec.from_json('{"samples": 99}')
    with pytest.raises(ValueError, match="= 100 exceeds FASTDIFF_MAX_ROLLOUTS=99"):
        RunSpec.from_json('{"samples": 100}')


def test_a_stored_result_reads_back_under_tighter_limits(monkeypatch):
    """A result records a run that happened: reading it is not admitting a new run."""
    spec = RunSpec(samples=500)
    result = RunResult(spec=spec, device="cpu", wall_s=1.0, nfe_counted=5000.0, nfe_formula=5000.0)
    monkeypatch.setenv("FASTDIFF_MAX_ROLLOUTS", "10")
    assert RunResult.from_json(result.to_json()).spec == spec
    with pytest.raises(ValueError, match="FASTDIFF_MAX_ROLLOUTS=10"):
        RunSpec.from_dict(spec.to_dict())
    with pytest.raises(ValueError, match="unknown field"):
        RunSpec.from_dict({**spec.to_dict(), "enforce_limits": False})


def test_client_caps_a_sweep_before_building_it(monkeypatch):
    from fastdiff_core.sweep import grid

    monkeypatch.setenv("FASTDIFF_MAX_SWEEP_RUNS", "6")
    assert len(grid(RunSpec(), {"steps": [4, 8, 16], "seed": [0, 1]})) == 6  # at the cap
    with pytest.raises(ValueError) as e:
        grid(RunSpec(), {"steps": list(range(1, 1001)), "seed": list(range(10**6)), "samples": [1]})
    assert str(e.value) == ("sweep steps (1000 values) x seed (1000000 values) x samples (1 values) = "
                            "1,000,000,000 runs exceeds FASTDIFF_MAX_SWEEP_RUNS=6; split the sweep or raise the limit")


def test_client_submit_refuses_before_recording_anything(tmp_path, monkeypatch):
    from workers.client import ServiceClient

    monkeypatch.setenv("FASTDIFF_HOME", str(tmp_path))
    client = ServiceClient(broker_url="redis://127.0.0.1:9/0", store_root=str(tmp_path / "store"))
    try:
        monkeypatch.setenv("FASTDIFF_MAX_SWEEP_RUNS", "2")
        with pytest.raises(ValueError, match="the list of specs = 3 runs exceeds FASTDIFF_MAX_SWEEP_RUNS=2"):
            client.submit([RunSpec(seed=i) for i in range(3)], "too many")
        monkeypatch.setenv("FASTDIFF_MAX_SWEEP_RUNS", "500")
        # a spec made without the check (a stored record) is checked again when submitted
        huge = RunSpec(samples=200_000, enforce_limits=False)
        monkeypatch.setenv("FASTDIFF_MAX_ROLLOUTS", "100000")
        with pytest.raises(ValueError, match="^spec 1: rollout frames .* = 200,000 exceeds FASTDIFF_MAX_ROLLOUTS"):
            client.submit([RunSpec(), huge], "one too big")
        assert client.store.experiments().height == 0
    finally:
        client.close()


def test_sweep_page_applies_the_client_cap(home, monkeypatch):
    """The Sweep page expands axes with the same grid() the client uses, so the configured cap applies there."""
    from tests.apptest_support import page, texts

    monkeypatch.setenv("FASTDIFF_MAX_SWEEP_RUNS", "3")
    at = page("sweep", ax0="seed", av0="0-2", ax1="", av1="", ax2="", av2="").run()
    assert "3 value(s): 0, 1, 2" in texts(at) and not at.error  # at the cap: expanded, no error
    at.text_input(key="sw.axis0.values").set_value("0-3").run()
    assert "sweep seed (4 values) = 4 runs exceeds FASTDIFF_MAX_SWEEP_RUNS=3" in texts(at)


def test_stored_runs_still_render_after_the_limits_tighten(home, monkeypatch):
    """Limits admit new runs; a run stored under laxer ones still loads (Explore puts it in the form, which
    says it could not be queued again) and its bundle exports and imports."""
    from fastdiff_core.run import execute
    from store import Store
    from tests.apptest_support import page, texts

    s = Store()
    spec = RunSpec(solver="euler", steps=4, samples=50, name="stored under laxer limits")
    exp_id, (rid,) = s.new_experiment("lax", [spec])
    s.record_result(rid, "done", execute(spec), worker="test")
    s.compact()
    monkeypatch.setenv("FASTDIFF_MAX_ROLLOUTS", "10")
    with pytest.raises(ValueError, match="FASTDIFF_MAX_ROLLOUTS=10"):
        RunSpec.from_dict(spec.to_dict())
    at = page("explore", run=rid).run()
    assert not at.exception
    assert "= 50 exceeds FASTDIFF_MAX_ROLLOUTS=10" in texts(at)
    bundle = home / "lax.zip"
    s.export_bundle(exp_id, bundle)
    s.delete_experiment(exp_id)
    new_exp = s.import_bundle(bundle)
    assert s.runs(exp_id=new_exp)["status"].to_list() == ["done"]
