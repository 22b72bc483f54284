"""The speed-up toggles in RunSpec: validated where they enter, JSON round trip, old JSON still reads;
and ``Denoiser.stacked`` (several noise levels in one forward) equals separate calls."""

import json

import pytest
import torch

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.paths import get_path
from fastdiff_core.spec import RunSpec


def test_runspec_speedup_fields_round_trip_and_validate():
    spec = RunSpec(feature_cache="controlled", cache_options={"budget": 0.4}, precision="bfloat16", compile=True,
                   parallel="off", importance="tail", importance_options={"beta": 0.2}, warm_start=False)
    back = RunSpec.from_json(spec.to_json())
    assert back == spec and back.cache_options["budget"] == 0.4 and back.cache_options["interval"] == 2
    old = json.loads(RunSpec().to_json())
    for k in ("feature_cache", "cache_options", "parallel", "parallel_options", "precision", "compile",
              "importance", "importance_options", "warm_start"):
        old.pop(k)
    assert RunSpec.from_dict(old) == RunSpec()  # JSON written before the toggles existed still reads
    picard = RunSpec(solver="euler", parallel="picard", parallel_options={"window": 4})
    assert picard.parallel_options == {"window": 4, "tol": 0.01}
    for bad, match in [({"feature_cache": "always"}, "feature_cache"),
                       ({"cache_options": {"budget": 2.0}}, "cache_options.budget"),
                       ({"parallel": "picard", "solver": "heun"}, "picard"),
                       ({"parallel": "picard", "solver": "euler", "feature_cache": "fixed"}, "feature_cache"),
                       ({"precision": "fp8"}, "precision"),
                       ({"precision": "int8", "device": "cuda"}, "int8"),
                       ({"compile": "yes"}, "compile"),
                       ({"importance_options": {"shift": 1}}, "importance_options")]:
        with pytest.raises(ValueError, match=match):
            RunSpec(**bad)


class AffineNet(torch.nn.Module):
    """x0-predicting network with a time- and condition-dependent affine map (a test network)."""

    def forward(self, x_t, t, cond):
        return x_t * (1.0 - t)[:, None] + cond * t[:, None] ** 2


@pytest.mark.parametrize("prediction", ["x0", "eps", "flow", "v"])
def test_stacked_equals_separate_calls_with_a_guidance_interval(prediction):
    path = get_path("rectified_flow" if prediction == "flow" else "vp_cosine")
    n = 5
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(n, 3, generator=g, dtype=torch.float64)
    guidance = Guidance(2.5, (0.5, 3.0))
    sigmas = [8.0, 2.0, 1.0, 0.1]
    assert {guidance.passes(s) for s in sigmas} == {1, 2}
    xs = [torch.randn(n, 3, generator=g, dtype=torch.float64) * s for s in sigmas]
    one = Denoiser(AffineNet(), path, prediction, cond=cond, uncond=torch.zeros_like(cond), guidance=guidance,
                   counter=NFECounter())
    together = one.stacked(torch.cat(xs), sigmas)
    sep = Denoiser(AffineNet(), path, prediction, cond=cond, uncond=torch.zeros_like(cond), guidance=guidance,
                   counter=NFECounter())
    separate = torch.cat([sep(x, s) for x, s in zip(xs, sigmas)])
    assert torch.allclose(together, separate, atol=1e-10, rtol=1e-10)
    assert one.counter.nfe == sep.counter.nfe == sum(guidance.passes(s) for s in sigmas)
    assert one.counter.forwards == 1 and sep.counter.forwards == 4
    assert one.counter.rows == sep.counter.rows
    with pytest.raises(ValueError, match="multiple"):
        one.stacked(torch.cat(xs)[:-1], sigmas)
