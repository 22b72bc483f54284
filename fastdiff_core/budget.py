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

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping, Sequence

from fastdiff_core import catalog
from fastdiff_core.metrics.gate import RELEASE_GATE, Estimate
from fastdiff_core.metrics.gate import coverage_gate as _gate
from fastdiff_core.spec import RunSpec

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
    fraction was an estimate the caller supplied rather than computed from the grid.
    """

    S: float
    C: float
    H: int
    P: int
    R: int
    cycles: int = 1
    exact: bool = True
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("S", "C"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a finite number > 0")
        if not 1.0 <= self.C <= 2.0:
            raise ValueError(f"C={self.C!r} must be in [1, 2] (guidance passes per evaluation)")
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
        return self.per_cycle * self.cycles

    def formula(self) -> str:
        """The bill as the seed writes it, e.g. '4 x 1 x 12 x 8 = 384'."""
        return (f"{_num(self.S)} x {_num(self.C)} x {self.H} x {self.fan_out} = {_num(self.per_cycle)}")

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
        if sigmas is None and spec.grid == "custom":
            sigmas = spec.grid_options["sigmas"]
        evals = None
        if sigmas is not None and spec.sampler == "solver":
            evals = evaluation_sigmas(spec.solver, sigmas, spec.steps)
        if evals is not None:
            frac = guided_fraction_from_sigmas(evals, spec.guidance_interval)
            notes.append(f"guidance interval covers {frac:.0%} of the {len(evals)} evaluations")
        elif guided_fraction is not None:
            if isinstance(guided_fraction, bool) or not isinstance(guided_fraction, (int, float)) \
                    or not 0.0 <= guided_fraction <= 1.0:
                raise ValueError(f"guided_fraction={guided_fraction!r} must be a number in [0, 1]")
            frac = float(guided_fraction)
            exact = False
            notes.append(f"guidance interval: {frac:.0%} of evaluations guided (caller's estimate)")
        else:
            raise ValueError(
                f"guidance_interval={list(spec.guidance_interval)} on grid={spec.grid!r}: pass sigmas= (the "
                "grid's sigmas) or guided_fraction= (share of evaluations inside the interval, in [0, 1])")
    return NFEBill(S=S, C=1.0 + frac, H=spec.horizon, P=spec.plans, R=spec.futures, cycles=spec.samples,
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

PLANNING_BUDGET_S = 0.100  # 10 Hz planning: one decision per 100 ms


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

Binding = Literal["coverage", "cost", "latency"]
Status = Literal["pass", "fail", "unmeasured"]


@dataclass(frozen=True)
class RegimeBudget:
    """A regime's binding constraint and thresholds (the dashboard lets users edit them).

    latency_budget_s: per planning cycle, None where latency is irrelevant. cost_budget_usd: per
    1,000 simulated scenarios, None where cost does not bind. coverage_gate: whether every
    ground-truth branch's true rate must lie inside the interval of its generated rate.
    nfe_per_frame: the seed's typical target band (advice, not a gate). lanes: the parallel lanes the
    regime's production projection assumes by default (closed-loop sim batches; planning is serial).
    """

    regime: str
    binding: Binding
    latency_budget_s: float | None
    cost_budget_usd: float | None
    coverage_gate: bool
    nfe_per_frame: tuple[int, int]
    lanes: int = 1

    def with_thresholds(self, **changes: Any) -> "RegimeBudget":
        d = asdict(self)
        d.update(changes)
        return RegimeBudget(**d)


REGIME_BUDGETS: dict[str, RegimeBudget] = {
    "offline": RegimeBudget("offline", "coverage", None, None, True, (20, 50)),
    # $0.15 per 1,000 scenarios at the default production model (10 ms/NFE, 8 batched lanes, $2/h):
    # a 4-8 NFE/frame student at H = 20 fits, a 30-NFE solver does not (the seed's ~7-8x).
    "closed_loop": RegimeBudget("closed_loop", "cost", None, 0.15, True, (4, 8), lanes=8),
    "planning": RegimeBudget("planning", "latency", PLANNING_BUDGET_S, None, False, (1, 4)),
}


def regime_budget(name: str) -> RegimeBudget:
    if name not in REGIME_BUDGETS:
        raise ValueError(f"regime={name!r} is not one of {sorted(REGIME_BUDGETS)}")
    return REGIME_BUDGETS[name]


@dataclass(frozen=True)
class Check:
    """One threshold checked: what, its status, the measured or projected value and the limit."""

    name: Binding
    status: Status
    value: float | None
    limit: float | None
    text: str


@dataclass(frozen=True)
class Verdict:
    """The regime's verdict: the binding constraint, pass/fail, the numbers, one quotable sentence."""

    regime: str
    binding: Binding
    status: Status
    sentence: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"regime": self.regime, "binding": self.binding, "status": self.status,
                "sentence": self.sentence, "checks": [asdict(c) for c in self.checks]}


def coverage_gate(rows: Iterable[Mapping[str, Any]], *, alpha: float = 0.05, leak_tolerance: float = 0.02) -> Check:
    """The coverage check of a verdict from histogram rows {group, label, n, rate, truth, n_eff?}: the one
    gate of ``metrics.gate`` (three outcomes, family-wise ``alpha``), judged on each row's own estimate
    (its possibly weighted rate at its effective sample size; raw counts play no part).

    Groups are the gate's scenes. The tail is 'darts' where present, else the label with the smallest
    positive truth (a world's rare mode); labels with truth 0 are leaks (at most ``leak_tolerance``).
    PASS -> 'pass', FAIL -> 'fail', UNDECIDED -> 'unmeasured' with the rollouts per group likely to decide.
    """
    rows = [r for r in rows if r.get("truth") is not None and r.get("n")]
    if not rows:
        return Check("coverage", "unmeasured", None, None, "coverage not measured yet (no branch histogram)")
    labels = {r["label"] for r in rows}
    tail = RELEASE_GATE.tail if RELEASE_GATE.tail in labels else min(
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
                     f"{len([c for c in branches if c['outcome'] == 'FAIL'])} of {scope} FAIL ({describe(shown)})")
    if result.outcome == "PASS":
        return Check("coverage", "pass", 0.0, 0.0, f"all {scope} PASS (tail {describe(min(tails, key=lambda c: c['truth']))})"
                     if tails else f"all {scope} PASS")
    open_ = [c for c in branches if c["outcome"] == "UNDECIDED"]
    shown = min(open_ or result.undecided, key=lambda c: c["truth"])
    needed = [v for v in result.more_samples_needed.values() if v is not None]
    more = (f"~{max(needed):,} rollouts per group likely to decide" if needed else "")
    if any(v is None for v in result.more_samples_needed.values()):
        more += ("; " if more else "") + "an estimate on a band edge may stay undecided at any n"
    return Check("coverage", "unmeasured", float(len(open_)), 0.0,
                 f"UNDECIDED on {len(open_)} of {scope} ({describe(shown) if shown['check'] != 'tv' else 'TV'}); {more}")


def verdict(regime: str, bill: NFEBill, *, latency_s: float | None = None, latency_source: str = "projected",
            cost_usd: float | None = None, histograms: Iterable[Mapping[str, Any]] = (),
            budget: RegimeBudget | None = None, gate: Mapping[str, Any] | None = None) -> Verdict:
    """Judge a configuration in its regime; the sentence names the binding constraint and the numbers.

    latency_s: planning-cycle latency (projected or measured; say which in ``latency_source``).
    cost_usd: per 1,000 scenarios. histograms: branch rows for the coverage gate. A check without
    its number is 'unmeasured'; the verdict fails if any required check fails, passes if all
    required checks pass, and is otherwise unmeasured. gate: {passed, text} of a runner's full release
    gate (metrics.gate); when given it replaces the histogram-only coverage check.
    """
    budget = budget or regime_budget(regime)
    title = catalog.REGIMES[regime].title if regime in catalog.REGIMES else regime
    checks: list[Check] = []
    if budget.latency_budget_s is not None:
        if latency_s is None:
            checks.append(Check("latency", "unmeasured", None, budget.latency_budget_s, "latency not measured"))
        else:
            ratio = latency_s / budget.latency_budget_s
            ok = latency_s <= budget.latency_budget_s
            rel = (f"{ratio:.1f}x over" if not ok else f"{ratio:.0%} of")
            checks.append(Check("latency", "pass" if ok else "fail", latency_s, budget.latency_budget_s,
                                f"the planning cycle takes {_ms(latency_s)} ({latency_source}; "
                                f"{bill.formula()} NFE), {rel} the {_ms(budget.latency_budget_s)} budget"))
    if budget.cost_budget_usd is not None:
        if cost_usd is None:
            checks.append(Check("cost", "unmeasured", None, budget.cost_budget_usd, "cost not projected"))
        else:
            ok = cost_usd <= budget.cost_budget_usd
            checks.append(Check("cost", "pass" if ok else "fail", cost_usd, budget.cost_budget_usd,
                                f"1,000 scenarios cost ${cost_usd:,.3f} ({_num(1000 * bill.per_cycle)} NFE) "
                                f"against a ${budget.cost_budget_usd:,.2f} budget"))
    gate_status = {"PASS": "pass", "FAIL": "fail", "UNDECIDED": "unmeasured"}.get(
        str((gate or {}).get("outcome")), "pass" if (gate or {}).get("passed") else "fail")
    cov_check = (Check("coverage", gate_status, None, None, str(gate["text"]))
                 if gate is not None else coverage_gate(histograms))
    if budget.coverage_gate:
        checks.append(cov_check)

    statuses = [c.status for c in checks]
    status: Status = "fail" if "fail" in statuses else ("unmeasured" if "unmeasured" in statuses else "pass")
    binding_check = next(c for c in checks if c.name == budget.binding)
    others = [c for c in checks if c is not binding_check and c.status != "pass"]
    sentence = (f"{title}: binding constraint {budget.binding} {binding_check.status.upper()} — "
                f"{binding_check.text}")
    if others:
        sentence += "; also " + "; ".join(f"{c.name} {c.status.upper()}: {c.text}" for c in others)
    if budget.binding != "coverage" and not budget.coverage_gate:
        cov = cov_check
        if cov.status != "unmeasured":
            sentence += f"; coverage (not gated here) {cov.status}: {cov.text}"
    return Verdict(regime, budget.binding, status, sentence + ".", tuple(checks))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def judge_spec(spec: RunSpec, *, model: ProductionModel = ProductionModel(), histograms: Iterable[Mapping[str, Any]] = (),
               budget: RegimeBudget | None = None, sigmas: Sequence[float] | None = None,
               guided_fraction: float | None = None) -> Verdict:
    """The verdict for a spec in its regime (spec.regime, 'offline' when unset) at a production model."""
    regime = spec.regime or "offline"
    bill = bill_for(spec, sigmas=sigmas, guided_fraction=guided_fraction)
    budget = budget or regime_budget(regime)
    lat = project_latency(bill, model, budget.latency_budget_s or PLANNING_BUDGET_S)
    usd, _ = cost_per_1000_scenarios(bill, model)
    return verdict(regime, bill, latency_s=lat.per_cycle_s,
                   latency_source=f"projected for a {model.name} at {model.describe()}",
                   cost_usd=usd, histograms=histograms, budget=budget)


# ---------------------------------------------------------------------------------------------
# The run guard
# ---------------------------------------------------------------------------------------------

MAX_RUN_S = 1800.0  # refuse a run projected to take more than 30 minutes on the workers


def run_guard(nfe: float, seconds_per_nfe: float, *, max_run_s: float = MAX_RUN_S) -> str | None:
    """None when work of ``nfe`` per-sample NFE (a run's ``per_run``, or a sweep's total) is short
    enough to queue, else the reason it is refused, with the numbers.

    seconds_per_nfe: wall seconds per per-sample NFE on the workers (measured from stored runs of the
    same world when there are any).
    """
    if not (isinstance(seconds_per_nfe, (int, float)) and math.isfinite(seconds_per_nfe) and seconds_per_nfe > 0):
        raise ValueError(f"seconds_per_nfe={seconds_per_nfe!r} must be a finite number > 0")
    est = nfe * seconds_per_nfe
    if est <= max_run_s:
        return None
    return (f"refused: {_num(nfe)} NFE at {seconds_per_nfe:.2g} s per NFE would run for about "
            f"{est / 3600:.1f} h (limit {max_run_s / 60:.0f} min); lower steps, horizon, plans x futures or samples")


def judge_measured(spec: RunSpec, bill: NFEBill, *, cycle_latency_s: float, seconds_per_nfe: float, device: str,
                   histograms: Iterable[Mapping[str, Any]] = (), usd_per_hour: float = ProductionModel().usd_per_hour,
                   budget: RegimeBudget | None = None, gate: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict of a run that was measured (not projected): the planning-cycle latency it took on
    ``device`` and the cost per 1,000 scenarios at its measured seconds per per-sample NFE (one lane,
    as run), in the regime ``spec.regime`` ('offline' when unset)."""
    regime = spec.regime or "offline"
    measured = ProductionModel(per_nfe_s=seconds_per_nfe, parallelism=1, usd_per_hour=usd_per_hour,
                               name=f"this run on {device}")
    usd, _ = cost_per_1000_scenarios(bill, measured)
    return verdict(regime, bill, latency_s=cycle_latency_s, latency_source=f"measured on {device}",
                   cost_usd=usd, histograms=histograms, budget=budget, gate=gate)
