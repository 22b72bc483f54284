"""The ``fastdiff`` command: every bad argument or spec exits 2 with one line naming the flag or field, the
value and what is allowed, before any work starts (no traceback); benches write tracked files only with --write."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from workers.cli import main

pytestmark = pytest.mark.timeout(120)


def refused(capsys, argv: list[str]) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert "Traceback" not in err and out == ""
    return lines[0]


@pytest.mark.parametrize("argv,expected", [
    (["run", "--guidance", "3", "--samples", "10"], "guidance_scale=3.0 needs a condition"),
    (["run", "--spec", "/"], "--spec='/' is a directory"),
    (["run", "--spec", "/nonexistent/spec.json"], "is neither an existing file nor JSON text"),
    (["run", "--spec", '{"solver": []}'], "solver=[] has type list; expected a string"),
    (["run", "--spec", '{"grid": 7}'], "grid=7 has type int; expected a string"),
    (["run", "--spec", '{"student": {"a": 1}}'], "student={'a': 1} has type dict"),
    (["run", "--spec", '{"steps": "10"}'], "steps='10' must be an integer in [1, 1000]"),
    (["run", "--spec", '{"horizon": 5}'], "horizon=5"),
    (["run", "--horizon", "5"], "horizon=5 is not supported by world='mixture'"),
    (["run", "--plans", "0"], "argument --plans: 0 is not allowed; expected an integer in [1,"),
    (["run", "--world", "driving", "--scene", "nowhere"], "scene='nowhere'"),
    (["run", "--regime", "fast"], "argument --regime: invalid choice: 'fast'"),
    (["run", "--samples", "200", "--gate-cap", "300"],
     "gate_cap=300 must be null or a multiple of samples x plans x futures = 200 x 1 x 1 = 200"),
    (["run", "--gate-alpha", "x"], "argument --gate-alpha: 'x' is not allowed; expected a finite number in (0, 0.5)"),
    (["run", "--gate-alpha", "0.5"], "argument --gate-alpha: '0.5' is not allowed; expected a finite number in (0, 0.5)"),
    (["run", "--spec", '{"gate_alpha": 0.5}'], "gate_alpha=0.5 must be a number in (0, 0.5)"),
    (["run", "--samples", "100", "--gate-cap", "1000"], "gate_cap=1000 is not supported by world='mixture'"),
    (["run", "--grid", "custom", "--grid-option", "sigmas=[10,1,0.1]", "--steps", "5"],
     "steps=5 but grid_options.sigmas has 3 nonzero sigmas"),
    (["run", "--spec", "[" * 100_000 + "]" * 100_000], "nests too deeply"),
    (["run", "--spec", '{"a": ' * 100_000 + "1" + "}" * 100_000], "nests too deeply"),
    (["run", "--samples", "0"], "argument --samples: 0 is not allowed; expected an integer in [1, 1,000,000]"),
    (["run", "--solver", "nope"], "argument --solver: invalid choice: 'nope'"),
    (["bench", "coverage", "--n", "0"], "argument --n: 0 is not allowed; expected an integer in [1, 1,000,000]"),
    (["bench", "coverage", "--n", "3"], "--n=3 is too small for k-NN"),
    (["bench", "coverage", "--solvers", "euler,bogus"], "item 'bogus' of 'euler,bogus' is not allowed"),
    (["bench", "coverage", "--interval", "5,1"], "--interval=5,1 must have sigma_lo < sigma_hi"),
    (["bench", "coverage", "--nfe", "4,,8"], "argument --nfe"),
    (["bench", "rollout", "--repeats", "0"], "argument --repeats: 0 is not allowed"),
    (["bench", "solvers", "--json", "/nonexistent/dir/x.json"], "directory '/nonexistent/dir' does not exist"),
    (["bench", "solvers", "--samples", "0"], "argument --samples: 0 is not allowed"),
    (["bench", "speedups", "--horizon", "-1"], "argument --horizon"),
    (["bench", "students", "--n", "0"], "argument --n"),
    (["bench", "gate", "--trials", "0"], "argument --trials"),
    (["bench", "faults", "--runs", "0"], "argument --runs"),
    (["bench", "dashboard", "--repeat", "0"], "argument --repeat"),
    (["bench", "service", "--runs", "x"], "argument --runs: 'x' is not allowed"),
    (["world", "scenes", "--horizon", "0"], "argument --horizon"),
    (["train", "teacher", "--lr", "0"], "argument --lr: '0' is not allowed; expected a finite number > 0"),
    (["train", "teacher", "--name", "../escape"], "argument --name"),
    (["train", "teacher", "--out", "/nonexistent/a/b"], "argument --out"),
    (["train", "student", "consistency", "--scale", "nan"], "argument --scale"),
    (["up", "--port", "70000"], "argument --port: 70000 is not allowed; expected an integer in [0, 65,535]"),
    (["up", "--grace", "-1"], "argument --grace"),
    (["up", "--workers", "-2"], "argument --workers"),
    (["worker", "--concurrency", "0"], "argument --concurrency"),
    (["worker", "--broker", "foo"], "argument --broker: broker_url='foo' must be a Redis URL"),
    (["collector", "--broker", "http://x"], "argument --broker: broker_url='http://x' must be a Redis URL"),
])
def test_bad_argument_is_one_line_exit_2(capsys, argv, expected):
    line = refused(capsys, argv)
    assert line.startswith("fastdiff ") and expected in line, line


@pytest.mark.parametrize("argv,expected", [
    (["bogus"], "fastdiff: 'bogus' is not a command; allowed: bench, collector,"),
    (["bench"], "fastdiff: 'bench' is not a command; allowed: bench coverage, bench dashboard,"),
    (["bench", "nope", "--n", "1"], "fastdiff: 'bench nope' is not a command; allowed: bench coverage,"),
])
def test_unknown_command_is_one_line(capsys, argv, expected):
    assert refused(capsys, argv).startswith(expected)


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    assert "bench coverage" in capsys.readouterr().out


def test_run_over_the_budget_is_refused_before_running(capsys, monkeypatch):
    monkeypatch.setenv("FASTDIFF_MAX_RUN_NFE", "1e6")
    line = refused(capsys, ["run", "--samples", "1000000", "--steps", "10", "--solver", "euler"])
    assert "= 10,000,000" in line and "exceeds FASTDIFF_MAX_RUN_NFE=1,000,000" in line


def test_cuda_without_a_gpu_is_refused_before_running(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    line = refused(capsys, ["run", "--device", "cuda", "--samples", "10"])
    assert "device='cuda' but no CUDA device is available" in line


def test_spec_file_errors_name_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    line = refused(capsys, ["run", "--spec", str(bad)])
    assert f"--spec file '{bad}' is not valid JSON" in line
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"samples": 7}))
    assert main(["run", "--spec", str(good), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 7


def test_json_path_checked_before_any_work(capsys, tmp_path):
    """A directory or an unwritable location for --json is refused at parse time, not after the bench."""
    assert "is a directory" in refused(capsys, ["bench", "solvers", "--json", str(tmp_path)])


def test_command_line_never_prints_a_traceback_in_a_real_process():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-m", "workers.cli", "up", "--port", "70000"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == "fastdiff up: argument --port: 70000 is not allowed; expected an integer in [0, 65,535]"


def test_students_bench_writes_tracked_files_only_with_write(capsys):
    from fastdiff_core.students.bench import BENCH_JSON, TABLE_PAGE, WEIGHTS_DIR

    tracked = [BENCH_JSON, TABLE_PAGE, *sorted(WEIGHTS_DIR.glob("*.md"))]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tracked if p.exists()}
    assert main(["bench", "students", "--render-only", "--no-readme"]) == 0
    assert "| sampler |" in capsys.readouterr().out
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tracked if p.exists()} == before


@pytest.mark.parametrize("argv,expected", [
    (["run", "--spec", '{"horizon": 5}', "--dry-run"], "horizon=5"),
    (["run", "--guidance", "3", "--dry-run"], "guidance_scale=3.0 needs a condition"),
])
def test_dry_run_applies_the_worlds_support(capsys, argv, expected):
    assert expected in refused(capsys, argv)
