"""The ground-truth simulator: rollouts of a pedestrian near a crossing, frame by frame.

A frame is ``SUBSTEPS`` agent states (lateral position y — metres into the road, negative on the
sidewalk — and along-road position x), shape (SUBSTEPS, 2). A rollout is frame 0 (the observed
context: the pedestrian waiting) followed by H simulated frames: shape (B, H + 1, SUBSTEPS, 2).

The process is Markov in frames, so a world model conditioned on the previous frame can represent it
exactly: a waiting frame is jitter around the waiting spot; a moving frame is a straight line that
starts at the previous frame's last state with a speed read off the previous frame (plus a small,
clipped random walk), so the speed and direction are visible in the frame itself.
Branch probabilities in closed form are in ``scenes.branch_probabilities``.
"""

from __future__ import annotations

import torch

from fastdiff_core.worlds.driving.scenes import DT, SUBSTEPS, Scene, frame_hazards

WAIT_JITTER = 0.05  # m, i.i.d. per state while waiting
WALK_BAND = (1.1, 1.8)  # m/s lateral, walking
RUN_BAND = (2.9, 4.3)  # m/s lateral, darting out
RUN_DRIFT_BAND = (0.2, 0.9)  # m/s along the road while darting (diagonally towards the lane)
SPEED_WALK = 0.05  # m/s per frame, random walk of the speed
_STEPS = torch.arange(1, SUBSTEPS + 1, dtype=torch.float32) * DT  # offsets of a frame's states from its start

STILL, WALK, RUN = 0, 1, 2


def waiting_frame(scene: Scene, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """n frames of a pedestrian waiting ``curb_distance`` back from the road: (n, SUBSTEPS, 2)."""
    jitter = torch.randn(n, SUBSTEPS, 2, generator=generator, device=device) * WAIT_JITTER
    base = torch.tensor([-scene.curb_distance, 0.0], device=device)
    return base + jitter


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def simulate(scene: Scene, action: str, n: int, horizon: int, *, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu", with_branch: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """n ground-truth rollouts: (n, horizon + 1, SUBSTEPS, 2), frame 0 the waiting context.

    ``with_branch=True`` also returns the true branch code of each rollout (n,): 0 waits, 1 crosses,
    2 darts (the simulator's hidden state, for testing the classifier)."""
    if horizon < 1:
        raise ValueError(f"horizon={horizon!r} must be >= 1")
    p_cross, p_dart = frame_hazards(scene, action)
    steps = _STEPS.to(device)
    frames = [waiting_frame(scene, n, generator, device)]
    mode = torch.full((n,), STILL, dtype=torch.long, device=device)
    vy = torch.zeros(n, device=device)
    vx = torch.zeros(n, device=device)
    for _ in range(horizon):
        prev_last = frames[-1][:, -1, :]
        # a waiting pedestrian draws this frame's decision: keep waiting, start walking, dart out
        u = torch.rand(n, generator=generator, device=device)
        start_walk = (mode == STILL) & (u < p_cross)
        start_run = (mode == STILL) & (u >= p_cross) & (u < p_cross + p_dart)
        walk_v = _uniform(*WALK_BAND, n, generator, device)
        run_v = _uniform(*RUN_BAND, n, generator, device)
        run_u = _uniform(*RUN_DRIFT_BAND, n, generator, device)
        # a moving pedestrian's speed drifts a little (clipped to its mode's band)
        dv = torch.randn(n, generator=generator, device=device) * SPEED_WALK
        du = torch.randn(n, generator=generator, device=device) * SPEED_WALK
        vy = torch.where(mode == WALK, (vy + dv).clamp(*WALK_BAND), vy)
        vy = torch.where(mode == RUN, (vy + dv).clamp(*RUN_BAND), vy)
        vx = torch.where(mode == RUN, (vx + du).clamp(*RUN_DRIFT_BAND), vx)
        vy = torch.where(start_walk, walk_v, torch.where(start_run, run_v, vy))
        vx = torch.where(start_run, run_u, vx)
        mode = torch.where(start_walk, WALK, torch.where(start_run, RUN, mode))
        moving = prev_last[:, None, :] + torch.stack([vy, vx], -1)[:, None, :] * steps[None, :, None]
        still = waiting_frame(scene, n, generator, device)
        frames.append(torch.where((mode == STILL)[:, None, None], still, moving))
    rollouts = torch.stack(frames, 1)
    return (rollouts, mode) if with_branch else rollouts
