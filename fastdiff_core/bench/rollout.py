"""``fastdiff bench rollout [--json PATH]``: the planning fan-out measured on the driving teacher.

Prints, from one run on this machine:
  1. batched fan-out vs a Python loop over candidates at P·R = 40 (throughput ratio);
  2. sampler + rollout overhead as a share of network time, at fan-out batches >= 64;
  3. shared context (condition path once per frame / per plan) vs the plain network;
  4. a full planning cycle (H = 12, 4 NFE per frame, C = 1, P·R = 40): per-NFE, per-frame, per-rollout
     and per-cycle latency (median and spread after warm-up, device named), its NFE bill (counted ==
     formula) and its in-the-loop verdict; the same cycle projected for a 2B model at 10 ms/NFE;
  5. importance sampling of the tail vs uniform futures at equal NFE: variance of the tail estimate;
  6. warm start: what the next cycle reuses.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
from typing import Any, Callable

import torch
from torch import nn

from fastdiff_core import budget, catalog
from fastdiff_core.commands.args import int_range, writable_file
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import device_name, measure, measure_interleaved
from fastdiff_core.rollout import (
    Planner, SharedContextNet, TailProposal, candidate_plans, fan_out, loop_over_candidates, effective_sample_size,
    weighted_rates,
)
from fastdiff_core.speedups import frame_sampler
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving import PATH
from fastdiff_core.worlds.driving import SCENES
from fastdiff_core.worlds.driving import DrivingWorldModel, waiting_frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures as JSON here")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1,
                        help="intra-op CPU threads (default 1: on a shared CPU, OpenMP oversubscription can stall "
                             "small ops ~100x; the device string records the count)")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="world-model checkpoint stem (default: the shipped driving teacher)")
    parser.add_argument("--scene", default="child_at_curb", choices=sorted(SCENES))
    parser.add_argument("--solver", choices=sorted(catalog.SOLVERS), default="dpmpp_2m")
    parser.add_argument("--repeats", type=int_range(1, 10_000), default=5, help="timed repeats per figure (after warm-up)")
    parser.add_argument("--is-reps", type=int_range(2, 1_000_000), default=100, help="independent estimates per arm (IS vs uniform)")
    parser.add_argument("--is-seeds", type=int_range(1, 1000), default=3, help="independent repetitions of the IS comparison")
    parser.add_argument("--only-importance", action="store_true", help="measure only section 5 (IS vs uniform)")


def load_network(checkpoint: pathlib.Path | None, device: torch.device) -> nn.Module:
    """The shipped driving teacher, or a checkpoint saved by ``fastdiff train teacher``."""
    from fastdiff_core.models import teacher

    if checkpoint is not None:
        return teacher.load_checkpoint(checkpoint, device)
    return teacher.load_teacher(teacher.DEFAULT_TEACHER, device)


class RecordedNet:
    """The network with its calls recorded, so they can be replayed alone, and with a stored-output
    twin, so everything but the network can be timed alone.

    ``record`` runs the real network and keeps each call's inputs and output; ``replay()`` makes
    exactly those calls again back to back (the network's own time for one fan-out);
    ``stored`` is a network that returns the recorded outputs in order without computing anything
    (a fan-out through it times fastdiff's own work: solver, denoiser, conditions, decoding).
    A plain callable, not a module: in stored mode the network should cost nothing, not a module call."""

    def __init__(self, net: SharedContextNet) -> None:
        self.net = net
        self.calls: list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor]] = []
        self.mode = "record"
        self._i = 0

    @property
    def prediction(self) -> str:
        return self.net.prediction

    def _next(self, kind: str, args: tuple[torch.Tensor, ...], run: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.mode == "record":
            out = run()
            self.calls.append((kind, args, out))
            return out
        kind_rec, _, out = self.calls[self._i % len(self.calls)]
        if kind_rec != kind:
            raise RuntimeError(f"stored network replayed out of order: {kind} where {kind_rec} was recorded")
        self._i += 1
        return out

    def context(self, cond: torch.Tensor) -> torch.Tensor:
        return self._next("context", (cond,), lambda: self.net.context(cond))

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self._next("forward", (x_t, t, ctx), lambda: self.net(x_t, t, ctx))

    def replay(self) -> None:
        with torch.inference_mode():
            for kind, args, _ in self.calls:
                self.net.context(*args) if kind == "context" else self.net(*args)


def _fan_inputs(p: int, r: int, h: int, scene, device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    plans = candidate_plans(p, h, actions=len(DrivingWorldModel.actions))
    noise = torch.randn(p * r, h, driving.FRAME_DIM, generator=g).to(device)
    ctx = waiting_frame(scene, 1, g)[0].to(device)
    return plans, noise, ctx


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev_name = device_name(device)
    net = load_network(args.checkpoint, device)
    shared = SharedContextNet(net)
    scene = SCENES[args.scene]
    world = DrivingWorldModel(net, scene)  # the engine's view of the scene; the networks below roll it out
    out: dict[str, Any] = {"device": dev_name, "scene": scene.name, "solver": args.solver}
    print(f"fastdiff bench rollout — device {dev_name}, scene {scene.name}, solver {args.solver}")

    # -- 1. batched fan-out vs a loop over candidates, P·R = 40 -----------------------------------------
    P, R, H, S = 10, 4, 12, 4
    sigmas = build_grid("karras", S, PATH)
    sampler = frame_sampler(args.solver)
    plans, noise, ctx = _fan_inputs(P, R, H, scene, device)
    if args.only_importance:
        _importance_section(args, shared, world, sampler, device, out)
        return _write_json(args, out)
    ts = measure_interleaved(
        {"fan": lambda: fan_out(shared, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx),
         "loop": lambda: loop_over_candidates(shared, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise,
                                              context=ctx)},
        batch={"fan": P * R, "loop": 1}, device=device, warmup=1, repeats=max(3, args.repeats // 2),
        nfe={"fan": S * H * P * R, "loop": S * H * P * R})
    fan, loop = ts["fan"], ts["loop"]
    ratio = loop.median_s / fan.median_s
    print(f"\n1. fan-out vs loop at P·R = {P * R} (H = {H}, S = {S}, C = 1):")
    print(f"   batched fan-out   {fan.median_s * 1000:9.1f} ms/cycle  (p10-p90 {fan.p10_s * 1000:.1f}-{fan.p90_s * 1000:.1f})")
    print(f"   loop over P x R   {loop.median_s * 1000:9.1f} ms/cycle  (p10-p90 {loop.p10_s * 1000:.1f}-{loop.p90_s * 1000:.1f})")
    print(f"   throughput ratio  {ratio:9.1f}x  (target >= 10x; timed interleaved)")
    out["fan_out_vs_loop"] = {"P": P, "R": R, "H": H, "S": S, "batched": fan.row(), "loop": loop.row(),
                              "throughput_ratio": ratio}

    # -- 2. sampler + rollout overhead vs network time at batch >= 64 -----------------------------------
    print("\n2. sampler + rollout overhead as a share of network time (H = 12, S = 4), interleaved:")
    print("   overhead = the fan-out with the network swapped for its recorded outputs (network time excluded);")
    print("   network  = the same network calls replayed alone; cross-check = (real fan-out - network) / network,")
    print("   which also carries the cache interference between the network and everything around it; p10 of")
    print("   interleaved repeats")
    overhead_rows = []
    for rows in (64, 256, 1024):
        p, r = rows // 4, 4
        pl, nz, cx = _fan_inputs(p, r, H, scene, device, seed=rows)
        rec = RecordedNet(shared)
        fan = functools.partial(fan_out, world=world, plans=pl, futures=r, sampler=sampler, sigmas=sigmas, noise=nz,
                                context=cx)
        fan(rec)  # records every network call of one fan-out
        rec.mode = "stored"

        def stored() -> None:
            rec._i = 0
            fan(rec)

        ts = measure_interleaved({"stored": stored, "network": rec.replay, "full": lambda: fan(shared)},
                                 batch=rows, device=device, warmup=1,
                                 repeats=max(7 if rows >= 1024 else 11, args.repeats))
        # p10 of interleaved repeats: on a shared machine the low quantile is the undisturbed time, and the
        # median of a handful of repeats moves by 10% between runs
        net_s, own_s, full_s = ts["network"].p10_s, ts["stored"].p10_s, ts["full"].p10_s
        row = {"batch": rows, "total_s": full_s, "network_s": net_s, "fastdiff_s": own_s,
               "overhead": own_s / net_s, "cross_check": (full_s - net_s) / net_s}
        overhead_rows.append(row)
        print(f"   batch {rows:5d}: network {net_s * 1000:8.1f} ms, fastdiff's own work {own_s * 1000:6.2f} ms = "
              f"overhead {row['overhead']:5.1%}  (target < 5%);  cross-check: real {full_s * 1000:8.1f} ms "
              f"= {row['cross_check']:+5.1%}")
    out["overhead"] = overhead_rows

    # -- 3. shared context vs the plain network ---------------------------------------------------------
    ts = measure_interleaved(
        {"shared": lambda: fan_out(shared, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx),
         "plain": lambda: fan_out(net, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx)},
        batch=P * R, device=device, warmup=1, repeats=args.repeats)
    shared_t, plain = ts["shared"], ts["plain"]
    print(f"\n3. shared context: {shared_t.median_s * 1000:.1f} ms vs plain network {plain.median_s * 1000:.1f} ms "
          f"per cycle ({plain.median_s / shared_t.median_s:.2f}x, interleaved)")
    out["shared_context"] = {"shared": shared_t.row(), "plain": plain.row(),
                             "ratio": plain.median_s / shared_t.median_s}

    # -- 4. the planning cycle: latency, bill, verdict, projection ----------------------------------------
    counter = NFECounter()
    fan_out(shared, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise, context=ctx, counter=counter)
    bill = budget.NFEBill(S=S, C=1.0, H=H, P=P, R=R)
    x_t = torch.randn(P * R, driving.FRAME_DIM, device=device)
    cond = driving.condition(waiting_frame(scene, P * R).to(device), scene, "keep")
    c = shared.context(cond)
    t = torch.full((P * R,), 0.5, device=device)
    with torch.no_grad():
        per_nfe = measure(lambda: shared(x_t, t, c), what="nfe", batch=P * R, device=device, warmup=3,
                          repeats=max(11, args.repeats), nfe=1)
    one = _fan_inputs(1, 1, H, scene, device, seed=7)
    per_rollout = measure(lambda: fan_out(shared, world, one[0], 1, sampler=sampler, sigmas=sigmas,
                                          noise=one[1], context=one[2]),
                          what="rollout (one, alone)", batch=1, device=device, warmup=1, repeats=args.repeats,
                          nfe=S * H)
    cycle = measure(lambda: fan_out(shared, world, plans, R, sampler=sampler, sigmas=sigmas, noise=noise,
                                    context=ctx), what="cycle", batch=P * R, device=device, warmup=1,
                    repeats=max(9, args.repeats), nfe=bill.per_cycle)
    per_frame_s = cycle.median_s / H
    # the measured verdict decides on the interval of the median (UNDECIDED when it straddles the budget)
    verdict = budget.verdict("planning", bill, latency=cycle.sample(), basis="measured")
    proj1 = budget.project_latency(bill, budget.ProductionModel(per_nfe_s=0.010, parallelism=1))
    proj40 = budget.project_latency(bill, budget.ProductionModel(per_nfe_s=0.010, parallelism=P * R))
    v1 = budget.verdict("planning", bill, latency_s=proj1.per_cycle_s,
                        latency_source="for a 2B latent DiT at 10 ms/NFE, no parallelism")
    v40 = budget.verdict("planning", bill, latency_s=proj40.per_cycle_s,
                         latency_source="for a 2B latent DiT at 10 ms/NFE, 40 lanes in one batch")
    print(f"\n4. planning cycle H = {H}, {S} NFE/frame, C = 1, P·R = {P * R} on {dev_name}:")
    print(f"   NFE bill {bill.formula()}; counted {counter.rows:,.0f} ({'==' if counter.rows == bill.per_cycle else '!='} formula)")
    print(f"   per NFE (batch {P * R}) {per_nfe.median_s * 1e3:.3f} ms (p10-p90 {per_nfe.p10_s * 1e3:.3f}-{per_nfe.p90_s * 1e3:.3f}); "
          f"per frame {per_frame_s * 1e3:.2f} ms; one rollout alone {per_rollout.median_s * 1e3:.1f} ms; "
          f"cycle {cycle.median_s * 1e3:.1f} ms (p10-p90 {cycle.p10_s * 1e3:.1f}-{cycle.p90_s * 1e3:.1f}; "
          f"{cycle.confidence:.0%} interval of the median {cycle.lo_s * 1e3:.1f}-{cycle.hi_s * 1e3:.1f} over "
          f"{cycle.repeats} repeats, {cycle.threads} threads, load {cycle.load:.1f})")
    print(f"   verdict: {verdict.sentence}")
    print(f"   2B model at 10 ms/NFE: one rollout {proj1.per_rollout_s * 1e3:.0f} ms ({proj1.per_rollout_s / 0.1:.1f}x the "
          f"100 ms budget); the cycle {proj1.per_cycle_s:.1f} s serial, {proj40.per_cycle_s * 1e3:.0f} ms with all 40 "
          f"futures batched")
    stages = budget.waterfall(bill, distilled=True)
    print("   waterfall to this cycle: " + "  ->  ".join(
        f"{st.lever} {st.bill.per_cycle:,.0f}" + (f" (/{st.factor:.3g})" if st.factor != 1 else "") for st in stages))
    print(f"   verdict (serial): {v1.sentence}")
    print(f"   verdict (batched): {v40.sentence}")
    out["planning_cycle"] = {
        "bill": bill.to_dict(), "nfe_counted": counter.rows, "nfe_formula": bill.per_cycle,
        "latency": [per_nfe.row(), {"what": "frame", "seconds": per_frame_s, "batch": P * R, "device": dev_name},
                    per_rollout.row(), cycle.row()],
        "verdict": verdict.to_dict(),
        "projection_2b_serial": proj1.to_dict() | {"model": proj1.model.describe()},
        "projection_2b_batched": proj40.to_dict() | {"model": proj40.model.describe()},
        "verdict_2b_serial": v1.to_dict(), "verdict_2b_batched": v40.to_dict(),
        "waterfall": [st.to_dict() for st in stages],
    }

    # -- 5. importance sampling of the tail vs uniform, equal NFE (pilot included) ---------------------------
    _importance_section(args, shared, world, sampler, device, out)

    # -- 6. warm start --------------------------------------------------------------------------------------
    planner = Planner(shared, world, plans=P, futures=R, horizon=H, sampler=sampler, sigmas=sigmas, importance=True)
    g = torch.Generator().manual_seed(11)
    first = planner.cycle(ctx, g)
    second = planner.cycle(ctx, g)
    print(f"\n6. warm start: cycle 2's candidate 0 = cycle 1's choice {first.chosen_plan()} shifted -> "
          f"{second.plans[0].tolist()}; tail proposal refitted from cycle 1 "
          f"({'yes' if planner.proposal is not None else 'no tail seen yet'}), no pilot NFE spent")
    out["warm_start"] = {"first_choice": first.chosen_plan(), "second_candidate0": second.plans[0].tolist(),
                         "proposal_reused": planner.proposal is not None}

    return _write_json(args, out)


def _write_json(args: argparse.Namespace, out: dict[str, Any]) -> int:
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def _importance_section(args: argparse.Namespace, net: nn.Module, world, sampler, device: torch.device,
                        out: dict[str, Any]) -> None:
    out["importance"] = [importance_vs_uniform(net, world, sampler, device, reps=args.is_reps, seed=123 + k)
                         for k in range(args.is_seeds)]
    print_importance(out["importance"])


def print_importance(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    print(f"\n5. tail estimate for plan {first['plan']}, true P(darts) {first['truth']:.2%}; per seed: a uniform pilot "
          f"of {first.get('pilot_rollouts', 0)} rollouts, then {first.get('reps')} estimates per arm at equal NFE "
          f"(pilot included): importance {first.get('n')} futures, uniform {first.get('n_uniform')}:")
    for imp in rows:
        if "error" in imp:
            print(f"   seed {imp['seed']}: {imp['error']}")
            continue
        print(f"   seed {imp['seed']}: uniform mean {imp['uniform_mean']:.2%} sd {imp['uniform_sd']:.3%} "
              f"({imp['uniform_tail_count']:.1f} tail rollouts/estimate); importance mean {imp['is_mean']:.2%} "
              f"sd {imp['is_sd']:.3%} ({imp['is_tail_count']:.1f}, ESS {imp['is_ess']:.0f}); variance ratio "
              f"uniform / IS {imp['variance_ratio']:.2f}x, 95% F-interval [{imp['variance_ratio_lo']:.2f}, "
              f"{imp['variance_ratio_hi']:.2f}]; NFE per arm {imp['nfe_per_arm']:,} vs {imp['nfe_importance_arm']:,}")


def importance_vs_uniform(net: nn.Module, world, sampler, device: torch.device, *, reps: int = 24, n: int = 200,
                          horizon: int = 6, steps: int = 8, seed: int = 123, confidence: float = 0.95) -> dict[str, Any]:
    """Variance of the P(darts) estimate of one plan: uniform futures vs the tail proposal at equal NFE,
    the pilot included. The proposal is fitted on a uniform pilot of 4n rollouts; the importance arm
    spends reps x n rollouts after it, so the uniform arm gets n + ceil(4n / reps) rollouts per
    estimate: both arms draw the same total. The variance ratio carries its F-interval (the estimates
    of each arm are independent and close to normal at these n)."""
    from scipy.stats import f as f_dist

    sigmas = build_grid("karras", steps, world.path)
    plan = candidate_plans(1, horizon, actions=len(world.actions))  # constant action 0 ('brake': it invites darting)
    truth = world.truth(plan[0].tolist())[world.tail]
    g = torch.Generator().manual_seed(seed)
    ctx = world.observe(1, g)[0].to(device)
    tail_code = world.labels.index(world.tail)
    pilot_n = 4 * n
    n_uniform = n + -(-pilot_n // reps)

    def estimate(noise, log_w):
        m = noise.shape[0]
        frames = fan_out(net, world, plan, m, sampler=sampler, sigmas=sigmas, noise=noise.to(device), context=ctx)
        codes = world.classify(frames.reshape(m, *frames.shape[2:]))
        log_w = None if log_w is None else log_w[None]
        rate = float(weighted_rates(codes[None].cpu(), log_w, len(world.labels))[0, tail_code])
        return rate, codes.cpu()

    # the pilot: under warm start the previous planning cycle; here it is drawn and billed to the IS arm
    pilot_noise = torch.randn(pilot_n, horizon, world.frame_dim, generator=g)
    frames = fan_out(net, world, plan, pilot_n, sampler=sampler, sigmas=sigmas, noise=pilot_noise.to(device),
                     context=ctx)
    flat = frames.reshape(pilot_n, *frames.shape[2:])
    codes = world.classify(flat).cpu()
    onset = world.onset(flat).cpu()
    proposal = TailProposal.fit(pilot_noise, onset, codes == tail_code, beta=0.5)
    if proposal is None:
        return {"plan": plan[0].tolist(), "truth": truth, "seed": seed, "error": "no tail rollout in the pilot"}
    uni, imp, uni_tail, imp_tail, ess = [], [], [], [], []
    for _ in range(reps):
        rate, c = estimate(torch.randn(n_uniform, horizon, world.frame_dim, generator=g), None)
        uni.append(rate)
        uni_tail.append(int((c == tail_code).sum()))
        zq = proposal.sample(n, horizon, generator=g)
        lw = proposal.log_weights(zq)
        rate, c = estimate(zq, lw)
        imp.append(rate)
        imp_tail.append(int((c == tail_code).sum()))
        ess.append(float(effective_sample_size(lw)))
    u, i = torch.tensor(uni, dtype=torch.float64), torch.tensor(imp, dtype=torch.float64)
    ratio = float(u.var() / i.var()) if float(i.var()) > 0 else math.inf
    # var_u / var_i over its true value ~ F(reps - 1, reps - 1)
    lo_q, hi_q = f_dist.ppf([(1 - confidence) / 2, (1 + confidence) / 2], reps - 1, reps - 1)
    per_step = steps * horizon
    return {"plan": plan[0].tolist(), "truth": truth, "seed": seed, "n": n, "n_uniform": n_uniform, "reps": reps,
            "pilot_rollouts": pilot_n, "nfe_per_arm": per_step * n_uniform * reps,
            "nfe_importance_arm": per_step * (pilot_n + n * reps),
            "uniform_mean": float(u.mean()), "uniform_sd": float(u.std()), "is_mean": float(i.mean()),
            "is_sd": float(i.std()), "variance_ratio": ratio,
            "variance_ratio_lo": ratio / float(hi_q), "variance_ratio_hi": ratio / float(lo_q),
            "uniform_tail_count": sum(uni_tail) / reps, "is_tail_count": sum(imp_tail) / reps,
            "is_ess": sum(ess) / reps, "proposal_shift_norm": float(proposal.mu.norm())}
