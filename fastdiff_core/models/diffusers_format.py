"""A diffusers-format directory on disk -> fastdiff's network, path, prediction type and conditioning.

Reads, never downloads: a pipeline folder (``model_index.json`` naming a denoiser component and a
``scheduler``) or one model folder (``config.json`` + weights, with ``scheduler_config.json`` beside
it or in ``scheduler/``). The denoiser is a ``UNet2DModel``, ``UNet2DConditionModel``,
``DiTTransformer2DModel`` or ``Transformer2DModel`` with safetensors weights (pickled ``.bin`` files
can run code when loaded and are refused).

From the scheduler config (diffusers' own keys; the inference-time keys -- ``timestep_spacing``,
``steps_offset``, ``use_karras_sigmas``, ``shift`` ... -- choose a sampler's grid, which fastdiff's
grids replace):
- DDPM-family schedulers (``beta_schedule`` / ``trained_betas``): the discrete VP path of those
  betas, the network queried at the training index (time_scale N - 1), ``prediction_type`` epsilon ->
  eps, sample -> x0, v_prediction -> v;
- ``FlowMatch*`` schedulers: the rectified-flow path x_t = (1 - t) x0 + t eps, velocity eps - x0,
  the network queried at t x ``num_train_timesteps``.

Conditioning from the model config: class labels (``num_class_embeds``; a DiT's ``num_embeds_ada_norm``
classes plus its null class, the label its training dropped to); cross-attention embeddings for a
``UNet2DConditionModel`` from ``conditions.safetensors`` in the folder (one (L, D) tensor per named
condition, "null" for guidance). An optional ``fastdiff_model.json`` adds what diffusers' configs do
not say: ``null_class``, ``class_names``, ``card`` (merged into the run's model card), ``classifier``
('module:function' returning f(x) -> (B,) class indices: the modes of the coverage gate).

The parsing (``read_declaration``) is torch-free; ``load`` imports torch and diffusers.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastdiff_core.models.interface import ModelInterface, PathDecl

DENOISERS = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel")
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# DDPM-family schedulers: a config that omits beta_schedule gets diffusers' defaults (linear, 1e-4 .. 0.02)
DDPM_FAMILY = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
               "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
               "UniPCMultistepScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
               "DEISMultistepScheduler", "DDPMParallelScheduler", "DDIMParallelScheduler")
FASTDIFF_FILE = "fastdiff_model.json"
CONDITIONS_FILE = "conditions.safetensors"
README_CHARS = 4000


class ModelLoadError(ValueError):
    """A model that cannot be loaded: one line naming the file or field and what is allowed."""


@dataclass(frozen=True)
class Declaration:
    """What the configs say: where the denoiser is, its class, its interface, and the card text."""

    root: pathlib.Path
    model_dir: pathlib.Path
    class_name: str
    interface: ModelInterface
    weights: tuple[pathlib.Path, ...]
    card: Mapping[str, Any]
    classifier: str | None = None


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def _locate(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(denoiser folder, scheduler config file) of a pipeline folder or a single model folder."""
    if not root.is_dir():
        raise ModelLoadError(f"model path {root}: no such directory (expected a diffusers-format folder)")
    index = root / "model_index.json"
    if index.is_file():
        components = _read_json(index)
        found = [k for k, v in components.items() if isinstance(v, list) and len(v) == 2 and v[1] in DENOISERS]
        if not found:
            named = {k: v[1] for k, v in components.items() if isinstance(v, list) and len(v) == 2}
            raise ModelLoadError(f"{index}: no denoiser component among {named}; allowed classes: {list(DENOISERS)}")
        if "scheduler" not in components:
            raise ModelLoadError(f"{index}: no 'scheduler' component (its config says the training noise schedule)")
        return root / found[0], root / "scheduler" / "scheduler_config.json"
    if not (root / "config.json").is_file():
        raise ModelLoadError(f"model path {root}: neither model_index.json (a pipeline) nor config.json (a model) "
                             "is there")
    for sched in (root / "scheduler_config.json", root / "scheduler" / "scheduler_config.json"):
        if sched.is_file():
            return root, sched
    raise ModelLoadError(f"model path {root}: no scheduler config (scheduler_config.json or "
                         "scheduler/scheduler_config.json): the training noise schedule is read from it")


def _path_and_prediction(cfg: Mapping[str, Any], where: pathlib.Path) -> tuple[PathDecl, str, float]:
    """(path, prediction, time_scale) from a scheduler config."""
    cls = str(cfg.get("_class_name", ""))
    n = cfg.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ModelLoadError(f"{where}: num_train_timesteps={n!r} must be an integer >= 2")
    if cls.startswith("FlowMatch"):
        return PathDecl("rectified_flow"), "flow", float(n)
    if cls not in DDPM_FAMILY and "beta_schedule" not in cfg and "trained_betas" not in cfg:
        raise ModelLoadError(f"{where}: _class_name={cls!r} is not supported; allowed: a DDPM-family scheduler "
                             "(with beta_schedule or trained_betas) or a FlowMatch* scheduler")
    if cfg.get("rescale_betas_zero_snr"):
        raise ModelLoadError(f"{where}: rescale_betas_zero_snr=true (a zero terminal SNR) is not supported; "
                             "allowed: false")
    ptype = cfg.get("prediction_type", "epsilon")
    if ptype not in PREDICTION_TYPES:
        raise ModelLoadError(f"{where}: prediction_type={ptype!r} is not one of {list(PREDICTION_TYPES)}")
    trained = cfg.get("trained_betas")
    if trained is not None:
        if not isinstance(trained, list) or len(trained) != n:
            raise ModelLoadError(f"{where}: trained_betas must be a list of num_train_timesteps={n} numbers")
        betas = tuple(trained)
    else:
        kind = cfg.get("beta_schedule", "linear")
        if kind not in BETA_SCHEDULES:
            raise ModelLoadError(f"{where}: beta_schedule={kind!r} is not one of {list(BETA_SCHEDULES)} "
                                 "(or give trained_betas)")
        from fastdiff_core.paths import ddpm_betas  # the schedule formulas live once, there

        betas = tuple(ddpm_betas(kind, n, float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02)))
                      .tolist())
    try:
        path = PathDecl("vp_discrete", betas=betas)
    except ValueError as e:
        raise ModelLoadError(f"{where}: {e}") from None
    return path, PREDICTION_TYPES[ptype], float(n - 1)


def _conditioning(cls: str, cfg: Mapping[str, Any], model_dir: pathlib.Path) -> dict[str, Any]:
    if cls in ("DiTTransformer2DModel", "Transformer2DModel") and cfg.get("num_embeds_ada_norm"):
        n = int(cfg["num_embeds_ada_norm"])
        return {"num_classes": n + 1, "null_class": n}  # the label embedding's extra row: training's dropped label
    if cls in ("UNet2DModel", "UNet2DConditionModel") and cfg.get("num_class_embeds"):
        return {"num_classes": int(cfg["num_class_embeds"])}
    if cls == "UNet2DConditionModel":
        for where in (model_dir, model_dir.parent):
            f = where / CONDITIONS_FILE
            if f.is_file():
                from safetensors import safe_open

                with safe_open(str(f), "np") as fh:
                    return {"conditions": tuple(sorted(fh.keys()))}
        raise ModelLoadError(f"model path {model_dir}: a UNet2DConditionModel needs its cross-attention "
                             f"embeddings in {CONDITIONS_FILE} (one (tokens, {cfg.get('cross_attention_dim')}) "
                             "tensor per named condition, 'null' for guidance); fastdiff loads no text encoder")
    return {}


def _weights(model_dir: pathlib.Path) -> tuple[pathlib.Path, ...]:
    files = tuple(sorted(model_dir.glob("*.safetensors")))
    if files:
        return files
    pickled = sorted(p.name for p in model_dir.glob("*.bin"))
    if pickled:
        raise ModelLoadError(f"model path {model_dir}: weights {pickled} are pickled (loading them can run code); "
                             "allowed: safetensors (convert with diffusers: model.save_pretrained(dir, "
                             "safe_serialization=True))")
    raise ModelLoadError(f"model path {model_dir}: no weights (*.safetensors) found")


def _sample_shape(cls: str, cfg: Mapping[str, Any], where: pathlib.Path) -> tuple[int, ...]:
    size = cfg.get("sample_size")
    channels = cfg.get("in_channels")
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(channels, int) and isinstance(size, (list, tuple)) and len(size) == 2):
        raise ModelLoadError(f"{where}: in_channels={channels!r}, sample_size={cfg.get('sample_size')!r}: "
                             f"a {cls} needs both (an integer and an integer or [height, width])")
    return (channels, int(size[0]), int(size[1]))


def read_declaration(root: str | pathlib.Path) -> Declaration:
    """Parse a diffusers-format directory's configs into fastdiff's declaration (torch-free)."""
    root = pathlib.Path(root).expanduser().resolve()
    model_dir, sched_file = _locate(root)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"model path {model_dir}: no config.json")
    cfg = _read_json(config_file)
    cls = cfg.get("_class_name")
    if cls not in DENOISERS:
        raise ModelLoadError(f"{config_file}: _class_name={cls!r} is not supported; allowed: {list(DENOISERS)}")
    if not sched_file.is_file():
        raise ModelLoadError(f"model path {root}: no scheduler config at {sched_file}")
    path, prediction, time_scale = _path_and_prediction(_read_json(sched_file), sched_file)
    extra = _read_json(root / FASTDIFF_FILE) if (root / FASTDIFF_FILE).is_file() else {}
    allowed_extra = {"null_class", "class_names", "card", "classifier"}
    if set(extra) - allowed_extra:
        raise ModelLoadError(f"{root / FASTDIFF_FILE}: unknown field(s) {sorted(set(extra) - allowed_extra)}; "
                             f"allowed: {sorted(allowed_extra)}")
    cond = _conditioning(cls, cfg, model_dir)
    if "null_class" in extra:
        cond["null_class"] = extra["null_class"]
    if "class_names" in extra:
        cond["class_names"] = tuple(extra["class_names"])
    try:
        interface = ModelInterface(prediction=prediction, path=path, time_scale=time_scale,
                                   sample_shape=_sample_shape(cls, cfg, config_file), **cond)
    except ValueError as e:
        raise ModelLoadError(f"model path {root}: {e}") from None
    card: dict[str, Any] = {"class": cls, "scheduler": _read_json(sched_file).get("_class_name")}
    readme = root / "README.md"
    if readme.is_file():
        card["readme"] = readme.read_text(errors="replace")[:README_CHARS]
    card.update(extra.get("card", {}))
    classifier = extra.get("classifier")
    if classifier is not None and (not isinstance(classifier, str) or ":" not in classifier):
        raise ModelLoadError(f"{root / FASTDIFF_FILE}: classifier={classifier!r} must be 'module:function'")
    return Declaration(root, model_dir, cls, interface, _weights(model_dir), card, classifier)


def load(decl: Declaration) -> tuple[Any, dict | None]:
    """(the diffusers model of ``decl`` in eval mode, its named condition embeddings or None); torch and
    diffusers are imported here."""
    try:
        import diffusers
    except ImportError:
        raise ModelLoadError("loading a diffusers-format model needs diffusers: pip install 'fastdiff[models]'") \
            from None
    cls = getattr(diffusers, decl.class_name)
    try:
        model = cls.from_pretrained(str(decl.model_dir), local_files_only=True, use_safetensors=True,
                                     low_cpu_mem_usage=False)  # without accelerate: what it does anyway, unwarned
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"model path {decl.model_dir}: diffusers could not load {decl.class_name}: {first}") \
            from None
    conditions = None
    if decl.interface.conditions:
        from safetensors.torch import load_file

        f = decl.model_dir / CONDITIONS_FILE
        conditions = load_file(str(f if f.is_file() else decl.model_dir.parent / CONDITIONS_FILE))
    return model.eval(), conditions
