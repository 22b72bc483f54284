"""The branch classifier: labels any rollout waits / crosses / darts, or implausible.

A rollout (B, H + 1, SUBSTEPS, 2) is read frame by frame. Each frame is fitted with a straight line
per coordinate; its lateral speed and its residual decide whether it is *still* (every state within
``STILL_TOL`` of the waiting spot), *walking* or *running* (a straight line, speed inside the mode's
band, starting where the previous frame ended), or *bad*. A rollout is

    waits    every frame still
    crosses  still frames, then walking frames only
    darts    still frames, then running frames only
    implausible  anything else: an in-between speed (the blur of two branches that too few steps
                 produce), a wobbling or broken line, a switch of mode, a return to the curb, ...

so that blur is reported as blur and never counted as the tail. On simulator rollouts the label is
exact (tested); the tolerances are several times the simulator's own jitter.
"""

from __future__ import annotations

import torch

from fastdiff_core.worlds.driving.scenes import DT, LABELS, SUBSTEPS, Scene

STILL_TOL = 0.3  # m from the waiting spot (6 x the waiting jitter)
LINE_TOL = 0.12  # m, max deviation of a moving frame from its straight line
JOIN_TOL = 0.3  # m, gap between a moving frame's first state and where its line says it starts
WALK_SPEED = (0.95, 2.0)  # m/s: accepted walking speeds (simulator: 1.1-1.8)
RUN_SPEED = (2.65, 4.6)  # m/s: accepted running speeds (simulator: 2.9-4.3)
WALK_DRIFT = 0.2  # m/s: max along-road speed while walking (simulator: 0)
RUN_DRIFT = (0.05, 1.15)  # m/s: along-road speed while running (simulator: 0.2-0.9)

BAD, STILL, WALK, RUN = -1, 0, 1, 2
_CODE = {0: "waits", 1: "crosses", 2: "darts", 3: "implausible"}


def frame_modes(rollout: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Mode of every frame: (B, H + 1) with STILL / WALK / RUN / BAD."""
    if rollout.ndim != 4 or rollout.shape[2:] != (SUBSTEPS, 2):
        raise ValueError(f"rollout shape={tuple(rollout.shape)} must be (B, H+1, {SUBSTEPS}, 2)")
    r = rollout.to(torch.float64)
    y, x = r[..., 0], r[..., 1]
    tau = torch.arange(1, SUBSTEPS + 1, dtype=torch.float64, device=r.device) * DT
    tc = tau - tau.mean()
    vy = (y * tc).sum(-1) / (tc * tc).sum()
    vx = (x * tc).sum(-1) / (tc * tc).sum()
    fit_y = y.mean(-1, keepdim=True) + vy[..., None] * tc
    fit_x = x.mean(-1, keepdim=True) + vx[..., None] * tc
    resid = torch.maximum((y - fit_y).abs().amax(-1), (x - fit_x).abs().amax(-1))
    still = ((y + scene.curb_distance).abs() < STILL_TOL).all(-1) & (x.abs() < STILL_TOL).all(-1)
    # where the frame's line says it started (one DT before its first state) vs the previous frame's end
    start_y = fit_y[..., 0] - vy * DT
    start_x = fit_x[..., 0] - vx * DT
    prev_y = torch.cat([y[:, :1, 0], y[:, :-1, -1]], 1)
    prev_x = torch.cat([x[:, :1, 0], x[:, :-1, -1]], 1)
    joined = ((start_y - prev_y).abs() < JOIN_TOL) & ((start_x - prev_x).abs() < JOIN_TOL)
    straight = (resid < LINE_TOL) & joined
    walk = straight & (vy >= WALK_SPEED[0]) & (vy <= WALK_SPEED[1]) & (vx.abs() <= WALK_DRIFT)
    run = straight & (vy >= RUN_SPEED[0]) & (vy <= RUN_SPEED[1]) & (vx >= RUN_DRIFT[0]) & (vx <= RUN_DRIFT[1])
    modes = torch.full(y.shape[:2], BAD, dtype=torch.long, device=r.device)
    modes = torch.where(run, RUN, modes)
    modes = torch.where(walk, WALK, modes)
    return torch.where(still, STILL, modes)


def classify_codes(rollout: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Branch code of every rollout: (B,) with 0 waits, 1 crosses, 2 darts, 3 implausible."""
    m = frame_modes(rollout, scene)
    moving = m != STILL
    ever = moving.any(1)
    # once moving, never still again: the moving frames are a suffix
    first = torch.where(ever, moving.float().argmax(1), torch.full_like(ever, m.shape[1], dtype=torch.long))
    idx = torch.arange(m.shape[1], device=m.device)[None, :]
    suffix = idx >= first[:, None]
    consistent_walk = ((m == WALK) | ~suffix).all(1) & ~((m != STILL) & ~suffix).any(1)
    consistent_run = ((m == RUN) | ~suffix).all(1) & ~((m != STILL) & ~suffix).any(1)
    context_still = m[:, 0] == STILL
    code = torch.full((m.shape[0],), 3, dtype=torch.long, device=m.device)
    code = torch.where(ever & consistent_run, 2, code)
    code = torch.where(ever & consistent_walk, 1, code)
    code = torch.where(~ever, 0, code)
    return torch.where(context_still, code, torch.full_like(code, 3))


def first_move_frame(rollout: torch.Tensor, scene: Scene) -> torch.Tensor:
    """Index (into the H generated frames) of the first frame in which the pedestrian is not still;
    H - 1 when never (rollout: (N, H + 1, SUBSTEPS, 2)). Where a branch began: what the tail proposal of
    importance sampling shifts."""
    modes = frame_modes(rollout, scene)[:, 1:]
    moving = modes != STILL
    idx = moving.float().argmax(1)
    return torch.where(moving.any(1), idx, torch.full_like(idx, modes.shape[1] - 1))


def classify(rollout: torch.Tensor, scene: Scene) -> list[str]:
    """Branch label of every rollout (one of ``LABELS``)."""
    return [_CODE[int(c)] for c in classify_codes(rollout, scene)]


def branch_counts(rollout: torch.Tensor, scene: Scene) -> dict[str, int]:
    """How many rollouts fell into each label (every label present, zeros included)."""
    codes = classify_codes(rollout, scene)
    counts = torch.bincount(codes, minlength=4).tolist()
    return {label: int(counts[i]) for i, label in enumerate(LABELS)}
