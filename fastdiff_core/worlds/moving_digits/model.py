"""The moving-digits world model on the rollout engine's protocol (``fastdiff_core.worlds.protocol.WorldModel``):
the frame denoiser (the shipped one, or any network of its shape), a held-out digit at the start column as
the observed context, the branch classifier, the exact branch probabilities of a plan, and the planning
objective."""

from __future__ import annotations

from typing import Sequence

import torch

from fastdiff_core.paths import RectifiedFlow
from fastdiff_core.worlds.moving_digits import dynamics
from fastdiff_core.worlds.moving_digits.network import FRAME_DIM, condition, drop_condition, shipped_denoiser
from fastdiff_core.worlds.protocol import WorldModel

# Planning objective (a demonstration of choosing): a jump costs 5, an implausible frame 1; moving right earns 1
# per frame, staying 0.5, moving left 0 (a digit asked to cross the canvas to the right).
LABEL_COST = {"jumps": 5.0, "implausible": 1.0}
ACTION_PROGRESS = (0.0, 0.5, 1.0)


class MovingDigitsWorldModel(WorldModel):
    """A held-out digit starting at column ``start``; ``net`` the frame denoiser (FRAME_DIM numbers per frame,
    condition ``network.condition``)."""

    labels = dynamics.LABELS
    tail = dynamics.TAIL
    actions = dynamics.ACTIONS
    frame_shape = (dynamics.ROWS, dynamics.COLS)
    frame_dim = FRAME_DIM
    label_cost = LABEL_COST
    action_progress = ACTION_PROGRESS
    path = RectifiedFlow()
    staged = False

    def __init__(self, net, start: int = 4, action: str = "stay") -> None:
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= dynamics.MAX_X:
            raise ValueError(f"start={start!r} must be a column in 0..{dynamics.MAX_X}")
        self.net, self.start, self.action = net, start, dynamics.action_index(action)

    def observe(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        heldout = dynamics.digit_images()[1]
        idx = torch.randint(0, heldout.shape[0], (n,), generator=generator)
        return dynamics.place(heldout[idx], torch.full((n,), self.start, dtype=torch.long))

    def plan_condition(self, plans: torch.Tensor, *, dtype: torch.dtype, device) -> torch.Tensor:
        return plans.to(device)[..., None]  # (P, H, 1): the action index, one-hot encoded per frame in condition

    def condition(self, history: Sequence[torch.Tensor], static: torch.Tensor) -> torch.Tensor:
        return condition(history[-1], static[:, 0])

    def uncondition(self, cond: torch.Tensor) -> torch.Tensor:
        return drop_condition(cond)

    def decode(self, x0: torch.Tensor, history: Sequence[torch.Tensor]) -> torch.Tensor:
        # the canvas's pixel range; the network's estimate may overshoot it slightly
        return x0.reshape(x0.shape[0], *self.frame_shape).clamp(-1.0, 1.0).to(history[-1].dtype)

    def classify(self, rollouts: torch.Tensor) -> torch.Tensor:
        return dynamics.classify_codes(rollouts)

    def onset(self, rollouts: torch.Tensor) -> torch.Tensor:
        return dynamics.onset(rollouts)

    def truth(self, plan: Sequence[int]) -> dict[str, float]:
        return dynamics.branch_probabilities(self.start, plan)


def from_spec(spec, device: torch.device) -> MovingDigitsWorldModel:
    """The world model a moving_digits RunSpec rolls out: the shipped denoiser (sha256 checked), the spec's start
    column and action."""
    opts = spec.world_options
    net = shipped_denoiser(device)
    world = MovingDigitsWorldModel(net, int(opts["start"]), opts["action"])
    world.model_checksum = net.sha256  # the weights' sha256, checked against the card when they loaded
    return world
