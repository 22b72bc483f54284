"""A user's PyTorch model registered through a ``fastdiff.models`` entry point (a real distribution on
sys.path) runs through ``execute`` as the worker calls it, ``fastdiff run --model`` and, in the service
test, a real worker and the store; the run records the model's name, checksum and card; a worker keeps
the loaded model (and its reference) for the next run; unknown models are refused naming the available
ones; ``fastdiff models add|list|remove`` keep the registry."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from fastdiff_core.models import model_registry
from fastdiff_core.spec import RunResult, RunSpec
from tests.plugin_support import install_distribution, service_with_path

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "plugins" / "toy_models.py"
SMALL = {"reference_samples": 400, "reference_steps": 16, "max_clusters": 3}


@pytest.fixture
def toy_models(tmp_path, monkeypatch):
    """The toy model installed as a distribution on sys.path (what ``pip install`` would leave)."""
    install_distribution(tmp_path, TOY, "toy-models", "[fastdiff.models]\ntwo_blobs = toy_models:two_blobs\n")
    monkeypatch.setenv("FASTDIFF_HOME", str(tmp_path / "home"))
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("toy_models", None)


def spec(**changes) -> dict:
    return {"world": "model", "model": "two_blobs", "solver": "dpmpp_2m", "steps": 8, "samples": 400,
            "world_options": {**SMALL, "modes": "classifier"}, **changes}


def test_the_entry_point_model_runs_through_execute_and_the_worker_keeps_it(toy_models):
    from fastdiff_core.models.loading import load_source, state_dict_sha256
    from fastdiff_core.run import execute

    assert model_registry.registered()["two_blobs"]["kind"] == "entry_point"
    first = execute(json.dumps(spec()))
    assert first.nfe_counted == first.nfe_formula == 8 * 400
    model = first.info["model"]
    assert model["name"] == "two_blobs" and model["kind"] == "module" and model["classifier"]
    assert model["checksum"] == state_dict_sha256(load_source("entry_point", "two_blobs", "x").net)
    assert model["card"]["data"].startswith("two Gaussian blobs")
    rows = {r["label"]: r for r in first.histograms if r["group"] == "model"}
    assert set(rows) == {"class 0", "class 1"} and 0.05 < rows["class 1"]["rate"] < 0.16  # the 10% blob
    assert first.info["reference"]["converged"] and first.info["reference"]["convergence_tv"] <= 0.02
    assert first.metrics["reference_nfe"] == (31 + 15) * 400  # Heun at 16 and at 8 steps
    from fastdiff_core import budget  # the run-time estimate names the same reference, counted the same way

    assert budget.setup_nfe(first.spec) == first.metrics["reference_nfe"] and budget.runtime_kind(first.spec)[1] == "two_blobs"
    assert first.metrics["setup_s"] >= first.latency[1]["seconds"] > 0  # the reference (and any load) is setup
    again = execute(json.dumps(spec(solver="euler", seed=0)))  # the same process: model and reference kept
    assert again.metrics["model_cached"] == 1.0 and again.metrics["reference_nfe"] == 0.0
    assert again.metrics["setup_s"] < 0.01
    assert first.metrics["model_cached"] in (0.0, 1.0)
    assert RunResult.from_json(again.to_json()).info["model_checksum"] == model["checksum"]
    auto = execute(json.dumps(spec(world_options=SMALL)))  # modes by clustering the reference
    assert auto.info["modes"]["k"] == 2 and auto.info["modes"]["tails"] == []


def test_the_store_row_names_the_model_and_its_checksum(toy_models):
    from fastdiff_core.run import execute
    from store.records import run_row

    result = execute(spec(samples=100, world_options={**SMALL, "modes": "classifier", "reference_samples": 200}))
    row = run_row({"run_id": "r1", "exp_id": "e1", "idx": 0, "spec": result.spec.to_dict()},
                  {"status": "done", "result": result.to_dict()})
    assert row["model"] == "two_blobs" and row["model_checksum"] == result.info["model"]["checksum"]


def test_a_model_run_samples_in_looks_until_its_two_sample_gate_decides_or_the_cap(toy_models):
    """gate_cap on the user-model world: looks of ``samples`` draws, gated two-sample against the model's
    own reference (whose counts enter once) until decided or the cap; the bill counts what was drawn."""
    from fastdiff_core.run import execute

    small = {**SMALL, "modes": "classifier", "reference_samples": 2000}
    fixed = execute(spec(samples=200, world_options=small))
    for solver, steps in (("euler", 1), ("dpmpp_2m", 8)):  # one step collapses the 10% blob; 8 keep it
        res = execute(spec(samples=200, gate_cap=800, solver=solver, steps=steps, world_options=small))
        seq = res.info["sequential"]
        drawn = seq["rollouts"]["model"]
        assert drawn == 200 * seq["looks"] <= 800 and res.metrics["cycles"] == res.metrics["rollouts_drawn"] == drawn
        assert res.nfe_counted == res.nfe_formula == steps * drawn
        assert (seq["stopped"] == "decided") == (seq["outcome"] != "UNDECIDED")
        assert seq["stopped"] == "decided" or (seq["stopped"] == "cap of 800 rollouts reached" and drawn == 800)
        assert f"sequential: {seq['stopped']}, {drawn:,} samples drawn" in res.info["gate"]["text"]
        assert sum(r["count"] for r in res.histograms if r["group"] == "model") == drawn
        if solver == "euler":
            assert seq["outcome"] == "FAIL" and seq["looks"] == 1  # a deleted mode is shown at the first look
        else:
            assert res.samples == fixed.samples  # the first look is the fixed run of the same spec
    assert RunSpec.from_dict(spec(samples=100, gate_cap=300)).runnable().max_cycles == 300


def test_unknown_models_and_bad_combinations_are_refused_naming_what_is_allowed(toy_models):
    with pytest.raises(ValueError, match=r"model='nope' is not registered; available: \['two_blobs'\]"):
        RunSpec.from_dict(spec(model="nope"))
    with pytest.raises(ValueError, match=r"model=None: world='model' needs a registered model; available: "):
        RunSpec.from_dict(spec(model=None))
    with pytest.raises(ValueError, match=r"model='two_blobs' given, but world='mixture'"):
        RunSpec.from_dict({"world": "mixture", "model": "two_blobs"})
    with pytest.raises(ValueError, match=r"model='../x' is not a model name; allowed: 1-64 characters"):
        RunSpec.from_dict(spec(model="../x"))


def test_run_model_flag_merges_with_a_spec_file_and_refuses_a_conflict_naming_both(toy_models, tmp_path):
    """`fastdiff run --model M --spec FILE`: the file's fields and the model together (the model was dropped
    before); a file naming another world or another model is refused with both values, not silently overridden."""
    import argparse

    from fastdiff_cli.run import add_arguments, spec_from_args
    from fastdiff_core.models.loading import register_model

    def parse(*argv: str) -> RunSpec:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return spec_from_args(parser.parse_args(argv))

    f = tmp_path / "spec.json"
    f.write_text(json.dumps({"steps": 6, "samples": 300, "solver": "euler", "world_options": SMALL}))
    for argv in (("--model", "two_blobs", "--spec", str(f)), ("--spec", str(f), "--model", "two_blobs")):
        s = parse(*argv)
        assert (s.world, s.model, s.steps, s.samples, s.solver) == ("model", "two_blobs", 6, 300, "euler")
        assert s.world_options["reference_samples"] == SMALL["reference_samples"]
    f.write_text(json.dumps({"world": "model", "model": "two_blobs", "steps": 6}))  # the same model: merged
    assert parse("--model", "two_blobs", "--spec", str(f), "--steps", "4").steps == 4  # flags over the file
    register_model("toy_models:two_blobs", name="blobs")
    with pytest.raises(ValueError, match=r"--model='blobs' \(model 'blobs'\) conflicts with model='two_blobs' in "
                                         r"--spec file '.*spec.json'; drop one of them"):
        parse("--model", "blobs", "--spec", str(f))
    f.write_text(json.dumps({"world": "mixture", "steps": 6}))
    with pytest.raises(ValueError, match=r"--model='blobs' runs the world 'model', but --spec file '.*' sets "
                                         r"world='mixture'; drop one of them"):
        parse("--model", "blobs", "--spec", str(f))
    with pytest.raises(ValueError, match=r"--model='blobs' runs the world 'model', but --world='driving'"):
        parse("--model", "blobs", "--world", "driving")


@pytest.mark.slow  # three `fastdiff` processes, each importing torch: ~15 s quiet, 40 s at load 16
def test_fastdiff_run_and_models_commands(toy_models, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(toy_models)])}

    def fastdiff(*argv):
        return subprocess.run([sys.executable, "-m", "workers.cli", *argv], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=300)

    ok = fastdiff("run", "--model", "two_blobs", "--modes", "classifier", "--steps", "6", "--samples", "300",
                  "--spec", json.dumps({"world": "model", "model": "two_blobs", "world_options": SMALL}), "--json")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["spec"]["model"] == "two_blobs" and out["info"]["model"]["name"] == "two_blobs"
    bad = fastdiff("run", "--model", "nope")
    assert bad.returncode == 2 and "--model='nope' is not a registered model" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    added = fastdiff("models", "add", "toy_models:two_blobs", "--name", "blobs")
    assert added.returncode == 0, added.stderr
    listed = model_registry.registered()  # what `fastdiff models list --json` prints
    assert listed["blobs"]["kind"] == "module" and listed["blobs"]["interface"]["prediction"] == "eps"
    assert listed["two_blobs"]["kind"] == "entry_point"
    from workers.cli import main

    assert main(["models", "add", str(tmp_path / "no-such-dir")]) == 2  # one line naming it (below)
    assert main(["models", "remove", "blobs"]) == 0 and "blobs" not in model_registry.registered()
    assert main(["models", "remove", "blobs"]) == 2


@pytest.mark.slow
@pytest.mark.service
def test_the_entry_point_model_runs_through_a_real_worker_and_the_store(toy_models, tmp_path):
    service = service_with_path(toy_models, tmp_path / "svc", "embedded", max_run_s=240)
    try:
        service.worker("w1"), service.collector()
        service.wait_workers(["w1"])
        _, run_ids = service.client.submit([spec(), spec(solver="euler")], "a user's model through the worker")
        runs = service.wait_finished(run_ids, timeout=300)
        assert runs["status"].to_list() == ["done", "done"], runs["error"].to_list()
        assert runs["model"].to_list() == ["two_blobs"] * 2 and runs["model_checksum"].str.len_chars().to_list() == [64] * 2
        results = [RunResult.from_dict(service.store.run(r)["result"]) for r in run_ids]
        for result in results:
            assert result.spec.model == "two_blobs" and result.nfe_counted == result.nfe_formula == 8 * 400
            assert len(result.info["model_checksum"]) == 64 and result.info["model"]["card"]
        assert sorted(r.metrics["model_cached"] for r in results) == [0.0, 1.0]  # loaded once, then kept
    finally:
        service.close()


def test_the_page_picks_a_registered_model_beside_the_worlds(home):
    """The dashboard reads the registry as data (no torch): the model picker lists what is registered,
    a spec naming it can be queued, and the model's declared interface refuses guidance it cannot do."""
    from streamlit.testing.v1 import AppTest

    from fastdiff_core.models.interface import ModelInterface, PathDecl

    iface = ModelInterface("eps", PathDecl("vp_linear"), (2,))
    model_registry.add({"name": "blobs", "kind": "module", "source": "toy_models:two_blobs", "checksum": "0" * 64,
                        "interface": iface.to_dict(), "card": {}, "classifier": None, "nbytes": 64})
    at = AppTest.from_file(str(REPO / "app" / "views" / "explore.py"), default_timeout=60).run()
    at.selectbox(key="ex.world").set_value("model").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ex.model").options == ["blobs"]
    assert not at.button(key="ex.run").disabled
    at.number_input(key="ex.guidance_scale").set_value(3.0).run()
    assert any("needs a null condition, which model='blobs' does not declare" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert at.button(key="ex.run").disabled


@pytest.mark.slow  # a fresh process importing torch: ~10 s quiet, 45 s at load 20
def test_the_core_works_without_the_models_extra(tmp_path):
    """diffusers blocked from importing: the mixture world runs, a module model registers and loads, and a
    diffusers-format directory is refused with one line naming the extra to install."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text('{"_class_name": "UNet2DModel", "in_channels": 1, "sample_size": 8}')
    (tmp_path / "d" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler"}')
    (tmp_path / "d" / "w.safetensors").write_bytes(b"")
    code = f"""
import sys
sys.modules["diffusers"] = None  # any import of it raises ImportError
sys.path.insert(0, {str(REPO / "tests" / "plugins")!r})
from fastdiff_core.run import execute
from fastdiff_core.models.loading import load_source, load_diffusers_dir
r = execute({{"world": "mixture", "samples": 50, "steps": 4}})
assert r.nfe_counted == r.nfe_formula
assert load_source("module", "toy_models:two_blobs", "b").record.kind == "module"
try:
    load_diffusers_dir({str(tmp_path / "d")!r})
except ValueError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loading a diffusers-format model needs diffusers: pip install 'fastdiff[models]'"


def test_a_workers_model_cache_keeps_models_least_recently_used_first_out_within_its_memory(toy_models):
    from fastdiff_core.models.loading import register_model
    from fastdiff_core.models.model_cache import ModelCache

    register_model("toy_models:two_blobs", "blobs")  # a second name for the same module
    tight = ModelCache(limit_mb=1e-6)  # below one model: only the newest is kept
    a, warm = tight.get("two_blobs")
    assert not warm and tight.get("two_blobs")[1] and tight.get("two_blobs")[0] is a
    tight.get("blobs")
    assert tight.names() == ["blobs"] and tight.loads == 2
    assert not tight.get("two_blobs")[1] and tight.loads == 3  # evicted, loaded again
    roomy = ModelCache(limit_mb=100)
    roomy.get("two_blobs"), roomy.get("blobs"), roomy.get("two_blobs")
    assert roomy.names() == ["blobs", "two_blobs"] and roomy.loads == 2 and roomy.hits == 1
    with pytest.raises(ValueError, match=r"FASTDIFF_MODEL_CACHE_MB='lots' must be a number of MiB > 0"):
        os.environ["FASTDIFF_MODEL_CACHE_MB"] = "lots"
        try:
            ModelCache().get("two_blobs")
        finally:
            del os.environ["FASTDIFF_MODEL_CACHE_MB"]


def test_a_finished_model_run_renders_on_the_explore_page(home, toy_models):  # home: the page's cached store cleared
    """A stored run of a user's model shows its verdict, NFE and mode histogram like any world's."""
    from fastdiff_core.run import execute
    from store import Store
    from tests.apptest_support import page, texts

    store = Store()
    specs = [RunSpec.from_dict(spec(samples=100, world_options={**SMALL, "reference_samples": 200}))]
    _, (rid,) = store.new_experiment("my model", specs)
    store.record_result(rid, "done", execute(specs[0]), worker="test")
    store.compact()
    at = page("explore", run=rid).run()
    assert not at.exception, at.exception
    body = texts(at)
    assert "Measured verdict" in body and "against the model's own reference" in body
    assert any("mode 1" in t.value.to_string() for t in at.table)  # the mode histogram's rows
    assert store.runs()["model"].to_list() == ["two_blobs"]
