"""Training the driving world-model teacher by conditional flow matching, and loading shipped weights.

Data: transitions (previous frame -> next frame) of ground-truth simulator rollouts over every named
scene x every action, drawn fresh from the simulator every ``pool_steps`` optimiser steps (the
simulator is the dataset: nothing is downloaded and nothing is overfitted).

Objective (Lipman et al. 2022; Liu et al. 2022): on the rectified-flow path x_t = (1 - t) x0 + t eps,
regress the network onto the prediction target of ``prediction_from_x0_eps`` — the velocity
eps - x0 ('flow') or the clean frame x0 ('x0'). Clean-x0 training is weighted by 1 / max(t, 0.05)^2,
i.e. its loss is measured in velocity units (Li & He 2025, "Back to Basics"), so the two targets
differ only in what the network outputs. Condition dropout (Ho & Salimans 2022) replaces scene and
action by the null condition with probability ``cond_dropout`` so classifier-free guidance works.

Tail-aware batches (``tail_fraction`` > 0): rare transitions — a waiting pedestrian starting to
move — are drawn into every batch at a fixed fraction and their loss is down-weighted by the exact
importance ratio, so the objective (and the learned distribution) is unchanged while the gradient
noise on the rare modes drops. An EMA of the weights is what ships.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from fastdiff_core.setup_time import one_off
from fastdiff_core.denoiser import prediction_from_x0_eps
from fastdiff_core.models.world_model import WorldModelConfig, WorldModelNet, parameter_count
from fastdiff_core.paths import RectifiedFlow
from fastdiff_core.students.distill import ema_decay_at
from fastdiff_core.worlds import driving
from fastdiff_core.worlds.driving import STILL, frame_modes
from fastdiff_core.worlds.driving import ACTIONS, SCENES
from fastdiff_core.worlds.driving import simulate

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a teacher's weights (with the seed)."""

    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    steps: int = 8000
    batch: int = 1024
    lr: float = 2e-3
    warmup: int = 200
    weight_decay: float = 0.0
    ema: float = 0.999
    cond_dropout: float = 0.1
    tail_fraction: float = 0.0
    rollouts_per_condition: int = 1500
    train_horizon: int = 8
    pool_steps: int = 250
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "warmup", "rollouts_per_condition", "train_horizon", "pool_steps", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
                raise ValueError(f"{name}={v!r} must be a positive integer")
        for name, lo, hi in (("lr", 0.0, 1.0), ("ema", 0.0, 1.0), ("cond_dropout", 0.0, 1.0),
                             ("tail_fraction", 0.0, 0.5), ("weight_decay", 0.0, 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo <= v < hi):
                raise ValueError(f"{name}={v!r} must be in [{lo}, {hi})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


@dataclass
class TransitionPool:
    """Transitions for training: x0 targets (N, FRAME_DIM), conditions (N, COND_DIM), and which rows
    are rare (a waiting pedestrian starting to move)."""

    x0: torch.Tensor
    cond: torch.Tensor
    rare: torch.Tensor


def transition_pool(rollouts_per_condition: int, horizon: int, generator: torch.Generator) -> TransitionPool:
    """Simulate every scene x action and cut the rollouts into (previous frame, next frame) pairs."""
    xs, cs, rare = [], [], []
    for scene in SCENES.values():
        for action in ACTIONS:
            r = simulate(scene, action, rollouts_per_condition, horizon, generator=generator)
            modes = frame_modes(r, scene)
            prev = r[:, :-1].reshape(-1, *r.shape[2:])
            nxt = r[:, 1:].reshape(-1, *r.shape[2:])
            xs.append(driving.encode_frame(nxt, prev))
            cs.append(driving.condition(prev, scene, action))
            rare.append(((modes[:, :-1] == STILL) & (modes[:, 1:] != STILL)).reshape(-1))
    return TransitionPool(torch.cat(xs), torch.cat(cs), torch.cat(rare))


def _batch(pool: TransitionPool, rare_idx: torch.Tensor, common_idx: torch.Tensor, batch: int,
           tail_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = pool.x0.shape[0]
    if tail_fraction == 0.0 or len(rare_idx) == 0:
        idx = torch.randint(n, (batch,), generator=generator)
        return pool.x0[idx], pool.cond[idx], torch.ones(batch)
    m = max(1, round(batch * tail_fraction))
    ri = rare_idx[torch.randint(len(rare_idx), (m,), generator=generator)]
    ci = common_idx[torch.randint(len(common_idx), (batch - m,), generator=generator)]
    idx = torch.cat([ri, ci])
    # importance weights: (share in the data) / (share in the batch) -> unbiased objective
    w_rare = (len(rare_idx) / n) / (m / batch)
    w_common = (len(common_idx) / n) / ((batch - m) / batch)
    w = torch.cat([torch.full((m,), w_rare), torch.full((batch - m,), w_common)])
    return pool.x0[idx], pool.cond[idx], w


def train_teacher(config: TrainConfig, on_progress: Callable[[int, float, float], None] | None = None
                  ) -> tuple[WorldModelNet, dict]:
    """Train a teacher; returns (EMA network in eval mode, stats). ``on_progress(step, loss, seconds)``."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net = WorldModelNet(config.model)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    path = RectifiedFlow()
    prediction = config.model.prediction
    t0, cpu0 = time.perf_counter(), time.process_time()
    running = None
    pool = rare_idx = common_idx = None
    for step in range(config.steps):
        if step % config.pool_steps == 0:
            pool = transition_pool(config.rollouts_per_condition, config.train_horizon, gen)
            rare_idx = pool.rare.nonzero().squeeze(1)
            common_idx = (~pool.rare).nonzero().squeeze(1)
        x0, cond, w = _batch(pool, rare_idx, common_idx, config.batch, config.tail_fraction, gen)
        drop = torch.rand(config.batch, generator=gen) < config.cond_dropout
        cond = torch.where(drop[:, None], driving.drop_condition(cond), cond)
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.rand(config.batch, generator=gen) * (path.t_max - path.t_min) + path.t_min
        a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
        da, ds = path.d_alpha(t)[:, None], path.d_sigma(t)[:, None]
        x_t = a * x0 + s * eps
        target = prediction_from_x0_eps(prediction, x0, eps, a, s, da, ds)
        out = net(x_t, t, cond)
        per_row = (out - target).pow(2).mean(1)
        if prediction == "x0":
            per_row = per_row / t.clamp(min=0.05).pow(2)  # loss in velocity units
        loss = (per_row * w).mean()
        # cosine schedule with linear warm-up
        lr = config.lr * min(1.0, (step + 1) / max(config.warmup, 1))
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps)) * 0.98 + 0.02
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = ema_decay_at(step, config.ema)
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if on_progress is not None and (step % 100 == 0 or step == config.steps - 1):
            on_progress(step, running, time.perf_counter() - t0)
    stats = {"train_seconds": round(time.perf_counter() - t0, 1),
             "cpu_seconds": round(time.process_time() - cpu0, 1), "final_loss": running,
             "parameters": parameter_count(net), "threads": config.threads}
    return ema.eval(), stats


# ---------------------------------------------------------------------------------------------
# Checkpoints: safetensors weights + a JSON sidecar (config, training stats, measured metrics)
# ---------------------------------------------------------------------------------------------


def save_checkpoint(net: WorldModelNet, stem: pathlib.Path, meta: dict) -> None:
    """Write ``stem.safetensors`` (weights + config in the header) and ``stem.json`` (meta)."""
    from safetensors.torch import save_file

    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
    save_file(tensors, str(stem.with_suffix(".safetensors")),
              metadata={"config": json.dumps(net.config.to_dict())})
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


@one_off
def load_checkpoint(stem: pathlib.Path, device: torch.device | str = "cpu") -> WorldModelNet:
    """Load a network saved by ``save_checkpoint`` (eval mode, on ``device``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = stem.with_suffix(".safetensors")
    if not file.exists():
        raise ValueError(f"checkpoint={str(file)!r} does not exist")
    with safe_open(str(file), framework="pt") as f:
        config = WorldModelConfig(**json.loads(f.metadata()["config"]))
    net = WorldModelNet(config)
    net.load_state_dict(load_file(str(file)))
    net = net.to(device).eval().requires_grad_(False)
    net.sha256 = hashlib.sha256(file.read_bytes()).hexdigest()  # what runs record as their model checksum
    return net


TEACHERS = ("flow", "x0")
DEFAULT_TEACHER = "x0"


def teacher_stem(prediction: str) -> pathlib.Path:
    if prediction not in TEACHERS:
        raise ValueError(f"teacher={prediction!r} is not one of {list(TEACHERS)}")
    return WEIGHTS_DIR / f"driving_teacher_{prediction}"


_LOADED: dict[tuple[str, str], WorldModelNet] = {}


def load_teacher(prediction: str = DEFAULT_TEACHER, device: torch.device | str = "cpu") -> WorldModelNet:
    """The shipped driving teacher (cached per process and device)."""
    key = (prediction, str(device))
    if key not in _LOADED:
        _LOADED[key] = load_checkpoint(teacher_stem(prediction), device)
    return _LOADED[key]
