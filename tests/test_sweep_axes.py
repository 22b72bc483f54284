"""The sweep's range syntax (A1111 X/Y/Z style)."""

import pytest

from app.sweep_axes import MAX_AXIS_VALUES, parse_axis


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
