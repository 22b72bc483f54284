"""``fastdiff bench rollout``: the planning fan-out measured on the driving teacher.

Measures, in one run on this machine (``run_bench`` yields each section's figures;
``fastdiff_cli.bench_rollout`` parses the flags and prints them):
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

import functools
import math
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from fastdiff_core import budget
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


@dataclass(frozen=True)
class RolloutBench:
    """What one ``fastdiff bench rollout`` run measures."""

    checkpoint: pathlib.Path | None = None  # world-model checkpoint stem (None: the shipped driving teacher)
    scene: str = "child_at_curb"
    solver: str = "dpmpp_2m"
    repeats: int = 5  # timed repeats per figure (after warm-up)
    is_reps: int = 100  # independent estimates per arm (IS vs uniform)
    is_seeds: int = 3  # independent repetitions of the IS comparison
    only_importance: bool = False  # measure only the IS comparison


class _Setup:
    """The network, the scene as the engine sees it, and the P.R = 40 planning cycle every section uses."""

    P, R, H, S = 10, 4, 12, 4

    def __init__(self, bench: RolloutBench, device: torch.device) -> None:
        self.bench, self.device = bench, device
        self.dev_name = device_name(device)
        self.net = load_network(bench.checkpoint, device)
        self.shared = SharedContextNet(self.net)
        self.scene = SCENES[bench.scene]
        self.world = DrivingWorldModel(self.net, self.scene)  # the engine's view of the scene
        self.sigmas = build_grid("karras", self.S, PATH)
        self.sampler = frame_sampler(bench.solver)
        self.plans, self.noise, self.ctx = _fan_inputs(self.P, self.R, self.H, self.scene, device)

    def cycle(self, net: nn.Module, counter: NFECounter | None = None) -> Any:
        """One fan-out of the planning cycle's P candidates x R futures with ``net``."""
        return fan_out(net, self.world, self.plans, self.R, sampler=self.sampler, sigmas=self.sigmas,
                       noise=self.noise, context=self.ctx, counter=counter)


def fan_out_vs_loop(w: _Setup) -> dict[str, Any]:
    """Section 1: the batched fan-out against a Python loop over the candidates, timed interleaved."""
    P, R, H, S = w.P, w.R, w.H, w.S
    ts = measure_interleaved(
        {"fan": lambda: w.cycle(w.shared),
         "loop": lambda: loop_over_candidates(w.shared, w.world, w.plans, R, sampler=w.sampler, sigmas=w.sigmas,
                                              noise=w.noise, context=w.ctx)},
        batch={"fan": P * R, "loop": 1}, device=w.device, warmup=1, repeats=max(3, w.bench.repeats // 2),
        nfe={"fan": S * H * P * R, "loop": S * H * P * R})
    return {"P": P, "R": R, "H": H, "S": S, "batched": ts["fan"].row(), "loop": ts["loop"].row(),
            "throughput_ratio": ts["loop"].median_s / ts["fan"].median_s}


def overhead(w: _Setup) -> list[dict[str, Any]]:
    """Section 2: the fan-out's own work (the network swapped for its recorded outputs) against the same
    network calls replayed alone, at fan-out batches 64, 256, 1024; p10 of interleaved repeats (on a
    shared machine the low quantile is the undisturbed time, and the median of a handful of repeats
    moves by 10% between runs)."""
    rows_out = []
    for rows in (64, 256, 1024):
        p, r = rows // 4, 4
        pl, nz, cx = _fan_inputs(p, r, w.H, w.scene, w.device, seed=rows)
        rec = RecordedNet(w.shared)
        fan = functools.partial(fan_out, world=w.world, plans=pl, futures=r, sampler=w.sampler, sigmas=w.sigmas,
                                noise=nz, context=cx)
        fan(rec)  # records every network call of one fan-out
        rec.mode = "stored"

        def stored() -> None:
            rec._i = 0
            fan(rec)

        ts = measure_interleaved({"stored": stored, "network": rec.replay, "full": lambda: fan(w.shared)},
                                 batch=rows, device=w.device, warmup=1,
                                 repeats=max(7 if rows >= 1024 else 11, w.bench.repeats))
        net_s, own_s, full_s = ts["network"].p10_s, ts["stored"].p10_s, ts["full"].p10_s
        rows_out.append({"batch": rows, "total_s": full_s, "network_s": net_s, "fastdiff_s": own_s,
                         "overhead": own_s / net_s, "cross_check": (full_s - net_s) / net_s})
    return rows_out


def shared_context(w: _Setup) -> dict[str, Any]:
    """Section 3: the condition path once per frame and plan (SharedContextNet) against the plain network."""
    ts = measure_interleaved({"shared": lambda: w.cycle(w.shared), "plain": lambda: w.cycle(w.net)},
                             batch=w.P * w.R, device=w.device, warmup=1, repeats=w.bench.repeats)
    return {"shared": ts["shared"].row(), "plain": ts["plain"].row(),
            "ratio": ts["plain"].median_s / ts["shared"].median_s}


def planning_cycle(w: _Setup) -> dict[str, Any]:
    """Section 4: the cycle's NFE bill (counted against the formula), per-NFE / frame / rollout / cycle
    latency, the measured verdict (on the interval of the median: UNDECIDED when it straddles the
    budget), and the same cycle projected for a 2B model at 10 ms/NFE, serial and batched."""
    P, R, H, S, device = w.P, w.R, w.H, w.S, w.device
    counter = NFECounter()
    w.cycle(w.shared, counter)
    bill = budget.NFEBill(S=S, C=1.0, H=H, P=P, R=R)
    x_t = torch.randn(P * R, driving.FRAME_DIM, device=device)
    c = w.shared.context(driving.condition(waiting_frame(w.scene, P * R).to(device), w.scene, "keep"))
    t = torch.full((P * R,), 0.5, device=device)
    with torch.no_grad():
        per_nfe = measure(lambda: w.shared(x_t, t, c), what="nfe", batch=P * R, device=device, warmup=3,
                          repeats=max(11, w.bench.repeats), nfe=1)
    one = _fan_inputs(1, 1, H, w.scene, device, seed=7)
    per_rollout = measure(lambda: fan_out(w.shared, w.world, one[0], 1, sampler=w.sampler, sigmas=w.sigmas,
                                          noise=one[1], context=one[2]),
                          what="rollout (one, alone)", batch=1, device=device, warmup=1, repeats=w.bench.repeats,
                          nfe=S * H)
    cycle = measure(lambda: w.cycle(w.shared), what="cycle", batch=P * R, device=device, warmup=1,
                    repeats=max(9, w.bench.repeats), nfe=bill.per_cycle)
    verdict = budget.verdict("planning", bill, latency=cycle.sample(), basis="measured")
    proj1 = budget.project_latency(bill, budget.ProductionModel(per_nfe_s=0.010, parallelism=1))
    proj40 = budget.project_latency(bill, budget.ProductionModel(per_nfe_s=0.010, parallelism=P * R))
    v1 = budget.verdict("planning", bill, latency_s=proj1.per_cycle_s,
                        latency_source="for a 2B latent DiT at 10 ms/NFE, no parallelism")
    v40 = budget.verdict("planning", bill, latency_s=proj40.per_cycle_s,
                         latency_source="for a 2B latent DiT at 10 ms/NFE, 40 lanes in one batch")
    return {
        "bill": bill.to_dict(), "bill_formula": bill.formula(), "nfe_counted": counter.rows,
        "nfe_formula": bill.per_cycle,
        "latency": [per_nfe.row(), {"what": "frame", "seconds": cycle.median_s / H, "batch": P * R,
                                    "device": w.dev_name}, per_rollout.row(), cycle.row()],
        "verdict": verdict.to_dict(),
        "projection_2b_serial": proj1.to_dict() | {"model": proj1.model.describe()},
        "projection_2b_batched": proj40.to_dict() | {"model": proj40.model.describe()},
        "verdict_2b_serial": v1.to_dict(), "verdict_2b_batched": v40.to_dict(),
        "waterfall": [st.to_dict() for st in budget.waterfall(bill, distilled=True)],
    }


def importance(w: _Setup) -> list[dict[str, Any]]:
    """Section 5: importance sampling of the tail against uniform futures at equal NFE, per seed."""
    return [importance_vs_uniform(w.shared, w.world, w.sampler, w.device, reps=w.bench.is_reps, seed=123 + k)
            for k in range(w.bench.is_seeds)]


def warm_start(w: _Setup) -> dict[str, Any]:
    """Section 6: what the next planning cycle reuses (the chosen plan shifted, the tail proposal)."""
    planner = Planner(w.shared, w.world, plans=w.P, futures=w.R, horizon=w.H, sampler=w.sampler, sigmas=w.sigmas,
                      importance=True)
    g = torch.Generator().manual_seed(11)
    first = planner.cycle(w.ctx, g)
    second = planner.cycle(w.ctx, g)
    return {"first_choice": first.chosen_plan(), "second_candidate0": second.plans[0].tolist(),
            "proposal_reused": planner.proposal is not None}


SECTIONS: tuple[tuple[str, Callable[[_Setup], Any]], ...] = (
    ("fan_out_vs_loop", fan_out_vs_loop), ("overhead", overhead), ("shared_context", shared_context),
    ("planning_cycle", planning_cycle), ("importance", importance), ("warm_start", warm_start))


def run_bench(bench: RolloutBench, device: torch.device) -> Iterator[tuple[str, Any]]:
    """Each section's name and figures, as soon as it is measured (``only_importance``: section 5 alone);
    the first item is ("setup", {device, scene, solver})."""
    w = _Setup(bench, device)
    yield "setup", {"device": w.dev_name, "scene": w.scene.name, "solver": bench.solver}
    for name, section in SECTIONS:
        if not bench.only_importance or name == "importance":
            yield name, section(w)


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
