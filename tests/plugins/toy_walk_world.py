"""A third-party world MODEL, as a user would write one: a walker that steps left (-1) or right (+1) every
frame, more likely to keep its last direction, nudged by the action. Its frame denoiser is exact: a frame
x0 in {-1, +1} with P(+1) = sigmoid(logit), on the rectified-flow path x_t = (1 - t) x0 + t eps, has

    E[x0 | x_t] = tanh((1 - t) x_t / t^2 + logit / 2),   logit = PERSIST * previous step + PUSH * action

so the engine's rollouts can be checked against exact branch probabilities. Branches: ``keeps`` (every
step in the observed direction), ``turns`` (one change of direction), ``zigzags`` (two or more: the tail),
``implausible`` (a step that is not clearly -1 or +1: the blur of too few solver steps).
It reaches fastdiff only through its ``fastdiff.worlds`` entry point and runs on the generic rollout
runner: no runner of its own."""

from __future__ import annotations

import torch

from fastdiff_core.paths import get_path
from fastdiff_core.registry import Option
from fastdiff_core.worlds import Capabilities, WorldInfo, WorldPlugin
from fastdiff_core.worlds.protocol import WorldModel

ACTIONS, PUSH = ("left", "stay", "right"), (-1.0, 0.0, 1.0)
INFO = WorldInfo("toy_walk", "Toy walk", "a walker stepping left or right; exact frame denoiser", {
    "persist": Option(float, 2.0, "logit weight of the previous step", min=0.0, max=5.0),
    "action": Option(str, "stay", "the action of a single-plan run", choices=ACTIONS)}, tail="zigzags")
PLUGIN = WorldPlugin(INFO, Capabilities(speedups=("importance",), metrics=("mean_tv", "tail_rate_mean")),
                     "fastdiff_core.rollout_runner:run", world_model="toy_walk_world:world_model")


class ExactStep(torch.nn.Module):
    prediction = "x0"

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path

    def forward(self, x_t, t, logit):
        a, s = self.path.alpha(t)[:, None], self.path.sigma(t)[:, None]
        return torch.tanh(a * x_t / (s * s) + logit / 2)


class ToyWalk(WorldModel):
    labels, tail, actions, frame_shape, frame_dim = ("keeps", "turns", "zigzags", "implausible"), "zigzags", \
        ACTIONS, (1,), 1
    label_cost, action_progress = {"turns": 1.0, "zigzags": 5.0, "implausible": 1.0}, (0.0, 0.5, 1.0)

    def __init__(self, persist: float, action: str) -> None:
        self.persist, self.action, self.path = persist, ACTIONS.index(action), get_path("rectified_flow")
        self.net = ExactStep(self.path)

    def observe(self, n, generator):
        return torch.ones(n, 1)  # walking right

    def plan_condition(self, plans, *, dtype, device):
        return torch.tensor(PUSH, dtype=dtype, device=device)[plans.to(device)][..., None]

    def condition(self, history, static):
        return self.persist * history[-1] + static

    def uncondition(self, cond):
        return torch.zeros_like(cond)

    def decode(self, x0, history):
        return x0

    def steps(self, rollouts):
        return rollouts[..., 0].sign(), (rollouts[:, 1:, 0].abs() < 0.5).any(1)

    def classify(self, rollouts):
        sign, blurred = self.steps(rollouts)
        turns = (sign[:, 1:] != sign[:, :-1]).sum(1).clamp(max=2)
        return torch.where(blurred, 3, turns)

    def onset(self, rollouts):  # the frame of the second turn (where a zigzag begins), H - 1 without one
        sign, _ = self.steps(rollouts)
        turned = (sign[:, 1:] != sign[:, :-1]).cumsum(1) >= 2
        return torch.where(turned.any(1), turned.float().argmax(1), rollouts.shape[1] - 2)

    def truth(self, plan):
        p = {(1.0, 0): 1.0}  # (last step, turns so far, capped at 2) -> probability
        for a in plan:
            nxt = {}
            for (last, k), q in p.items():
                right = float(torch.sigmoid(torch.tensor(self.persist * last + PUSH[int(a)])))
                for step, r in ((1.0, right), (-1.0, 1.0 - right)):
                    key = (step, min(k + (step != last), 2))
                    nxt[key] = nxt.get(key, 0.0) + q * r
            p = nxt
        out = {label: sum(q for (_, k), q in p.items() if k == i) for i, label in enumerate(self.labels[:3])}
        return {**out, "implausible": 0.0}


def world_model(spec, device):
    return ToyWalk(spec.world_options["persist"], spec.world_options["action"])
