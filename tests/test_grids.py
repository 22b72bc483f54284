import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdiff_core import catalog
from fastdiff_core.grids import GRID_FUNCTIONS, build_grid, check_sigmas
from fastdiff_core.paths import PATHS, get_path, sigma_range, t_from_sigma_ve


def test_catalog_and_implementations_agree():
    assert set(GRID_FUNCTIONS) == set(catalog.GRIDS)


@pytest.mark.parametrize("path_name", sorted(PATHS))
@pytest.mark.parametrize("grid", ["karras", "uniform_t", "uniform_logsnr", "quadratic"])
@pytest.mark.parametrize("steps", [1, 2, 3, 10, 100, 1000])
def test_every_grid_is_n_plus_1_strictly_decreasing_ending_in_zero(path_name, grid, steps):
    path = get_path(path_name)
    s = build_grid(grid, steps, path)
    assert len(s) == steps + 1 and s[-1] == 0.0
    assert all(a > b for a, b in zip(s, s[1:]))
    smin, smax = sigma_range(path)
    assert s[0] == pytest.approx(smax)
    if steps > 1:
        assert s[-2] == pytest.approx(smin)


def test_grid_shapes_follow_their_definitions():
    path = get_path("vp_linear")
    s = build_grid("uniform_logsnr", 5, path, {"sigma_min": 0.01, "sigma_max": 100.0})
    assert [math.log(v) for v in s[:-1]] == pytest.approx([math.log(100) - i * math.log(1e4) / 4 for i in range(5)])
    k = build_grid("karras", 4, path, {"sigma_min": 0.01, "sigma_max": 100.0, "rho": 1.0})
    assert k[:-1] == pytest.approx([100, 100 - 99.99 / 3, 100 - 2 * 99.99 / 3, 0.01])
    t = build_grid("uniform_t", 5, path)
    ts = [float(t_from_sigma_ve(path, v)) for v in t[:-1]]
    assert [b - a for a, b in zip(ts, ts[1:])] == pytest.approx([ts[1] - ts[0]] * 4, rel=1e-6)
    q = build_grid("quadratic", 6, path)
    tq = [float(t_from_sigma_ve(path, v)) for v in q[:-1]]
    gaps = [a - b for a, b in zip(tq, tq[1:])]
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])), "quadratic grids are dense near the data"


def test_custom_grid():
    path = get_path("vp_linear")
    assert build_grid("custom", 3, path, {"sigmas": [10.0, 1.0, 0.1]}) == [10.0, 1.0, 0.1, 0.0]
    assert build_grid("custom", 3, path, {"sigmas": [10.0, 1.0, 0.1, 0.0]}) == [10.0, 1.0, 0.1, 0.0]
    with pytest.raises(ValueError, match="steps=4"):
        build_grid("custom", 4, path, {"sigmas": [10.0, 1.0, 0.1]})


@pytest.mark.parametrize(
    "sigmas, match",
    [([10.0, 10.0, 0.0], "strictly decreasing"), ([1.0, 5.0, 0.0], "strictly decreasing"),
     ([10.0, float("nan"), 0.0], "finite"), ([10.0, 1.0], r"\[-1\]"), ([0.0], "at least 2"), ("abc", "list")],
)
def test_bad_full_grids_name_the_field(sigmas, match):
    with pytest.raises(ValueError, match=match):
        check_sigmas(sigmas)


@pytest.mark.parametrize(
    "name, steps, options, field",
    [("nope", 5, {}, "grid"), ("karras", 0, {}, "steps"), ("karras", 5, {"rho": -1.0}, "grid_options.rho"),
     ("karras", 5, {"bogus": 1}, "grid_options"), ("karras", 5, {"sigma_min": 10.0, "sigma_max": 1.0}, "sigma_min"),
     ("custom", 2, {"sigmas": [1.0, 3.0]}, "grid_options.sigmas")],
)
def test_bad_grid_input(name, steps, options, field):
    with pytest.raises(ValueError, match=field):
        build_grid(name, steps, get_path("vp_cosine"), options)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8))
def test_custom_validation_property(values):
    ok = all(math.isfinite(v) and v > 0 for v in values) and all(a > b for a, b in zip(values, values[1:]))
    try:
        out = build_grid("custom", len(values), get_path("vp_linear"), {"sigmas": values})
    except ValueError:
        assert not ok
    else:
        assert ok and out[:-1] == values and out[-1] == 0.0


# -- grids that transfer (issue 16) ---------------------------------------------------------------


@pytest.mark.parametrize("final", catalog.GRIDS["tuned"].options["final"].choices)
@pytest.mark.parametrize("solver", catalog.GRIDS["tuned"].options["solver"].choices)
def test_shipped_tuned_grids_cover_3_to_10_steps_on_any_path(solver, final):
    """Every solver and last-step convention ships a grid per step count 3-10 (final = sigma_min: NFE 2-9)."""
    for path_name in sorted(PATHS):
        path = get_path(path_name)
        smin, smax = sigma_range(path)
        for steps in range(3, 11):
            s = build_grid("tuned", steps, path, {"solver": solver, "final": final})
            assert len(s) == steps + 1 and s[-1] == 0.0 and s[0] == pytest.approx(smax)
            assert all(a > b for a, b in zip(s, s[1:])) and s[-2] >= smin * (1 - 1e-9)
    with pytest.raises(ValueError, match="steps=11"):
        build_grid("tuned", 11, get_path("vp_linear"), {"solver": solver, "final": final})
    with pytest.raises(ValueError, match="grid_options.final"):
        build_grid("tuned", 6, get_path("vp_linear"), {"solver": solver, "final": "denoise"})
    # the default is the grid of final = solver (what every stored run with grid="tuned" used)
    assert build_grid("tuned", 6, get_path("vp_linear"), {"solver": solver}) == build_grid(
        "tuned", 6, get_path("vp_linear"), {"solver": solver, "final": "solver"})
    from fastdiff_core.spec import RunSpec

    with pytest.raises(ValueError, match="steps=12"):  # refused where the spec enters, before any work
        RunSpec(grid="tuned", steps=12, grid_options={"solver": solver})
    assert RunSpec(grid="tuned", steps=6, grid_options={"solver": solver}).steps == 6


@pytest.mark.parametrize("final", ["solver", "denoise", "sigma_min"])
def test_a_tuned_grid_is_paired_with_the_runs_own_last_step_unless_chosen(final):
    """A RunSpec on grid='tuned' that does not choose grid_options.final gets the grid fitted for its own
    solver_options.final: a run that stops at the grid's last sigma without evaluating there (sigma_min)
    on the grid fitted to be evaluated last blurred thin modes (docs/lownfe.md, NFE 6 second pass).
    A grid chosen explicitly is kept, and a stored spec reads back the same."""
    from fastdiff_core.spec import RunSpec

    spec = RunSpec(grid="tuned", steps=6, solver="unipc", solver_options={"final": final})
    assert spec.grid_options["final"] == ("sigma_min" if final == "sigma_min" else "solver")
    assert RunSpec.from_dict(spec.to_dict()) == spec
    kept = RunSpec(grid="tuned", steps=6, solver="unipc", solver_options={"final": final},
                   grid_options={"final": "solver"})
    assert kept.grid_options["final"] == "solver"


def test_a_tuned_grid_follows_the_runs_solver_and_last_step_through_a_sweep():
    """Unless chosen, grid_options.solver is the run's own solver when it has tuned grids (dpmpp_2m's
    otherwise), as `fastdiff bench solvers` measures them: unipc on dpmpp_2m's grid cost it ~1.3x the RMSE.
    A sweep over the solver or its last step re-derives both for each point (it used to keep the base's:
    sigma_min runs on the grid fitted to be evaluated last, every solver on dpmpp_2m's); a chosen value
    stays; a stored spec that names its grid reads back unchanged."""
    from fastdiff_core import sweep
    from fastdiff_core.spec import RunSpec

    assert RunSpec(grid="tuned", steps=6, solver="unipc").grid_options["solver"] == "unipc"
    assert RunSpec(grid="tuned", steps=6, solver="ipndm").grid_options["solver"] == "ipndm"
    assert RunSpec(grid="tuned", steps=6, solver="euler").grid_options["solver"] == "dpmpp_2m"
    points = sweep.grid(RunSpec(grid="tuned", steps=6, solver="euler"),
                        {"solver": ["euler", "unipc", "ipndm"], "solver_options.final": ["solver", "sigma_min"]})
    got = [(p.solver, p.solver_options["final"], p.grid_options["solver"], p.grid_options["final"]) for p in points]
    assert got == [(solver, final, "dpmpp_2m" if solver == "euler" else solver, final)
                   for solver in ("euler", "unipc", "ipndm") for final in ("solver", "sigma_min")]
    chosen = RunSpec(grid="tuned", steps=6, solver="unipc", grid_options={"solver": "ipndm", "final": "sigma_min"})
    moved = chosen.replace(solver="dpmpp_2m", steps=7)
    assert (moved.grid_options["solver"], moved.grid_options["final"]) == ("ipndm", "sigma_min")
    stored = {**RunSpec(grid="tuned", steps=6, solver="unipc").to_dict(), "grid_options": {"solver": "dpmpp_2m"}}
    assert RunSpec.from_dict(stored).grid_options["solver"] == "dpmpp_2m"


def test_held_out_world_seeds_never_reach_the_optimiser(monkeypatch, capsys):
    """`fastdiff fit grids` end to end at toy size, with the optimiser and the reference builder wrapped
    to record the worlds they are given: the optimiser sees training seeds only, never a held-out one,
    and the held-out worlds only judge the result."""
    import argparse

    from fastdiff_cli import fit_grids as command
    from fastdiff_core.bench import transfer
    from fastdiff_core.worlds.random_mixtures import HELD_OUT, TRAINING, check_disjoint

    seen_by_optimiser, built = [], []
    real_optimise, real_batches = transfer.optimise_transfer_grid, transfer.world_batches

    def optimise(*args, **kwargs):
        seen_by_optimiser.extend(w.seed for w in args[3])
        return real_optimise(*args, **kwargs)

    def batches(seeds, *args, **kwargs):
        built.extend(seeds)
        return real_batches(seeds, *args, **kwargs)

    monkeypatch.setattr(transfer, "optimise_transfer_grid", optimise)
    monkeypatch.setattr(transfer, "world_batches", batches)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.main(parser.parse_args(["--train", "2", "--held-out", "2", "--samples", "16", "--budget", "4",
                                            "--nfes", "3", "--skip-study", "--world-rare-weight", "1", "--off-mode-weight", "1",
                                            "--solvers", "unipc,ipndm", "--mine", "6", "--mine-min-in", "1"])) == 0
    held = [s for s in built if s in HELD_OUT]
    assert len(held) == 2 and seen_by_optimiser
    assert all(s in TRAINING for s in seen_by_optimiser) and not set(seen_by_optimiser) & set(held)
    out = capsys.readouterr().out
    assert "held-out" in out and "sigma_min" in out  # both last-step conventions are fitted by default
    assert "unipc" in out and "ipndm" in out and "dpmpp_2m" not in out  # only the solvers asked for
    with pytest.raises(ValueError, match="both training and evaluation"):
        check_disjoint([1000, 1001], [1001])
    with pytest.raises(ValueError, match="outside the training range"):
        check_disjoint([1_000_001], [5])


def test_transfer_search_never_worsens_its_training_objective():
    from fastdiff_core.grid_search import (
        optimise_transfer_grid,
        rare_misplaced,
        world_batches,
        world_errors,
        world_scores,
    )
    from fastdiff_core.worlds.random_mixtures import training_seeds

    path = get_path("vp_discrete")
    smin, smax = sigma_range(path)
    worlds = world_batches(training_seeds(2), 24, smax)
    start = build_grid("karras", 4, path)
    res = optimise_transfer_grid("dpmpp_2m", {}, start, worlds, smin, smax, budget=12)
    assert res.train_ratio <= 1.0 and res.evaluations <= 12 and res.train_seeds == training_seeds(2)
    assert len(res.fractions) == 3 and all(0 < a < b <= 1 for a, b in zip(res.fractions, res.fractions[1:]))
    # with the rare-mode term the objective (mean log RMSE + w x misplaced share) never worsens either, and
    # the rows moved into / out of the rare mode are the ones the mixture's own label counts
    w = 2.0
    joint = optimise_transfer_grid("dpmpp_2m", {"final": "sigma_min"}, build_grid("karras", 5, path), worlds,
                                   smin, smax, budget=12, rare_weight=w)
    assert joint.rare_weight == w and joint.evaluations <= 12
    ref_rare = sum(int(wb.reference_rare.sum()) for wb in worlds)
    assert (math.log(joint.train_ratio) + w * rare_misplaced(*joint.train_rare, ref_rare)
            <= w * rare_misplaced(*joint.start_rare, ref_rare) + 1e-12)
    sig = build_grid("karras", 5, path)
    moved = [world_errors("dpmpp_2m", {"final": "sigma_min"}, sig, wb)[1:] for wb in worlds]
    assert tuple(map(sum, zip(*moved))) == joint.start_rare
    with pytest.raises(ValueError, match="rare_weight"):
        optimise_transfer_grid("dpmpp_2m", {}, start, worlds, smin, smax, budget=2, rare_weight=-1.0)
    # the per-world term: the mean over worlds of each world's own misplaced share, never worsened either
    per_world = optimise_transfer_grid("dpmpp_2m", {"final": "sigma_min"}, sig, worlds, smin, smax, budget=12,
                                       rare_weight=w, world_rare_weight=3.0)
    refs = [int(wb.reference_rare.sum()) for wb in worlds]
    assert per_world.start_world_rare == pytest.approx(
        sum(rare_misplaced(i, o, r) for (i, o), r in zip(moved, refs)) / len(worlds))
    assert (math.log(per_world.train_ratio) + w * rare_misplaced(*per_world.train_rare, ref_rare)
            + 3.0 * per_world.train_world_rare
            <= w * rare_misplaced(*per_world.start_rare, ref_rare) + 3.0 * per_world.start_world_rare + 1e-12)
    with pytest.raises(ValueError, match="world_rare_weight"):
        optimise_transfer_grid("dpmpp_2m", {}, start, worlds, smin, smax, budget=2, world_rare_weight=math.nan)
    # and the off-mode term (the share of rows off their mode beyond the reference's), never worsened either
    off = optimise_transfer_grid("dpmpp_2m", {"final": "sigma_min"}, sig, worlds, smin, smax, budget=12,
                                 off_mode_weight=5.0)
    offs = [world_scores("dpmpp_2m", {"final": "sigma_min"}, sig, wb)[3] / wb.x_start.shape[0] for wb in worlds]
    assert off.start_off_mode == pytest.approx(sum(offs) / len(worlds))
    assert math.log(off.train_ratio) + 5.0 * off.train_off_mode <= 5.0 * off.start_off_mode + 1e-12
    with pytest.raises(ValueError, match="off_mode_weight"):
        optimise_transfer_grid("dpmpp_2m", {}, start, worlds, smin, smax, budget=2, off_mode_weight=-2.0)


def test_off_mode_rows_counts_blur_between_modes_not_exact_samples():
    from fastdiff_core.grid_search import off_mode_rows, world_batches, world_errors, world_scores
    from fastdiff_core.worlds.random_mixtures import random_world, training_seeds

    m = random_world(training_seeds(1)[0])
    x = m.sample(4000, generator=torch.Generator().manual_seed(0))
    assert off_mode_rows(m, x) <= 20  # 0.1% expected off their own mode's 99.9% ellipsoid: about 4
    k = int(m.eigvals.min(dim=1).values.argmin())  # the mode with the thinnest axis, blurred 10x its std
    thin = m.sample(1000, generator=torch.Generator().manual_seed(1), component=k)
    blurred = thin + 10 * float(m.eigvals[k].min().sqrt()) * torch.randn(
        thin.shape, generator=torch.Generator().manual_seed(2), dtype=thin.dtype)
    assert off_mode_rows(m, thin) <= 10 and off_mode_rows(m, blurred) > 200  # 423: some land in broad modes
    path = get_path("vp_discrete")
    world = world_batches(training_seeds(1), 64, sigma_range(path)[1])[0]
    assert world.reference_off_mode == off_mode_rows(m, world.reference)
    sig = build_grid("karras", 3, path)
    scores = world_scores("euler", {}, sig, world)
    assert scores[:3] == world_errors("euler", {}, sig, world) and scores[3] >= 0


def test_world_errors_count_rows_moved_into_and_out_of_the_rare_mode():
    from fastdiff_core.grid_search import rare_misplaced, world_batches, world_errors
    from fastdiff_core.metrics.solver_error import terminal_rmse
    from fastdiff_core.solvers import sample
    from fastdiff_core.worlds.random_mixtures import training_seeds

    path = get_path("vp_discrete")
    world = world_batches(training_seeds(1), 64, sigma_range(path)[1])[0]
    m = world.mixture
    assert torch.equal(world.reference_rare, m.assign(world.reference) == m.rare)
    sig = build_grid("karras", 3, path)  # coarse: some rows land in another mode than their reference
    out = sample("euler", m.denoise, world.x_start, sig, generator=torch.Generator().manual_seed(0))
    in_out, in_ref = m.assign(out) == m.rare, world.reference_rare
    assert world_errors("euler", {}, sig, world) == (
        terminal_rmse(out, world.reference), int((in_out & ~in_ref).sum()), int((~in_out & in_ref).sum()))
    assert rare_misplaced(3, 2, 20) == 0.25 and rare_misplaced(0, 0, 0) == 0.0  # in and out both count


def test_random_worlds_are_deterministic_and_span_the_stated_family():
    from fastdiff_core.worlds.random_mixtures import held_out_seeds, random_world

    a, b = random_world(1_000_003), random_world(1_000_003)
    assert torch.equal(a.means, b.means) and torch.equal(a.eigvals, b.eigvals)
    dims, ks = set(), set()
    for seed in held_out_seeds(30):
        m = random_world(seed)
        stds = m.eigvals.sqrt()
        dims.add(m.dim), ks.add(m.components)
        assert m.rare == m.components - 1 and 0.01 <= float(m.weights[m.rare]) <= 0.04
        assert 0.01 <= float(stds.min()) <= 0.1 and float(stds.max()) <= 2.0 + 1e-12
        assert float(stds.max() / stds.min()) >= 5.0
    assert dims == {2, 4, 8, 16} and ks <= {3, 4, 5, 6} and len(ks) >= 3
    with pytest.raises(ValueError, match="seed"):
        random_world(-1)


def test_a_world_of_weight_k_counts_as_k_copies_of_it_in_the_transfer_fit():
    import dataclasses

    from fastdiff_core.grid_search import optimise_transfer_grid, world_batches
    from fastdiff_core.worlds.random_mixtures import training_seeds

    path = get_path("vp_discrete")
    smin, smax = sigma_range(path)
    a, b = world_batches(training_seeds(2), 24, smax)
    start = build_grid("karras", 5, path)
    kw = dict(budget=10, rare_weight=2.0, world_rare_weight=2.0, off_mode_weight=1.0)
    weighted = optimise_transfer_grid("unipc", {"final": "sigma_min"}, start, [a, dataclasses.replace(b, weight=3.0)],
                                      smin, smax, **kw)
    copies = optimise_transfer_grid("unipc", {"final": "sigma_min"}, start, [a, b, b, b], smin, smax, **kw)
    assert weighted.fractions == pytest.approx(copies.fractions) and weighted.train_ratio == pytest.approx(copies.train_ratio)
    assert weighted.train_world_rare == pytest.approx(copies.train_world_rare)
    with pytest.raises(ValueError, match="weights"):
        optimise_transfer_grid("unipc", {}, start, [dataclasses.replace(a, weight=0.0)], smin, smax, budget=2)


def test_mining_keeps_exactly_the_training_range_worlds_a_shipped_grid_blurs_into_the_rare_mode():
    """`fastdiff fit grids --mine N`: N training-range worlds (seeds 20,000 on: no fit's own training world, no
    held-out world) screened with the shipped grids; a world is kept, with the mining weight, iff some shipped
    grid moves at least mine_min_in rows into its rare mode."""
    from fastdiff_core.bench.transfer import GridFit, mine_worlds, shipped_settings
    from fastdiff_core.grid_search import world_batches, world_errors
    from fastdiff_core.worlds.random_mixtures import HELD_OUT, TRAINING

    path = get_path("vp_discrete")
    fit = GridFit(train=2, samples=48, nfes=(4,), finals=("sigma_min",), solvers=("unipc", "ipndm"), mine=40,
                  mine_min_in=1, mine_weight=4.0)
    kept, summary = mine_worlds(fit, path)
    assert summary["screened"] == [20_000, 20_039] and summary["kept"] == [w.seed for w in kept]
    assert all(w.seed in TRAINING and w.seed not in HELD_OUT and w.weight == 4.0 for w in kept)
    shipped = shipped_settings(fit, path)
    assert len(shipped) == 2
    every = world_batches(list(range(20_000, 20_040)), 48, sigma_range(path)[1], noise_seed=2)
    blurred = [w.seed for w in every if max(world_errors(n, o, s, w)[1] for n, o, s in shipped) >= 1]
    assert summary["kept"] == blurred and 0 < len(blurred) < 40
    with pytest.raises(ValueError, match="mine="):
        mine_worlds(GridFit(mine=0), path)


def test_unipc_bh1_is_refused_on_the_tuned_grids_it_blurs_on_with_what_is_allowed():
    """The tuned unipc and dpmpp_2m grids blur with UniPC bh1 (docs/lownfe.md, "UniPC bh1 and the tuned grids"):
    a new spec asking for that pairing is refused before any work, naming the field, the value and what is
    allowed; the ipndm grid, bh2 and fixed grids stay; a stored record of such a run still reads back."""
    from fastdiff_core.spec import RunSpec

    bh1 = {"variant": "bh1"}
    for gopts in ({}, {"solver": "unipc"}, {"solver": "dpmpp_2m", "final": "sigma_min"}):
        with pytest.raises(ValueError, match=r"solver_options.variant='bh1'.*grid='tuned'.*allowed: "
                                             r"solver_options.variant='bh2', grid_options.solver in \['ipndm'\]"):
            RunSpec(solver="unipc", solver_options=bh1, grid="tuned", steps=7, grid_options=gopts)
    assert RunSpec(solver="unipc", solver_options=bh1, grid="tuned", steps=7, grid_options={"solver": "ipndm"}).steps == 7
    assert RunSpec(solver="unipc", grid="tuned", steps=7, grid_options={"solver": "unipc"}).solver_options["variant"] == "bh2"
    assert RunSpec(solver="unipc", solver_options=bh1, grid="quadratic", steps=7).grid == "quadratic"
    stored = RunSpec(solver="unipc", solver_options=bh1, grid="tuned", steps=7, grid_options={"solver": "unipc"},
                     enforce_limits=False).to_dict()
    assert RunSpec.from_dict(stored, enforce_limits=False).solver_options["variant"] == "bh1"
    with pytest.raises(ValueError, match="variant='bh1'"):
        RunSpec.from_dict(stored)
