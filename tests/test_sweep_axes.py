"""The sweep's range syntax (A1111 X/Y/Z style)."""

import pytest

from app.sweep_axes import MAX_AXIS_VALUES, parse_axis, spec_value, sweepable


@pytest.mark.parametrize("field, text, values", [
    ("steps", "1-10", list(range(1, 11))),
    ("steps", "1-10 (+2)", [1, 3, 5, 7, 9]),
    ("steps", "10-1 (-3)", [10, 7, 4, 1]),
    ("steps", "4, 8, 16", [4, 8, 16]),
    ("steps", "2-4, 8, 3", [2, 3, 4, 8]),
    ("guidance_scale", "1-2 (+0.5)", [1.0, 1.5, 2.0]),
    ("guidance_scale", "1-2 [5]", [1.0, 1.25, 1.5, 1.75, 2.0]),
    ("solver", "euler, heun", ["euler", "heun"]),
])
def test_parse_axis(field, text, values):
    assert parse_axis(field, text) == values


@pytest.mark.parametrize("field, text, match", [
    ("steps", "1-10 (+0.5)", "must be an integer"),
    ("steps", "1-10 (-1)", "never reaches"),
    ("solver", "euler, eular", "'eular' is not one of"),
    ("steps", "", "no values"),
    ("steps", "x", "'x' is not a number"),
    ("steps", f"1-{MAX_AXIS_VALUES * 2}", "at most"),
    ("schema_version", "1", "not sweepable"),
])
def test_parse_axis_errors_name_the_field(field, text, match):
    with pytest.raises(ValueError, match=match):
        parse_axis(field, text)


@pytest.mark.parametrize("solver, field, text, values", [
    ("ddim", "solver_options.eta", "0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("ddim", "solver_options.noise", "iid, brownian", ["iid", "brownian"]),
    ("unipc", "solver_options.order", "1-3", [1, 2, 3]),
    ("unipc", "solver_options.corrector", "true, False", [True, False]),
    ("adaptive", "solver_options.rtol", "0.1, 0.01, 0.001", [0.1, 0.01, 0.001]),
])
def test_option_axes_take_the_solver_options_own_values(solver, field, text, values):
    assert field in sweepable(solver) and field not in sweepable("euler")
    assert parse_axis(field, text, solver) == values


@pytest.mark.parametrize("solver, field, text, match", [
    ("ddim", "solver_options.eta", "0-2 [3]", r"solver_options.eta=2.0 is out of range"),
    ("unipc", "solver_options.order", "1-4", r"solver_options.order=4 is not allowed"),
    ("ddim", "solver_options.noise", "iid, pink", r"solver_options.noise='pink' is not allowed"),
    ("unipc", "solver_options.corrector", "yes", r"'yes' is not one of \['true', 'false'\]"),
    ("euler", "solver_options.eta", "0.5", r"not an option of solver='euler'"),
    (None, "solver_options.eta", "0.5", r"not an option of solver=None"),
])
def test_option_axis_errors_name_the_field_and_what_is_allowed(solver, field, text, match):
    with pytest.raises(ValueError, match=match):
        parse_axis(field, text, solver)


def test_an_option_axis_becomes_runs_with_that_option():
    from fastdiff_core.spec import RunSpec
    from workers.client import grid

    base = RunSpec(solver="ddim", solver_options={"noise": "brownian"}, steps=8)
    runs = grid(base, {"steps": [4, 8], "solver_options.eta": [0.0, 1.0]})
    assert [(r.steps, r.solver_options["eta"], r.solver_options["noise"]) for r in runs] == [
        (4, 0.0, "brownian"), (4, 1.0, "brownian"), (8, 0.0, "brownian"), (8, 1.0, "brownian")]
    assert spec_value(runs[1].to_dict(), "solver_options.eta") == 1.0 and spec_value(runs[1].to_dict(), "steps") == 4
    with pytest.raises(ValueError, match=r"sweep point .*'solver': 'euler'.*solver_options"):
        grid(base, {"solver": ["ddim", "euler"], "solver_options.eta": [0.5]})  # euler has no eta
    with pytest.raises(ValueError, match="not a RunSpec field"):
        grid(base, {"solver_options.": [1]})
