"""A RunSpec over the rollout engine, for any world model: ``run(spec, device, on_progress)``.

A world plugin whose ``world_model`` names a factory ``(spec, device) -> WorldModel`` can use ``run`` as its
runner unchanged (``runner="fastdiff_core.rollout_runner:run"``); the driving world calls
``run_world_model`` for its planning runs. What it runs:

    plans > 1   ``spec.samples`` planning cycles of P x R rollouts of H frames, warm-started cycle to
                cycle (``rollout.Planner``), with importance sampling of the tail when asked;
    plans = 1   ``samples x futures`` rollouts of the world model's constant plan (``world.action``),
                batched in ``world_options.batch`` rows (4096 when the world has no such option) and
                executed in chunks of FASTDIFF_CHUNK_ROLLOUTS.

Coverage: per candidate plan, the (importance-weighted) branch rates against the plan's exact
probabilities where the world model knows them (``truth``), with Wilson intervals at the effective
sample size. NFE: counted rows == ``budget.bill_for``'s S x C x H x P·R x cycles. Latency: per NFE (batch
P·R), frame, cycle (median, spread). Speed-ups that act on the network (shared context, precision,
compile, feature cache) apply to staged networks (``world.staged``); the sampler (``parallel``) and
importance sampling to every world model.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from fastdiff_core import budget
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import timing_from
from fastdiff_core.rollout import BranchTally, Planner, chunk_rollouts, fan_out
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


def run_world_model(spec, device: torch.device, on_progress: Callable | None, world: WorldModel) -> RunResult:
    """``spec.samples`` planning cycles (P > 1) or ``samples x futures`` rollouts of the constant plan (P = 1)
    of ``world`` with the spec's sampler and speed-ups (see the module docstring)."""
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
    per_plan: dict[tuple[int, ...], BranchTally] = {}
    cycle_s: list[float] = []
    run_ = _constant_plan if spec.plans == 1 else _cycles
    nfe, forwards = run_(spec, device, on_progress, world, planner, per_plan, cycle_s, gen)
    return _result(spec, device, world, planner, per_plan, cycle_s, nfe, forwards, bill, sigmas, net, t_start)


def _constant_plan(spec, device, on_progress, world, planner, per_plan, cycle_s, gen) -> tuple[float, int]:
    """samples x futures independent rollouts under the world model's action, batched like a world's own
    runner, so a speed-up's coverage is measured on the same footing as the plain network."""
    plan = torch.full((1, spec.horizon), world.action, dtype=torch.long)
    tally = per_plan.setdefault(tuple(plan[0].tolist()), BranchTally(len(world.labels)))
    batch = int(spec.world_options.get("batch", DEFAULT_BATCH))
    chunk = planner.chunk
    done, total, nfe, forwards = 0, spec.samples * spec.futures, 0.0, 0
    while done < total:
        n = min(batch, total - done)
        counter = NFECounter()
        noise = torch.randn(n, spec.horizon, world.frame_dim, generator=gen).to(device)
        context = world.observe(1, gen)[0].to(device)
        seconds = 0.0
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            t0 = time.perf_counter()
            frames = fan_out(planner.net, world, plan, n, sampler=planner.sampler, sigmas=planner.sigmas,
                             noise=noise[lo:hi], context=context, guidance=planner.guidance, counter=counter,
                             rows=(lo, hi))
            seconds += time.perf_counter() - t0
            tally.add(world.classify(frames))
        cycle_s.append(seconds)
        nfe += counter.rows
        forwards += counter.forwards
        done += n
        if on_progress is not None:
            on_progress(Progress(done, total, nfe, sum(cycle_s) / done * (total - done), "sampling"))
    return nfe, forwards


def _cycles(spec, device, on_progress, world, planner, per_plan, cycle_s, gen) -> tuple[float, int]:
    nfe, forwards = 0.0, 0
    for c in range(spec.samples):
        context = world.observe(1, gen)[0].to(device)
        res = planner.cycle(context, gen)
        cycle_s.append(res.seconds)
        nfe += res.nfe
        forwards += res.forwards
        for plan, tally in zip(res.plans.tolist(), res.tallies):
            per_plan.setdefault(tuple(plan), BranchTally(len(world.labels))).merge(tally)
        if on_progress is not None:
            done = c + 1
            on_progress(Progress(done, spec.samples, nfe, sum(cycle_s) / done * (spec.samples - done), "planning"))
    return nfe, forwards


def _result(spec, device, world, planner, per_plan, cycle_s, nfe, forwards, bill, sigmas, net, t_start) -> RunResult:
    rows, tails, tvs = [], [], []
    for plan, tally in per_plan.items():
        truth = world.truth(plan)
        group = tally.rows(truth or {}, group=world.plan_name(plan), labels=world.labels)
        if truth is None:  # no ground truth: the rows say so instead of claiming 0
            group = [{**r, "truth": None} for r in group]
        rows.extend(group)
        rates = {r["label"]: r["rate"] for r in group}
        tails.append((rates[world.tail], None if truth is None else truth.get(world.tail, 0.0)))
        if truth is not None:
            tvs.append(0.5 * sum(abs(rates[lab] - truth.get(lab, 0.0)) for lab in world.labels))
    # the first cycle includes warm-up (allocator, lazy init): it is timed but left out of the cycle's
    # latency when there are others; the median's interval comes from the remaining repeats
    timed = cycle_s[1:] if len(cycle_s) > 1 else cycle_s
    cycle = timing_from(timed, what="cycle", batch=spec.plans * spec.futures, device=device,
                        nfe=nfe / max(spec.samples, 1))
    dev, fan, med = cycle.device, spec.plans * spec.futures, cycle.median_s
    latency = (
        {"what": "nfe", "seconds": sum(cycle_s) / max(forwards, 1), "batch": fan, "device": dev},
        {"what": "frame", "seconds": med / spec.horizon, "batch": fan, "device": dev},
        {**cycle.row(), "note": "median over the cycles after the first (warm-up)" if len(cycle_s) > 1 else
         "one cycle: no interval"},
    )
    known = all(t is not None for _, t in tails)  # every plan's truth known: TV and the true tail rate
    metrics = {"mean_tv": sum(tvs) / len(tvs) if known else None, "cycle_s": med, "cycles": float(spec.samples),
               "tail_rate_mean": sum(t for t, _ in tails) / len(tails),
               "tail_truth_mean": sum(t for _, t in tails) / len(tails) if known else None,
               "forwards_per_cycle": forwards / spec.samples, "nfe_per_cycle": nfe / spec.samples}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    stats = getattr(net, "stats", None)
    if stats is not None:
        metrics["deep_fraction"] = stats.deep_fraction
    proposal = planner.proposal
    info = {"bill": bill.formula(), "sigmas": list(sigmas), "chosen_last": planner.previous,
            "plans": [world.plan_name(p) for p in per_plan], "importance": spec.importance,
            # the last fitted proposal: mu (H, D) and the frame shares pi (H,)
            "proposal_shift": None if proposal is None else proposal.mu.tolist(),
            "proposal_frames": None if proposal is None else proposal.pi.tolist()}
    return RunResult(spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(nfe),
                     nfe_formula=float(bill.per_run), metrics=metrics, histograms=tuple(rows), latency=latency,
                     info=info)
