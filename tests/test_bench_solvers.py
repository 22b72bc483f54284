"""`fastdiff bench solvers` end to end at CI size (no peers): the JSON rows carry the fields the core
issue names, by those names, and what they hold is consistent with the registry and the world."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from fastdiff_core import catalog
from fastdiff_cli import bench_solvers as command
from fastdiff_core.bench import solvers as bench

# One end-to-end bench run (every solver x grid x NFE, the grid search) shared by the module's tests.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench_solvers")]  # one worker runs the bench once


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "solvers.json"
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    threads = torch.get_num_threads()
    try:
        command.main(parser.parse_args(["--quick", "--no-peers", "--samples", "60", "--json", str(path)]))
    finally:
        torch.set_num_threads(threads)
    return json.loads(path.read_text())


def test_rows_carry_the_named_fields_and_counted_nfe_follows_the_registry(payload):
    rows = [r for r in payload["rows"] if r["impl"] == "fastdiff" and r["nfe_target"] is not None]
    assert {r["nfe_target"] for r in rows} == {4, 8, 20}
    for r in rows:
        for field in ("nfe", "rmse", "median_err", "rare_rate", "rare_rate_truth", "rare_rate_ref",
                      "overhead_us_batch1", "overhead_us_batch1024"):
            assert field in r, (r["solver"], field)
        name = r["solver"].split("(")[0]
        # every budget spent exactly, two-stage solvers included (their single_stage_steps sets the parity)
        assert r["nfe"] == catalog.SOLVERS[name].nfe(r["steps"], r["solver_options"]) == r["nfe_target"]
        assert r["rmse"] >= r["median_err"] * 0.5 and 0.0 <= r["rare_rate"] <= 1.0
        assert r["rare_rate_truth"] == pytest.approx(0.02)
    adaptive = [r for r in payload["rows"] if r["grid"] == "adaptive"]
    assert adaptive and all(r["nfe"] > 0 for r in adaptive)
    # more evaluations buy accuracy: the best 20-NFE setting beats the best 4-NFE setting
    best = {v: min(r["rmse"] for r in rows if r["nfe_target"] == v) for v in (4, 20)}
    assert best[20] < 0.5 * best[4]


def test_overhead_rows_cover_every_solver_at_both_batches(payload):
    solvers = [n for n, info in catalog.SOLVERS.items() if not info.adaptive]
    got = {(r["solver"], r["batch"]) for r in payload["overhead"] if "overhead_us" in r}
    assert got == {(n, b) for n in solvers for b in (1, 1024)}
    assert all(r["overhead_us"] > 0 for r in payload["overhead"] if "overhead_us" in r)
    mlp = {r["solver"]: r for r in payload["mlp_overhead"]}
    assert set(mlp) == set(solvers)
    assert all(90_000 < r["mlp_params"] < 110_000 and 0 < r["overhead_fraction"] < 1 for r in mlp.values())
    # the stochastic samplers carry their noise draw's share (timed alone, same rounds); the others do not
    for name, r in mlp.items():
        assert ("noise_draw_us" in r) == (name in bench.STOCHASTIC), name
        if name in bench.STOCHASTIC:
            assert r["noise_draw_us"] > 0 and 0 < r["noise_draw_fraction"] < 1
            assert abs(r["overhead_excluding_noise_fraction"]) < 1
    assert payload["peers_missing"] == []  # --no-peers: nothing was looked for, nothing reported missing
    assert not any("peer" in r for r in payload["overhead"])  # --no-peers reaches the overhead section too


def test_stochastic_samplers_section_shows_brownian_noise_converging(payload):
    rows = payload["sde_convergence"]
    assert {(r["solver"], r["noise"]) for r in rows} == {(n, k) for n in bench.STOCHASTIC for k in ("iid", "brownian")}
    for name in bench.STOCHASTIC:
        b = {r["nfe"]: r["rmse_vs_fine"] for r in rows if r["solver"] == name and r["noise"] == "brownian"}
        i = {r["nfe"]: r["rmse_vs_fine"] for r in rows if r["solver"] == name and r["noise"] == "iid"}
        assert sorted(b) == [8, 20] and b[20] < b[8], (name, b)  # one motion per seed: more steps, closer
        assert b[20] < i[20], (name, b, i)  # iid noise: another path at every step count
        assert all(0.0 <= r["rare_rate"] <= 1.0 and r["rare_lo"] <= r["rare_rate"] <= r["rare_hi"] for r in rows)


def test_held_out_worlds_section_spends_exact_budgets_on_fixed_and_shipped_grids():
    """The held-out section at toy size (one world, no peers): every fastdiff row spends exactly its NFE
    target, shipped (tuned) grids are among the grids, and the summary pools the rare mode with its SE."""
    from fastdiff_core.worlds.random_mixtures import HELD_OUT

    threads = torch.get_num_threads()
    try:
        rows = bench.run_heldout(1, 24, (4, 6), None, False, lambda s: None)
    finally:
        torch.set_num_threads(threads)
    assert rows and all(r["impl"] == "fastdiff" and r["world_seed"] in HELD_OUT for r in rows)
    assert all(r["nfe"] == r["nfe_target"] for r in rows)
    assert {"tuned", "karras", "quadratic"} <= {r["grid"] for r in rows}
    assert any("final=sigma_min" in r["solver"] for r in rows)
    assert all(0 <= r["rare_in_off_mode"] <= r["rare_in"] for r in rows if "rare_in" in r)  # blur among moves in
    summary = bench.heldout_summary(rows, (4, 6))
    assert [s["nfe"] for s in summary] == [4, 6] and all("ratio_median" not in s for s in summary)
    assert all(s["rare_diff_se"] >= 0 and abs(s["rare_diff"]) <= 1 for s in summary)
    assert all("tail_safe" in s for s in summary)  # one world: None (nothing to judge the choice on)


def test_a_fresh_held_out_draw_starts_after_the_worlds_already_seen():
    """``--world-offset K`` measures held-out worlds K+1.. (seeds still in the held-out range, never training
    seeds); ``--world-nfes`` picks the NFEs; bad values exit 2 before any work; one world decides nothing."""
    from fastdiff_core.worlds.random_mixtures import HELD_OUT, TRAINING, held_out_seeds

    threads = torch.get_num_threads()
    try:
        rows = bench.run_heldout(1, 24, (4,), None, False, lambda s: None, offset=60)
    finally:
        torch.set_num_threads(threads)
    seed = held_out_seeds(61)[-1]
    assert {r["world_seed"] for r in rows} == {seed} and seed in HELD_OUT and seed not in TRAINING
    assert seed not in held_out_seeds(60)
    summary = bench.heldout_summary(rows, (4,))
    assert summary[0]["rare_decision"]["outcome"] == "UNDECIDED"  # no world-level SE from one world
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    args = p.parse_args(["--worlds", "40", "--world-offset", "60", "--world-nfes", "6,20,50"])
    assert (args.world_offset, args.world_nfes) == (60, [6, 20, 50])
    for bad in (["--world-offset", "-1"], ["--world-nfes", "0"], ["--world-nfes", "6,"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2
