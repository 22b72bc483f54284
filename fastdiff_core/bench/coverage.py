"""``fastdiff bench coverage``: what solver, step count and guidance cost in coverage on the driving teacher.

Two sweeps, every configuration sampled on every scene (action ``keep``, H = 6) from the same seeds:

1. solver families x NFE per frame (guidance 1): branch TV, pooled and per-scene tail rate with its
   interval, implausible rate (blur), k-NN precision/recall on two multimodal scenes, the release gate;
2. guidance scale {1, 1.5, 3, 5} x {always, interval}: the same columns.

The gate column is the three-outcome coverage gate (``metrics.gate``: PASS / FAIL / UNDECIDED at
family alpha 0.05). ``--sequential`` samples every scene in batches (250, then x1.5) until the gate
has decided it or ``--cap`` rollouts per scene (``SequentialGate``: confidence sequences, so the
looks cost no error rate); ``n/scene`` is then the mean rollouts drawn per scene. ``--seeds 0,1,2``
repeats every configuration per seed and ends with one line per configuration over the seeds.

Prints tables; ``--json PATH`` writes every row. The figures in docs/bench-coverage.md and
docs/coverage.md come from this command.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.gate import Schedule
from fastdiff_core.commands.args import comma_list, float_range, int_range, writable_file
from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.metrics.gate import RELEASE_GATE, SequentialGate, coverage_gate
from fastdiff_core.metrics.intervals import wilson_interval
from fastdiff_core.models.teacher import DEFAULT_TEACHER, TEACHERS, load_teacher
from fastdiff_core.worlds.driving import (
    sample_metrics,
    sample_rollouts,
    scene_coverage,
    solver_and_grid,
)
from fastdiff_core.worlds.driving import ACTIONS, SCENES, branch_probabilities, get_scene

PR_SCENES = ("hesitant_no_signal", "child_at_curb")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", choices=TEACHERS, default=DEFAULT_TEACHER)
    parser.add_argument("--solvers", type=comma_list(str, choices=tuple(catalog.SOLVERS)),
                        default="euler,heun,dpmpp_2m,unipc,dpmpp_2m_sde")
    parser.add_argument("--nfe", type=comma_list(int_range(1, 1000)), default="4,8,16,32,50", help="NFE per frame (before guidance)")
    parser.add_argument("--sweeps", type=comma_list(str, choices=("solver", "guidance")), default="solver,guidance",
                        help="which sweeps to run: the solver x NFE sweep, the guidance sweep, or both")
    parser.add_argument("--guidance", type=comma_list(float_range(0.0)), default="1,1.5,3,5")
    parser.add_argument("--interval", type=comma_list(float_range(0.0), length=2), default="0.3,5.0", help="guidance interval [sigma_lo, sigma_hi] (VE sigma)")
    parser.add_argument("--guidance-solver", choices=sorted(catalog.SOLVERS), default="dpmpp_2m")
    parser.add_argument("--guidance-nfe", type=int_range(1, 1000), default=16)
    parser.add_argument("--n", type=int_range(1, 1_000_000), default=1000, help="rollouts per scene per configuration")
    parser.add_argument("--horizon", type=int_range(1, 1000), default=6)
    parser.add_argument("--action", choices=ACTIONS, default="keep")
    parser.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0)
    parser.add_argument("--seeds", type=comma_list(int_range(0, 2**63 - 1)), default=None,
                        help="comma-separated seeds: every configuration once per seed")
    parser.add_argument("--sequential", action="store_true", help="sample in batches until the gate decides")
    parser.add_argument("--cap", type=int_range(1), default=4000, help="sequential: rollouts per scene at most")
    parser.add_argument("--threads", type=int_range(1, 1024), default=2)
    parser.add_argument("--no-pr", action="store_true", help="skip k-NN precision/recall")
    parser.add_argument("--json", type=writable_file, default=None)


def measure(net, solver_name: str, steps: int, guidance: Guidance, args, seed: int | None = None) -> dict:
    seed = args.seed if seed is None else seed
    solver, sigmas = solver_and_grid(solver_name, steps)
    counter = NFECounter()
    t0 = time.perf_counter()
    looks = (Schedule(first_batch=min(250, args.cap), growth=1.5, cap=args.cap).looks() if args.sequential
             else [args.n])
    sequential = (SequentialGate({name: branch_probabilities(get_scene(name), args.action, args.horizon)
                                  for name in SCENES}, RELEASE_GATE, cap=int(looks[-1])) if args.sequential else None)
    drawn: dict[str, list[torch.Tensor]] = {name: [] for name in SCENES}
    for k, target in enumerate(looks):
        todo = list(SCENES) if sequential is None or k == 0 else sequential.scenes_to_sample()
        if not todo:
            break
        batch = {}
        for name in todo:
            scene = get_scene(name)
            have = sum(len(r) for r in drawn[name])
            r = sample_rollouts(net, scene, args.action, int(target) - have, args.horizon, solver=solver,
                                sigmas=sigmas, guidance=guidance, seed=seed + 7919 * k, counter=counter)
            drawn[name].append(r)
            batch[name] = scene_coverage(r, scene, args.action).counts
        if sequential is not None:
            sequential.update(batch)
    covs, pr = {}, {}
    for name in SCENES:
        scene = get_scene(name)
        r = torch.cat(drawn[name])
        covs[name] = scene_coverage(r, scene, args.action)
        if name in PR_SCENES and not args.no_pr:
            pr[name] = sample_metrics(r, scene, args.action, max_n=min(len(r), 1000))
    seconds = time.perf_counter() - t0
    gate = (sequential.result if sequential is not None else
            coverage_gate({s: c.counts for s, c in covs.items()}, {s: c.truth for s, c in covs.items()}, RELEASE_GATE))
    tail_count = sum(c.counts["darts"] for c in covs.values())
    n_total = sum(c.n for c in covs.values())
    tail_truth = sum(c.truth["darts"] * c.n for c in covs.values()) / n_total
    lo, hi = wilson_interval(tail_count, n_total)
    row = {
        "solver": solver_name, "steps": steps, "guidance": guidance.scale,
        "interval": list(guidance.interval) if guidance.interval else None,
        "nfe_per_frame": counter.rows / (n_total * args.horizon),  # per-sample evaluations per frame
        "mean_tv": sum(c.tv for c in covs.values()) / len(covs), "max_tv": max(c.tv for c in covs.values()),
        "tail_rate": tail_count / n_total, "tail_lo": lo, "tail_hi": hi, "tail_truth": tail_truth,
        "implausible_rate": sum(c.counts["implausible"] for c in covs.values()) / n_total,
        "seed": seed, "mode": "sequential" if sequential is not None else "fixed",
        "rollouts_per_scene": n_total / len(covs), "gate": gate.outcome, "gate_pass": gate.passed,
        "gate_failures": len(gate.failures), "gate_undecided": len(gate.undecided),
        "more_samples_needed": dict(gate.more_samples_needed),
        "scenes": {s: c.to_dict() for s, c in covs.items()}, "seconds": round(seconds, 1),
    }
    if pr:
        row["precision"] = sum(v["precision"] for v in pr.values()) / len(pr)
        row["recall"] = sum(v["recall"] for v in pr.values()) / len(pr)
        row["sample_metrics"] = pr
    return row


def _fmt(row: dict) -> str:
    gi = "-" if row["interval"] is None else f"[{row['interval'][0]:g},{row['interval'][1]:g}]"
    pr = (f"{row['precision']:.3f} {row['recall']:.3f}" if "precision" in row else "   -     -  ")
    return (f"{row['solver']:<13} {row['steps']:>5} {row['nfe_per_frame']:>6.1f} {row['guidance']:>4g} {gi:>10} "
            f"{row['mean_tv']:>7.4f} {row['max_tv']:>7.4f} {row['tail_rate']:>7.4f} "
            f"[{row['tail_lo']:.4f},{row['tail_hi']:.4f}] {row['tail_truth']:>7.4f} {row['implausible_rate']:>7.4f} "
            f"{pr} {row['seed']:>4} {row['rollouts_per_scene']:>7.0f} {row['gate']:>9}")


HEADER = (f"{'solver':<13} {'steps':>5} {'NFE/f':>6} {'cfg':>4} {'interval':>10} {'meanTV':>7} {'maxTV':>7} "
          f"{'tail':>7} {'[95% CI]':>17} {'true':>7} {'implaus':>7} {'prec':>5} {'rec':>5} {'seed':>4} "
          f"{'n/scene':>7} {'gate':>9}")


def summary(rows: list[dict]) -> list[dict]:
    """One line per configuration over its seeds: the outcomes and the rollouts per scene drawn."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["sweep"], r["solver"], r["steps"], r["guidance"], str(r["interval"]))
        groups.setdefault(key, []).append(r)
    out = []
    for (sweep, solver, steps, scale, interval), rs in groups.items():
        n = [r["rollouts_per_scene"] for r in rs]
        out.append({"sweep": sweep, "solver": solver, "steps": steps, "guidance": scale, "interval": interval,
                    "nfe_per_frame": rs[0]["nfe_per_frame"], "seeds": [r["seed"] for r in rs],
                    "outcomes": [r["gate"] for r in rs], "mean_rollouts": sum(n) / len(n),
                    "min_rollouts": min(n), "max_rollouts": max(n),
                    "mean_tv": [r["mean_tv"] for r in rs], "tail_rate": [r["tail_rate"] for r in rs]})
    return out


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot check alone, before the teacher loads."""
    lo, hi = args.interval
    if not lo < hi:
        raise ValueError(f"--interval={lo:g},{hi:g} must have sigma_lo < sigma_hi")
    if catalog.solver_info(args.guidance_solver).steps_for_nfe(args.guidance_nfe) is None:
        raise ValueError(f"--guidance-nfe={args.guidance_nfe} is not an NFE {args.guidance_solver} can spend exactly; "
                         "choose another (e.g. an even number for two-evaluation steps)")
    if not args.no_pr and args.n <= 5:
        raise ValueError(f"--n={args.n} is too small for k-NN precision/recall (k = 5); allowed: --n >= 6, "
                         "or --no-pr")


def main(args: argparse.Namespace) -> int:
    check_args(args)
    seeds = [args.seed] if args.seeds is None else list(args.seeds)
    torch.set_num_threads(args.threads)
    net = load_teacher(args.teacher)
    rows = []
    print(f"teacher={args.teacher}  n={args.n}/scene x {len(SCENES)} scenes  H={args.horizon}  action={args.action}")
    print("\n== solver x NFE (guidance 1) ==")
    print(HEADER)
    for solver in (args.solvers if "solver" in args.sweeps else []):
        info = catalog.solver_info(solver)
        done = set()
        for nfe in args.nfe:
            steps = info.steps_for_nfe(nfe)
            if steps is None or steps in done:
                continue
            done.add(steps)
            for seed in seeds:
                row = measure(net, solver, steps, Guidance(), args, seed)
                row["sweep"] = "solver"
                rows.append(row)
                print(_fmt(row), flush=True)
    print(f"\n== guidance ({args.guidance_solver}, {args.guidance_nfe} NFE/frame before guidance) ==")
    print(HEADER)
    lo, hi = args.interval
    steps = catalog.solver_info(args.guidance_solver).steps_for_nfe(args.guidance_nfe)
    for scale in (args.guidance if "guidance" in args.sweeps else []):
        for interval in (None, (lo, hi)):
            if scale == 1.0 and interval is not None:
                continue
            for seed in seeds:
                row = measure(net, args.guidance_solver, steps, Guidance(scale, interval), args, seed)
                row["sweep"] = "guidance"
                rows.append(row)
                print(_fmt(row), flush=True)
    lines = summary(rows)
    print(f"\n== over seeds {seeds}: gate outcomes and rollouts per scene ==")
    for s in lines:
        what = f"cfg {s['guidance']:g} {s['interval']}" if s["sweep"] == "guidance" else ""
        print(f"{s['solver']:<13} {s['steps']:>5} {s['nfe_per_frame']:>6.1f} {what:<16} {'/'.join(s['outcomes']):<30} "
              f"mean {s['mean_rollouts']:>7.0f} [{s['min_rollouts']:.0f}, {s['max_rollouts']:.0f}]")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "summary": lines}, indent=1))
        print(f"\nwrote {args.json}")
    return 0
