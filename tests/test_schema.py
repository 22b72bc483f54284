"""The published JSON schema of a RunSpec: up to date with the declarations, valid JSON schema, and in
agreement with RunSpec itself (property tests: what the schema accepts RunSpec accepts and vice versa,
for every field's bounds and choices and every option of every solver, grid, world and speed-up). The
rules RunSpec enforces beyond JSON schema are listed in the schema's description; each is shown here to
be one RunSpec refuses."""

import json
import math

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastdiff_cli import schema as schema_command
from fastdiff_core import catalog
from fastdiff_core.registry import Option
from fastdiff_core.schema import runspec_schema
from fastdiff_core.spec import CROSS_FIELD_RULES, FIELDS, OPTION_FIELDS, RunSpec, _option_schema
from fastdiff_core.worlds import builtin_world_names

SCHEMA = runspec_schema(builtin_world_names())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_the_published_files_are_up_to_date():
    for name, text in schema_command.published().items():
        assert (schema_command.DOCS / name).read_text() == text, f"run `fastdiff schema --write` ({name})"
        jsonschema.Draft202012Validator.check_schema(json.loads((schema_command.DOCS / name).read_text()))


def test_every_field_is_in_the_schema_with_runspec_defaults():
    spec = RunSpec().to_dict()
    assert set(SCHEMA["properties"]) == set(spec)
    for name, value in spec.items():  # an option map's default {} is filled with its entry's defaults
        assert SCHEMA["properties"][name]["default"] == ({} if name in OPTION_FIELDS else value), name
    assert VALIDATOR.is_valid({}) and VALIDATOR.is_valid(spec)


def runspec_accepts(d: dict) -> bool:
    try:
        RunSpec.from_dict(d, enforce_limits=False)  # the run limits come from the environment (description)
    except ValueError:
        return False
    return True


def values(opt: Option) -> st.SearchStrategy:
    """Values around ``opt``'s bounds and choices, and of every other JSON type (JSON has no NaN)."""
    near = [st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=3),
            st.floats(allow_nan=False, allow_infinity=False), st.integers(-3, 3), st.dictionaries(st.text(max_size=2),
                                                                                                   st.integers(), max_size=1)]
    if opt.choices is not None:
        near.append(st.sampled_from(list(opt.choices)))
    for bound in (opt.min, opt.max):
        if bound is not None:
            near += [st.integers(int(bound) - 3, int(bound) + 3),
                     st.sampled_from([float(bound), math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)])]
            if abs(bound) < 2**53:
                near.append(st.floats(bound - 1, bound + 1))
    if opt.max_length is not None:
        near.append(st.text(alphabet="ab", min_size=opt.max_length - 2, max_size=opt.max_length + 2))
    return st.one_of(near)


def agree(d: dict) -> None:
    schema_ok, spec_ok = VALIDATOR.is_valid(d), runspec_accepts(d)
    assert schema_ok == spec_ok, f"schema {'accepts' if schema_ok else 'refuses'}, RunSpec " \
                                 f"{'accepts' if spec_ok else 'refuses'}: {d}"


def integral_float(opt: Option, value) -> bool:
    """10.0 for an integer field: JSON schema counts it an integer, RunSpec does not (a listed rule)."""
    return opt.type is int and isinstance(value, float) and value.is_integer()


# field -> the base spec its values are tried in (a field whose rule depends on another, with that other set)
BASES = {"scene": [{}, {"world": "driving"}], "student": [{"sampler": "student", "steps": 1}, {}],
         "gate_cap": [{"samples": 1}], "steps": [{}, {"grid": "tuned"}, {"sampler": "student", "student": "dmd"}],
         "solver": [{}, {"parallel": "picard"}], "device": [{}, {"precision": "int8"}]}
CASES = [(name, base) for name in FIELDS for base in BASES.get(name, [{}])]


@pytest.mark.parametrize("name, base", CASES, ids=[f"{n}-{i}" for n, b in CASES for i in [json.dumps(b)]])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_schema_and_runspec_agree_on_each_field(name, base, data):
    opt = FIELDS[name]
    choices = list(SCHEMA["properties"][name].get("enum", []))
    value = data.draw(st.one_of(values(opt), st.sampled_from(choices or [None])), label=name)
    assume(not integral_float(opt, value))
    agree({**base, name: value})


OPTION_CASES = [(options, entry, key) for options, field in OPTION_FIELDS.items()
                for entry in (FIELDS[field].choices or builtin_world_names())
                for key in _option_schema(options, entry)
                if not (options == "grid_options" and entry == "custom") and entry != "model"]


@pytest.mark.parametrize("options, entry, key", OPTION_CASES, ids=[".".join(c) for c in OPTION_CASES])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_schema_and_runspec_agree_on_each_option(options, entry, key, data):
    opt = _option_schema(options, entry)[key]
    value = data.draw(values(opt), label=f"{options}.{key}")
    assume(not integral_float(opt, value))
    field = OPTION_FIELDS[options]
    base = {"world": "driving", "scene": catalog.world_info("driving").scenes[0]} if entry == "driving" else {}
    if field in ("solver", "grid", "world"):
        base[field] = entry
    if entry == "tuned":
        base["steps"] = 4
    agree({**base, options: {key: value}})
    assert not VALIDATOR.is_valid({**base, options: {"no_such_option": 1}})
    assert not runspec_accepts({**base, options: {"no_such_option": 1}})


@pytest.mark.parametrize("spec, rule", [
    ({"steps": 10.0}, "integer fields take JSON integers"),
    ({"grid": "custom", "steps": 2, "grid_options": {"sigmas": [1.0, 2.0]}}, "strictly decreasing"),
    ({"grid": "custom", "steps": 3, "grid_options": {"sigmas": [2.0, 1.0]}}, "nonzero count equals steps"),
    ({"guidance_interval": [5.0, 1.0]}, "0 <= sigma_lo < sigma_hi"),
    ({"samples": 200, "gate_cap": 300}, "a multiple of samples x plans x futures"),
    ({"samples": 1, "gate_cap": 1_000_001}, "at most 1,000,000 such looks"),
])
def test_rules_beyond_json_schema_are_listed_and_enforced(spec, rule):
    """What the schema cannot say (it accepts these) RunSpec refuses, and the description lists."""
    assert VALIDATOR.is_valid(spec), spec
    assert not runspec_accepts(spec), spec
    assert any(rule in r for r in CROSS_FIELD_RULES) and rule in SCHEMA["description"]


def test_the_run_limits_are_listed_and_enforced(monkeypatch):
    spec = {"samples": 1000, "horizon": 100}
    assert VALIDATOR.is_valid(spec) and runspec_accepts(spec)
    monkeypatch.setenv("FASTDIFF_MAX_ROLLOUTS", "10")
    with pytest.raises(ValueError, match="FASTDIFF_MAX_ROLLOUTS"):
        RunSpec.from_dict(spec)
    assert "FASTDIFF_MAX_ROLLOUTS" in SCHEMA["description"]


def test_the_command_prints_and_checks(capsys, tmp_path, monkeypatch):
    from workers.cli import main

    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["runspec"]["title"] == "RunSpec"
    assert main(["schema", "--check"]) == 0
    monkeypatch.setattr(schema_command, "DOCS", tmp_path)
    assert main(["schema", "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["schema", "--write"]) == 0 and main(["schema", "--check"]) == 0
    assert (tmp_path / "runspec.schema.json").read_text() == schema_command.published()["runspec.schema.json"]
