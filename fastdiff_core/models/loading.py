"""Users' models, loaded from disk (never from the network): a diffusers-format directory, a plain
PyTorch module from a ``fastdiff.models`` entry point, or a ``module:function`` string.

Whatever the source, the result is a ``LoadedModel``: a network ``net(x_t, t, cond) -> prediction``
(fastdiff_core.denoiser.Network), its declared ``ModelInterface``, the noise path built from it, and a
``ModelRecord`` (name, source, kind, sha256 of the weights, card) that every run records, so a result
says exactly which weights produced it. ``LoadedModel.denoiser`` is the x0-denoiser every solver,
grid, guidance option and speed-up runs on.

A PyTorch module's entry point (or ``module:function``) is a function of no arguments returning a
``ModuleModel``: the module (``forward(x_t, t, cond)``), its interface, and optionally the safetensors
file its weights came from (the checksum is that file's sha256; without one, the sha256 of the
module's state_dict tensors in key order). A function may instead return the path of a
diffusers-format directory: how a package ships a model (``fastdiff models list`` shows it by its
entry-point name).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastdiff_core.setup_time import one_off
from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.models.diffusers_format import ModelLoadError, read_declaration
from fastdiff_core.models.diffusers_format import load as load_diffusers
from fastdiff_core.models.interface import ModelInterface, ModelRecord, PathDecl
from fastdiff_core.models import model_registry
from fastdiff_core.models.model_registry import entry_point_names
from fastdiff_core.paths import NoisePath, RectifiedFlow, VPCosine, VPDiscrete, VPLinear


def noise_path(decl: PathDecl) -> NoisePath:
    """The fastdiff path a declaration names."""
    if decl.kind == "vp_discrete":
        return VPDiscrete(torch.tensor(decl.betas, dtype=torch.float64))
    if decl.kind == "vp_linear":
        return VPLinear(decl.beta_min, decl.beta_max)
    if decl.kind == "vp_cosine":
        return VPCosine()
    return RectifiedFlow()


def file_sha256(files: list[pathlib.Path] | tuple[pathlib.Path, ...]) -> str:
    """sha256 of one weights file (what ``sha256sum`` prints); of several, the sha256 of their
    ``name sha256`` lines in name order."""
    digests = []
    for f in sorted(files, key=lambda p: p.name):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digests.append((f.name, h.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in digests).encode()).hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state_dict: each key, dtype, shape and the tensor's bytes, in key order."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class DiffusersNet(nn.Module):
    """A diffusers denoiser as ``net(x_t, t, cond) -> prediction``. cond: class labels (B,) int64, or
    cross-attention embeddings (B, L, D) for a UNet2DConditionModel; a DiT's learned-variance channels
    (out_channels = 2 x in_channels) are dropped: fastdiff's solvers use the mean prediction."""

    def __init__(self, model: nn.Module, class_name: str, channels: int,
                 conditions: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.model, self.class_name, self.channels = model, class_name, channels
        self.conditions = dict(conditions or {})

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.class_name == "UNet2DModel":
            out = self.model(x_t, t, class_labels=cond).sample
        elif self.class_name == "UNet2DConditionModel":
            out = self.model(x_t, t, encoder_hidden_states=cond).sample
        else:
            out = self.model(x_t, timestep=t, class_labels=cond).sample
        return out[:, : self.channels]


@dataclass(frozen=True)
class ModuleModel:
    """What a ``fastdiff.models`` entry point or ``module:function`` returns."""

    net: nn.Module
    interface: ModelInterface
    weights: str | pathlib.Path | None = None
    card: Mapping[str, Any] = field(default_factory=dict)
    classifier: str | None = None  # 'module:function' returning f(x) -> (B,) class indices


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to sample: network, interface, path, the record runs carry, and its size."""

    net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    record: ModelRecord
    path: NoisePath
    nbytes: int

    @property
    def interface(self) -> ModelInterface:
        return self.record.interface

    def to(self, device: torch.device | str) -> LoadedModel:
        if isinstance(self.net, nn.Module):
            self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        if isinstance(self.net, nn.Module):
            for p in self.net.parameters():
                return p.device
        return torch.device("cpu")

    def condition(self, label: int | str | None, rows: int) -> torch.Tensor | None:
        """The network's condition input for ``rows`` samples: a class index, a named embedding
        (cross-attention models), or None for an unconditional model."""
        iface = self.interface
        if label is None:
            return None
        if iface.conditions:
            if label not in iface.conditions:
                raise ValueError(f"condition={label!r} is not one of {list(iface.conditions)}")
            emb = self.net.conditions[label].to(self.device)
            return emb.unsqueeze(0).expand(rows, *emb.shape).to(next(self.net.parameters()).dtype)
        if not isinstance(label, int) or not 0 <= label < iface.num_classes:
            raise ValueError(f"class label={label!r} must be an integer in [0, {iface.num_classes - 1}]")
        return torch.full((rows,), label, dtype=torch.long, device=self.device)

    def null_condition(self, rows: int) -> torch.Tensor | None:
        """The unconditional input classifier-free guidance needs, or None if the model has none."""
        iface = self.interface
        if iface.null_class is not None:
            return self.condition(iface.null_class, rows)
        if "null" in iface.conditions:
            return self.condition("null", rows)
        return None

    def denoiser(self, *, cond: torch.Tensor | None = None, uncond: torch.Tensor | None = None,
                 guidance: Guidance = Guidance(), counter: NFECounter | None = None,
                 net_dtype: torch.dtype | None = None) -> Denoiser:
        """The x0-denoiser D(x, sigma) over this model (what every solver calls)."""
        return Denoiser(self.net, self.path, self.interface.prediction, cond=cond, uncond=uncond, guidance=guidance,
                        counter=counter, time_scale=self.interface.time_scale, net_dtype=net_dtype)


def _nbytes(net: Any) -> int:
    if not isinstance(net, nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))


def load_diffusers_dir(root: str | pathlib.Path, name: str | None = None) -> LoadedModel:
    """Load a diffusers-format directory (see ``diffusers_format``)."""
    decl = read_declaration(root)
    model, conditions = load_diffusers(decl)
    net = DiffusersNet(model, decl.class_name, decl.interface.sample_shape[0], conditions)
    record = ModelRecord(name=name or decl.root.name, source=str(decl.root), kind="diffusers",
                         checksum=file_sha256(decl.weights), interface=decl.interface, card=decl.card,
                         classifier=decl.classifier)
    return LoadedModel(net, record, noise_path(decl.interface.path), _nbytes(net))


def _call_factory(target: str, source: str) -> ModuleModel | pathlib.Path:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ModelLoadError(f"model {source}={target!r} must be 'module:function'")
    try:
        factory = getattr(importlib.import_module(module), attr)
        made = factory()
    except Exception as e:  # a user's module names itself, not a traceback from inside it
        raise ModelLoadError(f"model {source} ({target}) cannot be loaded: {type(e).__name__}: {e}") from None
    if isinstance(made, (str, pathlib.Path)) and pathlib.Path(made).is_dir():
        return pathlib.Path(made)  # a diffusers-format directory a package ships
    if not isinstance(made, ModuleModel):
        raise ModelLoadError(f"model {source} ({target}) returned {type(made).__name__}; allowed: a ModuleModel "
                             "(fastdiff_core.models.loading) or the path of a diffusers-format directory")
    if not isinstance(made.net, nn.Module):
        raise ModelLoadError(f"model {source} ({target}): net is {type(made.net).__name__}; allowed: a torch.nn.Module")
    return made


def load_module_model(target: str, name: str | None = None, *, source: str = "module") -> LoadedModel:
    """Load a PyTorch module from ``module:function`` (or what an entry point names); a function that
    returns a directory names a diffusers-format model (kind 'diffusers', its source that directory)."""
    made = _call_factory(target, source)
    if isinstance(made, pathlib.Path):
        return load_diffusers_dir(made, name)
    if made.weights is not None:
        w = pathlib.Path(made.weights)
        if w.suffix != ".safetensors" or not w.is_file():
            raise ModelLoadError(f"model {target}: weights={str(w)!r} must be an existing .safetensors file")
        checksum = file_sha256([w])
    else:
        checksum = state_dict_sha256(made.net)
    record = ModelRecord(name=name or target, source=target, kind="module", checksum=checksum,
                         interface=made.interface, card={"class": type(made.net).__name__, **dict(made.card)},
                         classifier=made.classifier)
    return LoadedModel(made.net.eval(), record, noise_path(made.interface.path), _nbytes(made.net))


@one_off
def load_source(kind: str, source: str, name: str) -> LoadedModel:
    """Load by the (kind, source) a registry entry or a resolved spec names."""
    if kind == "diffusers":
        return load_diffusers_dir(source, name)
    if kind == "module":
        return load_module_model(source, name)
    if kind == "entry_point":
        eps = entry_point_names()
        if source not in eps:
            raise ModelLoadError(f"model entry point {source!r} is not installed; installed: {sorted(eps)}")
        return load_module_model(eps[source], name, source=f"entry point {source!r}")
    raise ModelLoadError(f"model kind={kind!r} is not one of ['diffusers', 'module', 'entry_point']")


def load_classifier(target: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A model's declared classifier: 'module:function' returning f(x) -> (B,) class indices; f may carry
    ``labels``, the names of its outputs (else they are the model's class names, the null class left out)."""
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)()
    except Exception as e:
        raise ModelLoadError(f"classifier {target!r} cannot be loaded: {type(e).__name__}: {e}") from None


def register_model(source: str, name: str | None = None, *, replace: bool = False) -> dict:
    """Load ``source`` (checking it) and record it; returns the registry entry."""
    is_dir = os.path.isdir(source)
    if not is_dir and ":" not in source:
        raise ValueError(f"model source {source!r} is neither an existing directory (a diffusers-format model) "
                         "nor 'module:function' (a PyTorch module)")
    kind = "diffusers" if is_dir else "module"
    resolved = str(pathlib.Path(source).resolve()) if is_dir else source
    name = model_registry.check_name(name or model_registry.name_for(resolved), "--name")
    model = load_source(kind, resolved, name)
    entry = {**model.record.to_dict(), "nbytes": model.nbytes}
    return model_registry.add(entry, replace=replace)
