"""Users' models: tiny diffusers models made here (random weights, save_pretrained to a temp dir) load by
path, sample with every deterministic solver at the declared NFE, and the x0-denoiser fastdiff derives
equals the diffusers scheduler's own x0 estimate at the same timestep; bad directories fail in one
line naming the file or field and what is allowed."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from fastdiff_core import catalog
from fastdiff_core.denoiser import NFECounter
from fastdiff_core.grids import build_grid
from fastdiff_core.models.diffusers_format import ModelLoadError, read_declaration
from fastdiff_core.models.loading import file_sha256, load_diffusers_dir
from fastdiff_core.paths import sigma_ve
from fastdiff_core.solvers import sample

DETERMINISTIC = [n for n, s in catalog.SOLVERS.items() if not s.stochastic and not s.adaptive]


def tiny_unet(classes: int | None = None) -> diffusers.UNet2DModel:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=classes)


def save_model(tmp_path, kind: str, name: str = "m", classes: int | None = None):
    """A single model folder (config.json + safetensors + scheduler_config.json) of the given kind."""
    root = tmp_path / name
    tiny_unet(classes).save_pretrained(root)
    if kind == "flow":
        diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000).save_pretrained(root)
    else:
        diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                beta_end=0.012, prediction_type=kind, clip_sample=False).save_pretrained(root)
    return root


KINDS = ["epsilon", "sample", "v_prediction", "flow"]
PREDICTION = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow": "flow"}


@pytest.mark.parametrize("kind", KINDS)
def test_loaded_by_path_every_deterministic_solver_samples_at_the_declared_nfe(tmp_path, kind):
    model = load_diffusers_dir(save_model(tmp_path, kind))
    assert model.interface.prediction == PREDICTION[kind] and model.interface.sample_shape == (1, 8, 8)
    assert model.record.checksum == file_sha256(list((tmp_path / "m").glob("*.safetensors")))
    for solver in DETERMINISTIC:
        steps = 4
        sigmas = build_grid("karras", steps, model.path)
        counter = NFECounter()
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(3, 1, 8, 8, generator=gen) * sigmas[0]
        with torch.no_grad():
            x0 = sample(solver, model.denoiser(counter=counter), x, sigmas, generator=gen)
        assert x0.shape == x.shape and bool(torch.isfinite(x0).all()), solver
        assert counter.nfe == catalog.solver_info(solver).nfe(steps, {}), solver


def _scheduler_x0(model_dir, kind, unet, x_t, step_index):
    """(timestep, the scheduler's own x0 estimate, its alpha and sigma) at one training timestep."""
    if kind == "flow":
        sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(model_dir)
        sched.set_timesteps(10)
        t, s = sched.timesteps[step_index], float(sched.sigmas[step_index])
        xt = (1 - s) * x_t  # any x_t: scale so its sigma_ve is consistent with the step
        out = unet(xt, t).sample
        # an Euler step from sigma to sigma_next = 0 lands on the scheduler's x0 estimate
        sched.sigmas = torch.tensor([s, 0.0])
        sched._step_index = 0
        x0 = sched.step(out, t, xt).prev_sample
        return t, xt, x0, 1 - s, s
    sched = diffusers.DDPMScheduler.from_pretrained(model_dir)
    t = torch.tensor(700 - 250 * step_index)
    out = unet(x_t, t).sample
    x0 = sched.step(out, int(t), x_t).pred_original_sample
    acp = float(sched.alphas_cumprod[int(t)])
    return t, x_t, x0, acp ** 0.5, (1 - acp) ** 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_the_derived_x0_denoiser_matches_the_schedulers_own_x0_estimate(tmp_path, kind):
    root = save_model(tmp_path, kind)
    model = load_diffusers_dir(root)
    unet = model.net.model
    gen = torch.Generator().manual_seed(2)
    for step_index in (1, 2):
        x_t = torch.randn(2, 1, 8, 8, generator=gen)
        with torch.no_grad():
            t, x_t, x0_theirs, a, s = _scheduler_x0(root, kind, unet, x_t, step_index)
            # the same point in fastdiff's coordinates: x = x_t / alpha at sigma_ve = sigma / alpha
            x0_ours = model.denoiser()(x_t / a, s / a)
        assert torch.allclose(x0_ours, x0_theirs, rtol=1e-4, atol=1e-4), (kind, step_index,
                                                                          (x0_ours - x0_theirs).abs().max())
        # and the network was queried at the scheduler's timestep
        t_path = model.path.t_from_log_snr(-2.0 * torch.log(torch.tensor(s / a, dtype=torch.float64)))
        assert abs(float(t_path) * model.interface.time_scale - float(t)) < 1e-2
        assert abs(float(sigma_ve(model.path, t_path)) - s / a) < 1e-6 * (1 + s / a)


def test_a_pipeline_folder_a_dit_and_a_cross_attention_unet_load_with_their_conditioning(tmp_path):
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(classes=4), scheduler=diffusers.DDPMScheduler(clip_sample=False))
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "fastdiff_model.json").write_text(json.dumps({"null_class": 3,
                                                                       "class_names": ["a", "b", "c", "null"]}))
    m = load_diffusers_dir(tmp_path / "pipe")
    assert m.interface.num_classes == 4 and m.interface.null_class == 3 and m.interface.labels == (0, 1, 2)
    assert m.record.checksum == file_sha256(list((tmp_path / "pipe" / "unet").glob("*.safetensors")))

    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2, out_channels=4,
                                          num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=3)
    dit.save_pretrained(tmp_path / "dit")
    diffusers.DDPMScheduler(prediction_type="epsilon").save_pretrained(tmp_path / "dit" / "scheduler")
    d = load_diffusers_dir(tmp_path / "dit")
    assert d.interface.num_classes == 4 and d.interface.null_class == 3  # DiT's dropped-label row is its null class

    torch.manual_seed(0)
    cross = diffusers.UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                           block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=6,
                                           attention_head_dim=2,
                                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    cross.save_pretrained(tmp_path / "cross")
    diffusers.DDIMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "cross")
    with pytest.raises(ModelLoadError, match=r"needs its cross-attention embeddings in conditions\.safetensors"):
        read_declaration(tmp_path / "cross")
    from safetensors.torch import save_file

    save_file({"null": torch.zeros(3, 6), "cat": torch.randn(3, 6)}, str(tmp_path / "cross" / "conditions.safetensors"))
    c = load_diffusers_dir(tmp_path / "cross")
    assert c.interface.conditions == ("cat", "null") and c.interface.guidable

    from fastdiff_core.denoiser import Guidance

    for model, cond in ((m, 1), (d, 2), (c, "cat")):  # CFG with the null condition: 2 NFE per step
        counter = NFECounter()
        x = torch.randn(2, *model.interface.sample_shape) * 10
        den = model.denoiser(cond=model.condition(cond, 2), uncond=model.null_condition(2), guidance=Guidance(3.0),
                             counter=counter)
        with torch.no_grad():
            out = sample("dpmpp_2m", den, x, build_grid("karras", 3, model.path))
        assert out.shape == x.shape and counter.nfe == 6


def test_bad_directories_fail_in_one_line_naming_the_file_and_what_is_allowed(tmp_path):
    cases = []
    cases.append((tmp_path / "missing", r"no such directory"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", r"neither model_index\.json \(a pipeline\) nor config\.json"))
    root = save_model(tmp_path, "epsilon", "badsched")
    cfg = json.loads((root / "scheduler_config.json").read_text())
    (root / "scheduler_config.json").write_text(json.dumps({**cfg, "beta_schedule": "sigmoid"}))
    cases.append((root, r"beta_schedule='sigmoid' is not one of \['linear', 'scaled_linear', 'squaredcos_cap_v2'\]"))
    root = save_model(tmp_path, "epsilon", "badclass")
    cfg = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**cfg, "_class_name": "VQModel"}))
    cases.append((root, r"_class_name='VQModel' is not supported; allowed: \['UNet2DModel'"))
    root = save_model(tmp_path, "epsilon", "pickled")
    (root / "diffusion_pytorch_model.safetensors").rename(root / "diffusion_pytorch_model.bin")
    cases.append((root, r"are pickled .*allowed: safetensors"))
    root = save_model(tmp_path, "epsilon", "zerosnr")
    cfg = json.loads((root / "scheduler_config.json").read_text())
    (root / "scheduler_config.json").write_text(json.dumps({**cfg, "rescale_betas_zero_snr": True}))
    cases.append((root, r"rescale_betas_zero_snr=true .* allowed: false"))
    root = save_model(tmp_path, "epsilon", "badjson")
    (root / "config.json").write_text("{not json")
    cases.append((root, r"config\.json: not valid JSON"))
    for path, message in cases:
        with pytest.raises(ModelLoadError, match=message) as e:
            load_diffusers_dir(path)
        assert "\n" not in str(e.value) and str(path.name) in str(e.value)


def test_a_class_conditional_diffusers_model_runs_with_guidance_picard_and_bf16_through_execute(tmp_path, monkeypatch):
    """Registered by path (`fastdiff run --model DIR` does this), then the world 'model' samples it with CFG
    against its null class, Picard and bfloat16: the counted NFE equals the bill (Picard's: the sequential
    count plus the re-evaluations it pays to run steps in parallel, counted apart)."""
    from fastdiff_core.models.loading import register_model
    from fastdiff_core.run import execute

    monkeypatch.setenv("FASTDIFF_HOME", str(tmp_path / "home"))
    root = save_model(tmp_path, "epsilon", "cond", classes=3)
    (root / "fastdiff_model.json").write_text(json.dumps({"null_class": 2, "class_names": ["zero", "one", "null"]}))
    name = register_model(str(root))["name"]
    base = {"world": "model", "model": name, "steps": 6, "samples": 64, "solver": "dpmpp_2m",
            "world_options": {"reference_samples": 200, "reference_steps": 8, "max_clusters": 2, "label": 1,
                              "batch": 64}}
    for change, passes in (({"guidance_scale": 3.0}, 2), ({"parallel": "picard"}, 1),
                           ({"precision": "bfloat16"}, 1)):
        r = execute({**base, **change})
        # the bill counts Picard's re-evaluations too (counted apart: the rest is the sequential 6 x passes x 64)
        assert r.nfe_counted == r.nfe_formula == 6 * passes * 64 + r.metrics["nfe_repeats"], change
        assert (r.metrics["nfe_repeats"] > 0) == (change.get("parallel") == "picard"), change
        assert r.info["model"]["name"] == name and r.info["gate"]["outcome"] in ("PASS", "FAIL", "UNDECIDED")
    with pytest.raises(ValueError, match=r"world_options.label=2 is not a class of model='cond'; allowed: -1 or 0-1"):
        execute({**base, "world_options": {**base["world_options"], "label": 2}})


def test_a_package_ships_a_diffusers_model_through_an_entry_point_returning_its_directory(tmp_path, monkeypatch):
    root = save_model(tmp_path, "sample", "shipped")
    (tmp_path / "shipping_pkg.py").write_text(f"def model():\n    return {str(root)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from fastdiff_core.models.loading import load_source

    m = load_source("module", "shipping_pkg:model", "digits-like")
    assert m.record.kind == "diffusers" and m.record.source == str(root) and m.interface.prediction == "x0"
