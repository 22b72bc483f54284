"""Measuring a driving world model: sample every scene, label the branches, score coverage.

Shared by the runner (one RunSpec), ``fastdiff bench coverage``, the teacher's model card and the
release-gate test, so every number about this world is computed one way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from fastdiff_core.denoiser import Guidance, NFECounter
from fastdiff_core.metrics.coverage import (
    density_coverage, median_bandwidth, mmd_rbf, precision_recall, sliced_wasserstein, tail_rate, total_variation,
    vendi_score,
)
from fastdiff_core.seeds import derived_seed
from fastdiff_core.worlds.driving.branches import branch_counts
from fastdiff_core.worlds.driving.sampling import PATH, FrameSampler, Solver, rollout, sample_frame
from fastdiff_core.worlds.driving.scenes import IMPLAUSIBLE, LABELS, TAIL, Scene, branch_probabilities
from fastdiff_core.worlds.driving.simulator import simulate


def solver_and_grid(solver: str, steps: int, *, grid: str = "karras", solver_options: Mapping[str, Any] | None = None,
                    grid_options: Mapping[str, Any] | None = None) -> tuple[Solver, list[float]]:
    """A registry solver with validated options bound (run through ``solvers.sample``, which applies the
    common last-step option ``final``), and its sigma grid on the world model's path."""
    from fastdiff_core import grids, solvers
    from fastdiff_core.registry import validate_options

    entry = solvers.get_solver(solver)
    opts = validate_options("solver_options", dict(solver_options or {}), entry.info.options)
    return (functools.partial(solvers.sample, solver, options=opts),
            grids.build_grid(grid, steps, PATH, grid_options))


@dataclass(frozen=True)
class SceneCoverage:
    """One scene's generated branch counts against its exact probabilities."""

    scene: str
    action: str
    horizon: int
    counts: Mapping[str, int]
    truth: Mapping[str, float]

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def tv(self) -> float:
        return total_variation(self.counts, self.truth)

    def tail(self, confidence: float = 0.95) -> tuple[float, float, float]:
        return tail_rate(self.counts, TAIL, confidence)

    @property
    def implausible_rate(self) -> float:
        return self.counts[IMPLAUSIBLE] / self.n

    def to_dict(self) -> dict:
        rate, lo, hi = self.tail()
        return {"scene": self.scene, "action": self.action, "horizon": self.horizon, "n": self.n,
                "counts": dict(self.counts), "truth": dict(self.truth), "tv": self.tv, "tail_rate": rate,
                "tail_lo": lo, "tail_hi": hi, "implausible_rate": self.implausible_rate}


def scene_coverage(rollouts: torch.Tensor, scene: Scene, action: str) -> SceneCoverage:
    horizon = rollouts.shape[1] - 1
    counts = branch_counts(rollouts, scene)
    return SceneCoverage(scene.name, action, horizon, {k: counts[k] for k in LABELS},
                         branch_probabilities(scene, action, horizon))


def stream_rollouts(net: torch.nn.Module, scene: Scene, action: str, n: int, horizon: int, *, solver: Solver,
                    sigmas: Sequence[float], guidance: Guidance = Guidance(), seed: int = 0,
                    counter: NFECounter | None = None, device: torch.device | str = "cpu", batch: int = 4096,
                    on_frame: Callable[[int, int], None] | None = None,
                    frame_sampler: FrameSampler = sample_frame,
                    dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
    """n model rollouts, yielded batch by batch: CPU tensors (<= batch, horizon + 1, SUBSTEPS, 2), so a
    caller that tallies each batch holds one batch at a time.

    Batch b uses generator seed ``derived_seed(seed, b)`` (``seed`` itself for batch 0; never another
    seed's batch, as ``seed + b`` was). ``on_frame(frames_done, frames_total)`` reports progress across
    batches.
    """
    batches = [min(batch, n - i) for i in range(0, n, batch)]
    total = len(batches) * horizon
    for b, size in enumerate(batches):
        gen = torch.Generator(device=device).manual_seed(derived_seed(seed, b))
        cb = None if on_frame is None else (lambda h, _f, b=b: on_frame(b * horizon + h + 1, total))
        r = rollout(net, scene, action, size, horizon, solver=solver, sigmas=sigmas, guidance=guidance,
                    generator=gen, counter=counter, device=device, on_frame=cb, frame_sampler=frame_sampler,
                    dtype=dtype)
        yield r.cpu()


def sample_rollouts(net: torch.nn.Module, scene: Scene, action: str, n: int, horizon: int, **kwargs) -> torch.Tensor:
    """n model rollouts in batches (``stream_rollouts``' arguments), all of them: a CPU tensor
    (n, horizon + 1, SUBSTEPS, 2)."""
    return torch.cat(list(stream_rollouts(net, scene, action, n, horizon, **kwargs)))


def trajectory_features(rollouts: torch.Tensor) -> torch.Tensor:
    """What sample-level metrics compare: the generated frames 1..H flattened (metres), float64."""
    return rollouts[:, 1:].reshape(len(rollouts), -1).to(torch.float64)


def sample_metrics(rollouts: torch.Tensor, scene: Scene, action: str, *, k: int = 5, max_n: int = 2000,
                   seed: int = 0) -> dict[str, float]:
    """k-NN precision/recall, density/coverage, Vendi, MMD and sliced W1 against fresh simulator rollouts.

    Uses at most ``max_n`` generated and ``max_n`` reference rollouts (the k-NN metrics are O(n^2)).
    """
    fake = trajectory_features(rollouts[:max_n])
    horizon = rollouts.shape[1] - 1
    real = trajectory_features(simulate(scene, action, len(fake), horizon,
                                        generator=torch.Generator().manual_seed(10_000 + seed)))
    precision, recall = precision_recall(real, fake, k)
    density, coverage = density_coverage(real, fake, k)
    h = max(median_bandwidth(real[:1000]), 1e-3)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage,
            "vendi": vendi_score(fake[:1000], h), "vendi_truth": vendi_score(real[:1000], h),
            "mmd": mmd_rbf(real[:1000], fake[:1000], h), "sliced_w1": sliced_wasserstein(real, fake, seed=seed)}
