"""The moving-digits world's ground truth: a digit on a canvas, its dynamics, exact branch probabilities and
the branch classifier.

A frame is a (ROWS, COLS) = (8, 16) canvas in [-1, 1] (background -1) holding one 8x8 handwritten digit
(scikit-learn's bundled digits, nothing downloaded) at column ``x`` in 0..MAX_X. Every frame the digit moves
under the frame's action a in {left: -1, stay: 0, right: +1}:

    normal (probability 1 - p_a)   x' = clip(x + a, 0, MAX_X)
    jump   (probability p_a)       x' = clip(x + 3 s, 0, MAX_X),  s = -1 or +1 with probability 1/2 each

and the digit's pixels are copied unchanged: the next frame is the previous one shifted by x' - x. ``P_JUMP``
is larger while moving than while standing still, so the tail reacts to the action.

Branches, read off the frames alone (``classify_codes``): for each generated frame the shift d in
-JUMP..JUMP that best maps the previous frame onto it (mean absolute pixel error) is the observed move;
a rollout is

    steady       every observed move has |d| <= 1
    jumps        some observed move has |d| >= 2 (the tail)
    implausible  some frame is no shifted copy of the previous one (error > MATCH_TOL): the blur of two
                 moves that too few solver steps produce, a fading or smeared digit

On ground-truth rollouts the label is exact (tested): a shifted copy matches with error 0. A jump that a
wall clips to |d| <= 1 looks like a normal move and is labelled steady; ``branch_probabilities`` counts what
the classifier sees, by a dynamic programme over the position, so it stays the exact truth.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from fastdiff_core.setup_time import one_off

ROWS, COLS, SIZE = 8, 16, 8  # canvas rows and columns; the digit is SIZE x SIZE
MAX_X = COLS - SIZE  # the digit's leftmost column is 0..MAX_X
ACTIONS: tuple[str, ...] = ("left", "stay", "right")
MOVE = (-1, 0, 1)  # columns per frame of each action
JUMP = 3  # columns of a jump
P_JUMP = (0.01, 0.004, 0.01)  # per-frame jump probability of each action
LABELS: tuple[str, ...] = ("steady", "jumps", "implausible")
TAIL = "jumps"
MATCH_TOL = 0.12  # mean |pixel error| (of 2) of a frame against the best-shifted previous frame
BACKGROUND = -1.0
STEADY, JUMPS, IMPLAUSIBLE = 0, 1, 2


def action_index(action: str) -> int:
    if action not in ACTIONS:
        raise ValueError(f"action={action!r} is not one of {list(ACTIONS)}")
    return ACTIONS.index(action)


@functools.lru_cache(maxsize=1)
@one_off  # sklearn's import and the split: ~2.5 s, once per process
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) digit images (N, 8, 8) in [-1, 1]: the digits world's stratified split of
    sklearn's bundled digits (seed 0), every class unthinned. Training draws from the first, the observed
    context of a run from the second."""
    from fastdiff_core.worlds.digits import load_split

    split = load_split(seed=0)
    return torch.from_numpy(split.train_images), torch.from_numpy(split.test_images)


def place(images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Digits (B, 8, 8) at columns x (B,) on blank canvases: (B, ROWS, COLS)."""
    b = images.shape[0]
    canvas = torch.full((b, ROWS, COLS), BACKGROUND, dtype=images.dtype, device=images.device)
    cols = x.to(images.device)[:, None] + torch.arange(SIZE, device=images.device)[None, :]  # (B, SIZE)
    canvas.scatter_(2, cols[:, None, :].expand(b, ROWS, SIZE), images)
    return canvas


def shifted(frames: torch.Tensor, d: int) -> torch.Tensor:
    """Frames (..., ROWS, COLS) moved d columns right (left for d < 0), the background filling in."""
    if d == 0:
        return frames
    out = torch.full_like(frames, BACKGROUND)
    if d > 0:
        out[..., d:] = frames[..., :-d]
    else:
        out[..., :d] = frames[..., -d:]
    return out


def simulate(images: torch.Tensor, start: int, plan: Sequence[int] | torch.Tensor, *,
             generator: torch.Generator | None = None, with_state: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground-truth rollouts of digits ``images`` (B, 8, 8) starting at column ``start`` under ``plan`` (H action
    indices, the same for every row, or (B, H) per row): (B, H + 1, ROWS, COLS), frame 0 the context.
    ``with_state`` also returns the hidden state (for tests): the digit's column in every frame (B, H + 1) and
    whether each frame's move was a jump (B, H)."""
    if not 0 <= start <= MAX_X:
        raise ValueError(f"start={start!r} must be a column in 0..{MAX_X}")
    b = images.shape[0]
    plan = torch.as_tensor(plan, dtype=torch.long)
    plan = plan.expand(b, -1) if plan.ndim == 1 else plan
    move = torch.tensor(MOVE)[plan]
    p_jump = torch.tensor(P_JUMP, dtype=torch.float64)[plan]
    x = torch.full((b,), start, dtype=torch.long)
    frames, columns, jumped = [place(images, x)], [x], []
    for k in range(plan.shape[1]):
        u = torch.rand(b, generator=generator, dtype=torch.float64)
        side = torch.where(torch.rand(b, generator=generator) < 0.5, -1, 1)
        jump = u < p_jump[:, k]
        x = torch.where(jump, x + JUMP * side, x + move[:, k]).clamp(0, MAX_X)
        frames.append(place(images, x))
        columns.append(x)
        jumped.append(jump)
    rollouts = torch.stack(frames, 1)
    return (rollouts, torch.stack(columns, 1), torch.stack(jumped, 1)) if with_state else rollouts


def branch_probabilities(start: int, plan: Sequence[int]) -> dict[str, float]:
    """Exact probabilities of what the classifier reads (steady / jumps; implausible 0) for a digit starting at
    column ``start`` under ``plan`` (H action indices): a dynamic programme over (column, jump seen)."""
    if not 0 <= start <= MAX_X:
        raise ValueError(f"start={start!r} must be a column in 0..{MAX_X}")
    p = np.zeros((MAX_X + 1, 2))  # p[x, seen]
    p[start, 0] = 1.0
    for a in plan:
        a = int(a)
        nxt = np.zeros_like(p)
        for x in range(MAX_X + 1):
            for seen in (0, 1):
                q = p[x, seen]
                if q == 0.0:
                    continue
                normal = min(max(x + MOVE[a], 0), MAX_X)  # |normal - x| <= 1: never seen as a jump
                nxt[normal, seen] += q * (1.0 - P_JUMP[a])
                for side in (-1, 1):
                    y = min(max(x + JUMP * side, 0), MAX_X)
                    nxt[y, 1 if abs(y - x) >= 2 else seen] += q * P_JUMP[a] / 2
        p = nxt
    return {"steady": float(p[:, 0].sum()), "jumps": float(p[:, 1].sum()), "implausible": 0.0}


def frame_jump_probabilities(start: int, plan: Sequence[int]) -> list[float]:
    """Per generated frame k (H of them), the exact probability that the classifier sees a jump (|move| >= 2) in
    frame k, whatever came before: the column's distribution before the frame (a dynamic programme) times each
    column's chance of a jump no wall clips to one column. Their sum is the expected number of jumps, not
    P(jumps) (``branch_probabilities``), which counts a rollout once."""
    if not 0 <= start <= MAX_X:
        raise ValueError(f"start={start!r} must be a column in 0..{MAX_X}")
    p = np.zeros(MAX_X + 1)
    p[start] = 1.0
    out = []
    for a in plan:
        a = int(a)
        nxt, seen = np.zeros_like(p), 0.0
        for x in range(MAX_X + 1):
            nxt[min(max(x + MOVE[a], 0), MAX_X)] += p[x] * (1.0 - P_JUMP[a])
            for side in (-1, 1):
                y = min(max(x + JUMP * side, 0), MAX_X)
                nxt[y] += p[x] * P_JUMP[a] / 2
                seen += p[x] * P_JUMP[a] / 2 if abs(y - x) >= 2 else 0.0
        out.append(float(seen))
        p = nxt
    return out


def observed_moves(rollouts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per generated frame, the observed move and how well it explains the frame: rollouts (B, H + 1, ROWS,
    COLS) -> (moves (B, H) in -JUMP..JUMP, errors (B, H): mean |frame - previous frame shifted by the move|)."""
    if rollouts.ndim != 4 or tuple(rollouts.shape[2:]) != (ROWS, COLS):
        raise ValueError(f"rollouts shape={tuple(rollouts.shape)} must be (B, H+1, {ROWS}, {COLS})")
    r = rollouts.to(torch.float32)
    prev, now = r[:, :-1], r[:, 1:]
    shifts = range(-JUMP, JUMP + 1)
    errors = torch.stack([(now - shifted(prev, d)).abs().mean((-2, -1)) for d in shifts], -1)  # (B, H, 7)
    best, idx = errors.min(-1)
    return idx - JUMP, best


def classify_codes(rollouts: torch.Tensor) -> torch.Tensor:
    """(B, H + 1, ROWS, COLS) -> (B,) codes into LABELS (see the module doc)."""
    moves, errors = observed_moves(rollouts)
    bad = (errors > MATCH_TOL).any(1)
    jumped = (moves.abs() >= 2).any(1)
    code = torch.where(jumped, JUMPS, STEADY)
    return torch.where(bad, IMPLAUSIBLE, code).to(rollouts.device)


def onset(rollouts: torch.Tensor) -> torch.Tensor:
    """(B,) index into the H generated frames of the first frame that is a jump or implausible (where the
    branch began: what importance sampling shifts); H - 1 for a steady rollout."""
    moves, errors = observed_moves(rollouts)
    odd = (moves.abs() >= 2) | (errors > MATCH_TOL)
    first = odd.float().argmax(1)
    return torch.where(odd.any(1), first, torch.full_like(first, moves.shape[1] - 1)).to(rollouts.device)
