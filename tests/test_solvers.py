"""Every solver in the registry: shape, dtype, determinism, no NaN, declared NFE == counted NFE;
convergence orders and exactness on worlds with exact answers; the last-step convention; goldens."""

import json
import math

import pytest
import torch

from fastdiff_core import catalog
from fastdiff_core.denoiser import Denoiser, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.metrics.solver_error import convergence_order, per_sample_error
from fastdiff_core.paths import get_path
from fastdiff_core.solvers import SOLVERS, get_solver, sample
from fastdiff_core.worlds.mixture import MixtureNetwork, get_mixture

PATH = get_path("vp_linear")
MIX = get_mixture("rare2d")


def exact_denoiser(counter=None, dtype=torch.float32):
    """The mixture's exact network behind the real Denoiser (eps prediction on a VP path)."""
    return Denoiser(MixtureNetwork(MIX, PATH, "eps"), PATH, "eps", counter=counter)


class Counting:
    """Counts calls and records the sigmas a solver evaluates."""

    def __init__(self, fn):
        self.fn, self.sigmas = fn, []

    def __call__(self, x, sigma):
        self.sigmas.append(sigma)
        return self.fn(x, sigma)


def noise(shape, dtype=torch.float32, seed=0, scale=80.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype) * scale


# -- the common test over every registry entry ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_common_contract(name, dtype):
    entry = get_solver(name)
    sigmas = build_grid("karras", 8, PATH, {"sigma_max": 80.0})
    x = noise((16, 2), dtype)
    outs = []
    for _ in range(2):
        c = NFECounter()
        out = sample(name, Denoiser(MixtureNetwork(MIX, PATH, "v"), PATH, "v", counter=c), x.clone(), sigmas,
                     generator=torch.Generator().manual_seed(5))
        assert out.shape == x.shape and out.dtype == dtype
        assert bool(torch.isfinite(out).all())
        declared = entry.info.nfe(8, {})
        if declared is not None:
            assert c.nfe == declared
        outs.append(out)
    assert torch.equal(outs[0], outs[1]), "same seed must give the same samples"


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_any_tensor_shape(name):
    """Solvers are shape-agnostic: (B, C, H, W) works with a denoiser that ignores structure."""
    x = noise((3, 2, 4, 5), torch.float64, scale=10.0)
    out = sample(name, lambda x, s: 0.5 * x / (1 + s * s), x, build_grid("karras", 5, PATH, {"sigma_max": 10.0}))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


STEP_COUNTS = [1, 2, 3, 4, 5, 7, 10, 16, 25, 50, 101, 250, 1000]


@pytest.mark.parametrize("name", sorted(n for n, e in SOLVERS.items() if not e.info.adaptive))
def test_declared_nfe_equals_counted_over_step_counts(name):
    entry = get_solver(name)
    x = noise((2, 2), torch.float64)
    for steps in STEP_COUNTS:
        d = Counting(lambda x, s: 0.9 * x / (1 + s * s))
        sample(name, d, x, build_grid("uniform_logsnr", steps, PATH), generator=torch.Generator().manual_seed(0))
        assert len(d.sigmas) == entry.info.nfe(steps, {}), f"{name} at steps={steps}"


@pytest.mark.slow  # tight tolerances take hundreds of NFE
@pytest.mark.parametrize("name", sorted(n for n, e in SOLVERS.items() if e.info.adaptive))
def test_adaptive_reports_the_nfe_it_used_and_tolerance_sets_it(name):
    used = {}
    for rtol in (1e-2, 1e-4):
        d = Counting(exact_denoiser())
        infos = []
        sample(name, d, noise((64, 2), torch.float64), build_grid("karras", 10, PATH),
               options={"rtol": rtol, "atol": rtol / 10}, callback=infos.append)
        assert infos[-1].nfe == len(d.sigmas) == sum(len(i.eval_sigmas) for i in infos)
        used[rtol] = len(d.sigmas)
    assert used[1e-4] > used[1e-2]
    # the cap holds whatever the tolerance
    d = Counting(exact_denoiser())
    sample(name, d, noise((64, 2), torch.float64), build_grid("karras", 10, PATH),
           options={"rtol": 1e-8, "atol": 1e-9, "max_nfe": 25})
    assert len(d.sigmas) <= 25


def test_exponential_integrator_adaptive_beats_bogacki_shampine_and_keeps_the_rare_mode():
    """At loose tolerance BS3 on the ODE in log sigma loses the 2% mode; the DDIM/2S pair of
    dpm_adaptive integrates the linear part exactly and keeps it, with a smaller error for no more NFE."""
    m = get_mixture("rare16d")
    x = torch.randn(400, m.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 157.4
    sig = build_grid("karras", 10, PATH)
    ref = m.reference(x, sig[0], 0.0)
    got = {}
    for name in ("adaptive", "dpm_adaptive"):
        d = Counting(lambda x_, s: m.denoise(x_, s))
        out = sample(name, d, x, sig, options={"rtol": 0.1, "atol": 0.01})
        got[name] = (len(d.sigmas), float((out - ref).square().sum(1).mean().sqrt()),
                     float((m.assign(out) == m.rare).double().mean()))
    rare_ref = float((m.assign(ref) == m.rare).double().mean())
    (n_bs, err_bs, rare_bs), (n_dpm, err_dpm, rare_dpm) = got["adaptive"], got["dpm_adaptive"]
    assert n_dpm <= 1.25 * n_bs and err_dpm < 0.2 * err_bs
    assert abs(rare_dpm - rare_ref) <= 0.005 < abs(rare_bs - rare_ref)


# -- last-step convention ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in SOLVERS if n != "ipndm"))
def test_last_step_returns_the_denoiser_output_at_sigma_min(name):
    """The step into sigma = 0 returns D(x, sigma_min) exactly: the last evaluation is at sigma_min and
    the result is that evaluation's output."""
    outputs = []

    def d(x, s):
        out = MIX.denoise(x, s)
        outputs.append((s, out))
        return out

    sigmas = build_grid("karras", 6, PATH, {"sigma_max": 80.0})
    result = sample(name, d, noise((8, 2), torch.float64), sigmas, generator=torch.Generator().manual_seed(0))
    s_last, out_last = outputs[-1]
    assert s_last == pytest.approx(sigmas[-2])
    assert torch.equal(result, out_last)


# -- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmpp_2m", "dpmpp_3m", "unipc", "heun", "dpmpp_2s"])
def test_point_mass_world_is_exact_in_one_step(name):
    """Data = a point mass at c: D(x, sigma) = c for every x, so one step from any noise lands on c."""
    c = torch.tensor([[0.3, -1.7]], dtype=torch.float64)
    out = sample(name, lambda x, s: c.expand_as(x), noise((5, 2), torch.float64), build_grid("karras", 1, PATH))
    assert torch.allclose(out, c.expand(5, 2), atol=0, rtol=0)


def test_gaussian_world_matches_closed_form_trajectory():
    """Single Gaussian N(m, s^2): the PF-ODE is x(sigma) = m + (x_T - m) sqrt(s^2 + sigma^2) / sqrt(s^2 + sT^2);
    high-order solvers reach it to 1e-3 at 50 steps, far closer than DDIM."""
    m, s2 = 0.7, 0.3
    den = lambda x, sig: m + (x - m) * s2 / (s2 + sig * sig)  # noqa: E731
    sigmas = build_grid("uniform_logsnr", 50, PATH, {"sigma_max": 80.0, "sigma_min": 0.01})
    x = noise((4, 3), torch.float64)
    x_end = m + (x - m) * math.sqrt(s2 + 0.01**2) / math.sqrt(s2 + 80.0**2)
    expected = den(x_end, 0.01)
    for name in ("dpmpp_3m", "unipc"):
        assert torch.allclose(sample(name, den, x, sigmas), expected, atol=1e-3), name
    ddim_err = (sample("ddim", den, x, sigmas) - expected).abs().max()
    assert ddim_err > 10 * (sample("dpmpp_3m", den, x, sigmas) - expected).abs().max()


# -- convergence order on the mixture world -------------------------------------------------------


@pytest.fixture(scope="module")
def convergence_setup():
    smax, smin = 80.0, 0.05
    x = noise((128, 2), torch.float64, seed=1, scale=smax)
    ref = MIX.denoise(MIX.reference(x, smax, smin), smin)  # exact ODE to sigma_min, then the same last step
    return x, ref, smax, smin


def measured_order(setup, name, options, steps, grid="uniform_logsnr"):
    x, ref, smax, smin = setup
    nfes, errs = [], []
    info = catalog.solver_info(name)
    for n in steps:
        sig = build_grid(grid, n, PATH, {"sigma_min": smin, "sigma_max": smax})
        out = sample(name, lambda x, s: MIX.denoise(x, s), x, sig, options=options)
        nfes.append(info.nfe(n, options))
        errs.append(float(per_sample_error(out, ref).median()))
    return convergence_order(nfes, errs)


@pytest.mark.slow  # grids of up to 640 steps against the exact ODE
@pytest.mark.parametrize(
    "name, options, steps, lo, hi",
    [
        ("euler", {}, [160, 320, 640], 0.8, 1.3),
        ("ddim", {}, [160, 320, 640], 0.8, 1.3),
        ("heun", {}, [40, 80, 160], 1.8, 2.3),
        ("dpmpp_2m", {}, [40, 80, 160], 1.8, 2.4),
        ("dpmpp_2s", {}, [40, 80, 160], 1.8, 2.4),
        ("unipc", {"order": 2, "corrector": False}, [40, 80, 160], 1.8, 2.4),
        ("dpmpp_3m", {}, [40, 80, 160], 2.7, 3.4),
        ("unipc", {"order": 3, "corrector": False}, [40, 80, 160], 2.7, 3.4),
        ("unipc", {"order": 2}, [40, 80, 160], 2.6, 3.4),  # UniC adds one order (paper, Thm 3.3)
    ],
)
def test_convergence_order(convergence_setup, name, options, steps, lo, hi):
    p = measured_order(convergence_setup, name, options, steps)
    assert lo <= p <= hi, f"{name} {options}: measured order {p:.2f}, expected in [{lo}, {hi}]"


# -- never NaN, no error jump --------------------------------------------------------------------


# Below 4 steps a sample's error against the 1000-step answer is not monotone for any method (1 step
# returns the posterior mean, closer in RMSE than any sample), so the jump check starts at 4 steps.
# (Heun in sigma with a 10^4 sigma ratio in one step, 2 steps on karras, amplifies D differences by
# sigma / (2 sigma'): RMSE 64 at 2 steps; the paper's method, kept and documented.)


@pytest.mark.slow  # 1,000-step references: ~1,500 denoiser calls per solver
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_never_nan_and_no_error_jump_from_1_to_1000_steps(name):
    x = noise((16, 2), torch.float32, seed=3, scale=152.0)
    den = lambda x, s: MIX.denoise(x, s).to(x.dtype)  # noqa: E731
    ref = None
    errors = {}
    for steps in [1000, 300, 100, 40, 20, 12, 8, 6, 5, 4, 3, 2, 1]:
        out = sample(name, den, x, build_grid("karras", steps, PATH), generator=torch.Generator().manual_seed(0))
        assert bool(torch.isfinite(out).all()), f"{name} NaN at steps={steps}"
        if ref is None:
            ref = out.to(torch.float64)
        errors[steps] = float((out.to(torch.float64) - ref).square().mean().sqrt())
    info = catalog.solver_info(name)
    if not info.stochastic and not info.adaptive:  # an adaptive solver's tolerance, not the grid, sets its error
        steps_sorted = [s for s in sorted(errors) if s >= 4]
        for a, b in zip(steps_sorted, steps_sorted[1:]):
            # more steps may not raise the error (2x slack for the noise of tiny errors)
            assert errors[b] <= 2.0 * errors[a] + 1e-3, f"{name}: error jumps up from {a} to {b} steps: {errors}"


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_merged_update_equals_explicit_predictor_corrector(variant, order):
    """fastdiff folds UniC into the next UniP step (one linear combination per step). The textbook
    loop — predict, evaluate, correct the state, predict from the corrected state — must give the
    same samples to float64 rounding, at every order and grid length."""
    from fastdiff_core.solvers.unipc import _uni_coefficients, unipc
    from fastdiff_core.solvers.primitives import lambdas

    m = get_mixture("rare2d")

    def den(x, s):
        return m.denoise(x, s)

    def explicit(x, sigmas):
        n = len(sigmas) - 1
        lam = lambdas(sigmas)
        orders = [min(order, i + 1, n - i) for i in range(n)]
        hist, x_prev = [], None
        for i in range(n):
            d = den(x, sigmas[i])
            if i >= 1 and i < n - 1:  # UniC on step i-1, from the state before it
                c = _uni_coefficients(lam, i - 1, orders[i - 1], variant, True)
                x = c[0] * x_prev + c[1] * hist[0] + sum(w * hist[k] for k, w in enumerate(c[2:-1], 1)) + c[-1] * d
            hist.insert(0, d)
            p = _uni_coefficients(lam, i, orders[i], variant, False)
            x_prev = x
            x = p[0] * x + p[1] * d + sum(w * hist[k] for k, w in enumerate(p[2:], 1))
        return x

    path = get_path("vp_discrete")
    noise = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for steps in (2, 3, 5, 9, 16):
        sig = build_grid("karras", steps, path)
        a = unipc(den, noise * sig[0], sig, variant=variant, order=order)
        b = explicit(noise * sig[0], sig)
        assert float((a - b).abs().max()) <= 1e-9 * (1.0 + float(b.abs().max())), steps


def test_finiteness_check_and_scaled_noise_draw():
    """all_finite (a sum, with the exact min/max check behind it) catches every NaN and inf wherever it
    sits and in any float dtype, and does not mistake finite values whose sum overflows for bad ones;
    fresh_noise(x, g, std) is std times the generator's standard normals, bit for bit, whatever x's
    memory layout."""
    from fastdiff_core.solvers.primitives import all_finite, fresh_noise

    x = torch.randn(64, 3, 5, generator=torch.Generator().manual_seed(0))
    assert all_finite(x) and all_finite(x[:0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            y = x.clone().to(dtype)
            y[63, 2, 4] = bad
            assert not all_finite(y), (bad, dtype)
            assert not all_finite(y[:, :, 3:]), (bad, dtype)
    both = x.clone()
    both[0, 0, 0], both[1, 1, 1] = float("inf"), -float("inf")  # their sum is NaN, not inf: still caught
    assert not all_finite(both)
    for dtype, big in ((torch.float32, 3e38), (torch.float64, 1.7e308)):
        huge = torch.full((8, 4), big, dtype=dtype)
        assert not math.isfinite(float(huge.sum())), dtype  # the fast path's sum overflows ...
        assert all_finite(huge), dtype  # ... and the exact check behind it still finds every value finite
    assert all_finite(torch.full((8, 4), 6e4, dtype=torch.float16))  # half precision sums in float32
    z = fresh_noise(x, torch.Generator().manual_seed(5), 0.25)
    ref = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * 0.25
    assert z.shape == x.shape and z.dtype == x.dtype and torch.equal(z, ref)
    zt = fresh_noise(x.transpose(0, 2), torch.Generator().manual_seed(5), 0.25)  # a non-contiguous state
    assert zt.shape == (5, 3, 64) and zt.is_contiguous()
    assert torch.equal(zt, (torch.randn(5, 3, 64, generator=torch.Generator().manual_seed(5)) * 0.25))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cached_scalars_multiply_exactly_like_python_floats(dtype):
    """Solvers and the denoiser multiply by cached 0-dim tensors for speed; the product must be the
    one a Python float gives, bit for bit, in every dtype (a bf16 constant would not be)."""
    from fastdiff_core.scalars import scalar

    x = torch.randn(4096, generator=torch.Generator().manual_seed(1)).to(dtype)
    for c in (0.12345, 0.7548, 1e-3, -2.5, 157.4):
        assert torch.equal(torch.mul(x, scalar(c, dtype)), torch.mul(x, c)), (dtype, c)


# -- exact budgets and the last-step conventions (issue 16) ---------------------------------------

FIXED = sorted(n for n, e in SOLVERS.items() if not e.info.adaptive)
GRID_NAMES = ("karras", "uniform_logsnr", "uniform_t", "quadratic")


@pytest.fixture
def one_thread():
    """Thousands of tiny solves: intra-op threads only add contention (40x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def option_sets(name):
    """Every last-step convention x lower-order-final setting the solver declares."""
    opts = catalog.SOLVERS[name].options
    lofs = (False, True) if "lower_order_final" in opts else (None,)
    return [{"final": f, **({} if lof is None else {"lower_order_final": lof})}
            for f in opts["final"].choices for lof in lofs]


@pytest.mark.parametrize("name", FIXED)
def test_every_budget_from_1_to_50_is_spent_exactly(name, one_thread):
    """For every last-step convention and grid, the planner finds steps (and, for two-stage solvers, the
    number of single-stage steps) whose declared NFE is the budget, and the solver makes exactly that
    many evaluations: no budget leaves an evaluation unused."""
    info = catalog.SOLVERS[name]
    x = noise((2, 2), torch.float64)
    grids: dict[str, bool] = {}  # settings done so far (shifts the grid rotation per setting)
    for opts in option_sets(name):
        for budget in range(1, 51):
            plan = info.plan_for_nfe(budget, opts)
            assert plan is not None, (name, opts, budget)
            steps, planned = plan
            assert info.nfe(steps, planned) == budget
            # the grids take turns over the budgets: each grid meets every convention at 12-13 budgets
            # of both parities (the count depends on the grid only through its length; the turns keep
            # the test fast on a shared machine)
            grid = GRID_NAMES[(budget + len(grids)) % len(GRID_NAMES)]
            d = Counting(lambda x, s: 0.9 * x / (1 + s * s))
            infos = []
            sample(name, d, x, build_grid(grid, steps, PATH), options=planned, callback=infos.append,
                   generator=torch.Generator().manual_seed(0))
            assert len(d.sigmas) == budget, (name, planned, grid, budget, len(d.sigmas))
            assert infos[-1].nfe == budget and sum(len(i.eval_sigmas) for i in infos) == budget
            assert infos[-1].steps == steps and infos[-1].sigma_next == 0.0
        grids[json.dumps(opts)] = True


@pytest.mark.parametrize("name", FIXED)
def test_no_nan_for_any_setting_from_1_to_1000_evaluations(name, one_thread):
    """The mixture's exact denoiser, every convention and grid, budgets 1-1000: finite samples."""
    info = catalog.SOLVERS[name]
    x = noise((4, 2), torch.float32, seed=7, scale=152.0)
    den = lambda x, s: MIX.denoise(x, s).to(x.dtype)  # noqa: E731
    for j, opts in enumerate(option_sets(name)):
        for k, budget in enumerate((1, 2, 3, 4, 5, 6, 7, 8, 10, 13, 20, 50, 1000)):
            steps, planned = info.plan_for_nfe(budget, opts)
            grids = GRID_NAMES if budget <= 8 else (GRID_NAMES[(j + k) % len(GRID_NAMES)],)
            for grid in grids:
                out = sample(name, den, x, build_grid(grid, steps, PATH), options=planned,
                             generator=torch.Generator().manual_seed(0))
                assert bool(torch.isfinite(out).all()), (name, planned, grid, budget)


def test_plan_refuses_what_no_step_count_hits_and_steps_for_nfe_says_what_is_used():
    heun = catalog.SOLVERS["heun"]
    # single_stage_steps fixed by the caller: 2n - 1 is always odd, an even budget has no exact plan
    assert heun.plan_for_nfe(6, {"single_stage_steps": 1}) is None
    assert heun.steps_for_nfe(6, {"single_stage_steps": 1}) == 3 and heun.nfe(3, {}) == 5
    assert heun.plan_for_nfe(6) == (4, {"single_stage_steps": 2})
    assert catalog.SOLVERS["euler"].plan_for_nfe(6, {"final": "sigma_min"}) == (7, {"final": "sigma_min"})
    assert catalog.SOLVERS["adaptive"].plan_for_nfe(6) is None


@pytest.mark.parametrize("name", ["euler", "ddim", "dpmpp_2m", "dpmpp_3m"])
def test_denoise_convention_is_the_solvers_own_step_into_zero(name):
    """For these solvers the step into 0 returns D(x, sigma_last): running them down to sigma_last and
    denoising there (``finish``) must give the same samples."""
    x = noise((32, 2), torch.float64)
    sig = build_grid("karras", 7, PATH)
    a = sample(name, lambda x, s: MIX.denoise(x, s), x, sig, options={"final": "solver"})
    b = sample(name, lambda x, s: MIX.denoise(x, s), x, sig, options={"final": "denoise"})
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", FIXED)
def test_sigma_min_convention_makes_no_evaluation_at_sigma_min_and_returns_the_state_there(name):
    sig = build_grid("karras", 6, PATH)
    seen = []

    def d(x, s):
        out = MIX.denoise(x, s)
        seen.append((s, x.clone(), out))
        return out

    steps_before = []
    out = sample(name, d, noise((8, 2), torch.float64), sig, options={"final": "sigma_min"},
                 callback=steps_before.append, generator=torch.Generator().manual_seed(0))
    assert all(s > sig[-2] for s, _, _ in seen), "no evaluation at sigma_min"
    assert steps_before[-2].sigma_next == sig[-2] and torch.equal(out, steps_before[-2].x)
    assert steps_before[-1].eval_sigmas == () and steps_before[-1].sigma_next == 0.0


def test_step_orders_and_lower_order_final():
    from fastdiff_core.solvers.primitives import step_orders

    closed = (10.0, 5.0, 2.0, 1.0, 0.5, 0.0)
    assert step_orders(closed, 3, False) == (1, 2, 3, 3, 3)
    assert step_orders(closed, 3, True) == (1, 2, 2, 1, 1)  # k-th last step above 0: order <= k
    assert step_orders(closed[:-1], 2, True) == (1, 2, 2, 1)  # an open grid: its last step is first order
    long = tuple(float(20 - i) for i in range(20)) + (0.0,)  # 20 steps: the ramp would cost the order
    assert step_orders(long, 3, True) == step_orders(long, 3, False)
    # with every step first order, DPM-Solver++ is DDIM (= Euler in sigma): 3 steps, ramped down
    x = noise((64, 2), torch.float64)
    sig = build_grid("uniform_t", 3, PATH)
    den = lambda x, s: MIX.denoise(x, s)  # noqa: E731
    first = sample("euler", den, x, sig)
    for name in ("dpmpp_2m", "dpmpp_3m", "ipndm"):
        low = sample(name, den, x, sig, options={"lower_order_final": True})
        assert torch.allclose(low, first, rtol=0, atol=1e-10), name
        high = sample(name, den, x, sig, options={"lower_order_final": False})
        assert not torch.allclose(high, first, rtol=0, atol=1e-6), name


@pytest.mark.parametrize("name", ["heun", "dpmpp_2s"])
def test_two_stage_single_stage_steps_flip_the_parity(name):
    sig = build_grid("karras", 5, PATH)
    for k, expected in ((1, 9), (2, 8)):
        d = Counting(lambda x, s: MIX.denoise(x, s))
        out = sample(name, d, noise((16, 2), torch.float64), sig, options={"single_stage_steps": k})
        assert len(d.sigmas) == expected == catalog.SOLVERS[name].nfe(5, {"single_stage_steps": k})
        assert bool(torch.isfinite(out).all())
