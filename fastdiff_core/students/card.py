"""Measuring a driving student for its model card, side by side with the teacher it came from.

Protocol (``StudentProtocol``): every named scene under one action, H-frame rollouts from fresh noise
(seeded). Fixed mode: n per scene. Sequential mode (``cap`` set): every scene is sampled in looks
(250, then x1.5) until both gates have decided it or ``cap`` rollouts, the gates' intervals being
confidence sequences (``metrics.gate.SequentialGate``), so the looks cost no error rate. Per scene:
branch counts against the exact probabilities, TV, the tail rate with its Wilson interval, the
implausible (blurred) share. Over all scenes: the coverage gate against the ground truth
(``metrics.gate.RELEASE_GATE``) and, two-sample, against the teacher's own counts (the teacher sampled
on the same protocol and seed with its most accurate curve setting, DPM-Solver++(2M) x 32, guidance 1), sample-level
metrics (k-NN precision/recall, Vendi diversity) on two multimodal scenes from the first
``metric_n`` rollouts (the same n for every setting, since k-NN recall grows with n), NFE per frame
(counted), wall-clock per rollout and this process's CPU time per rollout (on a CPU shared with
other jobs the wall clock carries their load; CPU time is what the speed-up ratios use). Everything
is sampled in the call.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch

from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.metrics.gate import RELEASE_GATE, GateConfig, SequentialGate, coverage_gate, teacher_gate
from fastdiff_core.worlds.driving import sample_metrics, scene_coverage
from fastdiff_core.worlds.driving import rollout, sample_frame
from fastdiff_core.worlds.driving import DEFAULT_HORIZON, SCENES, branch_probabilities, get_scene

FIRST_LOOK, GROWTH = 250, 1.5  # sequential looks: 250 rollouts per scene, then x1.5 up to the cap


@dataclass(frozen=True)
class StudentProtocol:
    """How students (and the teacher settings they are compared with) are measured."""

    action: str = "keep"
    horizon: int = DEFAULT_HORIZON
    n: int = 2000  # fixed mode: rollouts per scene
    seed: int = 0
    cap: int | None = None  # sequential mode: at most this many rollouts per scene
    metric_n: int = 250  # rollouts per scene the sample-level metrics use
    batch: int = 4096
    scenes: tuple[str, ...] = tuple(SCENES)
    sample_metric_scenes: tuple[str, ...] = ("hesitant_no_signal", "child_at_curb")
    gate: GateConfig = field(default_factory=lambda: RELEASE_GATE)


def sample_scene(net: torch.nn.Module | None, scene_name: str, protocol: StudentProtocol, *,
                 frame_sampler: Callable[..., torch.Tensor] = sample_frame, solver: Any = None, sigmas: Any = None,
                 guidance: Guidance = Guidance(), counter: NFECounter | None = None, n: int | None = None,
                 look: int = 0) -> torch.Tensor:
    """``n`` (default protocol.n) rollouts of one scene (CPU float32), batches seeded
    ``seed * 1000 + 100 * scene index + b + 100003 * look`` (look k of a sequential run: fresh noise)."""
    scene = get_scene(scene_name)
    out = []
    n = protocol.n if n is None else n
    base = protocol.seed * 1000 + 100 * list(SCENES).index(scene_name) + 100_003 * look
    for b, start in enumerate(range(0, n, protocol.batch)):
        size = min(protocol.batch, n - start)
        gen = torch.Generator().manual_seed(base + b)
        with torch.no_grad():
            r = rollout(net, scene, protocol.action, size, protocol.horizon, solver=solver, sigmas=sigmas,
                        guidance=guidance, generator=gen, counter=counter, frame_sampler=frame_sampler)
        out.append(r.to(torch.float32).cpu())
    return torch.cat(out)


def measure(net: torch.nn.Module | None, protocol: StudentProtocol,
            teacher_counts: Mapping[str, Mapping[str, int]] | None, *, frame_sampler: Callable[..., torch.Tensor] = sample_frame, solver: Any = None, sigmas: Any = None,
            guidance: Guidance = Guidance(), truth_override: Mapping[str, Mapping[str, float]] | None = None,
            fixed: bool = False) -> dict[str, Any]:
    """Sample every scene and score it; ``teacher_counts[scene][label]`` (the teacher's own branch
    counts, ``counts_of``) are the second gate's reference, judged two-sample so the teacher's
    sampling noise is carried (None: no second gate, as when measuring the teacher).
    ``truth_override`` replaces the ground truth with exact rates. ``fixed`` samples protocol.cap
    rollouts per scene even in sequential mode (the teacher curve: every setting at the same n)."""
    counter = NFECounter()
    truth = {s: dict(truth_override[s]) if truth_override else branch_probabilities(get_scene(s), protocol.action,
                                                                                     protocol.horizon)
             for s in protocol.scenes}
    sequential = protocol.cap is not None and not fixed
    looks = _looks(protocol, sequential)
    gates = _sequential_gates(truth, teacher_counts, protocol, looks[-1]) if sequential else []
    drawn, seconds, cpu_seconds = _sample_looks(
        net, protocol, looks, gates, teacher_counts,
        dict(frame_sampler=frame_sampler, solver=solver, sigmas=sigmas, guidance=guidance, counter=counter))
    scenes, metrics = {}, {}
    for name in protocol.scenes:
        r = torch.cat(drawn[name])
        scenes[name] = scene_coverage(r, get_scene(name), protocol.action)
        if name in protocol.sample_metric_scenes:
            metrics[name] = sample_metrics(r, get_scene(name), protocol.action, seed=protocol.seed,
                                           max_n=protocol.metric_n)
    counts = {s: dict(c.counts) for s, c in scenes.items()}
    if sequential:
        gate_truth = gates[0].result
        gate_teacher = gates[1].result if teacher_counts is not None else None
    else:
        gate_truth = coverage_gate(counts, truth, protocol.gate)
        gate_teacher = (teacher_gate(counts, {s: dict(teacher_counts[s]) for s in scenes}, protocol.gate)
                        if teacher_counts is not None else None)
    rollouts = sum(c.n for c in scenes.values())
    return {
        **_scene_figures(scenes, teacher_counts),
        "gate_truth": _gate(gate_truth),
        "gate_teacher": _gate(gate_teacher) if gate_teacher is not None else None,
        "sample_metrics": metrics,
        "nfe_per_frame": counter.rows / (rollouts * protocol.horizon),  # per-sample evaluations per frame
        "seconds_per_rollout": seconds / rollouts,
        "cpu_seconds_per_rollout": cpu_seconds / rollouts,
        "sampling_seconds": round(seconds, 2),
        "n_per_scene": rollouts / len(scenes),  # mean rollouts drawn per scene
        "mode": "sequential" if sequential else "fixed",
        "protocol": {**asdict(protocol), "gate": asdict(protocol.gate)},
    }


def _looks(protocol: StudentProtocol, sequential: bool) -> list[int]:
    """Cumulative rollouts per scene at each look: one look of n (or the cap) in fixed mode."""
    if not sequential:
        return [protocol.n if protocol.cap is None else protocol.cap]
    looks = [FIRST_LOOK if protocol.cap > FIRST_LOOK else protocol.cap]
    while looks[-1] < protocol.cap:
        looks.append(min(protocol.cap, round(looks[-1] * GROWTH)))
    return looks


def _sequential_gates(truth: dict[str, dict[str, float]], teacher_counts: Mapping[str, Mapping[str, int]] | None,
                      protocol: StudentProtocol, cap: int) -> list[SequentialGate]:
    """The truth gate and (with teacher counts) the two-sample teacher gate, both as confidence sequences."""
    gates = [SequentialGate(truth, protocol.gate, cap=cap)]
    if teacher_counts is not None:
        gates.append(SequentialGate({s: dict(teacher_counts[s]) for s in protocol.scenes}, protocol.gate,
                                    cap=cap, sampled_reference=True))
    return gates


def _sample_looks(net: torch.nn.Module | None, protocol: StudentProtocol, looks: list[int],
                  gates: list[SequentialGate], teacher_counts: Mapping[str, Mapping[str, int]] | None,
                  sampling: dict[str, Any]) -> tuple[dict[str, list[torch.Tensor]], float, float]:
    """Every scene's rollouts look by look (after the first, only scenes some gate has not decided), the
    gates updated after each look; returns the rollouts per scene and the wall and CPU seconds spent."""
    drawn: dict[str, list[torch.Tensor]] = {s: [] for s in protocol.scenes}
    seconds = cpu_seconds = 0.0
    for k, target in enumerate(looks):
        todo = list(protocol.scenes) if k == 0 else sorted({s for g in gates for s in g.scenes_to_sample()},
                                                           key=list(protocol.scenes).index)
        if not todo:
            break
        batch = {}
        for name in todo:
            have = sum(len(r) for r in drawn[name])
            t0, c0 = time.perf_counter(), time.process_time()
            r = sample_scene(net, name, protocol, n=int(target) - have, look=k, **sampling)
            seconds += time.perf_counter() - t0
            cpu_seconds += time.process_time() - c0
            drawn[name].append(r)
            batch[name] = dict(scene_coverage(r, get_scene(name), protocol.action).counts)
        for i, g in enumerate(gates):
            if i == 0:
                g.update(batch)
            else:
                g.update(batch, {s: dict(teacher_counts[s]) for s in protocol.scenes} if k == 0 else {})
    return drawn, seconds, cpu_seconds


def _scene_figures(scenes: dict[str, Any], teacher_counts: Mapping[str, Mapping[str, int]] | None) -> dict[str, Any]:
    """Per-scene coverage (with the TV against the teacher's rates) and its means over scenes."""
    teacher_rates = ({s: {k: v / sum(teacher_counts[s].values()) for k, v in teacher_counts[s].items()}
                      for s in scenes} if teacher_counts is not None else None)
    per_scene = {}
    for s, c in scenes.items():
        d = c.to_dict()
        d["tv_teacher"] = (0.5 * sum(abs(c.counts[k] / c.n - float(teacher_rates[s].get(k, 0.0))) for k in c.counts)
                           if teacher_rates is not None else 0.0)
        per_scene[s] = d
    mean = len(scenes)
    return {
        "scenes": per_scene,
        "mean_tv": sum(c.tv for c in scenes.values()) / mean,
        "max_tv": max(c.tv for c in scenes.values()),
        "mean_tv_teacher": sum(d["tv_teacher"] for d in per_scene.values()) / mean,
        # per-scene rates averaged over scenes (scenes may stop at different n in sequential mode)
        "tail_rate": sum(c.counts["darts"] / c.n for c in scenes.values()) / mean,
        "tail_truth": sum(c.truth["darts"] for c in scenes.values()) / mean,
        "implausible_rate": sum(c.counts["implausible"] / c.n for c in scenes.values()) / mean,
    }


def _gate(g: Any) -> dict[str, Any]:
    return g.summary()


def counts_of(measured: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per-scene label counts of a ``measure`` result: the reference of a two-sample gate."""
    return {s: {k: int(v) for k, v in c["counts"].items()} for s, c in measured["scenes"].items()}


def rates_of(measured: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per-scene label rates of a ``measure`` result: the reference when it is the teacher's."""
    return {s: {k: v / c["n"] for k, v in c["counts"].items()} for s, c in measured["scenes"].items()}
