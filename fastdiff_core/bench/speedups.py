"""``fastdiff bench speedups [--json PATH]``: every systems lever side by side, measured in one run.

Each lever is a RunSpec toggle applied to the driving teacher (``fastdiff_core.speedups.from_spec``).
For each: NFE per rollout (counted), deep-block share (caching), sequential network rounds per frame
(Picard), wall clock of a throughput workload (n futures per scene in one fan-out) and of one rollout
alone (the latency-bound case), the speed ratio against the baseline measured in the same run, and
the coverage cost: mean branch TV and pooled tail rate against the simulator's exact probabilities,
and the release coverage gate.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.rollout import load_network
from fastdiff_core.commands.args import int_range, writable_file
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.latency import device_name, measure_interleaved
from fastdiff_core.metrics.coverage import total_variation
from fastdiff_core.metrics.gate import coverage_gate
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.rollout import fan_out
from fastdiff_core.spec import RunSpec
from fastdiff_core.speedups import from_spec
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving import PATH
from fastdiff_core.worlds.driving import ACTIONS, SCENES, TAIL, branch_probabilities
from fastdiff_core.worlds.driving import waiting_frame

# (label, RunSpec changes, reference row for the ratio). Caching and Picard are also measured at 32
# steps, where adjacent steps are close (the regime DeepCache and ParaDiGMS were published in).
BASE = "baseline (fp32, no cache)"
LEVERS: list[tuple[str, dict[str, Any], str]] = [
    (BASE, {}, BASE),
    ("guidance 2, every step", {"guidance_scale": 2.0}, BASE),
    ("guidance 2, interval [0.2, 5]", {"guidance_scale": 2.0, "guidance_interval": (0.2, 5.0)},
     "guidance 2, every step"),
    ("cache fixed, every 2nd step", {"feature_cache": "fixed", "cache_options": {"interval": 2}}, BASE),
    ("cache controlled, budget 0.5", {"feature_cache": "controlled", "cache_options": {"budget": 0.5}}, BASE),
    ("bf16", {"precision": "bfloat16"}, BASE),
    ("int8 dynamic (CPU)", {"precision": "int8"}, BASE),
    ("torch.compile", {"compile": True}, BASE),
    ("32 steps (reference)", {"steps": 32}, "32 steps (reference)"),
    ("32 steps, cache fixed every 2nd", {"steps": 32, "feature_cache": "fixed", "cache_options": {"interval": 2}},
     "32 steps (reference)"),
    ("32 steps, cache controlled 0.5", {"steps": 32, "feature_cache": "controlled", "cache_options": {"budget": 0.5}},
     "32 steps (reference)"),
    ("euler 32 steps (reference)", {"solver": "euler", "steps": 32}, "euler 32 steps (reference)"),
    ("euler 32, picard window 8 tol .1", {"solver": "euler", "steps": 32, "parallel": "picard",
                                          "parallel_options": {"window": 8, "tol": 0.1}},
     "euler 32 steps (reference)"),
]

SCENE_SET = ("child_at_curb", "commuter_late", "red_light_jaywalker", "hesitant_no_signal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures as JSON here")
    parser.add_argument("--threads", type=int_range(1, 1024), default=1,
                        help="intra-op CPU threads (default 1: on a shared CPU, OpenMP oversubscription can stall "
                             "small ops ~100x; the device string records the count)")
    parser.add_argument("--checkpoint", type=pathlib.Path, default=None,
                        help="world-model checkpoint stem (default: the shipped driving teacher)")
    parser.add_argument("--n", type=int_range(1, 1_000_000), default=1500, help="futures per scene (coverage and throughput workload)")
    parser.add_argument("--steps", type=int_range(1, 1000), default=8, help="solver steps of the baseline rows")
    parser.add_argument("--solver", choices=sorted(catalog.SOLVERS), default="dpmpp_2m")
    parser.add_argument("--action", default="keep", choices=ACTIONS)
    parser.add_argument("--horizon", type=int_range(1, 1000), default=6)
    parser.add_argument("--repeats", type=int_range(1, 10_000), default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="lever labels (prefixes) to skip, e.g. torch.compile")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev_name = device_name(device)
    teacher = load_network(args.checkpoint, device)
    base_spec = RunSpec(world="driving", scene=SCENE_SET[0], world_options={"action": args.action},
                        solver=args.solver, steps=args.steps, grid="karras", horizon=args.horizon, samples=args.n)
    action = ACTIONS.index(args.action)
    plan = torch.full((1, args.horizon), action, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    inputs = {s: (torch.randn(args.n, args.horizon, driving.FRAME_DIM, generator=g).to(device),
                  waiting_frame(SCENES[s], 1, g)[0].to(device)) for s in SCENE_SET}
    one_noise = torch.randn(1, args.horizon, driving.FRAME_DIM, generator=g).to(device)
    truth = {s: branch_probabilities(SCENES[s], args.action, args.horizon) for s in SCENE_SET}
    print(f"fastdiff bench speedups — device {dev_name}; {args.solver} {args.steps} steps, H = {args.horizon}, "
          f"action {args.action}, {args.n} futures x {len(SCENE_SET)} scenes per lever")
    print(f"\n{'lever':32s} {'NFE/roll':>8s} {'rounds/fr':>9s} {'deep':>5s} {'thru ms':>8s} {'speed':>6s} "
          f"{'1-roll ms':>9s} {'lat':>6s} {'TV':>6s} {'dTV':>7s} {'tail':>6s} {'dtail':>7s} {'impl':>5s} gate")
    rows: list[dict[str, Any]] = []
    setups: dict[str, tuple] = {}
    by_label: dict[str, dict[str, Any]] = {}
    for label, changes, ref in LEVERS:
        if any(label.startswith(p) for p in args.skip):
            continue
        if changes.get("precision") == "int8" and device.type != "cpu":
            continue
        spec = base_spec.replace(**changes)
        net, sampler, guidance = from_spec(spec, teacher)
        sigmas = build_grid("karras", spec.steps, PATH)
        counter = NFECounter()
        counts, frames_all = {}, {}
        for s in SCENE_SET:
            noise, ctx = inputs[s]
            frames = fan_out(net, SCENES[s], plan, args.n, sampler=sampler, sigmas=sigmas, noise=noise,
                             context=ctx, guidance=guidance, counter=counter)
            counts[s] = driving.branch_counts(frames[0], SCENES[s])
            frames_all[s] = frames
        nfe_per_rollout = counter.rows / (args.n * len(SCENE_SET))
        rounds_per_frame = counter.forwards / (args.horizon * len(SCENE_SET))
        stats = getattr(net, "stats", None)
        deep = stats.deep_fraction if stats is not None else 1.0
        s0 = SCENE_SET[0]
        setups[label] = (net, sampler, guidance, sigmas)

        def workloads(key):
            n_, smp, gd, sg = setups[key]
            return (lambda: fan_out(n_, SCENES[s0], plan, args.n, sampler=smp, sigmas=sg, noise=inputs[s0][0],
                                    context=inputs[s0][1], guidance=gd),
                    lambda: fan_out(n_, SCENES[s0], plan, 1, sampler=smp, sigmas=sg, noise=one_noise,
                                    context=inputs[s0][1], guidance=gd))

        # each lever timed round-robin against its reference, so the ratio is immune to load drift
        mine, theirs = workloads(label), workloads(ref)
        thr_t = measure_interleaved({"lever": mine[0], "ref": theirs[0]}, batch=args.n, device=device, warmup=1,
                                    repeats=args.repeats)
        lat_t = measure_interleaved({"lever": mine[1], "ref": theirs[1]}, batch=1, device=device, warmup=1,
                                    repeats=max(5, args.repeats))
        thr, lat = thr_t["lever"], lat_t["lever"]
        tv = sum(total_variation(counts[s], truth[s]) for s in SCENE_SET) / len(SCENE_SET)
        tail_n = sum(counts[s][TAIL] for s in SCENE_SET)
        n_all = args.n * len(SCENE_SET)
        tail_true = sum(truth[s][TAIL] for s in SCENE_SET) / len(SCENE_SET)
        lo, hi = wilson_interval(tail_n, n_all, 0.95)
        implausible = sum(counts[s]["implausible"] for s in SCENE_SET) / n_all
        gate = coverage_gate(counts, truth)
        row = {"lever": label, "changes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in changes.items()},
               "reference": ref, "nfe_per_rollout": nfe_per_rollout, "rounds_per_frame": rounds_per_frame,
               "deep_fraction": deep, "throughput": thr.row(), "latency_one_rollout": lat.row(),
               "mean_tv": tv, "tail_rate": tail_n / n_all, "tail_lo": lo, "tail_hi": hi, "tail_true": tail_true,
               "implausible": implausible, "gate": gate.outcome, "gate_passed": gate.passed,
               "gate_failures": [f"{c['check']}:{c['scene']}:{c['label']}" for c in gate.failures][:6]}
        by_label[label] = row
        refrow = by_label.get(ref, row)
        row["speed_ratio"] = thr_t["ref"].median_s / thr.median_s
        row["latency_ratio"] = lat_t["ref"].median_s / lat.median_s
        row["tv_change"] = tv - refrow["mean_tv"]
        row["tail_change"] = row["tail_rate"] - refrow["tail_rate"]
        rows.append(row)
        print(f"{row['lever']:32s} {row['nfe_per_rollout']:8.1f} {row['rounds_per_frame']:9.1f} {row['deep_fraction']:5.2f} "
              f"{row['throughput']['median_s'] * 1e3:8.1f} {row['speed_ratio']:5.2f}x "
              f"{row['latency_one_rollout']['median_s'] * 1e3:9.2f} {row['latency_ratio']:5.2f}x "
              f"{row['mean_tv']:6.3f} {row['tv_change']:+7.3f} {row['tail_rate']:6.2%} {row['tail_change']:+7.2%} "
              f"{row['implausible']:5.1%} {row['gate']}")

    print(f"\ntrue mean tail rate {rows[0]['tail_true']:.2%}. Ratios are against each row's reference, timed "
          "interleaved in this run (the guidance interval against guidance at every step, 32-step rows against "
          f"32-step references); 'speed' = throughput workload ({args.n} futures in one fan-out), 'lat' = one "
          "rollout alone, 'rounds/fr' = sequential network rounds per frame (latency on hardware with spare "
          "parallel lanes), 'deep' = share of steps that ran the deep blocks.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": dev_name, "steps": args.steps, "solver": args.solver,
                                         "horizon": args.horizon, "n": args.n, "scenes": list(SCENE_SET),
                                         "levers": rows}, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0
