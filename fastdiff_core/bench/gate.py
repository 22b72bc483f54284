"""``fastdiff bench gate``: the coverage gate's operating characteristics, by simulation.

Samplers are simulated from the exact branch rates of the eight driving scenes (action ``keep``,
H = 6; ``worlds.driving.scenes.branch_probabilities``), each scene's labels drawn multinomially:

- ``perfect``: the exact rates;
- ``tail x0.75`` / ``x0.5`` / ``x0``: the tail (darts) rate scaled, the other branches rescaled in
  proportion so the rates sum to 1;
- ``implausible 1%`` / ``3.5%`` / ``5%``: that share of rollouts moved to 'implausible', every branch
  scaled by (1 - share);
- ``teacher identical`` / ``teacher halved``: a student with the exact rates / with the tail halved,
  gated by ``teacher_gate`` against a perfect teacher sampled at the same n (fixed mode) or in the
  same batches (sequential mode).

Fixed mode: Clopper-Pearson at n rollouts per scene. Sequential mode: batches whose sizes grow by
``growth`` from ``first_batch`` (looks at n = 250, 312, 391, ... rollouts per scene), the confidence
sequence intersected over looks, each scene sampled until its checks are all decided, all sampling
stopping at the first FAIL, at most ``cap`` per scene. ``mean_rollouts`` is rollouts per scene
(averaged over scenes, then trials); ``p95_rollouts`` its 95th percentile over trials.
A driving run's own sequential gate (``RunSpec.gate_cap``) judges one scene per run with equal looks
(``EqualLooks``): ``simulate_sequential(..., scenes=(scene,))`` simulates it.
The core (``operating_characteristics``, ``weighted_characteristics``) returns rows;
``fastdiff_cli.bench_gate`` parses the flags, prints them and draws the plot.

``--weighted``: importance-weighted rates (``simulate_weighted``, ``weighted_characteristics``): the
gate's family-wise miss rate and wrong decisions with Kish's n_eff and with each label's own
effective n, in a latent-Gaussian model of the tail proposal pointed at the tail and away from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from fastdiff_core.metrics.gate import RELEASE_GATE, GateConfig, GateLayout, combine, intervals
from fastdiff_core.metrics.intervals import label_effective_n, quantile, snis_rate_variance
from fastdiff_core.worlds.driving import (
    BRANCHES,
    IMPLAUSIBLE,
    LABELS,
    SCENES,
    TAIL,
    branch_probabilities,
    plan_branch_probabilities,
)

FIXED_N: tuple[int, ...] = (300, 1000, 4000)
SAMPLERS: tuple[str, ...] = ("perfect", "tail x0.75", "tail x0.5", "tail x0", "implausible 1%", "implausible 3.5%",
                             "implausible 5%", "teacher identical", "teacher halved")


@dataclass(frozen=True)
class Schedule:
    """Sequential looks: the first batch, the growth factor of cumulative n, the cap per scene."""

    first_batch: int = 250
    growth: float = 1.25
    cap: int = 32000

    def __post_init__(self) -> None:
        if isinstance(self.first_batch, bool) or not isinstance(self.first_batch, int) or self.first_batch < 1:
            raise ValueError(f"first_batch={self.first_batch!r} must be an integer >= 1")
        if not (isinstance(self.growth, (int, float)) and 1.0 < self.growth <= 4.0):
            raise ValueError(f"growth={self.growth!r} must be in (1, 4]")
        if isinstance(self.cap, bool) or not isinstance(self.cap, int) or self.cap < self.first_batch:
            raise ValueError(f"cap={self.cap!r} must be an integer >= first_batch={self.first_batch}")

    def looks(self) -> np.ndarray:
        out = [self.first_batch]
        while out[-1] < self.cap:
            out.append(min(self.cap, max(out[-1] + 1, round(out[-1] * self.growth))))
        return np.array(out)


@dataclass(frozen=True)
class EqualLooks:
    """The product runner's looks (``RunSpec.gate_cap``): ``look`` rollouts each, up to ``cap`` (a multiple)."""

    look: int
    cap: int

    def __post_init__(self) -> None:
        if isinstance(self.look, bool) or not isinstance(self.look, int) or self.look < 1:
            raise ValueError(f"look={self.look!r} must be an integer >= 1")
        if isinstance(self.cap, bool) or not isinstance(self.cap, int) or self.cap < self.look or self.cap % self.look:
            raise ValueError(f"cap={self.cap!r} must be a multiple of look={self.look}")

    def looks(self) -> np.ndarray:
        return np.arange(self.look, self.cap + 1, self.look)


def truth_table(action: str = "keep", horizon: int = 6, scenes: tuple[str, ...] = tuple(SCENES)) -> np.ndarray:
    """(scenes, labels) exact rates, labels = waits, crosses, darts, implausible (0)."""
    return np.array([[branch_probabilities(SCENES[sc], action, horizon)[b] for b in BRANCHES] + [0.0]
                     for sc in scenes])


def plan_truth_table(scene: str, plans) -> np.ndarray:
    """(plans, labels) exact rates of candidate plans (action indices per frame) in one scene: the family
    a planning run's sequential gate judges (``rollout_runner``: the first cycle's candidates)."""
    return np.array([[plan_branch_probabilities(SCENES[scene], plan)[b] for b in BRANCHES] + [0.0]
                     for plan in plans])


def sampler_rates(name: str, truth: np.ndarray) -> np.ndarray:
    """The simulated sampler's (scenes, labels) rates (see the module doc)."""
    tail = LABELS.index(TAIL)
    if name in ("perfect", "teacher identical"):
        return truth.copy()
    if name.startswith("tail x") or name == "teacher halved":
        factor = 0.5 if name == "teacher halved" else float(name.removeprefix("tail x"))
        out = truth.copy()
        others = [i for i, b in enumerate(BRANCHES) if i != tail]
        out[:, tail] *= factor
        rest = 1.0 - out[:, tail]
        out[:, others] *= (rest / truth[:, others].sum(1))[:, None]
        return out
    if name.startswith("implausible "):
        share = float(name.removeprefix("implausible ").rstrip("%")) / 100
        out = truth * (1.0 - share)
        out[:, LABELS.index(IMPLAUSIBLE)] = share
        return out
    raise ValueError(f"sampler={name!r} is not one of {list(SAMPLERS)}")


def _layout(config: GateConfig, sampled: bool, truth: np.ndarray, scenes: tuple[str, ...] = tuple(SCENES)
            ) -> GateLayout:
    labels = {s: list(LABELS) for s in scenes}
    zero = {s: ({IMPLAUSIBLE} if not sampled else set()) | {b for j, b in enumerate(BRANCHES) if truth[i, j] == 0}
            for i, s in enumerate(scenes)}
    return GateLayout.build(labels, zero, config, sampled)


def _draw(rng: np.random.Generator, rates: np.ndarray, sizes: np.ndarray, trials: int) -> np.ndarray:
    """Cumulative counts (trials, looks, scenes * labels) for batches of ``sizes`` per scene."""
    out = np.stack([rng.multinomial(sizes, p, size=(trials, len(sizes))) for p in rates], 2)  # (T, K, S, L)
    return np.cumsum(out, 1).reshape(trials, len(sizes), -1).astype(float)


def _reference(layout: GateLayout, truth: np.ndarray, teacher_x: np.ndarray | None, n: np.ndarray, method: str):
    keep = layout.reference_interval
    if teacher_x is None:
        p = np.where(keep, 0.0, truth.reshape(-1))  # exact truth (leaks 0)
        return p, p
    lo, hi = intervals(teacher_x, np.broadcast_to(n, teacher_x.shape), layout.alpha_per_interval, method)
    return np.where(keep, lo, 0.0), np.where(keep, hi, 0.0)


def simulate_fixed(sampler: str, n: int, trials: int, seed: int, config: GateConfig = RELEASE_GATE,
                   truth: np.ndarray | None = None) -> np.ndarray:
    """Gate codes (trials,) at n rollouts per scene: 1 PASS, -1 FAIL, 0 UNDECIDED."""
    truth = truth_table() if truth is None else truth
    rng = np.random.default_rng(seed)
    sampled = sampler.startswith("teacher")
    layout = _layout(config, sampled, truth)
    sizes = np.array([n])
    x = _draw(rng, sampler_rates(sampler, truth), sizes, trials)[:, 0]
    teacher = _draw(rng, truth, sizes, trials)[:, 0] if sampled else None
    ref_lo, ref_hi = _reference(layout, truth, teacher, np.array(float(n)), "fixed")
    lo, hi = intervals(x, np.full_like(x, n), layout.alpha_per_interval, "fixed")
    _, _, per_scene = layout.evaluate(lo, hi, ref_lo, ref_hi)
    return np.where((per_scene == -1).any(1), -1, np.where((per_scene == 1).all(1), 1, 0))


def simulate_sequential(sampler: str, schedule: Schedule | EqualLooks, trials: int, seed: int,
                        config: GateConfig = RELEASE_GATE, truth: np.ndarray | None = None,
                        scenes: tuple[str, ...] = tuple(SCENES), joint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(gate codes (trials,), rollouts per scene averaged over scenes (trials,)) under ``schedule``, over
    ``scenes`` (one family; ``truth`` their rows, default ``truth_table(scenes=scenes)``). ``joint``: every
    scene (plan) is sampled in every look until the whole gate stops, as a planning cycle samples all its
    plans at once (the decisions are the same: a decided check never changes; only the rollouts differ)."""
    truth = truth_table(scenes=scenes) if truth is None else truth
    rng = np.random.default_rng(seed)
    sampled = sampler.startswith("teacher")
    layout = _layout(config, sampled, truth, scenes)
    looks = schedule.looks()
    sizes = np.diff(looks, prepend=0)
    n = looks.astype(float)[None, :, None]
    x = _draw(rng, sampler_rates(sampler, truth), sizes, trials)
    lo, hi = intervals(x, np.broadcast_to(n, x.shape), layout.alpha_per_interval, "sequential")
    lo, hi = np.maximum.accumulate(lo, 1), np.minimum.accumulate(hi, 1)  # intersection over looks
    if sampled:
        ref_lo, ref_hi = _reference(layout, truth, _draw(rng, truth, sizes, trials), n, "sequential")
        ref_lo, ref_hi = np.maximum.accumulate(ref_lo, 1), np.minimum.accumulate(ref_hi, 1)
    else:
        ref_lo, ref_hi = _reference(layout, truth, None, n, "sequential")
    codes, tv, _ = layout.evaluate(lo, hi, ref_lo, ref_hi)  # (T, K, C), (T, K, S)
    scenes = len(layout.scenes)
    last = len(looks) - 1
    stop = np.empty((trials, scenes), dtype=int)
    fail_at = np.full((trials, scenes), np.iinfo(int).max)
    final = np.empty((trials, scenes), dtype=int)
    for s in range(scenes):
        c = np.concatenate([codes[..., layout.scene_of == s], tv[..., s:s + 1]], -1)  # (T, K, checks of s)
        decided = (c != 0).all(-1)
        stop[:, s] = np.where(decided.any(1), decided.argmax(1), last)
        failed = (c == -1).any(-1)
        first_fail = np.where(failed.any(1), failed.argmax(1), np.iinfo(int).max)
        fail_at[:, s] = np.where(first_fail <= stop[:, s], first_fail, np.iinfo(int).max)
        at_stop = c[np.arange(trials), stop[:, s]]
        final[:, s] = np.where((at_stop == 1).all(-1), 1, 0)
    any_fail = fail_at.min(1)
    end = np.minimum(any_fail, stop.max(1))  # all sampling stops at the first FAIL
    outcome = np.where(any_fail < np.iinfo(int).max, -1, np.where((final == 1).all(1), 1, 0))
    rollouts = looks[end].astype(float) if joint else looks[np.minimum(stop, end[:, None])].mean(1)
    return outcome, rollouts


# --- importance-weighted rates: Kish's n_eff against each label's own effective n -------------------------

WEIGHTED_LABELS: tuple[str, ...] = ("crosses", "waits", "darts", "implausible")
PROPOSAL_BETA = 0.5  # rollout.TailProposal's default defensive share


def weighted_truth(p_tail: float, factor: float = 1.0) -> np.ndarray:
    """(crosses, waits, darts, implausible) of a sampler whose tail is ``factor`` x ``p_tail``."""
    crosses = 0.6 * (1 - p_tail)
    return np.array([crosses, 1 - crosses - factor * p_tail, factor * p_tail, 0.0])


def simulate_weighted(p_tail: float, factor: float, n: int, mu: float, trials: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rates (T, 4), each label's own effective n (T, 4), Kish's n_eff (T,)) of T importance-weighted
    runs of n rollouts in a latent-Gaussian model of the driving tail proposal: a rollout's noise
    z ~ N(0, 1) decides its branch (darts z > a, crosses z < b, waits between; ``weighted_truth``), drawn
    from the defensive mixture (1 - beta) N(0, 1) + beta N(mu, 1) of ``rollout.TailProposal`` with
    w = p / q <= 1 / (1 - beta). mu > 0 points the proposal at the tail, mu < 0 away from it. The rows
    are the product's (``snis_rate_variance``, ``label_effective_n``)."""
    rng = np.random.default_rng(seed)
    rates = weighted_truth(p_tail, factor)
    a, b = norm.isf(rates[2]), norm.ppf(rates[0])
    z = rng.standard_normal((trials, n)) + mu * (rng.random((trials, n)) < PROPOSAL_BETA)
    w = 1.0 / ((1 - PROPOSAL_BETA) + PROPOSAL_BETA * np.exp(mu * z - mu * mu / 2))
    masks = [z < b, (z >= b) & (z <= a), z > a]  # crosses, waits, darts; implausible never
    none = [np.zeros(trials)]
    s_k = np.stack([(w * m).sum(1) for m in masks] + none, 1)
    q_k = np.stack([(w * w * m).sum(1) for m in masks] + none, 1)
    count = np.stack([m.sum(1) for m in masks] + none, 1)
    s, q = s_k.sum(1, keepdims=True), q_k.sum(1, keepdims=True)
    kish = (s * s / q)[:, 0]
    r = s_k / s
    return r, label_effective_n(r, snis_rate_variance(s_k, q_k, s, q), count, n, kish[:, None]), kish


def weighted_layout(config: GateConfig = RELEASE_GATE) -> GateLayout:
    return GateLayout.build({"s": list(WEIGHTED_LABELS)}, {"s": {IMPLAUSIBLE}}, config, sampled_reference=False)


def weighted_decisions(r: np.ndarray, n_eff: np.ndarray, truth: np.ndarray, config: GateConfig = RELEASE_GATE
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(family-wise miss (T,) bool: some interval misses its true rate; gate codes (T,)) at (r, n_eff)."""
    layout = weighted_layout(config)
    lo, hi = intervals(r * n_eff, n_eff, layout.alpha_per_interval, "fixed")
    miss = ((lo > truth) | (hi < truth)).any(1)
    codes, tv, _ = layout.evaluate(lo, hi, truth, truth)
    return miss, combine(np.concatenate([codes, tv], 1))


def weighted_characteristics(trials: int = 4000, seed: int = 0, ns: tuple[int, ...] = (300, 1000, 4000),
                             tails: tuple[float, ...] = (0.139, 0.04), mus: tuple[float, ...] = (2.0, -1.0),
                             config: GateConfig = RELEASE_GATE) -> list[dict]:
    """Per (tail, n, mu) and effective n (Kish / per label): the family-wise miss rate of the gate's
    intervals, the perfect sampler's FAIL rate, the halved tail's PASS and FAIL rates, and the median
    effective n of the tail check."""
    rows = []
    for i, (p, n, mu) in enumerate((p, n, mu) for p in tails for n in ns for mu in mus):
        truth = weighted_truth(p)
        perfect = simulate_weighted(p, 1.0, n, mu, trials, seed + 2 * i)
        halved = simulate_weighted(p, 0.5, n, mu, trials, seed + 2 * i + 1)
        for kind in ("kish", "label"):
            def n_of(sim):
                return sim[1] if kind == "label" else np.broadcast_to(sim[2][:, None], sim[0].shape)
            miss, codes = weighted_decisions(perfect[0], n_of(perfect), truth, config)
            _, codes_h = weighted_decisions(halved[0], n_of(halved), truth, config)
            rows.append({"tail": p, "n": n, "mu": mu, "effective_n": kind, "trials": trials,
                         "family_miss": float(miss.mean()), "perfect_fail": float((codes == -1).mean()),
                         "halved_pass": float((codes_h == 1).mean()), "halved_fail": float((codes_h == -1).mean()),
                         "tail_n_eff": float(np.median(n_of(perfect)[:, 2]))})
    return rows


def _row(mode: str, n: int | None, sampler: str, codes: np.ndarray, rollouts: np.ndarray) -> dict:
    return {"mode": mode, "n": n, "sampler": sampler, "trials": int(codes.size),
            "pass_rate": float((codes == 1).mean()), "fail_rate": float((codes == -1).mean()),
            "undecided_rate": float((codes == 0).mean()), "mean_rollouts": float(rollouts.mean()),
            "p95_rollouts": quantile(rollouts, 0.95)}


def operating_characteristics(trials: int = 1000, seed: int = 0, ns: tuple[int, ...] = FIXED_N,
                              schedule: Schedule = Schedule(), samplers: tuple[str, ...] = SAMPLERS,
                              config: GateConfig = RELEASE_GATE) -> list[dict]:
    """Pass / fail / undecided rates per (mode, n, sampler), and the rollouts drawn."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} must be an integer >= 1")
    for s in samplers:
        sampler_rates(s, truth_table())  # validates the name before any work
    rows = []
    for i, sampler in enumerate(samplers):
        for j, n in enumerate(ns):
            codes = simulate_fixed(sampler, n, trials, seed + 1000 * i + j, config)
            rows.append(_row("fixed", n, sampler, codes, np.full(trials, float(n))))
        codes, rollouts = simulate_sequential(sampler, schedule, trials, seed + 1000 * i + 999, config)
        rows.append(_row("sequential", None, sampler, codes, rollouts))
    return rows
