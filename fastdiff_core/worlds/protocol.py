"""The world-model protocol: what the rollout engine (``fastdiff_core.rollout``) needs from a world model.

A world model is a frame denoiser conditioned on history and action, plus a branch classifier, bound to
one situation (a scene): the engine imagines P candidate plans (action sequences) x R futures over H
frames, one batched solve per frame, and tallies the branches the classifier reads off each rollout.

    frames        a frame is a tensor of ``frame_shape``; a rollout is (H + 1, *frame_shape), frame 0 the
                  observed context (``observe``); the network generates ``frame_dim`` numbers per frame
                  (network space), ``decode`` turns them into the next frame
    conditioning  ``plan_condition(plans)`` builds once per cycle what does not depend on history (the
                  scene, the action of every frame); ``condition(history, that)`` adds the history for
                  one frame; ``uncondition(cond)`` is the null condition of classifier-free guidance
    network       ``net(x_t, t, cond) -> prediction`` with a ``prediction`` attribute (eps / x0 / v /
                  flow) on the noise path ``path``; the engine wraps it in ``fastdiff_core.denoiser``
    branches      ``classify(rollouts)`` -> (B,) codes into ``labels``; ``tail`` the rare label;
                  ``onset(rollouts)`` the frame each branch began in (what importance sampling shifts;
                  ``None`` from ``onset`` = importance sampling unsupported); ``truth(plan)`` the exact
                  branch probabilities of a plan where the world knows them (``None`` otherwise)
    planning      ``label_cost`` and ``action_progress``: cost = sum_label rate x cost - mean progress
                  over the plan's actions; the plan of lowest expected cost is chosen
    NFE           one solve per frame: S (the sampler's evaluations per frame) x C (guidance passes) per
                  rollout, counted by the denoiser; the bill is ``budget.bill_for``, the same for every
                  world model (a frame costs exactly one denoising solve)

This module is torch-free at import (torch appears in annotations only). docs/plugins.md shows how to
write one; ``tests/plugins/toy_walk_world.py`` is a complete one in a few dozen lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # annotations only: importing this module does not load torch
    import torch

    from fastdiff_core.paths import NoisePath


class WorldModel:
    """Base class of a world model bound to one situation. Subclasses set the attributes and implement
    the methods that raise ``NotImplementedError``; the others have working defaults."""

    # --- facts the engine reads -----------------------------------------------------------------------
    labels: tuple[str, ...] = ()  # branch labels; ``classify`` returns indices into them
    tail: str = ""  # the rare label (importance sampling targets it, runs report its rate)
    actions: tuple[str, ...] = ()  # the action vocabulary; plans are (P, H) indices into it
    action: int = 0  # the action of a single-plan run (P = 1): R futures of the constant plan
    frame_shape: tuple[int, ...] = ()  # one frame as the classifier and ``decode`` see it
    frame_dim: int = 0  # numbers the network generates per frame (the noise of one frame)
    label_cost: Mapping[str, float] = {}  # planning objective: cost of each label (missing: 0)
    action_progress: Sequence[float] = ()  # planning objective: reward of each action (missing: 0)
    path: "NoisePath"  # the noise path the network was trained on
    net: Any  # the frame denoiser: net(x_t (B, frame_dim), t (B,), cond (B, ...)) -> prediction
    staged: bool = False  # net has WorldModelNet's staged API, so the speed-ups of fastdiff_core.speedups apply
    model_checksum: str | None = None  # sha256 of the weights ``net`` loaded: every run records it (the store too)

    # --- conditioning and frames ---------------------------------------------------------------------
    def observe(self, n: int, generator: "torch.Generator | None") -> "torch.Tensor":
        """n observed context frames (n, *frame_shape) on the CPU, drawn with ``generator``."""
        raise NotImplementedError

    def plan_condition(self, plans: "torch.Tensor", *, dtype: "torch.dtype", device: Any) -> "torch.Tensor":
        """The conditioning that does not depend on history, for every plan and frame: plans (P, H)
        action indices -> (P, H, ...). Built once per cycle."""
        raise NotImplementedError

    def condition(self, history: Sequence["torch.Tensor"], static: "torch.Tensor") -> "torch.Tensor":
        """The condition of the next frame: ``history`` the frames so far (each (B, *frame_shape), the last
        one the previous frame), ``static`` (B, ...) the row's slice of ``plan_condition`` for this frame."""
        raise NotImplementedError

    def uncondition(self, cond: "torch.Tensor") -> "torch.Tensor":
        """The null condition classifier-free guidance pairs with ``cond`` (only called when guided)."""
        raise NotImplementedError

    def decode(self, x0: "torch.Tensor", history: Sequence["torch.Tensor"]) -> "torch.Tensor":
        """The network's clean estimate x0 (B, frame_dim) -> the next frame (B, *frame_shape)."""
        raise NotImplementedError

    # --- branches ------------------------------------------------------------------------------------
    def classify(self, rollouts: "torch.Tensor") -> "torch.Tensor":
        """(B, H + 1, *frame_shape) -> (B,) integer codes into ``labels``."""
        raise NotImplementedError

    def onset(self, rollouts: "torch.Tensor") -> "torch.Tensor | None":
        """(B,) index into the H generated frames of the frame each rollout's branch began in (what the
        tail proposal of importance sampling shifts), or None: importance sampling is not supported."""
        return None

    def truth(self, plan: Sequence[int]) -> Mapping[str, float] | None:
        """The exact branch probabilities under a plan (H action indices), or None when unknown."""
        return None

    def plan_name(self, plan: Sequence[int]) -> str:
        """A plan's name in histograms: the actions' first letters joined by '-' when they tell the actions
        apart, else the actions' names."""
        short = [a[:1] for a in self.actions]
        names = short if len(set(short)) == len(short) else list(self.actions)
        return "-".join(names[int(a)] for a in plan)


def check_world_model(world: Any) -> None:
    """A clear error (naming the attribute, its value and what is allowed) for a world model the engine
    cannot run, before any work starts."""
    if not isinstance(world, WorldModel):
        raise ValueError(f"world model {type(world).__name__} must subclass fastdiff_core.worlds.protocol.WorldModel")
    name = type(world).__name__
    if not world.labels or world.tail not in world.labels:
        raise ValueError(f"{name}.tail={world.tail!r} must be one of its labels {list(world.labels)}")
    if not world.actions or not 0 <= world.action < len(world.actions):
        raise ValueError(f"{name}.action={world.action!r} must index its actions {list(world.actions)}")
    if not world.frame_shape or isinstance(world.frame_dim, bool) or not isinstance(world.frame_dim, int) \
            or world.frame_dim < 1:
        raise ValueError(f"{name}.frame_shape={world.frame_shape!r} must be non-empty and frame_dim="
                         f"{world.frame_dim!r} an integer >= 1")
    unknown = sorted(set(world.label_cost) - set(world.labels))
    if unknown:
        raise ValueError(f"{name}.label_cost names {unknown}, not labels; allowed: {list(world.labels)}")
    if len(world.action_progress) not in (0, len(world.actions)):
        raise ValueError(f"{name}.action_progress has {len(world.action_progress)} entries; allowed: 0 or one per "
                         f"action ({len(world.actions)})")
    for attr in ("path", "net"):
        if getattr(world, attr, None) is None:
            raise ValueError(f"{name}.{attr} is not set")
    if getattr(world.net, "prediction", None) is None:
        raise ValueError(f"{name}.net has no 'prediction' attribute (one of eps, x0, v, flow)")
