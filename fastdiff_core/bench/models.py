"""``fastdiff bench models``: load time of each model kind, and a run's cold vs warm (cached) time.

Builds one model of each diffusers kind with random weights in a temporary directory (a CIFAR-sized
``UNet2DModel`` as DDPM ships it, a DiT-S/2-sized ``DiTTransformer2DModel`` on a 32x32x4 latent, a
small cross-attention ``UNet2DConditionModel``), saves them with ``save_pretrained`` (safetensors),
then times ``load_diffusers_dir`` (configs read, ``from_pretrained``, sha256 of the weights) ``--repeats``
times each, in this process after one untimed load (diffusers' import is timed separately).

Cold vs warm: ``execute`` of one RunSpec of world 'model' twice in one process (what a worker's pool
process does between tasks): the first run loads the model and samples its reference, the second
finds both in the process's cache (a small 16x16x1 UNet2DModel, whose reference this CPU can afford). Rows are returned; ``main`` prints them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path



@dataclass(frozen=True)
class LoadRow:
    kind: str
    params_m: float
    weights_mb: float
    median_s: float
    min_s: float
    repeats: int


@dataclass(frozen=True)
class RunRow:
    what: str
    wall_s: float
    model_cached: bool
    reference_nfe: float


def build_models(root: Path) -> dict[str, Path]:
    """The three diffusers kinds, random weights, saved as a user would have them."""
    import diffusers
    import torch

    torch.manual_seed(0)
    made = {
        "UNet2DModel (DDPM CIFAR-10 config)": diffusers.UNet2DModel(
            sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
            block_out_channels=(128, 256, 256, 256),
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        "DiTTransformer2DModel (DiT-S/2, 32x32x4)": diffusers.DiTTransformer2DModel(
            num_attention_heads=6, attention_head_dim=64, in_channels=4, out_channels=8, num_layers=12,
            sample_size=32, patch_size=2, num_embeds_ada_norm=1000),
        "UNet2DConditionModel (small, cross-attention 64)": diffusers.UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
            cross_attention_dim=64, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    }
    out = {}
    for i, (name, model) in enumerate(made.items()):
        d = root / f"m{i}"
        model.save_pretrained(d)
        diffusers.DDPMScheduler().save_pretrained(d)
        if "Condition" in name:
            from safetensors.torch import save_file

            save_file({"null": torch.zeros(4, 64), "prompt": torch.randn(4, 64)}, str(d / "conditions.safetensors"))
        out[name] = d
    return out


def build_run_model(root: Path) -> Path:
    """A small UNet2DModel (16x16x1, channels 32/64) for the cold/warm run: the CPU can afford its reference."""
    import diffusers
    import torch

    torch.manual_seed(0)
    d = root / "run-model"
    diffusers.UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                          block_out_channels=(32, 64), down_block_types=("DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(d)
    diffusers.DDPMScheduler().save_pretrained(d)
    return d


def load_times(dirs: dict[str, Path], repeats: int) -> list[LoadRow]:
    from fastdiff_core.models.loading import load_diffusers_dir

    rows = []
    for name, d in dirs.items():
        load_diffusers_dir(d)  # untimed: first-use imports of this model class
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model = load_diffusers_dir(d)
            times.append(time.perf_counter() - t0)
        weights = sum(f.stat().st_size for f in d.glob("*.safetensors"))
        rows.append(LoadRow(name, model.nbytes / 4 / 1e6, weights / 2**20, statistics.median(times), min(times), repeats))
    return rows


def cold_warm(model_dir: Path, samples: int, reference_samples: int) -> list[RunRow]:
    """One spec executed twice in this process (a worker's pool process between two tasks)."""
    from fastdiff_core.models.loading import register_model
    from fastdiff_core.run import execute

    name = register_model(str(model_dir), "bench-model", replace=True)["name"]
    spec = {"world": "model", "model": name, "solver": "dpmpp_2m", "steps": 10, "samples": samples,
            "world_options": {"reference_samples": reference_samples, "reference_steps": 16, "max_clusters": 4,
                              "batch": 64}}
    rows = []
    for what in ("cold (load + reference + sampling)", "warm (cached model and reference)"):
        t0 = time.perf_counter()
        r = execute(spec)
        rows.append(RunRow(what, time.perf_counter() - t0, bool(r.metrics["model_cached"]), r.metrics["reference_nfe"]))
    return rows


@dataclass(frozen=True)
class ModelsReport:
    import_diffusers_s: float
    loads: list[LoadRow]
    runs: list[RunRow]


def run_bench(repeats: int = 3, samples: int = 256, reference_samples: int = 256) -> ModelsReport:
    """Build the models in a temporary directory (with its own registry, never the user's) and time them."""
    t0 = time.perf_counter()
    import diffusers  # noqa: F401  (timed: what the first diffusers-format load pays once per process)

    import_s = time.perf_counter() - t0
    home = os.environ.get("FASTDIFF_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FASTDIFF_HOME"] = str(Path(tmp) / "home")
        try:
            loads = load_times(build_models(Path(tmp)), repeats)
            runs = cold_warm(build_run_model(Path(tmp)), samples, reference_samples)
        finally:
            if home is None:
                os.environ.pop("FASTDIFF_HOME", None)
            else:
                os.environ["FASTDIFF_HOME"] = home
    return ModelsReport(import_s, loads, runs)
