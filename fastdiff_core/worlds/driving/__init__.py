"""The driving world plugin: a pedestrian near a crossing, an ego vehicle, and futures with exact probabilities.

    plugin     its declaration (torch-free): options, scenes, tail, capabilities, runner
    scenes     named scenes, per-frame hazards and closed-form branch probabilities (torch-free)
    simulator  ground-truth rollouts (B, H + 1, SUBSTEPS, 2), Markov in frames
    branches   the branch classifier: waits / crosses / darts / implausible
    encoding   frames <-> network tensors (target, condition, null condition)
    sampling   the world model's frame sampler and H-frame rollouts over any solver
    model      the world model on the rollout engine's protocol (DrivingWorldModel, the planning objective)
    evaluation sample every scene, label the branches, score coverage
    runner     ``run(spec, device, on_progress)`` for ``fastdiff_core.run.execute``

Those modules are the plugin's internals: only this package imports them (tests/test_layers.py). Everyone
else uses the names this package exports, ``from fastdiff_core.worlds.driving import get_scene``, which are
looked up in the modules below on first use (so a torch-free name such as ``SCENES`` does not load torch).
"""

from __future__ import annotations

from fastdiff_core.worlds import lazy_exports

# where exported names are looked up, in this order (scenes first: it is torch-free)
_PUBLIC_MODULES = ("scenes", "branches", "encoding", "simulator", "sampling", "evaluation", "model")

__getattr__ = lazy_exports(__name__, _PUBLIC_MODULES)
