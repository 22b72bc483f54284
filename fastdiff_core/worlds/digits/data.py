"""scikit-learn's bundled handwritten digits (UCI optdigits test set: 1,797 8x8 images, 0..16 grey levels),
split and thinned for the digits world. Nothing is downloaded: the images ship inside scikit-learn.

The split is stratified and fixed by a seed: ``test_fraction`` of every class is held out (the
classifier's accuracy is measured there). The diffusion model's training set is the rest with one class,
the rare digit, thinned to ``rare_fraction`` of it: the data's class frequencies after thinning are the
world's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS = tuple(str(d) for d in range(10))
PIXEL_MAX = 16.0  # load_digits' grey levels are integers 0..16


@dataclass(frozen=True)
class DigitsSplit:
    """Images (N, 8, 8) float32 in [-1, 1] and labels (N,) int64 for each part."""

    train_images: np.ndarray  # every class, unthinned: what the classifier learns from
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    diffusion_images: np.ndarray  # train with the rare digit thinned: what the diffusion model learns from
    diffusion_labels: np.ndarray
    rare_digit: int

    def class_frequencies(self) -> dict[str, float]:
        """The diffusion training set's class frequencies: the world's ground truth."""
        counts = np.bincount(self.diffusion_labels, minlength=10)
        return {DIGITS[d]: float(counts[d] / counts.sum()) for d in range(10)}


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Grey levels 0..16 -> [-1, 1] (float32)."""
    return (np.asarray(pixels, dtype=np.float32) / (PIXEL_MAX / 2) - 1.0).astype(np.float32)


def load_split(*, seed: int = 0, rare_digit: int = 4, rare_fraction: float = 0.02,
               test_fraction: float = 0.2) -> DigitsSplit:
    """The stratified split and the thinned diffusion set, deterministic given the arguments."""
    if not 0 <= rare_digit <= 9:
        raise ValueError(f"rare_digit={rare_digit!r} must be a digit 0..9")
    if not 0.0 < rare_fraction < 0.1:
        raise ValueError(f"rare_fraction={rare_fraction!r} must be in (0, 0.1)")
    if not 0.0 < test_fraction < 0.5:
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 0.5)")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = to_unit(bunch.images), np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx, rare_keep = [], [], []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    others = sum(len(train_idx[d]) for d in range(10) if d != rare_digit)
    # k / (others + k) = rare_fraction
    k = max(1, int(round(rare_fraction * others / (1.0 - rare_fraction))))
    rare_keep = train_idx[rare_digit][:k]
    diffusion_idx = np.sort(np.concatenate([train_idx[d] for d in range(10) if d != rare_digit] + [rare_keep]))
    train, test = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return DigitsSplit(images[train], labels[train], images[test], labels[test],
                       images[diffusion_idx], labels[diffusion_idx], rare_digit)
