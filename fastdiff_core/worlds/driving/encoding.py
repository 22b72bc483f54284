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
    """(B, SUBSTEPS, 2) previous frames -> (B, 8) state part of the condition."""
    last = prev[:, -1, :]
    rel = (prev[:, :-1, :] - last[:, None, :]).reshape(prev.shape[0], -1)
    spot = torch.zeros_like(last)
    spot[:, 0] = -torch.as_tensor(curb_distance, dtype=prev.dtype, device=prev.device)
    offset = torch.tanh((last - spot) / OFFSET_SCALE)
    return torch.cat([rel, offset], 1)


def condition(prev: torch.Tensor, scene: Scene, action: str | torch.Tensor) -> torch.Tensor:
    """Full condition for a batch of previous frames of one scene: (B, COND_DIM). ``action`` is one
    action for every row, or a (B,) integer tensor of per-row indices into ``ACTIONS`` (a fan-out of
    candidate plans in one batch)."""
    b = prev.shape[0]
    feats = torch.tensor(scene.features(), dtype=prev.dtype, device=prev.device).expand(b, -1)
    act = torch.zeros(b, len(ACTIONS), dtype=prev.dtype, device=prev.device)
    if isinstance(action, torch.Tensor):
        if action.shape != (b,) or action.is_floating_point() or bool((action < 0).any()) \
                or bool((action >= len(ACTIONS)).any()):
            raise ValueError(f"action tensor of shape {tuple(action.shape)} must be ({b},) integer indices "
                             f"into {list(ACTIONS)}")
        act[torch.arange(b, device=prev.device), action.to(prev.device)] = 1.0
    else:
        act[:, action_index(action)] = 1.0
    flag = torch.ones(b, 1, dtype=prev.dtype, device=prev.device)
    return torch.cat([state_features(prev, scene.curb_distance), feats, act, flag], 1)


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
    return x0.reshape(x0.shape[0], SUBSTEPS, 2).to(prev.dtype) * TARGET_SCALE + prev[:, -1:, :]
