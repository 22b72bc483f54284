"""The user-model world's declaration (torch-free): options, what it supports, where its runner is.

A run names a registered model (``RunSpec.model``); the world samples it with the spec's solver, grid,
steps and guidance, and gates the modes of those samples against the model's own reference sampling
(``fastdiff_core.worlds.model.runner``). The checks that need the model's declared interface (a class
label in range, guidance only with a null condition) read it from the registry, not from torch.
"""

from __future__ import annotations

from typing import Any

from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin

INFO = WorldInfo(
    "model", "Your model (no ground truth)",
    "a registered diffusers-format or PyTorch model, judged against its own converged high-NFE sampling; "
    "modes from its classifier or from clusters of that reference",
    {
        "label": Option(int, -1, "class label to sample (-1: every class label in turn; an unconditional model: -1)",
                        min=-1, max=1_000_000),
        "modes": Option(str, "auto", "auto: clusters of the reference (k by least BIC); classifier: the model's "
                        "declared classifier", choices=("auto", "classifier")),
        "reference_steps": Option(int, 64, "steps of the reference sampler (Heun; NFE 2 x steps - 1); the "
                                  "convergence check compares it with half as many", min=8, max=1000),
        "reference_samples": Option(int, 2000, "reference samples (independent noise, cached per model)",
                                    min=200, max=200_000),
        "max_clusters": Option(int, 8, "largest number of clusters tried (auto modes)", min=1, max=32),
        "tail_rate": Option(float, 0.05, "a mode rarer than this in the reference is a tail", min=0.001, max=0.49),
        "batch": Option(int, 256, "samples per network forward", min=1, max=65536),
    },
    tail=None,  # found per run: the rarest flagged cluster of the model's reference (RunResult.info['tail'])
)

CAPABILITIES = Capabilities(
    rollouts=False, fan_out=False, guidance=True, samplers=("solver",), speedups=("parallel", "precision", "compile"),
    metrics=("tv_reference", "tail_rate", "tail_rate_reference", "reference_tv_convergence", "clusters",
             "reference_nfe"),
    coverage_gate=True, why="independent samples of a user's model")


def check(spec: Any) -> str | None:
    """The model's declared interface against the spec's label and guidance."""
    from fastdiff_core.models.model_registry import model_entry

    if spec.model is None:
        return None  # RunSpec refuses world='model' without one
    iface = model_entry(spec.model).get("interface")
    if iface is None:  # an entry point not yet loaded: its interface is checked when the run loads it
        return None
    label, classes, null = spec.world_options["label"], iface.get("num_classes", 0), iface.get("null_class")
    if label != -1 and (classes == 0 or not 0 <= label < classes or label == null):
        allowed = [c for c in range(classes) if c != null]
        return (f"world_options.label={label!r} is not a class of model={spec.model!r}; allowed: -1"
                + (f" or {allowed[0]}-{allowed[-1]}" if allowed else " (the model is unconditional)"))
    guidable = null is not None or "null" in iface.get("conditions", [])
    if spec.guidance_scale != 1.0 and not guidable:
        return (f"guidance_scale={spec.guidance_scale!r} needs a null condition, which model={spec.model!r} does "
                "not declare; allowed: 1.0")
    if spec.world_options["modes"] == "classifier" and not model_entry(spec.model).get("classifier"):
        return f"world_options.modes='classifier': model={spec.model!r} declares no classifier; allowed: 'auto'"
    return None


PLUGIN = WorldPlugin(INFO, CAPABILITIES, "fastdiff_core.worlds.model.runner:run", check)
