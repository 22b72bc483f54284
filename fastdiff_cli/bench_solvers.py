"""``fastdiff bench solvers [--json PATH] [--quick]``: every solver x grid x NFE on a mixture world
against the exact reference, beside diffusers' and k-diffusion's samplers (fastdiff_core.bench.solvers
measures; this module parses the flags and prints the tables)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import torch

from fastdiff_core import catalog
from fastdiff_core.bench.solvers import HELDOUT_NFES, STOCHASTIC, SolversBench, SolversReport, heldout_settings, heldout_wins, run_bench
from fastdiff_cli.args import comma_list, int_range, writable_file
from fastdiff_core.metrics.rate_change import RARE_MODE, decision_text
from fastdiff_core.solvers.brownian import NOISE_KINDS
from fastdiff_core.spec import MAX_SEED


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", type=writable_file, help="write every measured row as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="CI-sized: fewer samples and NFEs, no grid search")
    p.add_argument("--preset", default="rare2d", choices=sorted(catalog.WORLDS["mixture"].options["preset"].choices))
    p.add_argument("--samples", type=int_range(1, 1_000_000), default=None, help="noise samples (default 1000, quick 300)")
    p.add_argument("--seed", type=int_range(0, MAX_SEED), default=0)
    p.add_argument("--no-peers", action="store_true", help="skip diffusers and k-diffusion")
    p.add_argument("--worlds", type=int_range(0, 100_000), default=0, help="held-out random worlds to report first (default 0)")
    p.add_argument("--world-samples", type=int_range(1, 1_000_000), default=300, help="noise samples per held-out world (default 300)")
    p.add_argument("--world-offset", type=int_range(0, 999_000), default=0,
                   help="start at the held-out world after the first K (a fresh draw: worlds K+1..K+N; default 0)")
    p.add_argument("--world-nfes", type=comma_list(int_range(1, 200)), default=list(HELDOUT_NFES),
                   help=f"NFEs on the held-out worlds, a comma list (default {','.join(map(str, HELDOUT_NFES))})")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    bench = SolversBench(preset=args.preset, samples=args.samples, seed=args.seed, quick=args.quick,
                         peers=not args.no_peers, worlds=args.worlds, world_samples=args.world_samples,
                         world_offset=args.world_offset, world_nfes=tuple(sorted(set(args.world_nfes))))
    report = run_bench(bench, log=lambda s: print(s, file=sys.stderr, flush=True))
    if report.held_out:
        print_heldout(report, bench.world_samples)
    print_accuracy(report)
    print_overhead(report)
    print_sde_and_zones(report)
    for note in report.peers_missing:
        print(f"\nnote: {note}")
    print(f"\nwall {report.wall_s:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1, default=str)
        print(f"rows written to {args.json}")
    return 0


def print_heldout(report: SolversReport, samples: int) -> None:
    summary = report.held_out_summary
    worlds = summary[0]["worlds"] if summary else 0
    print(f"\nHeld-out random worlds ({worlds} worlds never used for tuning, {samples} samples each, exact reference):")
    print("best fastdiff RMSE (fixed or shipped grids) / best peer RMSE, per world; median [quartiles], worlds better")
    for s in summary:
        if "ratio_median" in s:
            print(f"  NFE {s['nfe']:>3}: {s['ratio_median']:.3f} [{s['ratio_q1']:.3f}, {s['ratio_q3']:.3f}]  "
                  f"{s['worlds_better']}/{s['worlds_compared']}")
        else:
            print(f"  NFE {s['nfe']:>3}: no peer rows (peers not installed or --no-peers)")
    print(f"rare mode of each world's best setting (by RMSE), pooled over the worlds: the decision ({RARE_MODE.text}; "
          f"r = relative change of the rate, {1 - 2 * RARE_MODE.alpha:.0%} interval)")
    for s in summary:
        print(f"  NFE {s['nfe']:>3}: fastdiff {decision_text(s['rare_decision'])}")
        if "peer_rare_decision" in s:
            print(f"  {'':>8}  best peer {decision_text(s['peer_rare_decision'])}")
    print("  information, not a pass: the pooled paired difference and a 2-SE test of *no* difference (any bias "
          "fails it with enough samples, none is seen with few)")
    for s in summary:
        print(f"  NFE {s['nfe']:>3}: {s['rare_diff']:+.4f} +- {s['rare_diff_se']:.4f}  "
              f"{'within' if s['rare_within_2se'] else 'outside'} 2 SE")
    print("fastdiff settings that were best on a (world, NFE):")
    for setting, wins in heldout_wins(report.held_out):
        print(f"  {wins:>3}  {setting}")
    print_heldout_settings(report)


def _rare_cell(r: dict[str, Any]) -> str:
    off = f", {r['rare_in_off_mode']} off-mode" if "rare_in_off_mode" in r else ""
    return (f"{decision_text(r['rare_decision'], short=True)}  diff {r['rare_diff']:+.4f} +- "
            f"{r['rare_diff_se']:.4f} (in {r['rare_in']}{off}, out {r['rare_out']})"
            + (f"  ratio {r['ratio_median']:.3f}" if "ratio_median" in r else ""))


def print_heldout_settings(report: SolversReport, most: int = 6) -> None:
    """Per NFE: the rare-mode criterion of each fixed setting (the lowest-RMSE ones), and the tail-safe setting."""
    print("rare mode per setting, pooled over the worlds (the decision, r [(1 - 2 alpha) interval]; the paired diff +- SE; "
          "samples moved in, of them off-mode = outside the rare mode's 99.9% ellipsoid, and out), RMSE / the world's "
          "best fastdiff (geometric mean) and / the best peer (median):")
    for s in report.held_out_summary:
        print(f"  NFE {s['nfe']}:")
        for r in heldout_settings(report.held_out, s["nfe"])[:most]:
            print(f"    {r['setting']:<58} rmse/best {r['rmse_vs_best']:.3f}  {_rare_cell(r)}")
        t = s.get("tail_safe")
        if t is None:
            print("    tail-safe: no setting PASSes the rare-mode decision on the choosing half (or fewer than 4 worlds)")
        else:
            print(f"    tail-safe (chosen on {len(t['chosen_on'])} worlds, judged on the other {len(t['judged_on'])}): "
                  f"{t['setting']}\n      chosen: rmse/best {t['choice']['rmse_vs_best']:.3f}  {_rare_cell(t['choice'])}"
                  + (f"\n      judged: rmse/best {t['judged']['rmse_vs_best']:.3f}  {_rare_cell(t['judged'])}"
                     if t["judged"] else "\n      judged: the setting has no finite row on every judging world"))


def print_accuracy(report: SolversReport) -> None:
    """Best per implementation, best fixed grid, the rare mode, every solver's best grid, adaptive solvers."""
    print(f"\nfastdiff bench solvers: world {report.world} (dim {report.dim}), {report.samples} samples, path "
          "vp_discrete, reference DOP853 rtol=1e-10; every error is integration error only\n")
    print("Best per implementation (terminal RMSE vs the reference from the same noise):")
    print(f"{'NFE':>4}  {'fastdiff best':<44}{'rmse':>10}  {'peer best':<58}{'rmse':>10}{'ratio':>7}")
    for s in report.summary:
        peer = f"{s['peer']:<58}{s['peer_rmse']:>10.3e}{s['ratio']:>7.2f}" if "peer" in s else ""
        print(f"{s['nfe']:>4}  {s['fastdiff']:<44}{s['fastdiff_rmse']:>10.3e}  {peer}")
    print("\nBest fixed grid (no search) per NFE:")
    for s in report.summary:
        extra = f"  ratio vs peer {s['fastdiff_fixed_rmse'] / s['peer_rmse']:.2f}" if "peer_rmse" in s else ""
        print(f"{s['nfe']:>4}  {s['fastdiff_fixed']:<44}{s['fastdiff_fixed_rmse']:>10.3e}{extra}")
    print("\nRare mode (best fastdiff setting per NFE): rate [95% Wilson] vs the reference's rate:")
    for s in report.summary:
        inside = s["rare_lo"] <= s["rare_rate_ref"] <= s["rare_hi"]
        print(f"{s['nfe']:>4}  {s['fastdiff_rare_rate']:.4f} [{s['rare_lo']:.4f}, {s['rare_hi']:.4f}]  "
              f"reference {s['rare_rate_ref']:.4f}  {'within' if inside else 'OUTSIDE'}")
    ours = [r for r in report.rows if r["impl"] == "fastdiff" and "rmse" in r and math.isfinite(r["rmse"])]
    print("\nAll fastdiff solvers, best grid per NFE (rmse):")
    print(f"{'solver':<26}" + "".join(f"{v:>11}" for v in report.nfes))
    for name in sorted({r["solver"] for r in ours if r["nfe_target"] is not None}):
        cells = [[r["rmse"] for r in ours if r["solver"] == name and r["nfe_target"] == v] for v in report.nfes]
        print(f"{name:<26}" + "".join(f"{min(c):>11.2e}" if c else f"{'-':>11}" for c in cells))
    print("\nAdaptive solvers (the tolerance sets the NFE): rmse, and the rare mode against the reference's rate:")
    for r in [r for r in ours if r["grid"] == "adaptive"]:
        print(f"{r['solver']:<26} nfe {r['nfe']:>4}  rmse {r['rmse']:.2e}  rare {r['rare_rate']:.4f} "
              f"[{r['rare_lo']:.4f}, {r['rare_hi']:.4f}] vs {r['rare_rate_ref']:.4f}")


def print_overhead(report: SolversReport) -> None:
    """Overhead per network call beside k-diffusion and diffusers; the whole path around an MLP."""
    print("\nOverhead per network call, network excluded (us; min of repeats), same run:")
    print(f"{'solver':<14}{'batch':>6}{'fastdiff':>10}{'k-diffusion':>13}{'ratio':>7}   peer (diffusers)")
    peer_over = {(r["solver"], r["batch"]): r for r in report.overhead if "peer_overhead_us" in r}
    for r in [r for r in report.overhead if "overhead_us" in r]:
        kdv = r.get("k_diffusion_overhead_us")
        pr = peer_over.get((r["solver"], r["batch"]))
        print(f"{r['solver']:<14}{r['batch']:>6}{r['overhead_us']:>10.1f}"
              + (f"{kdv:>13.1f}{r['ratio_vs_k_diffusion']:>7.2f}" if kdv else f"{'-':>13}{'-':>7}")
              + (f"   {pr['peer']} {pr['peer_overhead_us']:.1f}" if pr else "")
              + (f"   of which the noise draw {r['noise_draw_us']:.1f} in both; without it "
                 f"{r['ratio_vs_k_diffusion_excluding_noise']:.2f}" if "noise_draw_us" in r else ""))
    mlp = report.mlp_overhead
    print(f"\nWhole fastdiff path (Denoiser + solver) around a {mlp[0]['mlp_params']}-parameter MLP, batch 256:")
    print("  (overhead timed with the MLP swapped for a stored output, medians over interleaved rounds, the share")
    print("   taken round by round; the last column is the noisy cross-check 'real MLP in the solver minus the MLP alone')")
    for r in mlp:
        print(f"  {r['solver']:<12} network {r['network_us']:8.1f} us/call   overhead {r['overhead_us']:7.1f} us "
              f"= {100 * r['overhead_fraction']:.1f}% of network time   (subtraction: {r['total_minus_network_us']:+.1f} us)"
              + (f"\n  {'':<12} of which the noise draw {r['noise_draw_us']:.1f} us = "
                 f"{100 * r['noise_draw_fraction']:.1f}%; without it {100 * r['overhead_excluding_noise_fraction']:.1f}%"
                 if "noise_draw_us" in r else ""))


def print_sde_and_zones(report: SolversReport) -> None:
    """The stochastic samplers' convergence (brownian vs iid noise) and where the steps go."""
    sde: list[dict[str, Any]] = report.sde_convergence
    print(f"\nStochastic samplers: RMSE against the same sampler at {sde[0]['ref_steps']} steps, same noise and seed"
          " (brownian: one Brownian motion per seed; iid: a fresh draw per step), and the rare mode vs the truth:")
    print(f"{'solver':<14}{'noise':<10}" + "".join(f"{'NFE ' + str(r['nfe']):>12}" for r in sde
                                                 if r["solver"] == sde[0]["solver"] and r["noise"] == sde[0]["noise"]))
    for name in STOCHASTIC:
        for kind in NOISE_KINDS:
            cells = [r for r in sde if r["solver"] == name and r["noise"] == kind]
            print(f"{name:<14}{kind:<10}" + "".join(f"{r['rmse_vs_fine']:>12.3e}" for r in cells)
                  + "   rare " + " ".join(f"{r['rare_rate']:.3f}" for r in cells) + f" (truth {cells[0]['rare_rate_truth']:.3f})")
    zones = report.zones
    print(f"\nWhere the steps go ({zones[0]['solver']}, geometric halves split at sigma = {zones[0]['split_sigma']}):")
    for r in zones:
        print(f"  {r['zone']:<26} nfe {r['nfe']:>3}  mode flips {r['mode_flip_rate']:.4f}  "
              f"median err {r['median_err']:.2e}  rmse {r['rmse']:.2e}")
