"""The coverage gate: an equivalence decision with three outcomes and stated error rates.

Every check judges one rate q of one (scene, label) through a simultaneous interval [lo, hi] against
its accepted band around the reference rate r. With the band edges

    L(r) = max(0, r - max(rel * r, abs)),   U(r) = min(1, r + max(rel * r, abs))   (monotone in r)

and the reference known only as an interval [r_lo, r_hi] (a teacher's sampled rates; exact truth is
r_lo = r_hi = r, the same code path):

    PASS       iff  lo >= L(r_hi) and hi <= U(r_lo)   (inside the band wherever the reference is)
    FAIL       iff  hi <  L(r_lo) or  lo >  U(r_hi)   (outside the band wherever the reference is)
    UNDECIDED  otherwise (with the total n per scene at which the current estimate would decide it).

The checks, with the release tolerances (``RELEASE_GATE``):
- tail (``darts``): rel 25%, abs 0.5 point (the wider of the two; a 0.16% tail cannot be told to 25%);
- every other branch: +-2 points;
- leaks (``implausible``, and any label the reference never produces): reference 0, band [0, 2%],
  i.e. PASS iff hi <= 2%, FAIL iff lo > 2% — the limit is an upper bound that must be shown;
- per-scene TV <= 5%, with bounds derived from the same intervals, no extra alpha:
  TV_hi = 0.5 sum max(hi - r_lo, r_hi - lo), TV_lo = 0.5 sum max(0, lo - r_hi, r_lo - hi).
  With these tolerances all branch checks passing implies TV <= 0.5 sum of band half-widths
  <= 0.048 < 0.05 on every driving scene, so TV adds only a FAIL route (for a distribution wrong in
  many small ways at once).

The gate FAILs if any check FAILs, PASSes if all PASS, else is UNDECIDED. Error control: every
interval (the sample's, and the reference's when it is sampled) is at level alpha / m, Bonferroni
over all m intervals, so with probability >= 1 - alpha all of them cover their true rates at once;
on that event no check is decided wrongly. Hence a sampler whose every true rate lies inside its
band FAILs with probability <= alpha, and one with some true rate outside its band PASSes with
probability <= alpha (both checked by simulation: ``fastdiff bench gate``, tests/test_gate.py).
Family alpha 0.05 by default.

Intervals: ``method="fixed"`` — exact Clopper-Pearson, valid for one look at a sample size fixed in
advance; ``method="sequential"`` — the beta-binomial confidence sequence (``intervals.beta_binomial_cs``,
Robbins 1970; Howard et al. 2021), valid under any number of looks, used by ``SequentialGate`` to
sample in batches until every check is decided or a cap is reached.

Inputs per (scene, label): raw counts (the scene's n is their sum) or ``Estimate(rate, n_eff)`` for
importance-weighted runs, taken as rate * n_eff successes out of n_eff trials: a binomial proportion
with the estimator's own variance. Weighted runs give each label its own effective n, r (1 - r) / var
from the delta-method variance (``intervals.label_effective_n``; Kish's (sum w)^2 / sum w^2 where a
label has too few rollouts to trust its variance). Simulated (``fastdiff bench gate --weighted``,
docs/importance.md) the family-wise miss rate stays at most 3.3% with it, where Kish's single n_eff
reaches 5.6% for a label the proposal undersamples. It is an approximation (normal, one look), not
anytime-valid: weighted runs are gated at fixed n only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from fastdiff_core.metrics.intervals import beta_binomial_cs, clopper_pearson

Outcome = Literal["PASS", "FAIL", "UNDECIDED"]
Method = Literal["fixed", "sequential"]
OUTCOMES: dict[int, Outcome] = {1: "PASS", -1: "FAIL", 0: "UNDECIDED"}
METHODS: tuple[str, ...] = ("fixed", "sequential")


class Estimate(NamedTuple):
    """An importance-weighted branch rate with its effective sample size (the label's own, see the module doc)."""

    rate: float
    n_eff: float


@dataclass(frozen=True)
class GateConfig:
    """The gate's family-wise error rate and its stated tolerances (see the module doc)."""

    alpha: float = 0.05
    tail: str = "darts"
    tail_tolerance: float = 0.25
    tail_tolerance_abs: float = 0.005
    branch_tolerance: float = 0.02
    leak_labels: tuple[str, ...] = ("implausible",)
    leak_tolerance: float = 0.02
    tv_tolerance: float = 0.05

    def __post_init__(self) -> None:
        for name, lo, hi in (("alpha", 0.0, 0.5), ("tail_tolerance", 0.0, 1.0), ("tail_tolerance_abs", 0.0, 1.0),
                             ("branch_tolerance", 0.0, 1.0), ("leak_tolerance", 0.0, 1.0),
                             ("tv_tolerance", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v < hi) or (
                    name == "alpha" and v == 0):
                raise ValueError(f"{name}={v!r} must be in [{lo}, {hi})" + (" and > 0" if name == "alpha" else ""))
        if not isinstance(self.leak_labels, tuple) or not all(isinstance(x, str) for x in self.leak_labels):
            raise ValueError(f"leak_labels={self.leak_labels!r} must be a tuple of label names")
        if self.tail in self.leak_labels:
            raise ValueError(f"tail={self.tail!r} must not be one of leak_labels={self.leak_labels!r}")

    def tolerance_text(self, kind: str) -> str:
        if kind == "tail":
            return f"±{self.tail_tolerance:.0%} relative or ±{self.tail_tolerance_abs * 100:g} point (the wider)"
        if kind == "branch":
            return f"±{self.branch_tolerance * 100:g} points"
        if kind == "leak":
            return f"at most {self.leak_tolerance:.1%}"
        return f"TV at most {self.tv_tolerance:g}"


# The release gate of the shipped driving teacher: the defaults above.
RELEASE_GATE = GateConfig()


@dataclass(frozen=True)
class GateResult:
    """The gate's outcome, every check as a row (with its band), and what would decide the rest."""

    outcome: Outcome
    alpha: float
    alpha_per_interval: float
    tv_limit: float
    method: Method
    checks: tuple[Mapping, ...] = field(default_factory=tuple)
    more_samples_needed: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True only on PASS (an UNDECIDED gate has not passed)."""
        return self.outcome == "PASS"

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha_per_interval

    @property
    def failures(self) -> list[Mapping]:
        return [c for c in self.checks if c["outcome"] == "FAIL"]

    @property
    def undecided(self) -> list[Mapping]:
        return [c for c in self.checks if c["outcome"] == "UNDECIDED"]

    def summary(self) -> dict:
        """The outcome in a few JSON fields (what a run stores and a verdict quotes)."""
        return {"outcome": self.outcome, "passed": self.passed, "alpha": self.alpha, "method": self.method,
                "tv_limit": self.tv_limit, "confidence": self.confidence,
                "failures": [dict(f) for f in self.failures], "undecided": [dict(u) for u in self.undecided],
                "more_samples_needed": dict(self.more_samples_needed)}


def band_edges(r: np.ndarray, rel: np.ndarray, tol_abs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L(r), U(r): the accepted band around a reference rate r, both monotone in r, clipped to [0, 1]."""
    half = np.maximum(rel * r, tol_abs)
    return np.clip(r - half, 0.0, 1.0), np.clip(r + half, 0.0, 1.0)


def decide(lo: np.ndarray, hi: np.ndarray, ref_lo: np.ndarray, ref_hi: np.ndarray, rel: np.ndarray,
           tol_abs: np.ndarray) -> np.ndarray:
    """Elementwise three-outcome decision: 1 PASS, -1 FAIL, 0 UNDECIDED (see the module doc)."""
    lower_pass, _ = band_edges(ref_hi, rel, tol_abs)
    _, upper_pass = band_edges(ref_lo, rel, tol_abs)
    lower_fail, _ = band_edges(ref_lo, rel, tol_abs)
    _, upper_fail = band_edges(ref_hi, rel, tol_abs)
    failed = (hi < lower_fail) | (lo > upper_fail)
    passed = (lo >= lower_pass) & (hi <= upper_pass)
    return np.where(failed, -1, np.where(passed, 1, 0))


def combine(codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """The gate over checks along ``axis``: FAIL if any FAILs, PASS if all PASS, else UNDECIDED."""
    return np.where((codes == -1).any(axis), -1, np.where((codes == 1).all(axis), 1, 0))


def intervals(successes: np.ndarray, n: np.ndarray, alpha: float, method: Method) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {list(METHODS)}")
    return (clopper_pearson if method == "fixed" else beta_binomial_cs)(successes, n, alpha)


@dataclass(frozen=True)
class GateLayout:
    """The checks of one gate as arrays (the vectorised core that ``bench gate`` simulates with).

    ``keys[i]`` = (scene, label) of check i; ``kind`` tail/branch/leak; ``rel``/``tol_abs`` its band;
    ``scene_of`` the index of its scene; ``reference_interval`` marks the checks whose reference is
    sampled (a teacher's non-leak rates): those intervals spend alpha too.
    """

    config: GateConfig
    scenes: tuple[str, ...]
    keys: tuple[tuple[str, str], ...]
    kind: tuple[str, ...]
    rel: np.ndarray
    tol_abs: np.ndarray
    scene_of: np.ndarray
    reference_interval: np.ndarray

    @classmethod
    def build(cls, labels: Mapping[str, list[str]], zero: Mapping[str, set[str]], config: GateConfig,
              sampled_reference: bool) -> GateLayout:
        """labels[scene]: the labels checked; zero[scene]: those with reference 0 (leaks)."""
        keys, kind, rel, tol, scene_of, ref_iv = [], [], [], [], [], []
        for i, s in enumerate(labels):
            for label in labels[s]:
                k = ("leak" if label in config.leak_labels or label in zero[s] else
                     "tail" if label == config.tail else "branch")
                keys.append((s, label))
                kind.append(k)
                rel.append(config.tail_tolerance if k == "tail" else 0.0)
                tol.append({"tail": config.tail_tolerance_abs, "branch": config.branch_tolerance,
                            "leak": config.leak_tolerance}[k])
                scene_of.append(i)
                ref_iv.append(sampled_reference and k != "leak")
        return cls(config, tuple(labels), tuple(keys), tuple(kind), np.array(rel), np.array(tol),
                   np.array(scene_of), np.array(ref_iv, dtype=bool))

    @property
    def alpha_per_interval(self) -> float:
        """Bonferroni: the family alpha over the sample's intervals plus the sampled reference's."""
        return self.config.alpha / (len(self.keys) + int(self.reference_interval.sum()))

    def tv_bounds(self, lo, hi, ref_lo, ref_hi) -> tuple[np.ndarray, np.ndarray]:
        """Per-scene TV bounds (..., scenes) implied by the per-check intervals (..., checks)."""
        onehot = np.eye(len(self.scenes))[self.scene_of]  # (checks, scenes)
        upper = 0.5 * np.maximum(hi - ref_lo, ref_hi - lo) @ onehot
        lower = 0.5 * np.maximum(0.0, np.maximum(lo - ref_hi, ref_lo - hi)) @ onehot
        return lower, upper

    def evaluate(self, lo, hi, ref_lo, ref_hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(check codes (..., checks), TV codes (..., scenes), per-scene codes over both (..., scenes))."""
        codes = decide(lo, hi, ref_lo, ref_hi, self.rel, self.tol_abs)
        tv_lo, tv_hi = self.tv_bounds(lo, hi, ref_lo, ref_hi)
        tv = np.where(tv_lo > self.config.tv_tolerance, -1, np.where(tv_hi <= self.config.tv_tolerance, 1, 0))
        per_scene = np.stack([combine(np.concatenate([codes[..., self.scene_of == i], tv[..., i:i + 1]], -1))
                              for i in range(len(self.scenes))], -1)
        return codes, tv, per_scene


def _as_successes(scene: str, values: Mapping[str, object], labels: list[str], what: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(successes, n) per label: counts -> (c, sum of counts); Estimate -> (rate * n_eff, n_eff)."""
    kinds = {isinstance(v, Estimate) for v in values.values()}
    if len(kinds) > 1:
        raise ValueError(f"{what}[{scene!r}] mixes counts and Estimate values; give one kind per scene")
    if kinds == {True}:
        out = []
        for label in labels:
            if label not in values:
                raise ValueError(f"{what}[{scene!r}] has no Estimate for label {label!r} (needed: {labels})")
            rate, n_eff = values[label]
            if not (0.0 <= float(rate) <= 1.0) or not float(n_eff) > 0:
                raise ValueError(f"{what}[{scene!r}][{label!r}]={values[label]!r}: rate must be in [0, 1] "
                                 "and n_eff > 0")
            out.append((float(rate) * float(n_eff), float(n_eff)))
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])
    for label, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{what}[{scene!r}][{label!r}]={v!r} must be a count (integer >= 0) or an Estimate")
    n = sum(int(v) for v in values.values())
    if n <= 0:
        raise ValueError(f"{what}[{scene!r}] has no samples")
    return np.array([float(values.get(label, 0)) for label in labels]), np.full(len(labels), float(n))


def _labels(counts: Mapping[str, Mapping], reference: Mapping[str, Mapping], config: GateConfig
            ) -> dict[str, list[str]]:
    if set(counts) != set(reference):
        raise ValueError(f"counts scenes={sorted(counts)} must equal reference scenes={sorted(reference)}")
    out = {}
    for s in reference:
        labels = list(reference[s])
        labels += [k for k in config.leak_labels if k not in labels]
        labels += [k for k in counts[s] if k not in labels]
        out[s] = labels
    return out


def _n_to_decide(layout: GateLayout, x, n, ref_lo, ref_hi, codes, tv_codes, method: Method, sampled_ref=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per check and per scene TV: the smallest n (grid steps of 15%) at which the current estimates
    would decide; -1 where no n up to 20,000x would (the estimate sits on a band edge, where more
    samples decide either way with about even odds). A sampled reference ``(x_ref, n_ref)`` is
    assumed to grow by the same factor as the sample."""
    factors = 1.15 ** np.arange(1, 72)[:, None]  # up to ~20,000x the current n
    big_n = n * factors
    lo, hi = intervals(np.clip(x / n, 0, 1) * big_n, big_n, layout.alpha_per_interval, method)
    if sampled_ref is not None:
        x_ref, n_ref = sampled_ref
        keep = layout.reference_interval
        r_lo, r_hi = intervals(np.clip(x_ref / n_ref, 0, 1) * n_ref * factors, n_ref * factors,
                               layout.alpha_per_interval, method)
        ref_lo, ref_hi = np.where(keep, r_lo, 0.0), np.where(keep, r_hi, 0.0)
    grid_codes, grid_tv, _ = layout.evaluate(lo, hi, ref_lo, ref_hi)

    def first(decided: np.ndarray, n_now: np.ndarray) -> np.ndarray:
        k = decided.argmax(0)
        return np.where(decided.any(0), np.ceil(n_now * factors[k, 0]), -1)

    per_check = np.where(codes == 0, first(grid_codes != 0, n), 0)
    scene_n = np.array([n[layout.scene_of == i].max() for i in range(len(layout.scenes))])
    per_tv = np.where(tv_codes == 0, first(grid_tv != 0, scene_n), 0)
    return per_check, per_tv


def _result(layout: GateLayout, x, n, ref, ref_lo, ref_hi, lo, hi, method: Method, sampled_ref=None) -> GateResult:
    config = layout.config
    codes, tv_codes, _ = layout.evaluate(lo, hi, ref_lo, ref_hi)
    outcome = OUTCOMES[int(combine(np.concatenate([codes, tv_codes])))]
    if outcome == "UNDECIDED":
        need_check, need_tv = _n_to_decide(layout, x, n, ref_lo, ref_hi, codes, tv_codes, method, sampled_ref)
    else:  # a decided gate asks for nothing more
        need_check, need_tv = np.zeros(len(codes)), np.zeros(len(tv_codes))
    lower_pass, _ = band_edges(ref_hi, layout.rel, layout.tol_abs)
    _, upper_pass = band_edges(ref_lo, layout.rel, layout.tol_abs)
    lower_fail, _ = band_edges(ref_lo, layout.rel, layout.tol_abs)
    _, upper_fail = band_edges(ref_hi, layout.rel, layout.tol_abs)
    rows: list[dict] = []
    for i, (s, label) in enumerate(layout.keys):
        rows.append({"check": layout.kind[i], "scene": s, "label": label, "rate": float(x[i] / n[i]),
                     "n": float(n[i]), "lo": float(lo[i]), "hi": float(hi[i]), "truth": float(ref[i]),
                     "ref_lo": float(ref_lo[i]), "ref_hi": float(ref_hi[i]),
                     "band_lo": float(lower_pass[i]), "band_hi": float(upper_pass[i]),
                     "fail_below": float(lower_fail[i]), "fail_above": float(upper_fail[i]),
                     "tolerance": config.tolerance_text(layout.kind[i]), "outcome": OUTCOMES[int(codes[i])],
                     "passed": bool(codes[i] == 1), "n_to_decide": _need(need_check[i])})
    tv_lo, tv_hi = layout.tv_bounds(lo, hi, ref_lo, ref_hi)
    for j, s in enumerate(layout.scenes):
        sel = layout.scene_of == j
        point = 0.5 * float(np.abs(x[sel] / n[sel] - ref[sel]).sum())
        rows.append({"check": "tv", "scene": s, "label": "", "rate": point, "n": float(n[sel].max()),
                     "lo": float(tv_lo[j]), "hi": float(tv_hi[j]), "truth": 0.0, "ref_lo": 0.0, "ref_hi": 0.0,
                     "band_lo": 0.0, "band_hi": config.tv_tolerance, "fail_below": 0.0,
                     "fail_above": config.tv_tolerance, "tolerance": config.tolerance_text("tv"),
                     "outcome": OUTCOMES[int(tv_codes[j])], "passed": bool(tv_codes[j] == 1),
                     "n_to_decide": _need(need_tv[j])})
    more: dict[str, int | None] = {}
    if outcome == "UNDECIDED":
        for r in rows:
            if r["outcome"] == "UNDECIDED":
                prev = more.get(r["scene"], 0)
                more[r["scene"]] = None if (prev is None or r["n_to_decide"] is None) else max(prev, r["n_to_decide"])
    return GateResult(outcome, config.alpha, layout.alpha_per_interval, config.tv_tolerance, method, tuple(rows), more)


def _need(v: float) -> int | None:
    return None if v < 0 else int(v)


def _prepare(counts, reference, config: GateConfig, sampled: bool):
    labels = _labels(counts, reference, config)
    if sampled:
        zero = {s: set() for s in reference}
    else:
        for s, probs in reference.items():
            for k, p in probs.items():
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
                    raise ValueError(f"truth[{s!r}][{k!r}]={p!r} must be a rate in [0, 1]")
        zero = {s: {k for k in labels[s] if float(reference[s].get(k, 0.0)) == 0.0} for s in reference}
    layout = GateLayout.build(labels, zero, config, sampled)
    xs, ns = zip(*(_as_successes(s, counts[s], labels[s], "counts") for s in labels))
    return layout, labels, np.concatenate(xs), np.concatenate(ns)


def _reference_arrays(layout: GateLayout, labels, reference, sampled: bool, method: Method):
    """(point, lo, hi) of the reference per check; leaks are exactly 0; exact truth has lo = hi."""
    if not sampled:
        p = np.array([float(reference[s].get(k, 0.0)) if kind != "leak" else 0.0
                      for (s, k), kind in zip(layout.keys, layout.kind)])
        return p, p, p, None
    xs, ns = zip(*(_as_successes(s, reference[s], labels[s], "reference") for s in labels))
    x, n = np.concatenate(xs), np.concatenate(ns)
    lo, hi = intervals(x, n, layout.alpha_per_interval, method)
    keep = layout.reference_interval
    p = np.where(keep, x / n, 0.0)
    return p, np.where(keep, lo, 0.0), np.where(keep, hi, 0.0), (x, n)


def coverage_gate(counts: Mapping[str, Mapping[str, int | Estimate]], truth: Mapping[str, Mapping[str, float]],
                  config: GateConfig = RELEASE_GATE, *, method: Method = "fixed") -> GateResult:
    """Gate generated ``counts[scene][label]`` (counts or Estimates) against exact rates ``truth``."""
    layout, labels, x, n = _prepare(counts, truth, config, sampled=False)
    ref, ref_lo, ref_hi, _ = _reference_arrays(layout, labels, truth, False, method)
    lo, hi = intervals(x, n, layout.alpha_per_interval, method)
    return _result(layout, x, n, ref, ref_lo, ref_hi, lo, hi, method)


def teacher_gate(counts: Mapping[str, Mapping[str, int | Estimate]],
                 teacher: Mapping[str, Mapping[str, int | Estimate]], config: GateConfig = RELEASE_GATE, *,
                 method: Method = "fixed") -> GateResult:
    """Two-sample gate of a student's ``counts`` against a teacher's own sampled ``teacher`` counts: the
    teacher's rates enter as intervals at their share of alpha, so its sampling noise is carried."""
    layout, labels, x, n = _prepare(counts, teacher, config, sampled=True)
    ref, ref_lo, ref_hi, sampled_ref = _reference_arrays(layout, labels, teacher, True, method)
    lo, hi = intervals(x, n, layout.alpha_per_interval, method)
    return _result(layout, x, n, ref, ref_lo, ref_hi, lo, hi, method, sampled_ref)


class SequentialGate:
    """Sample in batches until decided: feed each batch's counts, read ``result`` and ``stop``.

    Intervals are the beta-binomial confidence sequence, intersected over looks (valid because the
    sequence covers at every n at once; on the event, probability <= alpha, that an intersection is
    empty, the latest interval is used). Decisions are therefore final once made and the error
    rates of the module doc hold however often one looks. ``scenes_to_sample()`` names the scenes
    whose checks are not all decided and are below ``cap`` rollouts; the gate stops when the outcome
    is decided (FAIL as soon as any check FAILs) or no scene may be sampled further.
    """

    def __init__(self, reference: Mapping[str, Mapping], config: GateConfig = RELEASE_GATE, *, cap: int,
                 sampled_reference: bool = False, labels: Mapping[str, list[str]] | None = None) -> None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"cap={cap!r} must be an integer >= 1 (rollouts per scene)")
        self.config, self.cap, self.sampled = config, cap, sampled_reference
        self.reference = {s: dict(v) for s, v in reference.items()}
        skeleton = {s: dict.fromkeys(labels[s] if labels else v, 0) for s, v in reference.items()}
        self._labels = _labels(skeleton, reference, config)
        zero = ({s: set() for s in reference} if sampled_reference else
                {s: {k for k in self._labels[s] if float(reference[s].get(k, 0.0)) == 0.0} for s in reference})
        self.layout = GateLayout.build(self._labels, zero, config, sampled_reference)
        self.counts = {s: dict.fromkeys(self._labels[s], 0) for s in reference}
        self.teacher_counts = {s: {} for s in reference} if sampled_reference else None
        size = len(self.layout.keys)
        self._lo, self._hi = np.zeros(size), np.ones(size)
        self._rlo, self._rhi = np.zeros(size), np.ones(size)
        self._result: GateResult | None = None

    def update(self, counts: Mapping[str, Mapping[str, int]],
               teacher_counts: Mapping[str, Mapping[str, int]] | None = None) -> GateResult:
        """Add one batch of counts (scenes not sampled this batch may be left out) and re-decide."""
        for s, batch in counts.items():
            if s not in self.counts:
                raise ValueError(f"counts scene={s!r} is not one of {list(self.counts)}")
            for k, v in batch.items():
                if k not in self.counts[s]:
                    raise ValueError(f"counts[{s!r}] label={k!r} is not one of {list(self.counts[s])}")
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise ValueError(f"counts[{s!r}][{k!r}]={v!r} must be an integer >= 0")
                self.counts[s][k] += int(v)
        if self.sampled:
            if teacher_counts is None:
                raise ValueError("teacher_counts is required when the reference is sampled")
            for s, batch in teacher_counts.items():
                for k, v in batch.items():
                    self.teacher_counts[s][k] = self.teacher_counts[s].get(k, 0) + int(v)
        if any(sum(c.values()) == 0 for c in self.counts.values()):
            raise ValueError("every scene needs at least one sample before the gate can decide")
        xs, ns = zip(*(_as_successes(s, self.counts[s], self._labels[s], "counts") for s in self._labels))
        x, n = np.concatenate(xs), np.concatenate(ns)
        lo, hi = intervals(x, n, self.layout.alpha_per_interval, "sequential")
        self._lo, self._hi = _intersect(self._lo, self._hi, lo, hi)
        if self.sampled:
            ref, rlo, rhi, sampled_ref = _reference_arrays(self.layout, self._labels, self.teacher_counts, True,
                                                           "sequential")
            self._rlo, self._rhi = _intersect(self._rlo, self._rhi, rlo, rhi)
            keep = self.layout.reference_interval
            self._rlo, self._rhi = np.where(keep, self._rlo, 0.0), np.where(keep, self._rhi, 0.0)
        else:
            sampled_ref = None
            ref, self._rlo, self._rhi, _ = _reference_arrays(self.layout, self._labels, self.reference, False,
                                                             "sequential")
        self._result = _result(self.layout, x, n, ref, self._rlo, self._rhi, self._lo, self._hi, "sequential",
                               sampled_ref)
        return self._result

    @property
    def result(self) -> GateResult:
        if self._result is None:
            raise ValueError("no batch has been fed yet: call update(counts) first")
        return self._result

    def rollouts(self, scene: str) -> int:
        return sum(self.counts[scene].values())

    def scenes_to_sample(self) -> list[str]:
        if self._result is None:
            return list(self.counts)
        if self._result.outcome != "UNDECIDED":
            return []
        open_scenes = {c["scene"] for c in self._result.checks if c["outcome"] == "UNDECIDED"}
        return [s for s in self.counts if s in open_scenes and self.rollouts(s) < self.cap]

    @property
    def stop(self) -> bool:
        return self._result is not None and not self.scenes_to_sample()

    @property
    def stopped(self) -> str:
        """Why sampling stopped: every check decided, or the cap reached with some still open."""
        return "decided" if self.result.outcome != "UNDECIDED" else f"cap of {self.cap:,} rollouts reached"

    def record(self, look: int, looks: int) -> dict:
        """What a sequential run stores: cap, look size, looks drawn, rollouts per scene (or plan), alpha,
        the outcome and why sampling stopped."""
        return {"cap": self.cap, "look": look, "looks": looks, "alpha": self.config.alpha,
                "rollouts": {s: self.rollouts(s) for s in self.counts}, "outcome": self.result.outcome,
                "stopped": self.stopped, "method": SEQUENTIAL_METHOD}


SEQUENTIAL_METHOD = "beta-binomial confidence sequence (anytime-valid; fastdiff_core.metrics.gate.SequentialGate)"


def run_summary(gate: GateResult, sequential: SequentialGate | None = None, *,
                what: str = "release coverage gate", unit: str = "scene") -> dict:
    """A run's gate outcome as its verdict quotes it: {outcome: pass|fail|undecided, text}; the text names
    the checks, the family alpha, how sampling stopped (sequential) and what failed or is still open."""
    shown = gate.failures if gate.outcome == "FAIL" else gate.undecided
    how = "" if sequential is None else (
        f", sequential: {sequential.stopped}, {sum(map(sequential.rollouts, sequential.counts)):,} rollouts drawn")
    more = max([(v or 0) for v in gate.more_samples_needed.values()] or [0])
    text = (f"{what} ({len(gate.checks)} checks, family-wise alpha {gate.alpha:g}{how}) {gate.outcome}"
            + ("" if gate.outcome == "PASS" else
               f" on {len(shown)}: " + "; ".join(f"{f['check']} {f['scene']} {f['label']}".strip() for f in shown[:3])
               + ("" if gate.outcome == "FAIL" else f" (rollouts per {unit} likely to decide: {more:,})")))
    return {"outcome": gate.outcome.lower(), "text": text}


def _intersect(lo_run, hi_run, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    new_lo, new_hi = np.maximum(lo_run, lo), np.minimum(hi_run, hi)
    empty = new_lo > new_hi
    return np.where(empty, lo, new_lo), np.where(empty, hi, new_hi)
