"""Named driving scenes and their exact branch probabilities (closed form), torch-free.

A pedestrian stands ``curb_distance`` metres back from the road edge; an ego vehicle approaches the
crossing at ``ego_speed`` from ``ego_gap`` metres away and takes an action (brake / keep / accelerate).
Time runs in frames of ``SUBSTEPS`` x ``DT`` seconds. In every frame a pedestrian who is still waiting
starts to cross (walking) with probability ``p_cross`` or darts out (running, diagonally towards the
lane) with probability ``p_dart``; once moving, the pedestrian keeps moving in that mode. The per-frame
hazards are a softmax over scene features (see ``frame_hazards``), so over a horizon of H frames

    P(waits)   = w^H                         with w = 1 - p_cross - p_dart
    P(crosses) = p_cross (1 - w^H) / (1 - w)
    P(darts)   = p_dart  (1 - w^H) / (1 - w)

exactly (a geometric race between two competing hazards). The ego action changes the pedestrian's
time-to-arrival estimate of the car, so braking invites crossing — and darting — and accelerating
deters both: the tail reacts to the action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Signal = Literal["walk", "dont_walk", "none"]

ACTIONS: tuple[str, ...] = ("brake", "keep", "accelerate")
SIGNALS: tuple[str, ...] = ("walk", "dont_walk", "none")
BRANCHES: tuple[str, ...] = ("waits", "crosses", "darts")
IMPLAUSIBLE = "implausible"
LABELS: tuple[str, ...] = BRANCHES + (IMPLAUSIBLE,)
TAIL = "darts"

SUBSTEPS = 4  # agent states per frame
DT = 0.25  # seconds between agent states: one frame = 1 s
DEFAULT_HORIZON = 6

# The ego's mean speed over the horizon relative to its current speed, per action.
_ACTION_SPEED = {"brake": 0.45, "keep": 1.0, "accelerate": 1.35}
# Signal effects on the (cross, dart) logits.
_SIGNAL_LOGIT = {"walk": (3.0, -0.8), "none": (0.0, 0.0), "dont_walk": (-2.2, 0.4)}


@dataclass(frozen=True)
class Scene:
    """One named scene. Distances in metres, speeds in m/s, ``hurry`` in [0, 1] (a child, a late
    commuter); ``walk_speed`` is the centre of the pedestrian's walking speed."""

    name: str
    title: str
    curb_distance: float
    walk_speed: float
    signal: Signal
    ego_speed: float
    ego_gap: float
    hurry: float

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"signal={self.signal!r} is not one of {list(SIGNALS)}")
        for field, lo, hi in (("curb_distance", 0.0, 5.0), ("walk_speed", 1.2, 1.5), ("ego_speed", 1.0, 30.0),
                              ("ego_gap", 1.0, 200.0), ("hurry", 0.0, 1.0)):
            v = getattr(self, field)
            if not (lo <= v <= hi):
                raise ValueError(f"{field}={v!r} must be in [{lo}, {hi}]")

    def features(self) -> tuple[float, ...]:
        """The scene as the network sees it: a short vector of roughly unit-scale numbers."""
        return (
            self.curb_distance / 2.0,
            (self.walk_speed - 1.35) / 0.15,
            *(1.0 if self.signal == s else 0.0 for s in SIGNALS),
            self.ego_speed / 15.0,
            self.ego_gap / 50.0,
            self.hurry,
        )


SCENE_FEATURES = 8


def time_to_arrival(scene: Scene, action: str) -> float:
    """Seconds until the ego reaches the crossing at its mean speed under ``action`` (capped at 20)."""
    _check_action(action)
    return min(scene.ego_gap / (scene.ego_speed * _ACTION_SPEED[action]), 20.0)


def frame_hazards(scene: Scene, action: str) -> tuple[float, float]:
    """(p_cross, p_dart): per-frame probabilities that a waiting pedestrian starts to walk / run."""
    tta = time_to_arrival(scene, action)
    sc, sd = _SIGNAL_LOGIT[scene.signal]
    # More time before the car arrives invites both going and, less strongly, running for it;
    # standing far back from the curb makes both less likely; hurry makes running much likelier.
    cross = -2.6 + sc + 0.40 * (tta - 4.0) - 0.9 * scene.curb_distance + 0.6 * scene.hurry
    dart = -5.6 + sd + 0.18 * (tta - 4.0) - 1.1 * scene.curb_distance + 2.6 * scene.hurry
    z = 1.0 + math.exp(cross) + math.exp(dart)
    return math.exp(cross) / z, math.exp(dart) / z


def branch_probabilities(scene: Scene, action: str, horizon: int = DEFAULT_HORIZON) -> dict[str, float]:
    """Exact probabilities of waits / crosses / darts within ``horizon`` frames (see module doc)."""
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon={horizon!r} must be an integer >= 1")
    pc, pd = frame_hazards(scene, action)
    w = 1.0 - pc - pd
    moved = 1.0 - w**horizon
    return {"waits": w**horizon, "crosses": pc * moved / (pc + pd), "darts": pd * moved / (pc + pd)}


def plan_branch_probabilities(scene: Scene, plan) -> dict[str, float]:
    """Exact waits / crosses / darts probabilities under a plan (action indices) whose action changes per
    frame: P(waits) = prod_h w_h, P(b) = sum_h (prod_{j<h} w_j) p_b(h) (the simulator's hazard race)."""
    alive, out = 1.0, {b: 0.0 for b in BRANCHES}
    for a in plan:
        pc, pd = frame_hazards(scene, ACTIONS[int(a)])
        out["crosses"] += alive * pc
        out["darts"] += alive * pd
        alive *= 1.0 - pc - pd
    out["waits"] = alive
    return out


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"action={action!r} is not one of {list(ACTIONS)}")


SCENES: dict[str, Scene] = {
    s.name: s
    for s in [
        Scene("quiet_far_back", "Pedestrian well back from the curb, red light, car close", 2.5, 1.35, "dont_walk",
              12.0, 30.0, 0.0),
        Scene("walk_signal", "Walk signal, pedestrian at the curb, car far", 0.3, 1.4, "walk", 10.0, 60.0, 0.0),
        Scene("red_light_jaywalker", "Red light, pedestrian at the curb, fast car", 0.4, 1.35, "dont_walk",
              14.0, 50.0, 0.3),
        Scene("hesitant_no_signal", "No signal, pedestrian at the curb, moderate gap", 0.4, 1.3, "none",
              10.0, 45.0, 0.1),
        Scene("commuter_late", "Late commuter at an unsignalled crossing", 0.6, 1.5, "none", 11.0, 40.0, 0.6),
        Scene("child_at_curb", "Child at the curb, no signal, car approaching", 0.3, 1.25, "none", 9.0, 35.0, 1.0),
        Scene("school_zone_slow", "School zone: slow car, long gap", 0.8, 1.3, "none", 5.0, 40.0, 0.5),
        Scene("night_far_car", "Night, red light, car far away", 1.0, 1.4, "dont_walk", 12.0, 110.0, 0.2),
    ]
}


def get_scene(name: str) -> Scene:
    if name not in SCENES:
        raise ValueError(f"scene={name!r} is not one of {list(SCENES)}")
    return SCENES[name]
