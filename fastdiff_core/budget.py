"""The NFE bill, the vanilla-to-optimised waterfall, latency projection, regimes and verdicts (torch-free).

Seed sections 2, 3, 11, 12: the cost of a world model is never one sample, it is

    NFE = S (network evaluations per frame) x C (guidance passes) x H (frames) x P·R (plans x futures)

and a configuration is judged against the constraint that binds in its regime: coverage for offline
generation, cost per 1,000 simulated scenarios for closed-loop simulation, the 100 ms decision cycle
for in-the-loop planning. The dashboard, the CLI and the workers all read this module, so it imports
nothing but the torch-free catalog and spec.

Latency here is a *projection* from a per-NFE latency the caller states (e.g. 10 ms for a 2B latent
DiT on a datacenter GPU); measured latencies come from runs and carry their device.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from fastdiff_core import catalog
from fastdiff_core.metrics.gate import RELEASE_GATE, Estimate
from fastdiff_core.metrics.gate import coverage_gate as _gate
from fastdiff_core.regimes import PLANNING_BUDGET_S, REGIMES, Binding, RegimeBudget  # noqa: F401 (re-exported)
from fastdiff_core.spec import RunResult, RunSpec, picard_window

# ---------------------------------------------------------------------------------------------
# The bill
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NFEBill:
    """S x C x H x P·R, per frame / rollout / planning cycle / run.

    S: network evaluations per frame per sample before guidance (the solver's NFE rule, or the
    student's steps). C = 1 + guided_fraction: 2 for CFG at every evaluation, 1 when distilled or
    scale in {0, 1}, fractional under a guidance interval. ``cycles`` = independent planning cycles
    (RunSpec.samples). ``exact`` is False when S is an upper bound (adaptive solvers) or the guided
    fraction was an estimate the caller supplied rather than computed from the grid. ``repeats``: the
    per-sample evaluations a run re-did beyond the sequential count (Picard sweeps re-evaluating a step,
    ``NFECounter.repeat_rows``): 0 before a run, the counted figure after it, added to ``per_run``.
    """

    S: float
    C: float
    H: int
    P: int
    R: int
    cycles: int = 1
    exact: bool = True
    notes: tuple[str, ...] = ()
    repeats: float = 0.0

    def __post_init__(self) -> None:
        for name in ("S", "C"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a finite number > 0")
        if not 1.0 <= self.C <= 2.0:
            raise ValueError(f"C={self.C!r} must be in [1, 2] (guidance passes per evaluation)")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, (int, float)) or not (
                math.isfinite(self.repeats) and self.repeats >= 0):
            raise ValueError(f"repeats={self.repeats!r} must be a finite number >= 0")
        for name in ("H", "P", "R", "cycles"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")

    @property
    def guided_fraction(self) -> float:
        return self.C - 1.0

    @property
    def fan_out(self) -> int:
        return self.P * self.R

    @property
    def per_frame(self) -> float:
        return self.S * self.C

    @property
    def per_rollout(self) -> float:
        return self.per_frame * self.H

    @property
    def per_cycle(self) -> float:
        return self.per_rollout * self.fan_out

    @property
    def per_run(self) -> float:
        return self.per_cycle * self.cycles + self.repeats

    def formula(self) -> str:
        """The bill as the seed writes it, e.g. '4 x 1 x 12 x 8 = 384' (per cycle); with re-evaluations,
        the run's total beside it, e.g. '... = 384; run: 2 cycles x 384 + 96 Picard re-evaluations = 864'."""
        out = f"{_num(self.S)} x {_num(self.C)} x {self.H} x {self.fan_out} = {_num(self.per_cycle)}"
        if self.repeats:
            out += (f"; run: {self.cycles:,} cycle{'s' if self.cycles != 1 else ''} x {_num(self.per_cycle)} + "
                    f"{_num(self.repeats)} Picard "
                    f"re-evaluations = {_num(self.per_run)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d.update(per_frame=self.per_frame, per_rollout=self.per_rollout, per_cycle=self.per_cycle,
                 per_run=self.per_run, fan_out=self.fan_out)
        return d


def _num(x: float) -> str:
    """1600000 -> '1,600,000'; 1.25 -> '1.25'."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.1f}"


def guided_fraction_from_sigmas(sigmas: Sequence[float], interval: tuple[float, float]) -> float:
    """Share of evaluation sigmas inside the guidance interval [lo, hi] (inclusive, as the denoiser)."""
    sig = [float(s) for s in sigmas]
    if not sig:
        raise ValueError("sigmas=[] must hold at least one evaluation sigma")
    lo, hi = interval
    return sum(1 for s in sig if lo <= s <= hi) / len(sig)


def evaluation_sigmas(solver: str, grid_sigmas: Sequence[float], steps: int) -> list[float] | None:
    """The sigmas a fixed-grid solver evaluates the denoiser at, or None when not known torch-free.

    One-evaluation-per-step solvers evaluate at sigma_0..sigma_{n-1}; Heun (EDM Alg. 1) also at
    sigma_1..sigma_{n-1} for its correction (none on the last step to sigma = 0).
    """
    nonzero = [float(s) for s in grid_sigmas if float(s) > 0.0][:steps]
    if len(nonzero) < steps:
        raise ValueError(f"grid_sigmas has {len(nonzero)} nonzero sigmas; steps={steps} needs {steps}")
    info = catalog.solver_info(solver)
    rule = info.nfe(steps, {})
    if rule == steps:
        return nonzero
    if solver == "heun":
        return nonzero + nonzero[1:]
    return None


def _interval_fraction(spec: RunSpec, sigmas: Sequence[float] | None, guided_fraction: float | None,
                       notes: list[str]) -> tuple[float, bool]:
    """The share of evaluations inside ``spec.guidance_interval`` and whether it is exact: from the
    grid's evaluation sigmas when known torch-free, else the caller's ``guided_fraction``."""
    if sigmas is None and spec.grid == "custom":
        sigmas = spec.grid_options["sigmas"]
    evals = None
    if sigmas is not None and spec.sampler == "solver":
        evals = evaluation_sigmas(spec.solver, sigmas, spec.steps)
    if evals is not None:
        frac = guided_fraction_from_sigmas(evals, spec.guidance_interval)
        notes.append(f"guidance interval covers {frac:.0%} of the {len(evals)} evaluations")
        return frac, True
    if guided_fraction is not None:
        if isinstance(guided_fraction, bool) or not isinstance(guided_fraction, (int, float)) \
                or not 0.0 <= guided_fraction <= 1.0:
            raise ValueError(f"guided_fraction={guided_fraction!r} must be a number in [0, 1]")
        notes.append(f"guidance interval: {float(guided_fraction):.0%} of evaluations guided (caller's estimate)")
        return float(guided_fraction), False
    raise ValueError(
        f"guidance_interval={list(spec.guidance_interval)} on grid={spec.grid!r}: pass sigmas= (the "
        "grid's sigmas) or guided_fraction= (share of evaluations inside the interval, in [0, 1])")


def _speedup_notes(spec: RunSpec) -> list[str]:
    """What the bill says about speed-ups that change the counted NFE (Picard) or only its cost (cache)."""
    notes = []
    if spec.feature_cache != "off":
        notes.append(f"feature_cache={spec.feature_cache!r}: every evaluation is counted; the cache skips deep "
                     "blocks on some of them (metrics.deep_fraction), which saves time per NFE, not NFE")
    if spec.parallel == "picard":
        window = int(spec.parallel_options.get("window", 1))
        notes.append(f"parallel='picard': S is the sequential count; the run adds the re-evaluations it counts "
                     f"(at most {window - 1} x S with window {window})")
    return notes


def bill_for(spec: RunSpec, *, sigmas: Sequence[float] | None = None,
             guided_fraction: float | None = None) -> NFEBill:
    """The NFE bill of a RunSpec.

    sigmas: the grid's sigmas (decreasing, optionally ending in 0), used to compute the fraction of
    evaluations inside ``spec.guidance_interval``. Without them (or for a solver whose evaluation
    sigmas are not known torch-free) pass ``guided_fraction`` in [0, 1]; a custom grid supplies its
    own sigmas. Adaptive solvers bill their ``max_nfe`` as an upper bound.
    """
    notes: list[str] = []
    exact = True
    if spec.sampler == "student":
        student = catalog.STUDENTS[spec.student]
        S: float = float(spec.steps)
        guided_always = student.guidance_passes >= 2
        guidance_active = guided_always and spec.guidance_scale not in (0.0, 1.0)
    else:
        info = catalog.solver_info(spec.solver)
        n = info.nfe(spec.steps, dict(spec.solver_options))
        if n is None:
            n = int(spec.solver_options.get("max_nfe", 0)) or None
            if n is None:
                raise ValueError(f"solver={spec.solver!r} declares no NFE rule and no max_nfe option")
            exact = False
            notes.append(f"{spec.solver} is adaptive: S={n} is its max_nfe cap, an upper bound")
        S = float(n)
        guidance_active = spec.guidance_scale not in (0.0, 1.0)

    if not guidance_active:
        frac = 0.0
        if spec.sampler == "student":
            notes.append("guidance distilled into the student: C = 1")
        else:
            notes.append(f"guidance scale {spec.guidance_scale:g} needs one pass: C = 1")
    elif spec.guidance_interval is None:
        frac = 1.0
    else:
        frac, frac_exact = _interval_fraction(spec, sigmas, guided_fraction, notes)
        exact = exact and frac_exact
    notes.extend(_speedup_notes(spec))
    if spec.sequential:
        notes.append(f"sequential gate: at most {spec.max_cycles:,} cycles (gate_cap {spec.gate_cap:,} rollouts), "
                     f"in looks of {spec.samples:,}; the run bills the cycles it draws")
    return NFEBill(S=S, C=1.0 + frac, H=spec.horizon, P=spec.plans, R=spec.futures, cycles=spec.max_cycles,
                   exact=exact, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# The waterfall
# ---------------------------------------------------------------------------------------------

# The seed's vanilla plan: DDPM at 1000 steps, CFG, 20 frames, 10 plans x 4 futures.
VANILLA = NFEBill(S=1000, C=2.0, H=20, P=10, R=4)
# Where a training-free solver lands before few-step distillation (seed: DPM-Solver++ ~15-20 NFE).
SOLVER_FLOOR_NFE = 20


@dataclass(frozen=True)
class WaterfallStage:
    """One lever of the waterfall: the bill after applying it and the factor it saved."""

    lever: str
    change: str
    bill: NFEBill
    factor: float  # previous per-cycle NFE / this per-cycle NFE (1 = lever not used)

    def to_dict(self) -> dict[str, Any]:
        return {"lever": self.lever, "change": self.change, "S": self.bill.S, "C": self.bill.C,
                "H": self.bill.H, "fan_out": self.bill.fan_out, "nfe": self.bill.per_cycle,
                "factor": self.factor}


def waterfall(target: NFEBill, *, distilled: bool, vanilla: NFEBill = VANILLA,
              solver_nfe: float = SOLVER_FLOOR_NFE) -> list[WaterfallStage]:
    """The seed's vanilla-to-optimised waterfall ending at ``target`` (per planning cycle).

    Levers in the seed's order of how little diversity they spend: solver (S), guidance
    distillation (C), shorter horizon (H), smarter proposals (P·R), and last few-step distillation
    (S again). A solver target gets its S at the solver lever and no distillation; a distilled
    target passes through ``solver_nfe`` (the training-free floor) and is distilled to its S.
    """
    stages = [WaterfallStage("vanilla", vanilla.formula(), vanilla, 1.0)]
    S_solver = min(solver_nfe, vanilla.S) if distilled else target.S
    steps = [
        ("solver", "S", S_solver),
        ("guidance distillation" if distilled or target.C < vanilla.C else "guidance", "C", target.C),
        ("shorter horizon", "H", target.H),
        ("smarter proposals (P·R)", "PR", (target.P, target.R)),
        ("few-step distillation", "S", target.S),
    ]
    cur = vanilla
    for lever, what, value in steps:
        before = cur
        if what == "S":
            cur = NFEBill(S=value, C=cur.C, H=cur.H, P=cur.P, R=cur.R)
            change = f"S: {_num(before.S)} -> {_num(cur.S)}"
        elif what == "C":
            cur = NFEBill(S=cur.S, C=value, H=cur.H, P=cur.P, R=cur.R)
            change = f"C: {_num(before.C)} -> {_num(cur.C)}"
        elif what == "H":
            cur = NFEBill(S=cur.S, C=cur.C, H=value, P=cur.P, R=cur.R)
            change = f"H: {before.H} -> {cur.H}"
        else:
            cur = NFEBill(S=cur.S, C=cur.C, H=cur.H, P=value[0], R=value[1])
            change = f"P·R: {before.fan_out} -> {cur.fan_out}"
        stages.append(WaterfallStage(lever, change, cur, before.per_cycle / cur.per_cycle))
    return stages


# ---------------------------------------------------------------------------------------------
# Latency and cost projection
# ---------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class ProductionModel:
    """The model a projection is for: per-NFE latency at batch 1, parallel lanes, accelerator price.

    ``parallelism`` = per-sample evaluations that run concurrently in one per-NFE latency (batch
    lanes x devices). The defaults are the seed's estimate: a ~2B latent DiT on a datacenter GPU.
    """

    per_nfe_s: float = 0.010
    parallelism: int = 1
    usd_per_hour: float = 2.0
    name: str = "2B latent DiT on a datacenter GPU"

    def __post_init__(self) -> None:
        if isinstance(self.per_nfe_s, bool) or not isinstance(self.per_nfe_s, (int, float)) \
                or not math.isfinite(self.per_nfe_s) or self.per_nfe_s <= 0:
            raise ValueError(f"per_nfe_s={self.per_nfe_s!r} must be a finite number of seconds > 0")
        if isinstance(self.parallelism, bool) or not isinstance(self.parallelism, int) or self.parallelism < 1:
            raise ValueError(f"parallelism={self.parallelism!r} must be an integer >= 1")
        if isinstance(self.usd_per_hour, bool) or not isinstance(self.usd_per_hour, (int, float)) \
                or not math.isfinite(self.usd_per_hour) or self.usd_per_hour < 0:
            raise ValueError(f"usd_per_hour={self.usd_per_hour!r} must be a finite number >= 0")

    def describe(self) -> str:
        """'10 ms/NFE, 1 lane'."""
        lanes = f"{self.parallelism:,} lane" + ("s" if self.parallelism != 1 else "")
        return f"{self.per_nfe_s * 1000:g} ms/NFE, {lanes}"


@dataclass(frozen=True)
class LatencyProjection:
    """Projected wall clock of one frame, one rollout and one planning cycle, against a budget."""

    per_frame_s: float
    per_rollout_s: float
    per_cycle_s: float
    floor_cycle_s: float  # unlimited parallelism: only the S x H chain is sequential
    sequential_waves: float
    budget_s: float
    model: ProductionModel

    @property
    def fits(self) -> bool:
        return self.per_cycle_s <= self.budget_s

    @property
    def over_budget(self) -> float:
        """per_cycle / budget: 4.8 means 4.8x over; below 1 it fits."""
        return self.per_cycle_s / self.budget_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(fits=self.fits, over_budget=self.over_budget)
        return d


def _waves(bill: NFEBill, lanes_needed_unguided: int, parallelism: int) -> float:
    # Each sequential evaluation processes C x (lanes) per-sample passes in ceil(passes / p) waves;
    # guided evaluations (share f) need twice the passes of unguided ones.
    f = bill.guided_fraction
    return f * math.ceil(2 * lanes_needed_unguided / parallelism) + (1 - f) * math.ceil(
        lanes_needed_unguided / parallelism)


def project_latency(bill: NFEBill, model: ProductionModel = ProductionModel(),
                    budget_s: float = PLANNING_BUDGET_S) -> LatencyProjection:
    """Cycle latency = (S x H sequential evaluations) x (waves each needs for C x P·R passes) x per-NFE.

    Seed check: 4 NFE/frame, C = 1, H = 12, one rollout, 10 ms/NFE, no parallelism -> 480 ms, about
    5x over the 100 ms budget before any fan-out.
    """
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not budget_s > 0:
        raise ValueError(f"budget_s={budget_s!r} must be a number of seconds > 0")
    p, ell = model.parallelism, model.per_nfe_s
    chain = bill.S * bill.H
    frame = bill.S * _waves(bill, 1, p) * ell
    waves = chain * _waves(bill, bill.fan_out, p)
    return LatencyProjection(per_frame_s=frame, per_rollout_s=frame * bill.H, per_cycle_s=waves * ell,
                             floor_cycle_s=chain * ell, sequential_waves=waves, budget_s=float(budget_s),
                             model=model)


def cost_per_1000_scenarios(bill: NFEBill, model: ProductionModel = ProductionModel()) -> tuple[float, float]:
    """(USD, accelerator-seconds) for 1,000 simulated scenarios, one planning cycle's NFE each.

    Throughput cost: with ``parallelism`` lanes batched, an accelerator does p per-sample NFE per
    per-NFE latency. Seed: cost = scenarios x agents x H x NFE.
    """
    seconds = 1000 * bill.per_cycle * model.per_nfe_s / model.parallelism
    return seconds / 3600.0 * model.usd_per_hour, seconds


# ---------------------------------------------------------------------------------------------
# Regimes and verdicts
# ---------------------------------------------------------------------------------------------

# Three outcomes of a decision plus "unmeasured" (nothing to decide on yet, e.g. coverage before a run).
Status = Literal["pass", "fail", "undecided", "unmeasured"]
Basis = Literal["projected", "measured"]


REGIME_BUDGETS: dict[str, RegimeBudget] = {name: r.budget for name, r in REGIMES.items()}


def regime_budget(name: str) -> RegimeBudget:
    if name not in REGIME_BUDGETS:
        raise ValueError(f"regime={name!r} is not one of {sorted(REGIME_BUDGETS)}")
    return REGIME_BUDGETS[name]


def production_model(regime: str) -> ProductionModel:
    """The production model a regime's verdicts are stated at: the seed's 2B latent DiT at 10 ms/NFE and
    $2/h, with the regime's lanes. The worker's verdict, the result page, compare and every link use
    this one, so a run's cost is one number wherever it is shown."""
    return ProductionModel(parallelism=regime_budget(regime).lanes)


@dataclass(frozen=True)
class Check:
    """One threshold checked: what, its status, the value and the limit, how the value was obtained
    (``basis``: projected from a stated model, or measured by a run), and its interval when measured."""

    name: Binding
    status: Status
    value: float | None
    limit: float | None
    text: str
    basis: str = "projected"
    lo: float | None = None
    hi: float | None = None


def overall_status(statuses: Iterable[Status]) -> Status:
    """FAIL if any check fails, PASS only if every check passes, else UNDECIDED (a decision that the
    data could not make) or, when nothing is undecided, UNMEASURED (a check still waiting for a run)."""
    s = list(statuses)
    if "fail" in s:
        return "fail"
    if all(x == "pass" for x in s):
        return "pass"
    return "undecided" if "undecided" in s else "unmeasured"


@dataclass(frozen=True)
class Verdict:
    """The regime's verdict: the binding constraint, its status, the numbers, one quotable sentence.

    basis: 'projected' (before a run: the spec's bill at the regime's production model, coverage
    unmeasured) or 'measured' (after it: the counted NFE, the run's branch rates and its measured
    latency). tail: the world's declared rare branch. rates: the branch rows the coverage check
    judged, exactly as the run reported them (the pages show these rows, never a recomputation).
    """

    regime: str
    binding: Binding
    status: Status
    sentence: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    basis: Basis = "projected"
    tail: str | None = None
    model: str = ""
    rates: tuple[Mapping[str, Any], ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"regime": self.regime, "binding": self.binding, "status": self.status, "sentence": self.sentence,
                "checks": [asdict(c) for c in self.checks], "basis": self.basis, "tail": self.tail,
                "model": self.model, "rates": [dict(r) for r in self.rates]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        """The inverse of ``to_dict`` (a verdict a worker stored); ValueError naming what is missing."""
        try:
            checks = tuple(Check(**c) for c in d.get("checks", ()))
            return cls(d["regime"], d["binding"], d["status"], d["sentence"], checks, d.get("basis", "measured"),
                       d.get("tail"), d.get("model", ""), tuple(d.get("rates", ())))
        except (KeyError, TypeError) as e:
            raise ValueError(f"verdict={dict(d)!r} is not a stored Verdict ({type(e).__name__}: {e})") from None


def world_tail(world: str) -> str | None:
    """The world's declared rare branch (the one label every page and verdict calls the tail)."""
    return catalog.world_info(world).tail


def coverage_gate(rows: Iterable[Mapping[str, Any]], *, alpha: float = 0.05, leak_tolerance: float = 0.02,
                  tail: str | None = None) -> Check:
    """The coverage check of a verdict from histogram rows {group, label, n, rate, truth, n_eff?}: the one
    gate of ``metrics.gate`` (three outcomes, family-wise ``alpha``), judged on each row's own estimate
    (its possibly weighted rate at its effective sample size; raw counts play no part).

    Groups are the gate's scenes. The tail is ``tail`` (the world's declared one, ``world_tail``) where
    present, else 'darts' where present, else the label with the smallest positive truth; labels with
    truth 0 are leaks (at most ``leak_tolerance``). PASS -> 'pass', FAIL -> 'fail', UNDECIDED ->
    'undecided' with the rollouts per group likely to decide.
    """
    rows = [r for r in rows if r.get("truth") is not None and r.get("n")]
    if not rows:
        return Check("coverage", "unmeasured", None, None, "coverage not measured yet (no branch histogram)")
    labels = {r["label"] for r in rows}
    tail = tail if tail in labels else RELEASE_GATE.tail if RELEASE_GATE.tail in labels else min(
        [r for r in rows if float(r["truth"]) > 0] or rows, key=lambda r: float(r["truth"]))["label"]
    config = replace(RELEASE_GATE, alpha=alpha, leak_tolerance=leak_tolerance, tail=tail,
                     leak_labels=tuple(k for k in RELEASE_GATE.leak_labels if k != tail and k in labels))
    estimates: dict[str, dict[str, Estimate]] = {}
    truth: dict[str, dict[str, float]] = {}
    for r in rows:
        group = str(r.get("group", ""))
        estimates.setdefault(group, {})[r["label"]] = Estimate(float(r["rate"]), float(r.get("n_eff") or r["n"]))
        truth.setdefault(group, {})[r["label"]] = float(r["truth"])
    result = _gate(estimates, truth, config)
    branches = [c for c in result.checks if c["check"] != "tv"]

    def describe(c: Mapping[str, Any]) -> str:
        return (f"'{c['label']}' generated {c['rate']:.1%} [{c['lo']:.1%}, {c['hi']:.1%}] vs {c['truth']:.1%} true, "
                f"band [{c['band_lo']:.1%}, {c['band_hi']:.1%}]")

    scope = f"{len(branches)} branches, family-wise alpha {alpha:g}"
    tails = [c for c in branches if c["check"] == "tail"]
    if result.outcome == "FAIL":
        failing = [c for c in branches if c["outcome"] == "FAIL"] or result.failures
        shown = min(failing, key=lambda c: c["truth"])
        return Check("coverage", "fail", float(len(failing)), 0.0,
                     f"{len([c for c in branches if c['outcome'] == 'FAIL'])} of {scope} FAIL ({describe(shown)})",
                     "measured")
    if result.outcome == "PASS":
        return Check("coverage", "pass", 0.0, 0.0, f"all {scope} PASS (tail {describe(min(tails, key=lambda c: c['truth']))})"
                     if tails else f"all {scope} PASS", "measured")
    open_ = [c for c in branches if c["outcome"] == "UNDECIDED"]
    shown = min(open_ or result.undecided, key=lambda c: c["truth"])
    needed = [v for v in result.more_samples_needed.values() if v is not None]
    more = (f"~{max(needed):,} rollouts per group likely to decide" if needed else "")
    if any(v is None for v in result.more_samples_needed.values()):
        more += ("; " if more else "") + "an estimate on a band edge may stay undecided at any n"
    return Check("coverage", "undecided", float(len(open_)), 0.0,
                 f"UNDECIDED on {len(open_)} of {scope} ({describe(shown) if shown['check'] != 'tv' else 'TV'}); {more}",
                 "measured")


@dataclass(frozen=True)
class LatencySample:
    """A measured latency: the median of ``repeats`` timings with a distribution-free interval for the
    median at ``confidence`` (None when too few timings), where it ran, with how many threads and at
    what machine load (1-minute load average), so a figure from a shared machine says so."""

    median_s: float
    lo_s: float | None
    hi_s: float | None
    confidence: float | None
    repeats: int
    device: str
    threads: int | None = None
    load: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_check(budget_s: float, bill: NFEBill, *, projected_s: float | None = None,
                  measured: LatencySample | None = None, source: str = "") -> Check:
    """The latency check, projected (a point from a stated model: PASS or FAIL) or measured (repeated
    timings): PASS when the interval for the median lies at or under the budget, FAIL when it lies
    above, UNDECIDED when it straddles the budget or when there is no interval (one timing)."""
    if measured is None and projected_s is None:
        return Check("latency", "unmeasured", None, budget_s, "latency not measured")
    if measured is None:
        ratio = projected_s / budget_s
        ok = projected_s <= budget_s
        rel = f"{ratio:.1f}x over" if not ok else f"{ratio:.0%} of"
        return Check("latency", "pass" if ok else "fail", projected_s, budget_s,
                     f"the planning cycle takes {_ms(projected_s)} (projected {source}; {bill.formula()} NFE), "
                     f"{rel} the {_ms(budget_s)} budget", "projected")
    m = measured
    where = f"measured on {m.device}" + (f", {m.threads} threads" if m.threads else "") + (
        f", load {m.load:.1f}" if m.load is not None else "")
    if m.lo_s is None or m.hi_s is None:
        return Check("latency", "undecided", m.median_s, budget_s,
                     f"the planning cycle took {_ms(m.median_s)} ({where}; {m.repeats} timing(s), no interval): "
                     f"undecided against the {_ms(budget_s)} budget; time >= 6 cycles for a 95% interval",
                     "measured")
    status: Status = "pass" if m.hi_s <= budget_s else ("fail" if m.lo_s > budget_s else "undecided")
    word = {"pass": "within", "fail": "over", "undecided": "straddling"}[status]
    more = "; measure again on a quieter machine or with more cycles" if status == "undecided" else ""
    return Check("latency", status, m.median_s, budget_s,
                 f"the planning cycle takes {_ms(m.median_s)} median [{_ms(m.lo_s)}, {_ms(m.hi_s)}] "
                 f"({m.confidence:.0%} interval of the median over {m.repeats} cycles; {where}), {word} the "
                 f"{_ms(budget_s)} budget{more}", "measured", m.lo_s, m.hi_s)


def verdict(regime: str, bill: NFEBill, *, latency_s: float | None = None, latency_source: str = "",
            cost_usd: float | None = None, histograms: Iterable[Mapping[str, Any]] = (),
            budget: RegimeBudget | None = None, gate: Mapping[str, Any] | None = None,
            latency: LatencySample | None = None, basis: Basis = "projected", tail: str | None = None,
            model: str = "", nfe_per_cycle: float | None = None, gate_alpha: float = RELEASE_GATE.alpha) -> Verdict:
    """Judge a configuration in its regime; the sentence names the binding constraint and the numbers.

    latency_s: projected planning-cycle latency; ``latency``: a measured one (repeated, with its
    interval), which takes precedence. cost_usd: per 1,000 scenarios (at ``nfe_per_cycle``, default
    the bill's). histograms: branch rows for the coverage check. gate: {outcome: pass|fail|undecided,
    text} of a runner's full release gate (metrics.gate; a legacy {passed, text} is read as pass/fail);
    when given it replaces the histogram-only check (judged at family-wise ``gate_alpha``). The overall status is ``overall_status`` of the
    regime's checks.
    """
    budget = budget or regime_budget(regime)
    title = catalog.REGIMES[regime].title if regime in catalog.REGIMES else regime
    nfe = bill.per_cycle if nfe_per_cycle is None else nfe_per_cycle
    hist = tuple(dict(r) for r in histograms)
    checks: list[Check] = []
    if budget.latency_budget_s is not None:
        checks.append(latency_check(budget.latency_budget_s, bill, projected_s=latency_s, measured=latency,
                                    source=latency_source))
    if budget.cost_budget_usd is not None:
        if cost_usd is None:
            checks.append(Check("cost", "unmeasured", None, budget.cost_budget_usd, "cost not projected"))
        else:
            ok = cost_usd <= budget.cost_budget_usd
            checks.append(Check("cost", "pass" if ok else "fail", cost_usd, budget.cost_budget_usd,
                                f"1,000 scenarios cost ${cost_usd:,.3f} ({_num(1000 * nfe)} NFE "
                                f"{'counted' if basis == 'measured' else 'billed'}, at {model or 'the stated model'}) "
                                f"against a ${budget.cost_budget_usd:,.2f} budget", basis))
    if gate is not None:
        outcome = str(gate["outcome"]).lower() if "outcome" in gate else ("pass" if gate["passed"] else "fail")
        if outcome not in ("pass", "fail", "undecided"):
            raise ValueError(f"gate outcome={outcome!r} is not one of ['pass', 'fail', 'undecided']")
        cov_check = Check("coverage", outcome, None, None, str(gate["text"]), "measured")
    else:
        cov_check = coverage_gate(hist, tail=tail, alpha=gate_alpha)
    if budget.coverage_gate:
        checks.append(cov_check)

    status = overall_status(c.status for c in checks)
    binding_check = next(c for c in checks if c.name == budget.binding)
    others = [c for c in checks if c is not binding_check and c.status != "pass"]
    sentence = (f"{title}: binding constraint {budget.binding} {binding_check.status.upper()} — "
                f"{binding_check.text}")
    if others:
        sentence += "; also " + "; ".join(f"{c.name} {c.status.upper()}: {c.text}" for c in others)
    if budget.binding != "coverage" and not budget.coverage_gate and cov_check.status != "unmeasured":
        sentence += f"; coverage (not gated here) {cov_check.status}: {cov_check.text}"
    rates = tuple({k: r.get(k) for k in ("group", "label", "count", "n", "n_eff", "rate", "lo", "hi", "truth")}
                  for r in hist)
    return Verdict(regime, budget.binding, status, sentence + ".", tuple(checks), basis, tail, model, rates)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


# ---------------------------------------------------------------------------------------------
# One verdict, projected or measured
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What a run measured that its verdict uses; everything else comes from the spec.

    nfe_per_cycle: the NFE the counter saw per planning cycle. histograms: the sampler's branch rows
    (no reference rows). gate: the world's release-gate outcome {outcome, text}, or None to judge the
    rows with ``coverage_gate``. latency: one planning cycle timed repeatedly, or None (then the
    latency stays a projection, from the counted NFE).
    """

    nfe_per_cycle: float
    histograms: tuple[Mapping[str, Any], ...] = ()
    gate: Mapping[str, Any] | None = None
    latency: LatencySample | None = None


def judge(spec: RunSpec, measured: Measured | None = None, *, model: ProductionModel | None = None,
          budget: RegimeBudget | None = None, sigmas: Sequence[float] | None = None,
          guided_fraction: float | None = None) -> Verdict:
    """THE verdict of a spec in its regime (spec.regime, 'offline' when unset), before a run
    (``measured=None``: projected) or after it (measured): one function over one set of inputs — the
    spec, the regime's production model (``production_model``; pass ``model`` only for a what-if) and
    what the run measured. Cost is always the production model's cost of the NFE per cycle (billed
    before, counted after), so projected and measured cost agree whenever the counter agrees with the bill.
    """
    regime = spec.regime or "offline"
    budget = budget or regime_budget(regime)
    model = model or production_model(regime)
    bill = bill_for(spec, sigmas=sigmas, guided_fraction=guided_fraction)
    nfe = bill.per_cycle if measured is None else float(measured.nfe_per_cycle)
    lat = project_latency(bill, model, budget.latency_budget_s or PLANNING_BUDGET_S)
    usd = 1000 * nfe * model.per_nfe_s / model.parallelism / 3600.0 * model.usd_per_hour
    about = f"a {model.name} at {model.describe()}, ${model.usd_per_hour:g}/h"
    return verdict(regime, bill, latency_s=lat.per_cycle_s * nfe / bill.per_cycle,
                   latency_source=f"for {about}", cost_usd=usd,
                   histograms=measured.histograms if measured else (), budget=budget,
                   gate=measured.gate if measured else None, latency=measured.latency if measured else None,
                   basis="measured" if measured else "projected", tail=world_tail(spec.world),
                   model=about, nfe_per_cycle=nfe, gate_alpha=spec.gate_alpha)


def judge_spec(spec: RunSpec, *, model: ProductionModel | None = None, histograms: Iterable[Mapping[str, Any]] = (),
               budget: RegimeBudget | None = None, sigmas: Sequence[float] | None = None,
               guided_fraction: float | None = None) -> Verdict:
    """The projected verdict of a spec (``judge`` without a run); ``histograms`` judges given branch
    rows at the billed NFE (a what-if for tests and the budget calculator)."""
    if histograms:
        bill = bill_for(spec, sigmas=sigmas, guided_fraction=guided_fraction)
        return judge(spec, Measured(bill.per_cycle, tuple(histograms)), model=model, budget=budget, sigmas=sigmas,
                     guided_fraction=guided_fraction)
    return judge(spec, model=model, budget=budget, sigmas=sigmas, guided_fraction=guided_fraction)


def counted_per_cycle(spec: RunSpec, nfe_counted: float, nfe_formula: float, cycles: float | None = None) -> float:
    """Counted NFE per planning cycle (per sample for a world without fan-out). Every RunResult reports
    NFE per run (``RunResult`` docstring; older mixture results are upgraded on read), so this is the
    run's count over the cycles it drew: ``spec.samples``, or for a sequential gate (``spec.gate_cap``)
    the ``cycles`` its result reports (metrics['cycles']), which a sequential spec requires.
    ``nfe_formula`` is accepted for callers that pass both."""
    if cycles is None or not cycles > 0:
        if spec.sequential:
            raise ValueError(f"gate_cap={spec.gate_cap!r}: a sequential run's NFE per cycle needs the cycles it "
                             f"drew (metrics['cycles']); got cycles={cycles!r}")
        cycles = spec.samples
    return nfe_counted / float(cycles)


def run_verdicts(spec: RunSpec, measured: Measured, *, sigmas: Sequence[float] | None = None) -> dict[str, Any]:
    """What a worker stores as a run's verdict: {'projected': ..., 'measured': ...}, both from ``judge``
    over the same spec, grid and production model, so the pages render them and never recompute."""
    try:
        return {"projected": judge(spec, sigmas=sigmas).to_dict(),
                "measured": judge(spec, measured, sigmas=sigmas).to_dict()}
    except ValueError:  # a guidance interval whose evaluation sigmas are not known torch-free (students)
        frac = min(max(measured.nfe_per_cycle / bill_for(spec, guided_fraction=0.0).per_cycle - 1.0, 0.0), 1.0)
        return {"projected": judge(spec, guided_fraction=frac).to_dict(),
                "measured": judge(spec, measured, guided_fraction=frac).to_dict()}


def measured_from(result: RunResult) -> Measured:
    """What a run's result says its verdict measured: the counted NFE per cycle, the sampler's branch
    rows (not the reference's), the world's release-gate outcome (``info['gate']``) and the repeated
    cycle timing (the ``latency`` row ``what='cycle'`` with its repeats and interval) when reported."""
    cycle = next((r for r in result.latency if r.get("what") == "cycle" and r.get("repeats")), None)
    sample = None if cycle is None else LatencySample(
        float(cycle["seconds"]), cycle.get("lo_s"), cycle.get("hi_s"), cycle.get("confidence"),
        int(cycle["repeats"]), str(cycle.get("device", result.device)), cycle.get("threads"), cycle.get("load"))
    return Measured(counted_per_cycle(result.spec, result.nfe_counted, result.nfe_formula,
                                      result.metrics.get("cycles")),
                    tuple(r for r in result.histograms if r.get("group") != "reference"), result.info.get("gate"),
                    sample)


def result_verdicts(result: RunResult) -> dict[str, Any]:
    """``run_verdicts`` of a finished run's result (what ``fastdiff_core.run.execute`` stores)."""
    return run_verdicts(result.spec, measured_from(result), sigmas=result.info.get("sigmas") or None)


def stored_verdicts(verdict: Mapping[str, Any] | None) -> tuple[Verdict | None, Verdict | None]:
    """(projected, measured) from a stored run's ``verdict`` (a worker's ``run_verdicts``); (None, None)
    when the run stored none, or a pre-``run_verdicts`` single verdict as (None, measured)."""
    if not verdict:
        return None, None
    if "measured" in verdict:
        p = verdict.get("projected")
        return (Verdict.from_dict(p) if p else None), Verdict.from_dict(verdict["measured"])
    return None, Verdict.from_dict(verdict)


# ---------------------------------------------------------------------------------------------
# Run time: a cost model fitted on measured runs, and the run guard
# ---------------------------------------------------------------------------------------------

MAX_RUN_S = 1800.0  # refuse a run estimated to take more than 30 minutes on the workers
RUNTIME_COVER = 0.80  # the run-time interval's nominal coverage
_Z80 = 1.2816  # two-sided normal quantile of RUNTIME_COVER


@dataclass(frozen=True)
class RuntimeEstimate:
    """A run's estimated wall time on the workers with an interval, and where the estimate comes from."""

    seconds: float
    lo: float
    hi: float
    source: str
    prior: bool
    setup_s: float = 0.0  # not in ``seconds``: cached work a seed's first run on a worker adds (Work.setup_nfe)
    setup_nfe: float = 0.0

    def describe(self) -> str:
        from_what = "a conservative prior (no run of this kind measured yet)" if self.prior else self.source
        setup = (f"; a seed's first run on a worker also samples the model's reference, {self.setup_nfe:,.0f} NFE, "
                 f"about {_dur(self.setup_s)} more" if self.setup_nfe > 0 else "")
        return (f"about {_dur(self.seconds)} ({_dur(self.lo)} to {_dur(self.hi)}, "
                f"{RUNTIME_COVER:.0%} interval; {from_what}){setup}")


@dataclass(frozen=True)
class Work:
    """What a run's wall time scales with: per-sample NFE (rows through the network), rollouts (the
    mixture's reference ODE solve, the driving world's branch labels and sample metrics) and sequential
    forwards (one batched network call each: on a CPU a call of 64 rows costs most of one of 320)."""

    nfe: float
    rollouts: float
    forwards: float
    setup_nfe: float = 0.0  # cached once per worker and seed, not per run (``setup_nfe``); not a fitted feature

    def features(self) -> tuple[float, float, float, float]:
        return (1.0, self.nfe, self.rollouts, self.forwards)


def runtime_kind(spec: RunSpec) -> tuple[str, str]:
    """(world, network) of a run: what its per-NFE cost depends on besides the machine. The network is
    the student, else the world's shipped network option (driving teacher, mixture preset), else a user's
    registered model (each its own kind: their costs differ by orders of magnitude)."""
    if spec.sampler == "student":
        return spec.world, f"student {spec.student}"
    opts = spec.world_options
    return spec.world, str(opts.get("teacher") or opts.get("preset") or spec.model or spec.world)


def work_of(spec: RunSpec, bill: NFEBill, cycles: float | None = None) -> Work:
    """The Work of a spec drawing ``cycles`` planning cycles (default ``spec.max_cycles``: a sequential
    gate's worst case, up to its cap): its NFE, its rollouts, and its sequential forwards — S x H per
    batch of rollouts (a planning cycle's P x R fan-out is one batch; the world's ``batch`` option, or
    all of a look's rollouts at once, otherwise; a sequential gate draws looks of ``samples`` cycles).
    Picard's NFE is its worst case, the bill x its window (the re-evaluations it may add; the run guard
    then errs on the side of refusing), and its forwards stay S x H (its iterations are at most S)."""
    cycles = spec.max_cycles if cycles is None else int(cycles)
    rollouts = cycles * spec.plans * spec.futures
    if spec.plans > 1:
        batches = cycles
    else:
        looks = max(1, cycles // spec.samples) if spec.sequential else 1
        look = rollouts // looks
        batches = looks * math.ceil(look / int(spec.world_options.get("batch") or look))
    return Work(bill.per_cycle * cycles * picard_window(spec), float(rollouts), bill.S * bill.H * batches,
                setup_nfe(spec))


def setup_nfe(spec: RunSpec) -> float:
    """NFE a run spends on work its worker then caches for later runs of the same seed: a world whose options
    declare a reference sampled by the model itself (the ``model`` world: Heun at ``reference_steps`` and at half
    as many, ``reference_samples`` each; NFE 2 x steps - 1 per sample). 0 for every other world."""
    opts = spec.world_options
    if "reference_samples" not in opts or "reference_steps" not in opts:
        return 0.0
    steps = int(opts["reference_steps"])
    return float(int(opts["reference_samples"]) * ((2 * steps - 1) + (2 * (steps // 2) - 1)))


@dataclass(frozen=True)
class RuntimeModel:
    """seconds = a + b NFE + c rollouts + d forwards (``coef``, all >= 0) for one kind of run (world,
    network, device, threads). ``log_sd``: the spread of log(measured / fitted), inflated for few runs."""

    coef: tuple[float, float, float, float]
    log_sd: float
    n_runs: int
    kind: str
    prior: bool = False
    params: int = 1  # free parameters fitted (1: the prior's shape rescaled)
    load_s: float = 0.0  # the part of the fixed term that is loading the network (a prior's; see fit_runtime)

    def seconds(self, work: Work) -> float:
        return max(sum(c * x for c, x in zip(self.coef, work.features())), 1e-6)

    def estimate(self, work: Work) -> RuntimeEstimate:
        mid = self.seconds(work)
        half = _Z80 * self.log_sd * math.sqrt(1.0 + self.params / max(self.n_runs, 1))
        src = f"fitted on {self.n_runs} measured run(s) of {self.kind}"
        per_nfe = max(mid - self.coef[0], 0.0) / work.nfe if work.nfe > 0 else 0.0  # this run's work, per NFE
        return RuntimeEstimate(mid, mid * math.exp(-half), mid * math.exp(half), src, self.prior,
                               per_nfe * work.setup_nfe, work.setup_nfe)


# Before any run of a kind: each world's terms measured on real runs spanning >= 100x in work on a quiet machine
# (tools/runtime_terms.py; docs/verdicts.md), lifted above every measured run, then x 20: the slowdown of the same
# run at load ~20 on the shared 2-core machine. The fixed term is the network's load on a worker's first run of a
# kind, x 20. Right in shape (how the terms weigh), so a kind's first few runs, which rescale it, fix the scale.
# ``load_s``: 20 x the cold run's extra seconds (the network's load and the imports of a process's first run); the
# rest of the fixed term (20 x the warm runs' fitted fixed seconds x the lift) is what every run pays.
RUNTIME_PRIORS: dict[str, RuntimeModel] = {
    "mixture": RuntimeModel((17.0, 3.4e-5, 3.6e-3, 0.0), math.log(4.0), 0, "mixture", prior=True, load_s=15.0),
    "driving": RuntimeModel((20.0, 7.0e-4, 3.2e-3, 3.8e-3), math.log(4.0), 0, "driving", prior=True,
                            load_s=19.8),
    "moving_digits": RuntimeModel((43.0, 5.7e-3, 0.058, 0.0), math.log(4.0), 0, "moving_digits", prior=True,
                                  load_s=43.0),
    # load_s 0: this prior's shape is per NFE where the digits world's cost grows with samples (its reference), so
    # a short run's load-free seconds against its work terms over-scaled a large run 5-6x (docs/verdicts.md)
    "digits": RuntimeModel((83.0, 0.045, 0.0, 0.0), math.log(4.0), 0, "digits", prior=True),
    # Not measured: a user's model's cost is unknown (and its reference sampling, cached per model, is not in
    # the bill). The fallback every world without a prior had before the priors above were measured, kept so
    # that the Explore form's default run of a user's model is not refused.
    "model": RuntimeModel((10.0, 3e-3, 0.06, 1.0), math.log(4.0), 0, "model", prior=True),
}


def runtime_prior(world: str) -> RuntimeModel:
    """The world's prior, or for a world without one (a plugin) the unmeasured fallback a user's model
    gets ("model": every term at its slowest over the mixture and driving worlds' old priors). Not the
    slowest term over every measured world: the digits UNet's cost per NFE made a plugin's default run
    estimate an hour and refused it."""
    if world in RUNTIME_PRIORS:
        return RUNTIME_PRIORS[world]
    fallback = RUNTIME_PRIORS["model"]
    return RuntimeModel(fallback.coef, fallback.log_sd, 0, world, prior=True)


_MIN_LOG_SD = math.log(1.3)  # run-to-run noise on a shared machine: never claim a tighter spread
_FEW_LOG_SD = math.log(1.5)  # ... and with fewer than four runs, a factor of 1.5 at least
_ONE_RUN_LOG_SD = math.log(3.0)  # one run fixes the scale, not the shape: a factor of 3 either way


def fit_runtime(runs: Sequence[tuple[Work, float] | tuple[Work, float, float | None]], kind: str,
                prior: RuntimeModel) -> RuntimeModel:
    """Fit a RuntimeModel to measured runs (work, seconds[, setup seconds]) of one kind.

    Fewer than four runs: the prior's shape, rescaled by the geometric mean of measured / prior (one
    scale parameter; the runs fix how fast this machine is, not how the terms weigh). A run that recorded its
    setup seconds (``metrics['setup_s']``: loading networks its worker then keeps) counts by its seconds
    without them, against the prior without its ``load_s`` (most of its fixed term); when every run did, the
    estimate leaves the load out too (it is of a run on a worker that has the network). A run without the
    record (stored before it existed) counts whole, against the whole prior. (A short run on a
    worker that had the network, against the whole prior, took the scale down with the fixed term: a run 50x
    larger was then estimated 5-16x too fast; docs/verdicts.md.) Four or more:
    least squares on relative error (each run counts by its ratio, so one long run does not decide a
    short one's estimate) over every subset of the four terms with coefficients >= 0 (exact
    non-negative least squares for four unknowns) and the rescaled prior, chosen by AIC on the log
    residuals; from five runs, a run a factor of 3 off a first fit is left out (a run slowed by a
    neighbour). Raises ValueError naming ``runs`` when none has positive work and seconds.
    """
    timed = [_steady(*r) for r in runs]
    usable = [r for r in timed if r[0].nfe > 0 and r[0].rollouts > 0 and r[1] > 0]
    if not usable:
        raise ValueError(f"runs={list(runs)!r}: need at least one run with nfe, rollouts and seconds > 0")
    coef, k = _fit(usable, prior)
    if len(usable) >= 5:
        keep = [r for r in usable if abs(math.log(r[1] / _seconds(coef, r[0]))) <= math.log(3.0)]
        if 4 <= len(keep) < len(usable):
            usable = keep
            coef, k = _fit(usable, prior)
    rows = [(w, s) for w, s, _ in usable]
    logs = [math.log(s / _seconds(coef, w)) for w, s in rows]
    if len(rows) == 1:
        sd = _ONE_RUN_LOG_SD
    else:
        sd = math.sqrt(sum(e * e for e in logs) / max(len(rows) - k, 1))
        sd = max(sd, _FEW_LOG_SD if len(rows) < 4 else _MIN_LOG_SD)
    return RuntimeModel(coef, sd, len(rows), kind, params=k)


def _seconds(coef: Sequence[float], work: Work) -> float:
    return max(sum(c * x for c, x in zip(coef, work.features())), 1e-9)


def _steady(work: Work, seconds: float, setup: float | None = None) -> tuple[Work, float, bool]:
    """(work, seconds without the setup, whether the setup was recorded) of one measured run."""
    if setup is None:
        return work, float(seconds), False
    return work, max(float(seconds) - float(setup), 1e-3 * float(seconds)), True


def _prior_scale(runs: list[tuple[Work, float, bool]], prior: RuntimeModel) -> float:
    """The geometric mean over runs of measured / prior seconds, a run with its setup recorded (and left out)
    against the prior without its load (when that is > 0), any other against the whole prior (``fit_runtime``)."""
    logs = []
    for work, seconds, steady in runs:
        whole = prior.seconds(work)
        without = whole - prior.load_s
        logs.append(math.log(seconds / (without if steady and without > 0 else whole)))
    return math.exp(sum(logs) / len(logs))


def _fit(rows: list[tuple[Work, float, bool]], prior: RuntimeModel) -> tuple[tuple[float, float, float, float], int]:
    """(coefficients, number of free parameters) of the best candidate by AIC (see ``fit_runtime``): the
    prior rescaled (``_prior_scale``), or from four runs a non-negative least-squares fit that beats it."""
    X = np.array([w.features() for w, _, _ in rows])
    y = np.array([s for _, s, _ in rows])
    base = np.array(prior.coef)
    rescaled = base * _prior_scale(rows, prior)
    if all(steady for _, _, steady in rows):  # the load left out of every run: the estimate is of a worker that has it
        rescaled[0] = max(prior.coef[0] - prior.load_s, 0.0) * rescaled[0] / max(prior.coef[0], 1e-12)
    best = (tuple(float(v) for v in rescaled), 1)
    if len(rows) < 4:
        return best

    def score(coef: np.ndarray, k: int) -> float:
        rss = float(np.sum(np.log(y / np.maximum(X @ coef, 1e-9)) ** 2))
        return len(rows) * math.log(rss / len(rows) + 1e-4) + 2 * k

    best_score = score(rescaled, 1)
    for size in range(1, min(4, len(rows) - 2) + 1):
        for cols in itertools.combinations(range(4), size):
            A = X[:, cols] / y[:, None]  # relative residuals: (A @ c) - 1
            sol, *_ = np.linalg.lstsq(A, np.ones(len(rows)), rcond=None)
            if (sol < 0).any():
                continue
            coef = np.zeros(4)
            coef[list(cols)] = sol
            if (X @ coef <= 0).any():
                continue
            sc = score(coef, size)
            if sc < best_score - 1e-9:
                best, best_score = (tuple(float(v) for v in coef), size), sc
    return best


def run_guard(estimate: RuntimeEstimate, *, max_run_s: float = MAX_RUN_S) -> str | None:
    """None when work estimated at ``estimate`` (a run, or a sweep's total) is short enough to queue,
    else the reason it is refused, with the numbers. Refuses on the estimate's middle; the interval is
    quoted so a near miss reads as one."""
    if not (math.isfinite(estimate.seconds) and estimate.seconds > 0):
        raise ValueError(f"estimate.seconds={estimate.seconds!r} must be a finite number > 0")
    if estimate.seconds <= max_run_s:
        return None
    return (f"refused: this would run for {estimate.describe()}, over the {max_run_s / 60:.0f} min limit; "
            "lower steps, horizon, plans x futures or samples")


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s" if seconds >= 1 else f"{seconds * 1000:,.0f} ms"
    return f"{seconds / 60:,.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"
