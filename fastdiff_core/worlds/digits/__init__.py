"""The digits world plugin: a class-conditional diffusion model trained on real data (scikit-learn's
bundled handwritten digits), one digit thinned to 2% as the rare mode.

    plugin      its declaration (torch-free): the condition option, the tail, capabilities, runner
    data        the digits, the stratified split, the thinned training set and its class frequencies
    model       the diffusers UNet2DModel's shape and conditions, the digit classifier
    train       ``fastdiff train digits``: trains both, writes the diffusers folder + card
    evaluation  load the folder, sample with any solver, label, judge vs the data truth and vs the teacher
    runner      ``run(spec, device, on_progress)`` for ``fastdiff_core.run.execute``
    bench       ``fastdiff bench digits``: solvers x NFE x guidance, both references, both gates

The shipped folder is fastdiff_core/models/weights/digits/. Only this package imports these modules
(tests/test_layers.py); everyone else uses the names exported here (``from fastdiff_core.worlds.digits
import train_digits``), looked up in the modules below on first use, so a torch-free name stays torch-free.
"""

from __future__ import annotations

from fastdiff_core.worlds import lazy_exports

# where exported names are looked up, in this order (the torch-free ones first)
_PUBLIC_MODULES = ("plugin", "data", "model", "evaluation", "train", "bench")

__getattr__ = lazy_exports(__name__, _PUBLIC_MODULES)
