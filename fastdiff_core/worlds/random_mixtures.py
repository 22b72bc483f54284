"""A family of random Gaussian-mixture worlds, one per integer seed, on the mixture's exact denoiser.

Used to tune and to judge few-step sampling choices on worlds nobody tuned on: grids and last-step
defaults are fitted on ``TRAINING`` seeds and reported on ``HELD_OUT`` seeds; the two ranges never
meet (``check_disjoint``), and a test proves the held-out seeds never reach the optimiser.

A world (``random_world(seed)``): dimension in {2, 4, 8, 16}; 3-6 modes, weights from a Dirichlet, one
rare mode of weight 1-4% placed away from the rest; per-axis stds log-uniform over 1-2 decades with
the finest between 0.01 and 0.1, none above 2; a random rotation per mode (or axis-aligned, half the time).
"""

from __future__ import annotations

import math

import numpy as np

from fastdiff_core.worlds.mixture import Mixture, _build, _rotation

TRAINING = range(1_000, 100_000)  # seeds the grid optimiser may use
HELD_OUT = range(1_000_000, 2_000_000)  # seeds only evaluations use


def random_world(seed: int) -> Mixture:
    """The random mixture world of ``seed`` (deterministic: same seed, same world)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    rng = np.random.default_rng([16, seed])
    dim = int(rng.choice([2, 4, 8, 16]))
    k = int(rng.integers(3, 7))
    rare_w = float(rng.uniform(0.01, 0.04))
    w = rng.dirichlet(np.full(k - 1, 2.0)) * (1.0 - rare_w)
    weights = np.concatenate([w, [rare_w]])
    finest = math.exp(rng.uniform(math.log(0.01), math.log(0.1)))
    decades = rng.uniform(1.0, 2.0)
    stds = np.minimum(finest * 10.0 ** (rng.uniform(0.0, decades, size=(k, dim))), 2.0)
    stds[rng.integers(k), rng.integers(dim)] = finest  # the finest scale is present
    spread = rng.uniform(0.6, 1.5)
    means = rng.standard_normal((k, dim)) * spread
    # the rare mode sits apart: 2.5-4x the spread plus its own scale from the origin
    direction = rng.standard_normal(dim)
    means[-1] = direction / np.linalg.norm(direction) * (rng.uniform(2.5, 4.0) * spread + stds[-1].max())
    if rng.random() < 0.5:
        eigvecs = np.stack([_rotation(rng, dim) for _ in range(k)])
    else:
        eigvecs = np.broadcast_to(np.eye(dim), (k, dim, dim)).copy()
    labels = [f"m{j}" for j in range(k - 1)] + ["rare"]
    return _build(f"random{seed}", weights, means, stds**2, eigvecs, k - 1, labels)


def training_seeds(n: int, start: int = 0) -> list[int]:
    """``n`` seeds from the training range."""
    return _take(TRAINING, n, start, "training")


def held_out_seeds(n: int, start: int = 0) -> list[int]:
    """``n`` seeds from the held-out range (never given to an optimiser)."""
    return _take(HELD_OUT, n, start, "held-out")


def check_disjoint(training: list[int], evaluation: list[int]) -> None:
    """Refuse an evaluation that shares a world with training (or a training seed outside its range)."""
    outside = [s for s in training if s not in TRAINING]
    if outside:
        raise ValueError(f"training seeds {outside[:5]} lie outside the training range {TRAINING}")
    shared = sorted(set(training) & set(evaluation))
    if shared:
        raise ValueError(f"seeds {shared[:5]} are both training and evaluation worlds")


def _take(r: range, n: int, start: int, what: str) -> list[int]:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(r) - start:
        raise ValueError(f"{what} worlds n={n!r} must be an integer in [1, {len(r) - start}]")
    return list(r[start:start + n])
