"""The moving-digits frame denoiser: a small conditional conv net, and its checksum-checked shipped weights.

``net(x_t, t, cond) -> x0`` (the ``denoiser.Network`` contract): x_t (B, FRAME_DIM) the noisy next frame on the
rectified-flow path, t (B,) path time in [0, 1], cond (B, COND_DIM) = [previous frame (FRAME_DIM), action
one-hot (3), condition flag (1)]; the null condition of classifier-free guidance keeps the previous frame and
zeroes the action and the flag. It predicts the clean frame x0.

Shape: the noisy frame and the previous frame at every move the dynamics allow (shifted by -JUMP..JUMP
columns: an inductive bias like a conv's translation equivariance; which move, how often, and what a wall does
are learnt) stacked as channels of the 8x16 canvas, a 3x3 conv, then residual blocks (group norm, FiLM from the time and action embedding, SiLU, a 3x3 conv dilated along the
columns so a block sees a digit's width, plus a global-average term so the whole frame agrees on one move),
and a 3x3 conv back to one channel. FiLM: Perez et al. 2018; flow matching: Lipman et al. 2022.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fastdiff_core.setup_time import one_off
from fastdiff_core.worlds.moving_digits.dynamics import ACTIONS, COLS, JUMP, ROWS, shifted

FRAME_DIM = ROWS * COLS
COND_DIM = FRAME_DIM + len(ACTIONS) + 1
WEIGHTS_DIR = pathlib.Path(__file__).resolve().parents[2] / "models" / "weights" / "moving_digits"
WEIGHTS_FILE, CARD_FILE, README_FILE = "denoiser.safetensors", "card.json", "README.md"


@dataclass(frozen=True)
class NetConfig:
    """The denoiser's shape; stored in every checkpoint's header."""

    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    time_features: int = 16
    embed: int = 64
    prediction: str = "x0"
    path: str = "rectified_flow"
    match: bool = False  # feed the embedding each move's likelihood of x_t (see FrameDenoiser.match_features)

    def __post_init__(self) -> None:
        if self.prediction not in ("x0", "flow", "eps", "v"):
            raise ValueError(f"prediction={self.prediction!r} is not one of ['x0', 'flow', 'eps', 'v']")
        for name in ("channels", "time_features", "embed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        if self.channels % 8:
            raise ValueError(f"channels={self.channels!r} must be a multiple of 8 (group norm of 8 groups)")

    def to_dict(self) -> dict:
        return {**asdict(self), "dilations": list(self.dilations)}


class Block(nn.Module):
    """h + conv(silu(FiLM(norm(h)))) + a global-average term."""

    def __init__(self, channels: int, embed: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.film = nn.Linear(embed, 2 * channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=(1, dilation), dilation=(1, dilation))
        self.glob = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, 1)
        a = nn.functional.silu(self.norm(h) * (1 + scale) + shift)
        return h + self.conv(a) + self.glob(a.mean((-2, -1)))[:, :, None, None]


class FrameDenoiser(nn.Module):
    """The next frame's denoiser (see the module doc): (B, FRAME_DIM), (B,), (B, COND_DIM) -> (B, FRAME_DIM)."""

    sha256: str | None = None  # of the weights file it was loaded from (``load_weights``), else None

    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), config.time_features // 2)),
                             persistent=False)
        n_match = (2 * JUMP + 1) if config.match else 0
        self.embed = nn.Sequential(nn.Linear(config.time_features + len(ACTIONS) + 1 + n_match, config.embed), nn.SiLU(),
                                   nn.Linear(config.embed, config.embed))
        self.stem = nn.Conv2d(2 + 2 * JUMP, c, 3, padding=1)
        self.blocks = nn.ModuleList(Block(c, config.embed, d) for d in config.dilations)
        self.out_norm = nn.GroupNorm(8, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    @property
    def prediction(self) -> str:
        return self.config.prediction

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        t = t.to(torch.float32)
        ang = t[:, None] * self.freqs[None, :]
        prev = cond[:, :FRAME_DIM].reshape(b, 1, ROWS, COLS).to(torch.float32)
        moves = [shifted(prev, d) for d in range(-JUMP, JUMP + 1)]
        feats = [torch.sin(ang), torch.cos(ang), cond[:, FRAME_DIM:].to(torch.float32)]
        if self.config.match:
            feats.append(self.match_features(x_t.reshape(b, FRAME_DIM).to(torch.float32), t, moves))
        emb = self.embed(torch.cat(feats, 1))
        h = self.stem(torch.cat([x_t.reshape(b, 1, ROWS, COLS).to(torch.float32), *moves], 1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(b, FRAME_DIM).to(x_t.dtype)


    @staticmethod
    def match_features(x_t: torch.Tensor, t: torch.Tensor, moves: list[torch.Tensor]) -> torch.Tensor:
        """(B, 2 JUMP + 1): the posterior over the moves -JUMP..JUMP under a uniform prior if the next frame were
        exactly the previous one moved, given x_t = (1 - t) x0 + t eps: softmax of -|x_t - (1 - t) f_d|^2 / 2 t^2.
        Which move the noisy frame already shows is then one input away, at every noise level; what the action
        and the dynamics make of it is learnt (the evidence the plain net failed to use at t ~ 0.6-0.85)."""
        f = torch.stack([m.reshape(m.shape[0], -1) for m in moves], 1)  # (B, 7, FRAME_DIM)
        s = t.clamp(min=1e-3)[:, None]
        ll = -(x_t[:, None, :] - (1 - s)[:, :, None] * f).pow(2).sum(-1) / (2 * s * s)
        return ll.softmax(-1)


def condition(prev: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Previous frames (B, ROWS, COLS) and action indices (B,) -> (B, COND_DIM)."""
    one_hot = nn.functional.one_hot(actions.to(prev.device), len(ACTIONS)).to(prev.dtype)
    flag = torch.ones(prev.shape[0], 1, dtype=prev.dtype, device=prev.device)
    return torch.cat([prev.reshape(prev.shape[0], FRAME_DIM), one_hot, flag], 1)


def drop_condition(cond: torch.Tensor) -> torch.Tensor:
    """The null condition: the previous frame kept, the action and the flag zeroed."""
    out = cond.clone()
    out[:, FRAME_DIM:] = 0.0
    return out


# ---------------------------------------------------------------------------------------------
# Shipped weights: safetensors (config in the header) + a card whose sha256 is checked at load
# ---------------------------------------------------------------------------------------------


def save_weights(net: FrameDenoiser, directory: pathlib.Path) -> str:
    """Write ``denoiser.safetensors`` (weights, config in the header); returns its sha256."""
    from safetensors.torch import save_file

    from fastdiff_core.models.loading import file_sha256

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().float().cpu() for k, v in net.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"config": json.dumps(net.config.to_dict())})
    return file_sha256([directory / WEIGHTS_FILE])


@one_off
def load_weights(directory: pathlib.Path = WEIGHTS_DIR, device: torch.device | str = "cpu") -> FrameDenoiser:
    """Load the denoiser of ``directory`` (eval mode, on ``device``) after checking the weights' sha256 against
    the one its card records: weights that are not the ones the card measured are refused."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from fastdiff_core.models.loading import file_sha256

    weights, card = directory / WEIGHTS_FILE, directory / CARD_FILE
    for f in (weights, card):
        if not f.is_file():
            raise ValueError(f"{f} does not exist: train the weights with `fastdiff train moving_digits`")
    want = json.loads(card.read_text()).get("sha256")
    got = file_sha256([weights])
    if got != want:
        raise ValueError(f"{weights} has sha256 {got[:16]}..., not the {str(want)[:16]}... its card {card.name} "
                         "records; retrain with the card's command or restore the file")
    with safe_open(str(weights), framework="pt") as f:
        raw = json.loads(f.metadata()["config"])
    net = FrameDenoiser(NetConfig(**{**raw, "dilations": tuple(raw["dilations"])}))
    net.load_state_dict(load_file(str(weights)))
    net = net.to(device).eval().requires_grad_(False)
    net.sha256 = got  # what runs record as their model checksum
    return net


_LOADED: dict[str, FrameDenoiser] = {}


def shipped_denoiser(device: torch.device | str = "cpu") -> FrameDenoiser:
    """The shipped denoiser (loaded and checked once per process and device)."""
    key = str(device)
    if key not in _LOADED:
        _LOADED[key] = load_weights(WEIGHTS_DIR, device)
    return _LOADED[key]
