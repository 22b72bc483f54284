"""What a user's model declares, torch-free: the small interface fastdiff needs to sample it.

A model -- a diffusers-format directory or a plain PyTorch module -- is, to fastdiff, a network
``net(x_t, t, cond) -> prediction`` (``fastdiff_core.denoiser.Network``) plus this declaration:

- ``prediction``: what the network predicts (eps, x0, v, flow velocity);
- ``path``: the training noise path (``PathDecl``: VP discrete betas, VP linear, VP cosine, rectified
  flow) and ``time_scale``: the network is queried at ``t * time_scale`` (a DDPM network trained on
  integer indices 0..N-1 has time_scale N - 1; a flow model trained on t x 1000 has 1000);
- ``sample_shape``: one sample's shape, e.g. (C, H, W); ``frame_shape`` and ``actions`` for world
  models (frames conditioned on history and action);
- conditioning: ``num_classes`` class labels (0 = unconditional) with ``null_class`` the label that
  means "no class" (what classifier-free guidance needs), ``class_names``; or ``conditions`` named
  cross-attention embeddings (a diffusers UNet2DConditionModel's) with "null" among them for CFG.

The registry (``model_registry``) stores this as JSON beside the model's checksum and card, so the
dashboard shows and validates models without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from fastdiff_core.registry import Option

PREDICTIONS = ("eps", "x0", "v", "flow")
PATH_KINDS = ("vp_discrete", "vp_linear", "vp_cosine", "rectified_flow")
# The interface's scalar fields, declared once for the validation layer (``registry.Option``: docs/schema.md);
# the shapes and the rules across fields are checked in ``ModelInterface.__post_init__``.
FIELDS = {
    "prediction": Option(str, None, "what the network predicts", choices=PREDICTIONS),
    "time_scale": Option(float, 1.0, "the network is queried at t x time_scale", min=0.0, min_inclusive=False),
    "num_classes": Option(int, 0, "class labels (0: unconditional)", min=0),
    "null_class": Option(int, None, "the label that means 'no class' (classifier-free guidance)", min=0,
                         nullable=True),
}
PATH_KIND = Option(str, None, "the training noise path", choices=PATH_KINDS)


@dataclass(frozen=True)
class PathDecl:
    """A noise path as data. ``vp_discrete``: ``betas`` (the training betas, one per index);
    ``vp_linear``: ``beta_min``, ``beta_max``; ``vp_cosine`` and ``rectified_flow``: no parameters."""

    kind: str
    betas: tuple[float, ...] = ()
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        PATH_KIND.check("path.kind", self.kind)
        if self.kind == "vp_discrete":
            b = self.betas
            if len(b) < 2 or not all(isinstance(x, (int, float)) and 0.0 < x < 1.0 for x in b):
                raise ValueError(f"path.betas must be at least 2 numbers, each in (0, 1) (got {len(b)} values"
                                 + ("" if len(b) < 2 else f", min {min(b)!r}, max {max(b)!r}") + ")")
            object.__setattr__(self, "betas", tuple(float(x) for x in b))
        if self.kind == "vp_linear" and not 0 < self.beta_min < self.beta_max:
            raise ValueError(f"path.beta_min={self.beta_min!r}, path.beta_max={self.beta_max!r}: "
                             "need 0 < beta_min < beta_max")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "vp_discrete":
            d["betas"] = list(self.betas)
        if self.kind == "vp_linear":
            d.update(beta_min=self.beta_min, beta_max=self.beta_max)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PathDecl:
        return cls(kind=d.get("kind"), betas=tuple(d.get("betas", ())), beta_min=d.get("beta_min", 0.1),
                   beta_max=d.get("beta_max", 20.0))


@dataclass(frozen=True)
class ModelInterface:
    """A model's declared interface (see the module doc). Validated where it is made."""

    prediction: str
    path: PathDecl
    sample_shape: tuple[int, ...]
    time_scale: float = 1.0
    num_classes: int = 0
    null_class: int | None = None
    class_names: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    frame_shape: tuple[int, ...] = ()
    actions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, option in FIELDS.items():
            option.check(name, getattr(self, name))
        if not isinstance(self.path, PathDecl):
            raise ValueError(f"path={self.path!r} must be a PathDecl")
        for name in ("sample_shape", "frame_shape"):
            shape = getattr(self, name)
            if not isinstance(shape, (tuple, list)) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
                raise ValueError(f"{name}={shape!r} must be a tuple of positive integers")
            object.__setattr__(self, name, tuple(shape))
        if not self.sample_shape:
            raise ValueError("sample_shape=() must name at least one dimension, e.g. (channels, height, width)")
        if self.null_class is not None and self.num_classes == 0:
            raise ValueError(f"null_class={self.null_class!r} given, but num_classes=0 (an unconditional model)")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names; num_classes={self.num_classes}")
        if self.num_classes and self.conditions:
            raise ValueError("a model is conditioned on class labels (num_classes) or on named embeddings "
                             "(conditions), not both")
        for name in ("class_names", "conditions", "actions"):
            object.__setattr__(self, name, tuple(str(x) for x in getattr(self, name)))

    @property
    def labels(self) -> tuple[int, ...]:
        """The class labels a sample may be conditioned on (the null class excluded)."""
        return tuple(c for c in range(self.num_classes) if c != self.null_class)

    @property
    def guidable(self) -> bool:
        """Classifier-free guidance needs an unconditional input: a null class or a "null" embedding."""
        return self.null_class is not None or "null" in self.conditions

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = self.path.to_dict()
        for k in ("sample_shape", "frame_shape", "class_names", "conditions", "actions"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInterface:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model interface has unknown field(s) {unknown}; allowed: {sorted(known)}")
        d = dict(d)
        if "path" not in d or not isinstance(d["path"], Mapping):
            raise ValueError("model interface needs path: {kind: ...}")
        d["path"] = PathDecl.from_dict(d["path"])
        for k in ("sample_shape", "frame_shape", "class_names", "conditions", "actions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class ModelRecord:
    """What a run records about its model: name, where it came from, the weights' checksum, the card."""

    name: str
    source: str
    kind: str
    checksum: str
    interface: ModelInterface
    card: Mapping[str, Any] = field(default_factory=dict)
    classifier: str | None = None  # 'module:function' returning f(x) -> (B,) class indices, for the modes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "checksum": self.checksum,
                "interface": self.interface.to_dict(), "card": dict(self.card), "classifier": self.classifier}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelRecord:
        return cls(name=d["name"], source=d["source"], kind=d["kind"], checksum=d["checksum"],
                   interface=ModelInterface.from_dict(d["interface"]), card=dict(d.get("card", {})),
                   classifier=d.get("classifier"))
