"""The driving world model's network: a residual MLP with adaLN conditioning (DiT-style blocks).

``net(x_t, t, cond) -> prediction`` (the ``denoiser.Network`` contract): x_t (B, FRAME_DIM) on the
rectified-flow path, t (B,) path time in [0, 1], cond (B, COND_DIM). What it predicts (flow velocity
or clean x0) is a property of the checkpoint, stated in its config; ``fastdiff_core.denoiser`` does
every conversion.

The forward pass is exposed in three stages so a feature cache can skip deep blocks:

    emb = net.embed(t, cond)          # (B, width): time + condition
    h = net.stem(x_t)                 # (B, width)
    h = net.run_blocks(h, emb, 0, k)  # blocks [start, stop); each is h + gate * mlp(modulated norm(h))
    out = net.head(h, emb)            # (B, FRAME_DIM)

Peebles & Xie 2023 (DiT, adaLN-Zero); Lipman et al. 2022 (flow matching).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class WorldModelConfig:
    """Architecture and what the network predicts; stored in every checkpoint."""

    frame_dim: int = 8
    cond_dim: int = 20
    width: int = 160
    depth: int = 4
    mlp_ratio: int = 2
    time_features: int = 32
    prediction: str = "flow"
    path: str = "rectified_flow"

    def __post_init__(self) -> None:
        if self.prediction not in ("flow", "x0"):
            raise ValueError(f"prediction={self.prediction!r} is not one of ['flow', 'x0']")
        if self.path != "rectified_flow":
            raise ValueError(f"path={self.path!r}: the world model is trained on 'rectified_flow' only")
        for name in ("frame_dim", "cond_dim", "width", "depth", "mlp_ratio", "time_features"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    """h + gate(emb) * MLP(LayerNorm(h) * (1 + scale(emb)) + shift(emb)); gate starts at zero."""

    def __init__(self, width: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.SiLU(), nn.Linear(width * mlp_ratio, width))
        self.modulation = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def residual(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The block's update alone (what a cache stores): block(h) = h + residual(h)."""
        shift, scale, gate = self.modulation(emb).chunk(3, dim=-1)
        return gate * self.mlp(self.norm(h) * (1 + scale) + shift)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.residual(h, emb)


class WorldModelNet(nn.Module):
    """Conditional frame generator; see the module docstring for the staged forward."""

    def __init__(self, config: WorldModelConfig = WorldModelConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), config.time_features // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(config.time_features, w), nn.SiLU(), nn.Linear(w, w))
        self.cond_mlp = nn.Sequential(nn.Linear(config.cond_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.input = nn.Linear(config.frame_dim + config.cond_dim, w)
        self.blocks = nn.ModuleList(ResidualBlock(w, config.mlp_ratio) for _ in range(config.depth))
        self.out_norm = nn.LayerNorm(w, elementwise_affine=False)
        self.out_modulation = nn.Linear(w, 2 * w)
        self.out = nn.Linear(w, config.frame_dim)
        nn.init.zeros_(self.out_modulation.weight)
        nn.init.zeros_(self.out_modulation.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self._cond: torch.Tensor | None = None

    @property
    def prediction(self) -> str:
        return self.config.prediction

    def embed(self, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B,) time and (B, COND_DIM) condition -> (B, width) embedding every block is modulated by."""
        ang = t[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        tf = torch.cat([torch.sin(ang), torch.cos(ang)], -1).to(cond.dtype)
        return nn.functional.silu(self.time_mlp(tf) + self.cond_mlp(cond))

    def stem(self, x_t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Input projection of the noisy frame (with the condition concatenated): (B, width)."""
        return self.input(torch.cat([x_t, cond], -1))

    def run_blocks(self, h: torch.Tensor, emb: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Apply residual blocks [start, stop) to hidden state h."""
        for block in self.blocks[start:stop]:
            h = block(h, emb)
        return h

    def head(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.out_modulation(emb).chunk(2, dim=-1)
        return self.out(self.out_norm(h) * (1 + scale) + shift)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t, cond)
        return self.head(self.run_blocks(self.stem(x_t, cond), emb), emb)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
