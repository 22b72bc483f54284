"""Hypothesis fuzz of RunSpec JSON and ``fastdiff`` argument vectors (issue 13): whatever arrives, a spec is
either accepted (and round-trips) or refused with a one-line ValueError naming a field; a command line either
runs (``run --dry-run`` only: the fuzz never starts real work) or exits 2 with one line, never a traceback.
Example counts come from tests/fuzzing.py (FASTDIFF_FUZZ: ci = 2,000 per target)."""

from __future__ import annotations

import contextlib
import io
import json
import string
from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st

from fastdiff_core.spec import RunSpec
from tests.fuzzing import FUZZ
from workers.cli import COMMANDS, OneLineParser, main

FIELDS = [f.name for f in fields(RunSpec)]
# what a refusal may name instead of a field: the whole spec, a limit variable, an option path
NAMES = FIELDS + ["spec", "FASTDIFF_", "NFE bill", "rollout frames", "peak memory", "parallel=", "precision="]

_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_small_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=4)

_VALID = {
    "world": ["mixture", "driving"], "scene": [None, "walk_signal", "child_at_curb"], "sampler": ["solver", "student"],
    "solver": ["euler", "heun", "dpmpp_2m", "ddim", "unipc"], "grid": ["karras", "custom", "uniform_logsnr"],
    "steps": [1, 4, 10, 1000, 1001], "student": [None, "consistency"], "guidance_scale": [0.0, 1.0, 3.0],
    "guidance_interval": [None, [0.1, 2.0]], "horizon": [1, 6, 1000], "plans": [1, 10, 10_000],
    "futures": [1, 40, 10_000], "samples": [1, 1000, 1_000_000], "dtype": ["float32", "float64"],
    "device": ["auto", "cpu"], "regime": [None, "planning"], "feature_cache": ["off", "fixed"],
    "parallel": ["off", "picard"], "precision": ["float32", "int8", "bfloat16"], "importance": ["off", "tail"],
    "world_options": [{}, {"condition": "rare"}, {"action": "keep"}, {"batch": 1}],
    "grid_options": [{}, {"sigmas": [10.0, 1.0, 0.1]}, {"rho": 5}], "solver_options": [{}, {"eta": 0.5}],
}
_near_valid = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) | _small_json for k, v in _VALID.items()})


def _check_refusal(e: Exception) -> None:
    assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"
    msg = str(e)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    assert any(name in msg for name in NAMES), msg


def _spec_property(d) -> None:
    try:
        spec = RunSpec.from_json(json.dumps(d) if not isinstance(d, str) else d)
    except Exception as e:  # noqa: BLE001 - the property is about which exceptions escape
        _check_refusal(e)
        return
    assert RunSpec.from_json(spec.to_json()) == spec


@FUZZ
@given(st.one_of(_near_valid, st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), _json, max_size=6),
                 _json, st.text(max_size=40)))
def test_runspec_json_is_accepted_or_refused_with_one_line_naming_a_field(d):
    _spec_property(d)


@FUZZ
@given(_near_valid)
def test_runspec_from_dict_near_valid(d):
    try:
        spec = RunSpec.from_dict(d)
    except Exception as e:  # noqa: BLE001
        _check_refusal(e)
        return
    assert RunSpec.from_dict(spec.to_dict()) == spec


# ---------------------------------------------------------------------------------------------
# argument vectors
# ---------------------------------------------------------------------------------------------


def _flags(words: tuple[str, ...]) -> list[str]:
    import importlib

    parser = OneLineParser(prog="x")
    importlib.import_module(COMMANDS[words][0]).add_arguments(parser)
    return sorted(o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help"))


_JUNK = ["", "0", "-1", "1", "3", "10", "1e9", "nan", "inf", "-0.5", "70000", "x", "euler", "karras", "rare",
         "cuda", "cpu", "/", "/nonexistent/dir/x.json", "../escape", "4,8", "1,,2", "5,1", '{"solver": []}',
         '{"horizon": 5}', "sigmas=[10,1,0.1]", "eta=0.5", "=", "[" * 50]
_value = st.sampled_from(_JUNK) | st.text(alphabet=string.printable, max_size=12)
_RUN_FLAGS = _flags(("run",))
_BAD = "--not-a-flag-of-any-command"


def _invoke(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_RUN_FLAGS), _value), max_size=5))
def test_run_argument_vectors_dry_run_or_one_line_exit_2(pairs):
    argv = ["run", *[t for pair in pairs for t in (pair if pair[0] not in ("--json", "--dry-run") else pair[:1])],
            "--dry-run"]
    rc, out, err = _invoke(argv)
    if rc == 0:
        spec = RunSpec.from_json(out)  # what was validated is a spec that round-trips
        assert err == "" and spec == RunSpec.from_json(spec.to_json())
    else:
        assert rc == 2 and out == "", (argv, rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fastdiff run: ") and "Traceback" not in err, (argv, err)


_OTHER = [w for w in COMMANDS if w != ("run",)]
_OTHER_FLAGS = {w: _flags(w) for w in _OTHER}


@st.composite
def _other_argv(draw) -> list[str]:
    words = draw(st.sampled_from(_OTHER))
    flags = _OTHER_FLAGS[words]
    pairs = draw(st.lists(st.tuples(st.sampled_from(flags), _value), max_size=4)) if flags else []
    # the last token is an argument no command has, so a vector can never start real work
    return [*words, *[t for pair in pairs for t in pair], _BAD]


@FUZZ
@given(_other_argv())
def test_every_other_command_refuses_with_one_line_exit_2(argv):
    rc, out, err = _invoke(argv)
    assert rc == 2 and out == "", (argv, rc, out, err)
    lines = err.strip().splitlines()
    prog = "fastdiff " + " ".join(argv[:2] if tuple(argv[:2]) in COMMANDS else argv[:1])
    assert len(lines) == 1 and lines[0].startswith(prog + ": ") and "Traceback" not in err, (argv, err)
