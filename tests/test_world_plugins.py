"""Worlds are plugins: a third-party world registered through a ``fastdiff.worlds`` entry point (a
real distribution on sys.path, found by importlib.metadata) runs through ``fastdiff run``, the worker's
``execute`` and the page's validation with no edit to fastdiff_core or the app, and what a world does
not support is refused by RunSpec validation with one message, wherever the spec is made. Two toy worlds:
a coin with its own runner, and a world MODEL (a walker, ``toy_walk``) that rolls out H x P x R on the
generic rollout engine through the world-model protocol, its rates checked against exact probabilities."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from fastdiff_core import catalog, worlds
from fastdiff_core.spec import RunResult, RunSpec
from tests.plugin_support import install_distribution, service_with_path

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "plugins" / "toy_coin_world.py"
WALK = REPO / "tests" / "plugins" / "toy_walk_world.py"


@pytest.fixture
def toy_world(tmp_path):
    """Install the toy worlds as distributions in a directory on sys.path: their modules and dist-infos
    with the entry points, exactly what ``pip install`` would leave in site-packages."""
    install_distribution(tmp_path, TOY, "toy-coin-world", "[fastdiff.worlds]\ntoy_coin = toy_coin_world:PLUGIN\n")
    install_distribution(tmp_path, WALK, "toy-walk-world", "[fastdiff.worlds]\ntoy_walk = toy_walk_world:PLUGIN\n")
    sys.path.insert(0, str(tmp_path))
    worlds.load_plugins(reload=True)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("toy_coin", "toy_walk"):
        worlds.unregister_world(name)
        sys.modules.pop(f"{name}_world", None)


def toy_spec(**changes) -> dict:
    return {"world": "toy_coin", "world_options": {"p": 0.3}, "solver": "euler", "steps": 8, "samples": 400,
            **changes}


def walk_spec(**changes) -> dict:
    """H x P x R = 4 x 4 x 500 rollouts, 2 planning cycles, Heun on 8 steps (15 evaluations per frame)."""
    return {"world": "toy_walk", "solver": "heun", "steps": 8, "horizon": 4, "plans": 4, "futures": 500,
            "samples": 2, "seed": 1, **changes}


def assert_rates_match_the_exact_probabilities(result) -> None:
    """Every (plan, label) rate within 4 standard errors (+ 0.01 for the solver's bias) of the exact
    probability: the engine fans out, conditions, decodes and tallies the world model correctly."""
    assert result.histograms
    for row in result.histograms:
        truth, n = row["truth"], row["n_eff"]
        assert abs(row["rate"] - truth) <= 4 * (truth * (1 - truth) / n) ** 0.5 + 0.01, row


def test_the_entry_point_registers_the_world_and_its_capabilities_refuse_with_one_message(toy_world):
    assert "toy_coin" in catalog.WORLDS and catalog.world_info("toy_coin").title == "Toy coin"
    assert RunSpec.from_dict(toy_spec()).world == "toy_coin"
    for change, message in (({"plans": 2}, "plans=2 is not supported by world='toy_coin' (one coin flip per sample)"),
                            ({"horizon": 3}, "horizon=3 is not supported by world='toy_coin'"),
                            ({"guidance_scale": 2.0}, "guidance_scale=2.0 is not supported by world='toy_coin'"),
                            ({"regime": "planning"}, "regime='planning' is not supported by world='toy_coin'"),
                            ({"precision": "bfloat16"}, "precision='bfloat16' is not supported by world='toy_coin'"),
                            ({"world_options": {"p": 1.5}}, "world_options.p=1.5")):
        if "world_options" in change:  # the world's option schema is checked when the spec is made
            with pytest.raises(ValueError, match=re.escape(message)):
                RunSpec.from_dict(toy_spec(**change))
            continue
        spec = RunSpec.from_dict(toy_spec(**change))  # a spec still describes a bill ...
        assert message in spec.refusal()  # ... but the world says, once, why it cannot run it
        with pytest.raises(ValueError, match=re.escape(message)):
            spec.runnable()
    # the client refuses before anything is recorded or queued (no broker needs to answer for that)
    from workers.client import ServiceClient

    client = ServiceClient("redis://127.0.0.1:9/0", str(toy_world / "store"))
    with pytest.raises(ValueError, match=r"spec 1: plans=2 is not supported by world='toy_coin'"):
        client.submit([toy_spec(), toy_spec(plans=2)], "refused")
    with pytest.raises(ValueError, match=r"spec 1: guidance_scale=2.0 is not supported by world='toy_coin'"):
        client.submit(toy_spec(), "refused", sweep={"guidance_scale": [1.0, 2.0]})
    assert client.store.experiments().height == 0
    # the worker's execute refuses the same spec with the same message
    from fastdiff_core.run import execute

    with pytest.raises(ValueError, match=r"plans=2 is not supported by world='toy_coin'"):
        execute(toy_spec(plans=2))


def test_the_toy_world_runs_through_execute_as_the_worker_calls_it(toy_world):
    from fastdiff_core.run import execute

    result = execute(json.dumps(toy_spec()))  # the worker hands execute the spec's JSON
    assert result.nfe_counted == result.nfe_formula == 8 * 400
    heads = next(r for r in result.histograms if r["label"] == "heads")
    assert heads["n"] == 400 and 0.15 < heads["rate"] < 0.45  # the coin's 0.3, up to sampling and 8 Euler steps
    assert RunResult.from_json(result.to_json()).spec.world == "toy_coin"


def test_a_toy_world_model_rolls_out_on_the_generic_engine(toy_world):
    """H x P x R on the rollout engine with no runner of the world's own: the NFE bill (S x C x H x P·R x
    cycles) counted exactly, the rates against exact probabilities, the planner's choice (the plan of
    lowest expected cost), importance sampling of the tail and a single-plan run."""
    from fastdiff_core.run import execute

    result = execute(json.dumps(walk_spec()))
    assert result.nfe_counted == result.nfe_formula == 15 * 4 * 4 * 500 * 2
    assert_rates_match_the_exact_probabilities(result)
    assert {r["group"] for r in result.histograms} >= {"l-l-l-l", "s-s-s-s", "r-r-r-r"}
    # the objective rewards 'right' and the walker keeps walking right: 'always right' is the cheapest plan
    assert result.info["chosen_last"] == [2, 2, 2, 2]
    weighted = execute(json.dumps(walk_spec(importance="tail", guidance_scale=1.5)))
    assert weighted.nfe_counted == weighted.nfe_formula == 15 * 2 * 4 * 4 * 500 * 2  # C = 2 with guidance
    assert weighted.info["proposal_frames"] is not None  # the tail proposal was fitted from the first cycle
    single = execute(json.dumps(walk_spec(plans=1, futures=2000, samples=1, world_options={"action": "left"})))
    assert [r["group"] for r in single.histograms][:1] == ["l-l-l-l"] and single.nfe_counted == 15 * 4 * 2000
    assert_rates_match_the_exact_probabilities(single)
    refused = RunSpec.from_dict(walk_spec(precision="bfloat16")).refusal()
    assert "precision='bfloat16' is not supported by world='toy_walk'" in refused


def test_the_engine_refuses_what_a_world_model_cannot_do_before_any_work(toy_world):
    import torch

    import toy_walk_world
    from fastdiff_core.rollout import candidate_plans, planning_cycle
    from fastdiff_core.rollout_runner import run_world_model
    from fastdiff_core.speedups import frame_sampler
    from fastdiff_core.worlds.protocol import check_world_model

    class NoOnset(toy_walk_world.ToyWalk):
        onset = toy_walk_world.WorldModel.onset  # the protocol's default: importance sampling unsupported

    world = NoOnset(2.0, "stay")
    with pytest.raises(ValueError, match=r"NoOnset.onset returns None .*allowed: importance='off'"):
        planning_cycle(world.net, world, candidate_plans(2, 3, actions=3), 4, sampler=frame_sampler("euler"),
                       sigmas=[1.0, 0.5, 0.0], context=torch.ones(1), fit_tail=True)
    world.tail = "falls"
    with pytest.raises(ValueError, match=r"NoOnset.tail='falls' must be one of its labels"):
        check_world_model(world)
    # a network speed-up the plugin might declare but an unstaged network cannot apply is refused, not ignored
    spec = RunSpec.from_dict(walk_spec(feature_cache="fixed"))
    with pytest.raises(ValueError, match=r"feature_cache='fixed' needs a staged network"):
        run_world_model(spec, torch.device("cpu"), None, toy_walk_world.ToyWalk(2.0, "stay"))


def test_the_toy_world_runs_through_fastdiff_run_and_is_refused_there_with_the_same_message(toy_world):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(toy_world)])}
    cmd = [sys.executable, "-m", "workers.cli", "run", "--spec"]
    ok = subprocess.run(cmd + [json.dumps(toy_spec(samples=200)), "--json"], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["spec"]["world"] == "toy_coin" and out["nfe_counted"] == 8 * 200
    bad = subprocess.run(cmd + [json.dumps(toy_spec(plans=3))], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0
    assert "plans=3 is not supported by world='toy_coin'" in bad.stdout + bad.stderr
    walk = subprocess.run(cmd + [json.dumps(walk_spec(futures=100)), "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert walk.returncode == 0, walk.stderr
    out = json.loads(walk.stdout)
    assert out["spec"]["world"] == "toy_walk" and out["nfe_counted"] == out["nfe_formula"] == 15 * 4 * 4 * 100 * 2


def test_the_page_lists_the_toy_world_and_refuses_what_it_cannot_run(toy_world):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "views" / "explore.py"), default_timeout=60).run()
    at.selectbox(key="ex.world").set_value("toy_coin").run()
    assert not at.exception, at.exception
    assert not at.button(key="ex.run").disabled  # a spec the world supports can be queued
    at.selectbox(key="ex.regime").set_value("planning").run()
    assert any("is not supported by world='toy_coin'" in e.value for e in at.error), [e.value for e in at.error]
    assert at.button(key="ex.run").disabled
    at = AppTest.from_file(str(REPO / "app" / "views" / "explore.py"), default_timeout=60).run()
    at.selectbox(key="ex.world").set_value("toy_walk").run()  # a world model: planning is its regime too
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not at.button(key="ex.run").disabled
    at.selectbox(key="ex.regime").set_value("planning").run()
    assert not any("not supported by world" in e.value for e in at.error), [e.value for e in at.error]


def test_a_broken_plugin_names_itself(tmp_path):
    (tmp_path / "broken_world.py").write_text("raise ImportError('missing dependency frobnicate')\n")
    info = tmp_path / "broken_world-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-world\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fastdiff.worlds]\nbroken = broken_world:PLUGIN\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ValueError, match=r"world plugin entry point 'broken' \(broken_world:PLUGIN\) cannot be "
                                             r"loaded: ImportError: missing dependency frobnicate"):
            worlds.load_plugins(reload=True)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_world", None)
        worlds.load_plugins(reload=True)


@pytest.mark.slow
@pytest.mark.service
def test_the_toy_world_runs_through_a_real_worker_and_collector(toy_world, tmp_path):
    """The same distribution on the worker's path: submitted through the client, run by a Celery worker
    process, stored by the collector, read back as a RunResult of the toy world."""
    service = service_with_path(toy_world, tmp_path / "svc", "embedded", max_run_s=120)
    try:
        service.worker("w1"), service.collector()
        service.wait_workers(["w1"])
        _, run_ids = service.client.submit([toy_spec(samples=100), walk_spec(futures=100)], "toys through the worker")
        runs = service.wait_finished(run_ids, timeout=240)
        assert runs["status"].to_list() == ["done", "done"], runs["error"].to_list()
        coin, walk = (RunResult.from_dict(service.store.run(i)["result"]) for i in run_ids)
        assert coin.spec.world == "toy_coin" and coin.nfe_counted == coin.nfe_formula == 8 * 100
        assert walk.spec.world == "toy_walk" and walk.nfe_counted == walk.nfe_formula == 15 * 4 * 4 * 100 * 2
    finally:
        service.close()
