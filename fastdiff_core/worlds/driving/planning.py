"""The driving world's planning runner: ``run_planning(spec, device, on_progress)`` for a driving spec with
candidate plans (P > 1) or a speed-up toggle, on the rollout engine (``fastdiff_core.rollout``: fan-out,
planner, importance sampling, streaming tallies) and the speed-ups (``fastdiff_core.speedups``)."""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from fastdiff_core import budget
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import timing_from
from fastdiff_core.models.teacher import load_teacher
from fastdiff_core.rollout import BranchTally, Planner, chunk_rollouts, fan_out, plan_branch_probabilities
from fastdiff_core.spec import Progress, RunResult
from fastdiff_core.speedups import from_spec
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving.sampling import PATH
from fastdiff_core.worlds.driving.scenes import ACTIONS, LABELS, TAIL, get_scene
from fastdiff_core.worlds.driving.simulator import waiting_frame


def needs_planning_runner(spec) -> bool:
    """True when a driving solver spec asks for what ``run_planning`` owns: candidate plans (P > 1) or a
    speed-up. (P = 1 with R futures is R rollouts of the spec's action: the world's own runner.)"""
    speedups = (spec.feature_cache != "off" or spec.parallel != "off" or spec.precision != "float32"
                or spec.compile or spec.importance != "off")
    return spec.sampler == "solver" and (spec.plans > 1 or speedups)


def run_planning(spec, device: torch.device, on_progress: Callable | None = None, *, net: nn.Module | None = None):
    """``spec.samples`` planning cycles of ``spec.plans`` x ``spec.futures`` rollouts of ``spec.horizon``
    frames on the shipped teacher with every speed-up toggle of the spec, warm-started cycle to cycle.
    With P = 1: ``samples x futures`` independent rollouts under world_options.action, batched.

    Coverage: per candidate plan, the (importance-weighted) branch rates against the plan's exact
    probabilities, with Wilson intervals at the effective sample size. NFE: counted rows == the budget
    module's S x C x H x P·R x cycles. Latency: per NFE (batch P·R), frame, cycle (median, spread).
    The run's verdicts (fastdiff_core.run.judged) read the repeated cycle timing and its interval.
    ``net``: the world-model network (default: the shipped teacher named by world_options.teacher).
    """

    if spec.sampler != "solver":
        raise ValueError(f"sampler={spec.sampler!r}: planning runs sample the teacher with a solver; allowed: 'solver'")
    t_start = time.perf_counter()
    scene = get_scene(spec.scene)
    gen = torch.Generator().manual_seed(spec.seed)
    teacher = net if net is not None else load_teacher(spec.world_options["teacher"], device)
    net, sampler, guidance = from_spec(spec, teacher, gen)
    sigmas = build_grid(spec.grid, spec.steps, PATH, spec.grid_options)
    bill = budget.bill_for(spec, sigmas=sigmas)
    chunk = chunk_rollouts()
    planner = Planner(net, scene, plans=spec.plans, futures=spec.futures, horizon=spec.horizon, sampler=sampler,
                      sigmas=sigmas, guidance=guidance, importance=spec.importance == "tail",
                      beta=float(spec.importance_options.get("beta", 0.5)), warm_start=spec.warm_start,
                      chunk=chunk)
    per_plan: dict[tuple[int, ...], BranchTally] = {}
    cycle_s, nfe, forwards = [], 0.0, 0
    if spec.plans == 1:
        # one plan: samples x futures independent rollouts under the spec's action, batched like the
        # world's runner, so a speed-up's coverage is measured on the same footing as the plain teacher
        action = ACTIONS.index(spec.world_options["action"])
        plan = torch.full((1, spec.horizon), action, dtype=torch.long)
        tally = per_plan.setdefault(tuple(plan[0].tolist()), BranchTally())
        batch = int(spec.world_options.get("batch", 4096))
        done, total = 0, spec.samples * spec.futures
        while done < total:
            n = min(batch, total - done)
            counter = NFECounter()
            noise = torch.randn(n, spec.horizon, driving.FRAME_DIM, generator=gen).to(device)
            context = waiting_frame(scene, 1, gen)[0].to(device)
            seconds = 0.0
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                t0 = time.perf_counter()
                frames = fan_out(net, scene, plan, n, sampler=sampler, sigmas=sigmas, noise=noise[lo:hi],
                                 context=context, guidance=guidance, counter=counter, rows=(lo, hi))
                seconds += time.perf_counter() - t0
                tally.add(driving.classify_codes(frames, scene))
            cycle_s.append(seconds)
            nfe += counter.rows
            forwards += counter.forwards
            done += n
            if on_progress is not None:
                on_progress(Progress(done, total, nfe, sum(cycle_s) / done * (total - done), "sampling"))
    for c in range(spec.samples if spec.plans > 1 else 0):
        context = waiting_frame(scene, 1, gen)[0].to(device)
        res = planner.cycle(context, gen)
        cycle_s.append(res.seconds)
        nfe += res.nfe
        forwards += res.forwards
        for plan, tally in zip(res.plans.tolist(), res.tallies):
            per_plan.setdefault(tuple(plan), BranchTally()).merge(tally)
        if on_progress is not None:
            done = c + 1
            on_progress(Progress(done, spec.samples, nfe, sum(cycle_s) / done * (spec.samples - done), "planning"))
    rows, tails, tvs = [], [], []
    for plan, tally in per_plan.items():
        truth = plan_branch_probabilities(scene, plan)
        group = tally.rows(truth, group="-".join(ACTIONS[a][0] for a in plan))
        rows.extend(group)
        rates = {r["label"]: r["rate"] for r in group}
        tails.append((rates[TAIL], truth[TAIL]))
        tvs.append(0.5 * sum(abs(rates[lab] - truth.get(lab, 0.0)) for lab in LABELS))
    # the first cycle includes warm-up (allocator, lazy init): it is timed but left out of the cycle's
    # latency when there are others; the median's interval comes from the remaining repeats
    timed = cycle_s[1:] if len(cycle_s) > 1 else cycle_s
    cycle = timing_from(timed, what="cycle", batch=spec.plans * spec.futures, device=device,
                        nfe=nfe / max(spec.samples, 1))
    dev = cycle.device
    fan = spec.plans * spec.futures
    med = cycle.median_s
    latency = (
        {"what": "nfe", "seconds": sum(cycle_s) / max(forwards, 1), "batch": fan, "device": dev},
        {"what": "frame", "seconds": med / spec.horizon, "batch": fan, "device": dev},
        {**cycle.row(), "note": "median over the cycles after the first (warm-up)" if len(cycle_s) > 1 else
         "one cycle: no interval"},
    )
    stats = getattr(net, "stats", None)
    metrics = {"mean_tv": sum(tvs) / len(tvs), "cycle_s": med, "cycles": float(spec.samples),
               "tail_rate_mean": sum(t for t, _ in tails) / len(tails),
               "tail_truth_mean": sum(t for _, t in tails) / len(tails),
               "forwards_per_cycle": forwards / spec.samples, "nfe_per_cycle": nfe / spec.samples}
    if stats is not None:
        metrics["deep_fraction"] = stats.deep_fraction
    info = {"bill": bill.formula(), "sigmas": list(sigmas), "chosen_last": planner.previous,
            "plans": ["-".join(ACTIONS[a][0] for a in p) for p in per_plan],
            "importance": spec.importance,
            # the last fitted proposal: mu (H, D) and the frame shares pi (H,)
            "proposal_shift": None if planner.proposal is None else planner.proposal.mu.tolist(),
            "proposal_frames": None if planner.proposal is None else planner.proposal.pi.tolist()}
    return RunResult(spec=spec, device=dev, wall_s=time.perf_counter() - t_start, nfe_counted=float(nfe),
                     nfe_formula=float(bill.per_run), metrics=metrics, histograms=tuple(rows), latency=latency,
                     info=info)
