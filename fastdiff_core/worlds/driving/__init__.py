"""The driving world: a pedestrian near a crossing, an ego vehicle, and futures with exact probabilities.

    scenes     named scenes, per-frame hazards and closed-form branch probabilities (torch-free)
    simulator  ground-truth rollouts (B, H + 1, SUBSTEPS, 2), Markov in frames
    branches   the branch classifier: waits / crosses / darts / implausible
    encoding   frames <-> network tensors (target, condition, null condition)
    sampling   the world model's frame sampler and H-frame rollouts over any solver
    runner     ``run(spec, device, on_progress)`` for ``fastdiff_core.run.execute``
"""
