import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdiff_core import catalog
from fastdiff_core.spec import SCHEMA_VERSION, RunResult, RunSpec


def test_round_trip_every_solver():
    for name in catalog.SOLVERS:
        s = RunSpec(solver=name, steps=7, seed=3, guidance_interval=(0.5, 5.0), guidance_scale=2.0)
        again = RunSpec.from_json(s.to_json())
        assert again == s
        assert json.loads(s.to_json())["schema_version"] == SCHEMA_VERSION


def test_defaults_are_filled_and_frozen():
    s = RunSpec(solver="ddim")
    assert s.solver_options["eta"] == 0.0
    with pytest.raises(TypeError):
        s.solver_options["eta"] = 1.0  # read-only mapping
    with pytest.raises(AttributeError):
        s.steps = 3


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"solver": "nope"}, "solver"),
        ({"grid": "nope"}, "grid"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"guidance_interval": (3.0, 1.0)}, "guidance_interval"),
        ({"solver": "ddim", "solver_options": {"eta": 2.0}}, "solver_options.eta"),
        ({"solver_options": {"bogus": 1}}, "solver_options"),
        ({"sampler": "student", "student": "consistency", "solver_options": None}, "solver_options"),
        ({"grid": "custom", "grid_options": {"sigmas": [3.0, 5.0]}}, "grid_options.sigmas"),
        ({"grid": "custom", "grid_options": {"sigmas": [3.0, float("nan")]}}, "grid_options.sigmas"),
        ({"world": "atlantis"}, "world"),
        ({"dtype": "float16x"}, "dtype"),
        ({"samples": 0}, "samples"),
        ({"regime": "sometimes"}, "regime"),
    ],
)
def test_bad_input_names_the_field(changes, field):
    with pytest.raises(ValueError) as e:
        RunSpec(**changes)
    assert field in str(e.value)


def test_unknown_json_field_is_refused_not_dropped():
    d = RunSpec().to_dict()
    d["stepz"] = 4
    with pytest.raises(ValueError, match="stepz"):
        RunSpec.from_dict(d)


def test_future_schema_is_refused():
    d = RunSpec().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema_version"):
        RunSpec.from_dict(d)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.integers(-5, 1200),
    scale=st.floats(allow_nan=True, allow_infinity=True),
    solver=st.sampled_from(sorted(catalog.SOLVERS) + ["", "DPMPP_2M"]),
)
def test_validation_property(steps, scale, solver):
    ok = 1 <= steps <= 1000 and scale == scale and abs(scale) != float("inf") and scale >= 0 and solver in catalog.SOLVERS
    try:
        s = RunSpec(steps=steps, guidance_scale=scale, solver=solver)
    except ValueError:
        assert not ok
    else:
        assert ok and RunSpec.from_json(s.to_json()) == s


def test_result_round_trip():
    r = RunResult(spec=RunSpec(), device="cpu", wall_s=1.5, nfe_counted=10, nfe_formula=10,
                  metrics={"rmse": 0.1}, histograms=({"group": "all", "label": "rare", "count": 3},),
                  samples=((0.1, 0.2),))
    assert RunResult.from_json(r.to_json()).to_dict() == r.to_dict()


def test_replace_switching_entry_drops_its_options():
    s = RunSpec(solver="unipc", solver_options={"variant": "bh1"}, grid="karras", grid_options={"rho": 5.0})
    t = s.replace(solver="euler", grid="uniform_logsnr")
    # unipc's own options go; the last-step convention, common to every solver, carries over
    assert set(t.solver_options) <= {"final"} and "variant" not in t.solver_options and "rho" not in t.grid_options
    assert s.replace(steps=4).grid_options["rho"] == 5.0  # untouched entries keep their options
    assert s.replace(solver="unipc").solver_options["variant"] == "bh1"
    assert s.replace(grid="karras", grid_options={"rho": 3.0}).grid_options["rho"] == 3.0


def test_results_report_nfe_per_run_and_older_mixture_results_are_upgraded():
    """One NFE unit: per run for every world. A version-1 mixture result stored it per sample; reading it
    gives per run; a version-1 driving result (already per run) is read unchanged."""
    from fastdiff_core.spec import RESULT_SCHEMA_VERSION, upgrade_result

    mixture = RunResult(spec=RunSpec(samples=40, steps=5), device="cpu", wall_s=1.0, nfe_counted=200.0,
                        nfe_formula=200.0)
    assert json.loads(mixture.to_json())["schema_version"] == RESULT_SCHEMA_VERSION == 2
    old = dict(mixture.to_dict(), schema_version=1, nfe_counted=5.0, nfe_formula=5.0)
    back = RunResult.from_dict(old)
    assert back.nfe_counted == back.nfe_formula == 200.0 and back.schema_version == 2
    assert RunResult.from_dict(back.to_dict()).nfe_counted == 200.0  # upgraded once, not again
    driving = RunResult(spec=RunSpec(world="driving", scene="child_at_curb", samples=4, steps=2, horizon=2),
                        device="cpu", wall_s=1.0, nfe_counted=16.0, nfe_formula=16.0)
    assert RunResult.from_dict(dict(driving.to_dict(), schema_version=1)).nfe_counted == 16.0
    with pytest.raises(ValueError, match="result schema_version=3"):
        upgrade_result(dict(mixture.to_dict(), schema_version=3))
