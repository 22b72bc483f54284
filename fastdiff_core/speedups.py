"""The systems speed-ups as RunSpec toggles, applied in one place: network precision (bf16; dynamic
int8 on CPU), torch.compile, feature caching (fixed / controlled), and the frame sampler (a solver
from the registry, or Picard parallel sampling over it).

    net = prepare_network(teacher, precision="bfloat16", compile=False, feature_cache="controlled", ...)
    sampler = frame_sampler("dpmpp_2m", {}, parallel="picard", parallel_options={"window": 4, "tol": 1e-2})
    x0 = sampler(denoiser, x_T, sigmas)

The order is fixed: shared-context split -> precision -> compile (each residual block in place, so
the staged API and the cache's Python-side decisions stay outside the graphs) -> cache.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from fastdiff_core.models.feature_cache import FeatureCache
from fastdiff_core.rollout import FrameSampler, SharedContextNet

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")
PICARD_BASES: dict[str, str] = {"euler": "euler", "ddim": "euler", "dpmpp_2m": "dpmpp_2m"}


def _quantize_int8(net: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)


def prepare_network(net: nn.Module, *, precision: str = "float32", compile: bool = False,
                    feature_cache: str = "off", cache_options: Mapping[str, Any] | None = None) -> nn.Module:
    """The world-model network with the spec's speed-ups applied (a new module; ``net`` is untouched).

    precision: float32 | bfloat16 (weights and activations) | int8 (dynamic per-tensor int8 Linear
    weights, activations quantised on the fly; CPU only). feature_cache: off | fixed | controlled.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    if feature_cache not in ("off", "fixed", "controlled"):
        raise ValueError(f"feature_cache={feature_cache!r} is not one of ['off', 'fixed', 'controlled']")
    device = next(net.parameters()).device
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' (dynamic quantisation) runs on CPU only; the device is {device.type}")
    import copy

    model: nn.Module = SharedContextNet(copy.deepcopy(net))
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
        model.net.freqs = net.freqs.detach().clone().float()  # time frequencies stay exact
    elif precision == "int8":
        model = _quantize_int8(model)
    if compile:
        # in place, block by block: the staged API (and the cache's decisions) stay in Python
        for block in model.blocks:
            block.compile(dynamic=True)
    if feature_cache != "off":
        model = FeatureCache(model, feature_cache, **dict(cache_options or {}))
    return model


def prepare_model(net: nn.Module, *, precision: str = "float32", compile: bool = False) -> nn.Module:
    """Any network with the precision and compile toggles applied (a new module; ``net`` is untouched):
    what a user's model gets (its layers are not the world model's staged ones, so no feature cache)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    if precision == "float32" and not compile:
        return net
    import copy

    model = copy.deepcopy(net)
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
    elif precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("precision='int8' (dynamic quantisation) runs on CPU only")
        model = _quantize_int8(model)
    return torch.compile(model, dynamic=True) if compile else model


def frame_sampler(solver: str, solver_options: Mapping[str, Any] | None = None, *, parallel: str = "off",
                  parallel_options: Mapping[str, Any] | None = None,
                  generator: torch.Generator | None = None) -> FrameSampler:
    """x0 = sampler(denoiser, x_T, sigmas): the registry's solver, or Picard iteration over its steps."""
    from fastdiff_core.solvers import get_solver
    from fastdiff_core.solvers.picard import picard

    entry = get_solver(solver)
    if parallel == "off":
        from fastdiff_core.registry import validate_options

        opts = validate_options("solver_options", dict(solver_options or {}), entry.info.options)
        return functools.partial(_run_solver, solver, opts, generator)
    if parallel != "picard":
        raise ValueError(f"parallel={parallel!r} is not one of ['off', 'picard']")
    if solver not in PICARD_BASES or (solver == "ddim" and dict(solver_options or {}).get("eta", 0.0) != 0.0):
        raise ValueError(f"parallel='picard' needs a deterministic one-evaluation-per-step solver; solver={solver!r} "
                         f"is not one of {sorted(PICARD_BASES)} (ddim with eta=0)")
    opts = dict(parallel_options or {})
    return functools.partial(_run_picard, picard, PICARD_BASES[solver], opts)


def _run_solver(name, opts, generator, den, x, sigmas: Sequence[float]):
    # through ``solvers.sample``: it applies the common last-step option ``final`` the way every caller does
    from fastdiff_core.solvers import sample

    return sample(name, den, x, sigmas, options=opts, generator=generator)


def _run_picard(fn, base, opts, den, x, sigmas: Sequence[float]):
    return fn(den, x, sigmas, base=base, **opts)


def from_spec(spec, net: nn.Module, generator: torch.Generator | None = None):
    """(network, frame sampler, guidance) with every speed-up toggle of a RunSpec applied."""
    from fastdiff_core.denoiser import Guidance

    prepared = prepare_network(net, precision=spec.precision, compile=spec.compile,
                               feature_cache=spec.feature_cache, cache_options=spec.cache_options)
    sampler = frame_sampler(spec.solver, spec.solver_options, parallel=spec.parallel,
                            parallel_options=spec.parallel_options, generator=generator)
    return prepared, sampler, Guidance(spec.guidance_scale, spec.guidance_interval)
