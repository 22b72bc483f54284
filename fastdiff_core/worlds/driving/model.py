"""The driving world model on the rollout engine's protocol (``fastdiff_core.worlds.protocol.WorldModel``):
the teacher (or any network of its shape) in one scene, its frame encoding, its branch classifier, the
exact branch probabilities of a plan, and the planning objective."""

from __future__ import annotations

from typing import Sequence

import torch

from fastdiff_core.models.teacher import load_teacher
from fastdiff_core.worlds.driving import encoding
from fastdiff_core.worlds.driving.branches import classify_codes, first_move_frame
from fastdiff_core.worlds.driving.sampling import PATH
from fastdiff_core.worlds.driving.scenes import ACTIONS, LABELS, SUBSTEPS, TAIL, Scene, get_scene, plan_branch_probabilities
from fastdiff_core.worlds.driving.simulator import waiting_frame
from fastdiff_core.worlds.protocol import WorldModel

# Planning objective (a demonstration of choosing, not a driving policy): a dart costs 10, a crossing
# in front of the car 1, progress earns up to 1 (accelerate 1, keep 0.5, brake 0 per frame on average).
RISK_COST = {"waits": 0.0, "crosses": 1.0, "darts": 10.0, "implausible": 1.0}
ACTION_PROGRESS = (0.0, 0.5, 1.0)


class DrivingWorldModel(WorldModel):
    """A pedestrian near a crossing in ``scene``; ``net`` the world-model network (the shipped teacher or a
    network of its shape: frame (SUBSTEPS, 2), FRAME_DIM numbers per frame, COND_DIM condition)."""

    labels = LABELS
    tail = TAIL
    actions = ACTIONS
    frame_shape = (SUBSTEPS, 2)
    frame_dim = encoding.FRAME_DIM
    label_cost = RISK_COST
    action_progress = ACTION_PROGRESS
    path = PATH
    staged = True

    def __init__(self, net, scene: Scene | str, action: str = "keep") -> None:
        self.net = net
        self.scene = get_scene(scene) if isinstance(scene, str) else scene
        self.action = encoding.action_index(action)

    def observe(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return waiting_frame(self.scene, n, generator)

    def plan_condition(self, plans: torch.Tensor, *, dtype: torch.dtype, device) -> torch.Tensor:
        return encoding.static_condition(self.scene, plans, dtype=dtype, device=device)

    def condition(self, history: Sequence[torch.Tensor], static: torch.Tensor) -> torch.Tensor:
        return encoding.condition_from_static(history[-1], self.scene.curb_distance, static)

    def uncondition(self, cond: torch.Tensor) -> torch.Tensor:
        return encoding.drop_condition(cond)

    def decode(self, x0: torch.Tensor, history: Sequence[torch.Tensor]) -> torch.Tensor:
        return encoding.decode_frame(x0, history[-1])

    def classify(self, rollouts: torch.Tensor) -> torch.Tensor:
        return classify_codes(rollouts, self.scene)

    def onset(self, rollouts: torch.Tensor) -> torch.Tensor:
        return first_move_frame(rollouts, self.scene)

    def truth(self, plan: Sequence[int]) -> dict[str, float]:
        return plan_branch_probabilities(self.scene, plan)


def from_spec(spec, device: torch.device) -> DrivingWorldModel:
    """The world model a driving RunSpec rolls out: the shipped teacher named by world_options.teacher, in the
    spec's scene, under its action."""
    net = load_teacher(spec.world_options["teacher"], device)
    world = DrivingWorldModel(net, spec.scene, spec.world_options["action"])
    world.model_checksum = net.sha256  # which weights produced the run (the shipped file's sha256)
    return world
