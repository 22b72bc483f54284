"""A RunSpec over the rollout engine, for any world model: ``run(spec, device, on_progress)``.

A world plugin whose ``world_model`` names a factory ``(spec, device) -> WorldModel`` can use ``run`` as its
runner unchanged (``runner="fastdiff_core.rollout_runner:run"``); the driving world calls
``run_world_model`` for its planning runs. What it runs:

    plans > 1   ``spec.samples`` planning cycles of P x R rollouts of H frames, warm-started cycle to
                cycle (``rollout.Planner``), with importance sampling of the tail when asked;
    plans = 1   ``samples x futures`` independent rollouts of the world model's constant plan
                (``world.action``), each from its own observed context, batched in ``world_options.batch``
                rows (4096 when the world has no such option) and executed in chunks of
                FASTDIFF_CHUNK_ROLLOUTS.

Coverage: per candidate plan, the (importance-weighted) branch rates against the plan's exact
probabilities where the world model knows them (``truth``), with Wilson intervals at the effective
sample size. NFE: counted rows == ``budget.bill_for``'s S x C x H x P·R x cycles. Latency: per NFE (batch
P·R), frame, cycle (median, spread). Speed-ups that act on the network (shared context, precision,
compile, feature cache) apply to staged networks (``world.staged``); the sampler (``parallel``) and
importance sampling to every world model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import timing_from
from fastdiff_core.metrics.gate import RELEASE_GATE, SequentialGate, run_summary
from fastdiff_core.rollout import BranchTally, Planner, candidate_plans, chunk_rollouts, fan_out
from fastdiff_core.spec import Progress, RunResult
from fastdiff_core.speedups import frame_sampler, from_spec
from fastdiff_core.worlds import world_plugin
from fastdiff_core.worlds.protocol import WorldModel, check_world_model

DEFAULT_BATCH = 4096


def run(spec, device: torch.device, on_progress: Callable | None = None) -> RunResult:
    """The runner of a world plugin that declares a world model: build it, then ``run_world_model``."""
    return run_world_model(spec, device, on_progress, world_plugin(spec.world).load_world_model()(spec, device))


def _network(spec, world: WorldModel, gen: torch.Generator):
    """(network, frame sampler, guidance) for the spec: every speed-up toggle on a staged network; the
    sampler and guidance alone otherwise."""
    if world.staged:
        return from_spec(spec, world.net, gen)
    for name, off in (("feature_cache", "off"), ("precision", "float32"), ("compile", False)):
        if getattr(spec, name) != off:  # a toggle that would be silently ignored is refused instead
            raise ValueError(f"{name}={getattr(spec, name)!r} needs a staged network (WorldModelNet's forward); "
                             f"{type(world).__name__}.staged is False; allowed: {off!r}")
    sampler = frame_sampler(spec.solver, spec.solver_options, parallel=spec.parallel,
                            parallel_options=spec.parallel_options, generator=gen)
    return world.net, sampler, Guidance(spec.guidance_scale, spec.guidance_interval)


@dataclass
class _Drawn:
    """What a run's looks drew so far: per-plan tallies, per-cycle (or per-batch) seconds, the counted NFE,
    its re-evaluations beyond the sequential count (Picard), forwards, cycles and looks."""

    per_plan: dict[tuple[int, ...], BranchTally] = field(default_factory=dict)
    cycle_s: list[float] = field(default_factory=list)
    nfe: float = 0.0
    repeats: float = 0.0
    forwards: int = 0
    cycles: int = 0
    looks: int = 0

    def counts(self, plans: list[tuple[int, ...]]) -> dict[tuple[int, ...], list[int]]:
        return {p: self.per_plan[p].count.tolist() if p in self.per_plan else None for p in plans}


def run_world_model(spec, device: torch.device, on_progress: Callable | None, world: WorldModel) -> RunResult:
    """``spec.samples`` planning cycles (P > 1) or ``samples x futures`` rollouts of the constant plan (P = 1)
    of ``world`` with the spec's sampler and speed-ups (see the module docstring); with ``spec.gate_cap``,
    looks of that many until the per-plan coverage gate decides or the cap is reached."""
    if spec.sampler != "solver":
        raise ValueError(f"sampler={spec.sampler!r}: rollout runs sample the world model with a solver; "
                         f"allowed: 'solver'")
    check_world_model(world)
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(spec.seed)
    net, sampler, guidance = _network(spec, world, gen)
    sigmas = build_grid(spec.grid, spec.steps, world.path, spec.grid_options)
    bill = budget.bill_for(spec, sigmas=sigmas)
    planner = Planner(net, world, plans=spec.plans, futures=spec.futures, horizon=spec.horizon, sampler=sampler,
                      sigmas=sigmas, guidance=guidance, importance=spec.importance == "tail",
                      beta=float(spec.importance_options.get("beta", 0.5)), warm_start=spec.warm_start,
                      chunk=chunk_rollouts())
    gate, family = _plan_gate(spec, world)
    draw_look = _constant_plan if spec.plans == 1 else _cycles
    drawn = _Drawn()
    while True:  # one look without a gate; with one, looks until it stops or the cap is reached
        before = drawn.counts(family)
        draw_look(spec, device, on_progress, world, planner, drawn, gen)
        drawn.looks += 1
        if gate is not None:
            gate.update(_look_counts(world, family, before, drawn.counts(family)))
        if gate is None or gate.stop or drawn.cycles >= spec.max_cycles:
            break
    bill = replace(bill, cycles=drawn.cycles, repeats=drawn.repeats)
    return _result(spec, device, world, planner, drawn, bill, sigmas, net, t_start, gate)


def _plan_gate(spec, world: WorldModel) -> tuple[SequentialGate | None, list[tuple[int, ...]]]:
    """The sequential gate of a run with ``gate_cap``, and the plans it judges (its family): the first
    cycle's candidate plans (P > 1; known before the run, so the family-wise alpha is fixed) or the
    constant plan (P = 1), each against its exact branch probabilities. (None, []) without a cap."""
    if not spec.sequential:
        return None, []
    if spec.importance != "off":  # the weighted intervals are normal approximations at one look
        raise ValueError(f"importance={spec.importance!r} with gate_cap={spec.gate_cap!r}: weighted rates are not "
                         "anytime-valid; allowed: importance 'off', or gate_cap null")
    plans = (candidate_plans(spec.plans, spec.horizon, actions=len(world.actions)) if spec.plans > 1
             else torch.full((1, spec.horizon), world.action, dtype=torch.long))
    family = [tuple(p) for p in plans.tolist()]
    truth = {world.plan_name(p): world.truth(p) for p in family}
    if any(t is None for t in truth.values()):
        raise ValueError(f"gate_cap={spec.gate_cap!r}: the sequential gate needs each plan's exact branch "
                         f"probabilities, which {type(world).__name__}.truth does not give; allowed: gate_cap null")
    config = replace(RELEASE_GATE, alpha=spec.gate_alpha, tail=world.tail,
                     leak_labels=tuple(k for k in RELEASE_GATE.leak_labels if k in world.labels and k != world.tail))
    return SequentialGate(truth, config, cap=spec.gate_cap, labels={s: list(world.labels) for s in truth}), family


def _look_counts(world: WorldModel, family, before, after) -> dict[str, dict[str, int]]:
    """The branch counts one look added to each plan of the gate's family (plans it did not sample left out)."""
    out = {}
    for plan in family:
        if after[plan] is not None and after[plan] != before[plan]:
            old = before[plan] or [0] * len(world.labels)
            out[world.plan_name(plan)] = {lab: a - b for lab, a, b in zip(world.labels, after[plan], old)}
    return out


def _constant_plan(spec, device, on_progress, world, planner, drawn: _Drawn, gen) -> None:
    """One look of samples x futures independent rollouts under the world model's action, batched like a
    world's own runner, so a speed-up's coverage is measured on the same footing as the plain network.
    Independent means each rollout its own observed context (``world.observe``), as the driving world's own
    runner draws one per row: one context shared by a batch would make every rate in it conditional on that
    one frame (one digit of the moving-digits world), with intervals that ignore it, and would make the
    batch size (a memory option) change what is measured. Each row is passed to the fan-out as a plan of
    its own (P = n, R = 1): the constant plan, the row's context."""
    plan = torch.full((1, spec.horizon), world.action, dtype=torch.long)
    tally = drawn.per_plan.setdefault(tuple(plan[0].tolist()), BranchTally(len(world.labels)))
    batch = int(spec.world_options.get("batch", DEFAULT_BATCH))
    total = spec.samples * spec.futures
    done, offset, cap = 0, drawn.looks * total, spec.max_cycles * spec.futures
    while done < total:
        n = min(batch, total - done)
        counter = NFECounter()
        noise = torch.randn(n, spec.horizon, world.frame_dim, generator=gen).to(device)
        context = world.observe(n, gen).to(device)  # (n, *frame_shape): one per rollout
        rows_plan = plan.expand(n, -1)
        seconds = 0.0
        for lo in range(0, n, planner.chunk):
            hi = min(n, lo + planner.chunk)
            t0 = time.perf_counter()
            frames = fan_out(planner.net, world, rows_plan, 1, sampler=planner.sampler, sigmas=planner.sigmas,
                             noise=noise[lo:hi], context=context, guidance=planner.guidance, counter=counter,
                             rows=(lo, hi))
            seconds += time.perf_counter() - t0
            tally.add(world.classify(frames))
        drawn.cycle_s.append(seconds)
        drawn.nfe += counter.rows
        drawn.repeats += counter.repeat_rows
        drawn.forwards += counter.forwards
        done += n
        if on_progress is not None:
            at = offset + done
            on_progress(Progress(at, cap, drawn.nfe, sum(drawn.cycle_s) / at * (cap - at), "sampling"))
    drawn.cycles += spec.samples


def _cycles(spec, device, on_progress, world, planner, drawn: _Drawn, gen) -> None:
    """One look of ``spec.samples`` planning cycles."""
    for _ in range(spec.samples):
        context = world.observe(1, gen)[0].to(device)
        res = planner.cycle(context, gen)
        drawn.cycle_s.append(res.seconds)
        drawn.nfe += res.nfe
        drawn.repeats += res.repeats
        drawn.forwards += res.forwards
        drawn.cycles += 1
        for plan, tally in zip(res.plans.tolist(), res.tallies):
            drawn.per_plan.setdefault(tuple(plan), BranchTally(len(world.labels))).merge(tally)
        if on_progress is not None:
            done, cap = drawn.cycles, spec.max_cycles
            on_progress(Progress(done, cap, drawn.nfe, sum(drawn.cycle_s) / done * (cap - done), "planning"))


def _result(spec, device, world, planner, drawn: _Drawn, bill, sigmas, net, t_start,
            gate: SequentialGate | None) -> RunResult:
    rows, tails, tvs = [], [], []
    for plan, tally in drawn.per_plan.items():
        truth = world.truth(plan)
        group = tally.rows(truth or {}, group=world.plan_name(plan), labels=world.labels)
        if truth is None:  # no ground truth: the rows say so instead of claiming 0
            group = [{**r, "truth": None} for r in group]
        rows.extend(group)
        rates = {r["label"]: r["rate"] for r in group}
        tails.append((rates[world.tail], None if truth is None else truth.get(world.tail, 0.0)))
        if truth is not None:
            tvs.append(0.5 * sum(abs(rates[lab] - truth.get(lab, 0.0)) for lab in world.labels))
    cycles, nfe = drawn.cycles, drawn.nfe
    known = all(t is not None for _, t in tails)  # every plan's truth known: TV and the true tail rate
    latency = _latency(spec, device, drawn)
    metrics = {"mean_tv": sum(tvs) / len(tvs) if known else None, "cycle_s": latency[-1]["seconds"],
               "cycles": float(cycles), "rollouts_drawn": float(cycles * spec.plans * spec.futures),
               "tail_rate_mean": sum(t for t, _ in tails) / len(tails),
               "tail_truth_mean": sum(t for _, t in tails) / len(tails) if known else None,
               "forwards_per_cycle": drawn.forwards / cycles, "nfe_per_cycle": nfe / cycles,
               "nfe_repeats": drawn.repeats}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    stats = getattr(net, "stats", None)
    if stats is not None:
        metrics["deep_fraction"] = stats.deep_fraction
    proposal = planner.proposal
    info = {"bill": bill.formula(),
            "bill_parts": {"sequential": bill.per_cycle * cycles, "picard_repeats": bill.repeats},
            "sigmas": list(sigmas), "chosen_last": planner.previous,
            "plans": [world.plan_name(p) for p in drawn.per_plan], "importance": spec.importance,
            # the last fitted proposal: mu (H, D) and the frame shares pi (H,)
            "proposal_shift": None if proposal is None else proposal.mu.tolist(),
            "proposal_frames": None if proposal is None else proposal.pi.tolist(),
            "model_checksum": world.model_checksum}  # which weights produced the run (None: not declared)
    if gate is not None:
        info["gate"] = run_summary(gate.result, gate, what="coverage gate per plan (the first cycle's candidates)",
                                   unit="plan")
        info["gate_failures"] = [dict(f) for f in gate.result.failures]
        info["sequential"] = gate.record(spec.samples * spec.plans * spec.futures, drawn.looks)
    return RunResult(spec=spec, device=latency[0]["device"], wall_s=time.perf_counter() - t_start,
                     nfe_counted=float(nfe), nfe_formula=float(bill.per_run), metrics=metrics,
                     histograms=tuple(rows), latency=latency, info=info)


def _latency(spec, device, drawn: _Drawn) -> tuple[dict, ...]:
    """Per NFE (batch P·R), frame and cycle (median, spread). The first cycle includes warm-up (allocator,
    lazy init): it is timed but left out of the cycle's latency when there are others; the median's
    interval comes from the remaining repeats."""
    cycle_s = drawn.cycle_s
    timed = cycle_s[1:] if len(cycle_s) > 1 else cycle_s
    cycle = timing_from(timed, what="cycle", batch=spec.plans * spec.futures, device=device,
                        nfe=drawn.nfe / max(drawn.cycles, 1))
    dev, fan, med = cycle.device, spec.plans * spec.futures, cycle.median_s
    return (
        {"what": "nfe", "seconds": sum(cycle_s) / max(drawn.forwards, 1), "batch": fan, "device": dev},
        {"what": "frame", "seconds": med / spec.horizon, "batch": fan, "device": dev},
        {**cycle.row(), "note": "median over the cycles after the first (warm-up)" if len(cycle_s) > 1 else
         "one cycle: no interval"},
    )
