"""How frames become network tensors and back: the world model's coordinates.

The network generates one frame given the previous one, the scene and the ego action. It sees

    target x0 (FRAME_DIM = 8): the frame's states minus the previous frame's last state, / TARGET_SCALE
    condition (COND_DIM = 20): [previous frame relative to its own last state (6),
                                squashed offset of that last state from the waiting spot (2),
                                scene features (8), action one-hot (3), condition-present flag (1)]

The unconditional input (for classifier-free guidance, and what condition dropout trains) keeps the
previous frame — the state of the world — and zeroes the scene, the action and the flag, so the
unconditional model is the scene-averaged mix of futures from that state.
"""

from __future__ import annotations

import functools

import torch

from fastdiff_core.worlds.driving.scenes import ACTIONS, SCENE_FEATURES, SUBSTEPS, Scene

FRAME_DIM = SUBSTEPS * 2
TARGET_SCALE = 2.0
OFFSET_SCALE = 2.0
COND_DIM = (SUBSTEPS - 1) * 2 + 2 + SCENE_FEATURES + len(ACTIONS) + 1


def action_index(action: str) -> int:
    if action not in ACTIONS:
        raise ValueError(f"action={action!r} is not one of {list(ACTIONS)}")
    return ACTIONS.index(action)


def state_features(prev: torch.Tensor, curb_distance: torch.Tensor | float) -> torch.Tensor:
    """(B, SUBSTEPS, 2) previous frames -> (B, 8) state part of the condition: the frame relative to
    its last state, and tanh((last - spot) / OFFSET_SCALE) with spot = (-curb_distance, 0) the waiting spot."""
    last = prev[:, -1, :]
    rel = (prev[:, :-1, :] - prev[:, -1:, :]).reshape(prev.shape[0], -1)
    if isinstance(curb_distance, torch.Tensor):
        curb = curb_distance.to(dtype=prev.dtype, device=prev.device).reshape(-1)
        shift = torch.stack([curb, torch.zeros_like(curb)], -1) / OFFSET_SCALE
    else:
        shift = _shift(float(curb_distance), prev.dtype, prev.device)
    # (last - spot) / OFFSET_SCALE = last / OFFSET_SCALE + shift, in one op
    offset = torch.tanh(torch.add(shift, last, alpha=1.0 / OFFSET_SCALE))
    return torch.cat([rel, offset], 1)


@functools.lru_cache(maxsize=64)
def _shift(curb_distance: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor([curb_distance / OFFSET_SCALE, 0.0], dtype=dtype, device=device)


STATIC_DIM = SCENE_FEATURES + len(ACTIONS) + 1  # the condition's columns that do not depend on the previous frame


def static_condition(scene: Scene, actions: torch.Tensor, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The condition's columns that do not depend on the previous frame — scene features, action
    one-hot, condition flag — for integer action indices of any shape (...,): returns (..., STATIC_DIM).
    A rollout builds them once for all frames and candidates instead of once per frame."""
    if actions.is_floating_point() or bool((actions < 0).any()) or bool((actions >= len(ACTIONS)).any()):
        raise ValueError(f"action tensor of shape {tuple(actions.shape)} must hold integer indices into {list(ACTIONS)}")
    device = actions.device if device is None else device
    feats = torch.tensor(scene.features(), dtype=dtype, device=device).expand(*actions.shape, -1)
    act = torch.nn.functional.one_hot(actions.to(device), len(ACTIONS)).to(dtype)
    flag = torch.ones(*actions.shape, 1, dtype=dtype, device=device)
    return torch.cat([feats, act, flag], -1)


def condition_from_static(prev: torch.Tensor, curb_distance: torch.Tensor | float, static: torch.Tensor) -> torch.Tensor:
    """(B, SUBSTEPS, 2) previous frames and (B, STATIC_DIM) static columns -> (B, COND_DIM)."""
    return torch.cat([state_features(prev, curb_distance), static], 1)


def condition(prev: torch.Tensor, scene: Scene, action: str | torch.Tensor) -> torch.Tensor:
    """Full condition for a batch of previous frames of one scene: (B, COND_DIM). ``action`` is one
    action for every row, or a (B,) integer tensor of per-row indices into ``ACTIONS`` (a fan-out of
    candidate plans in one batch)."""
    b = prev.shape[0]
    if isinstance(action, torch.Tensor):
        if action.shape != (b,):
            raise ValueError(f"action tensor of shape {tuple(action.shape)} must be ({b},) integer indices "
                             f"into {list(ACTIONS)}")
        actions = action
    else:
        actions = torch.full((b,), action_index(action), dtype=torch.long)
    static = static_condition(scene, actions, dtype=prev.dtype, device=prev.device)
    return condition_from_static(prev, scene.curb_distance, static)


def drop_condition(cond: torch.Tensor) -> torch.Tensor:
    """The unconditional version of a condition: state kept, scene/action/flag zeroed."""
    out = cond.clone()
    out[:, (SUBSTEPS - 1) * 2 + 2:] = 0.0
    return out


def encode_frame(frame: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """(B, SUBSTEPS, 2) frame after ``prev`` -> (B, FRAME_DIM) network-space x0."""
    return ((frame - prev[:, -1:, :]) / TARGET_SCALE).reshape(frame.shape[0], FRAME_DIM)


def decode_frame(x0: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Inverse of ``encode_frame``: (B, FRAME_DIM) -> (B, SUBSTEPS, 2)."""
    frame = x0.reshape(x0.shape[0], SUBSTEPS, 2)
    if frame.dtype != prev.dtype:
        frame = frame.to(prev.dtype)
    return torch.add(prev[:, -1:, :], frame, alpha=TARGET_SCALE)
