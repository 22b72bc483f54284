"""Generator seeds derived from a run's seed, so that no two seeds of a family ever share noise.

``seed + b`` for batch b makes run seed 0's batch 1 the same noise as run seed 1's batch 0, so runs
"over seeds 0, 1, 2" would share rollouts whenever they draw more than one batch. ``derived_seed`` keeps
the seed itself for the first stream (key all zeros: a one-batch run is unchanged) and otherwise mixes
(seed, key) with numpy's ``SeedSequence`` (its spawn key is hashed after the seed's padded words, so
keys of different lengths, and seeds up to 2**128, never alias).
"""

from __future__ import annotations

import numpy as np

from fastdiff_core.spec import MAX_SEED


def derived_seed(seed: int, *key: int) -> int:
    """The generator seed of stream ``key`` under run ``seed``: ``seed`` when every key is 0 (the
    first stream), else 63 bits of ``SeedSequence(seed, spawn_key=key)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**63 - 1]")
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 for k in key):
        raise ValueError(f"key={key!r} must be integers >= 0")
    if not any(key):
        return int(seed)
    state = np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
