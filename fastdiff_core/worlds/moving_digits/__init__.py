"""The moving-digits world plugin: a world model on real data. A handwritten digit (scikit-learn's bundled
8x8 digits) moves on an 8x16 canvas under an action (left, stay, right); now and then it jumps three
pixels (the rare branch), with exact branch probabilities per plan.

    plugin     its declaration (torch-free): options, the tail, capabilities, the generic rollout runner
    dynamics   canvas, ground-truth rollouts, the exact branch probabilities of a plan, the branch classifier
    network    the frame denoiser (a small conditional conv net) and its checksum-checked shipped weights
    model      the world model on the rollout engine's protocol (``MovingDigitsWorldModel``, ``from_spec``)
    train      ``fastdiff train moving_digits``: train the frame denoiser, write weights + card

Only this package imports these modules (tests/test_layers.py); everyone else uses the names exported here,
looked up in the modules below on first use, so a torch-free name stays torch-free.
"""

from __future__ import annotations

from fastdiff_core.worlds import lazy_exports

# where exported names are looked up, in this order (the torch-free ones first)
_PUBLIC_MODULES = ("plugin", "dynamics", "network", "model", "train")

__getattr__ = lazy_exports(__name__, _PUBLIC_MODULES)
