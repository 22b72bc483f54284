"""Measuring a driving teacher for its model card: per-scene coverage, the release gate, sample metrics.

``measure_teacher`` is what the card, ``fastdiff train teacher`` and the CI release-gate test run; the
card's numbers are reproducible from its recorded solver, steps, n and seeds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.metrics.gate import RELEASE_GATE, GateConfig, coverage_gate
from fastdiff_core.worlds.driving import sample_metrics, sample_rollouts, scene_coverage, solver_and_grid
from fastdiff_core.worlds.driving import DEFAULT_HORIZON, SCENES, get_scene


@dataclass(frozen=True)
class CardProtocol:
    """How a teacher is measured for its card and the release gate: an accurate solver at guidance 1,
    ``n_per_seed`` rollouts per scene for each of ``seeds``, pooled."""

    solver: str = "heun"
    steps: int = 24
    grid: str = "karras"
    action: str = "keep"
    horizon: int = DEFAULT_HORIZON
    n_per_seed: int = 1000
    seeds: tuple[int, ...] = (0, 1)
    scenes: tuple[str, ...] = tuple(SCENES)
    sample_metric_scenes: tuple[str, ...] = ("hesitant_no_signal", "child_at_curb")
    gate: GateConfig = field(default_factory=lambda: RELEASE_GATE)


def measure_teacher(net: torch.nn.Module, protocol: CardProtocol = CardProtocol(),
                    device: torch.device | str = "cpu") -> dict:
    """Per-scene coverage (pooled over seeds), the gate, and sample metrics on a few scenes."""
    solver, sigmas = solver_and_grid(protocol.solver, protocol.steps, grid=protocol.grid)
    counter = NFECounter()
    scenes, rollouts_for_metrics = {}, {}
    t0 = time.perf_counter()
    for name in protocol.scenes:
        scene = get_scene(name)
        parts = [sample_rollouts(net, scene, protocol.action, protocol.n_per_seed, protocol.horizon, solver=solver,
                                 sigmas=sigmas, guidance=Guidance(), seed=1000 * seed, counter=counter,
                                 device=device) for seed in protocol.seeds]
        r = torch.cat(parts)
        scenes[name] = scene_coverage(r, scene, protocol.action)
        if name in protocol.sample_metric_scenes:
            rollouts_for_metrics[name] = r
    seconds = time.perf_counter() - t0
    gate = coverage_gate({s: c.counts for s, c in scenes.items()}, {s: c.truth for s, c in scenes.items()},
                         protocol.gate)
    metrics = {name: sample_metrics(r, get_scene(name), protocol.action) for name, r in rollouts_for_metrics.items()}
    return {
        "protocol": {**asdict(protocol), "gate": asdict(protocol.gate)},
        "scenes": {s: c.to_dict() for s, c in scenes.items()},
        "gate": gate.summary(),
        "sample_metrics": metrics,
        "mean_tv": sum(c.tv for c in scenes.values()) / len(scenes),
        "max_tv": max(c.tv for c in scenes.values()),
        "sampling_seconds": round(seconds, 1),
        "nfe_per_frame": counter.nfe / (len(protocol.scenes) * len(protocol.seeds) * protocol.horizon),
    }


def regate(measured: dict, config: GateConfig = RELEASE_GATE) -> dict:
    """Recompute the gate of a stored measurement (its per-scene counts) under ``config``."""
    scenes = measured["scenes"]
    gate = coverage_gate({s: c["counts"] for s, c in scenes.items()}, {s: c["truth"] for s, c in scenes.items()},
                         config)
    out = dict(measured)
    out["protocol"] = {**measured["protocol"], "gate": asdict(config)}
    out["gate"] = gate.summary()
    return out


def render_card(title: str, meta: dict) -> str:
    """The model card as markdown, from the checkpoint's JSON sidecar."""
    train, stats, m = meta["train"], meta["stats"], meta["measured"]
    p = m["protocol"]
    lines = [
        f"# {title}", "",
        "A flow-matching world model of the driving world (`fastdiff_core/worlds/driving`): given the previous "
        "frame (4 pedestrian states, 1 s), the scene and the ego action, it generates the next frame; a rollout "
        "is H such frames. Trained on simulator rollouts only — nothing downloaded.", "",
        "## Reproduce", "", "```bash", meta["command"], "```", "",
        "## Training", "",
        f"- prediction target: **{train['model']['prediction']}** on the `rectified_flow` path "
        f"(residual MLP with adaLN: width {train['model']['width']}, depth {train['model']['depth']}, "
        f"{stats['parameters']:,} parameters)",
        f"- data: fresh simulator transitions of all {len(m['scenes'])} scenes x 3 actions, "
        f"{train['rollouts_per_condition']} rollouts per condition x {train['train_horizon']} frames, redrawn every "
        f"{train['pool_steps']} steps",
        f"- {train['steps']} steps, batch {train['batch']}, AdamW lr {train['lr']} (cosine, warm-up {train['warmup']}), "
        f"EMA {train['ema']}, condition dropout {train['cond_dropout']}, tail fraction {train['tail_fraction']}, "
        f"seed {train['seed']}",
        f"- training time: **{stats['train_seconds'] / 60:.1f} min** on {stats['threads']} CPU thread(s) "
        f"({stats.get('host', 'shared 2-core machine')}), final loss {stats['final_loss']:.4f}", "",
        "## Measured coverage", "",
        f"{p['solver']} x {p['steps']} steps ({p['grid']} grid, {m['nfe_per_frame']:.0f} NFE/frame), guidance 1, "
        f"action `{p['action']}`, H = {p['horizon']}, {p['n_per_seed']} rollouts per scene for each of seeds "
        f"{list(p['seeds'])} (pooled n = {p['n_per_seed'] * len(p['seeds'])}).", "",
        "| scene | waits (gen / true) | crosses | darts (tail) [95% CI] | implausible | TV |",
        "|---|---|---|---|---|---|",
    ]
    for s, c in m["scenes"].items():
        n, cnt, tr = c["n"], c["counts"], c["truth"]
        lines.append(
            f"| {s} | {cnt['waits'] / n:.3f} / {tr['waits']:.3f} | {cnt['crosses'] / n:.3f} / {tr['crosses']:.3f} | "
            f"{c['tail_rate']:.4f} [{c['tail_lo']:.4f}, {c['tail_hi']:.4f}] / {tr['darts']:.4f} | "
            f"{c['implausible_rate']:.4f} | {c['tv']:.4f} |")
    lines += ["", f"Mean TV {m['mean_tv']:.4f}, max TV {m['max_tv']:.4f}.", "", *_gate_lines(m)]
    if m["sample_metrics"]:
        lines += ["", *_sample_metric_lines(m["sample_metrics"])]
    for extra in meta.get("notes", []):
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _gate_lines(m: dict) -> list[str]:
    """The card's release-gate section: the outcome, the stated tolerances, every failed or undecided check."""
    g, gate = m["protocol"]["gate"], m["gate"]
    lines = [
        "## Release gate", "",
        f"**{gate.get('outcome', 'PASS' if gate['passed'] else 'FAIL')}** — an equivalence decision per "
        f"check (PASS: interval inside its band, FAIL: outside it, else UNDECIDED), family-wise alpha {g['alpha']} "
        f"(Bonferroni, per-interval confidence {gate['confidence']:.5f}); stated tolerances: tail rate "
        f"±{g['tail_tolerance']:.0%} relative or ±{g.get('tail_tolerance_abs', 0) * 100:.1f} point (the wider), other "
        f"branches ±{g.get('branch_tolerance', 0) * 100:.0f} points, implausible at most {g['leak_tolerance']:.1%} "
        f"(upper bound shown), per-scene TV at most {g['tv_tolerance']} (`fastdiff bench gate`, docs/gate.md).",
    ]
    for f in gate["failures"] + gate.get("undecided", []):
        lines.append(f"- {f['outcome'].lower() if 'outcome' in f else 'failed'}: {f['check']} {f['scene']} "
                     f"{f['label']} rate {f['rate']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}] vs band "
                     f"[{f['band_lo']:.4f}, {f['band_hi']:.4f}]")
    if gate.get("more_samples_needed"):
        lines.append("- rollouts per scene likely to decide: " + ", ".join(
            f"{s} {'more reference samples' if v is None else f'{v:,}'}"
            for s, v in gate["more_samples_needed"].items()))
    return lines


def _sample_metric_lines(metrics: dict) -> list[str]:
    """The card's sample-level metrics table, one row per scene."""
    lines = ["## Sample-level metrics (vs simulator rollouts, k = 5)", "",
             "| scene | precision | recall | density | coverage | Vendi (gen / sim) | MMD | sliced W1 |",
             "|---|---|---|---|---|---|---|---|"]
    for s, v in metrics.items():
        lines.append(f"| {s} | {v['precision']:.3f} | {v['recall']:.3f} | {v['density']:.3f} | "
                     f"{v['coverage']:.3f} | {v['vendi']:.2f} / {v['vendi_truth']:.2f} | {v['mmd']:.5f} | "
                     f"{v['sliced_w1']:.4f} |")
    return lines


# What CI runs on every push: the same solver, fewer rollouts (the gate's limits widen with smaller n).
CI_PROTOCOL = CardProtocol(n_per_seed=600, seeds=(0, 1), sample_metric_scenes=())
