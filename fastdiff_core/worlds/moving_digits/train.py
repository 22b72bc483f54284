"""What ``fastdiff train moving_digits`` runs: train the moving-digits frame denoiser on ground-truth transitions,
write the shipped weights and their card.

Data: (previous frame, action) -> next frame transitions drawn fresh every step from the dynamics
(``dynamics``): a training-split digit at a uniform column under a uniform action. Jump transitions are drawn
into every batch at ``jump_fraction`` and every row is weighted by the exact ratio of its probability under
the dynamics to its share of the batch, so the objective (and the learned jump rate) is the dynamics' own
while the gradient noise on the rare move drops. Objective: clean-x0 regression on the rectified-flow path
x_t = (1 - t) x0 + t eps, weighted by 1 / max(t, 0.05)^2 (loss in velocity units, as the driving teacher),
t drawn logit-normal (``t_mean``, ``t_std``; uniform if ``t_mean`` is None): the jump is decided at t ~ 0.6-0.85,
where a uniform draw spent too few steps for the first shipped net to learn it (docs/moving_digits.md);
the action and flag are dropped with probability ``cond_dropout`` (classifier-free guidance). An EMA of the
weights ships. Deterministic given ``seed`` on one thread.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from fastdiff_core.paths import RectifiedFlow
from fastdiff_core.students.distill import Clock, Optimiser
from fastdiff_core.worlds.moving_digits.dynamics import ACTIONS, JUMP, MAX_X, MOVE, P_JUMP, digit_images, place
from fastdiff_core.worlds.moving_digits.network import (
    CARD_FILE, README_FILE, WEIGHTS_DIR, FrameDenoiser, NetConfig, condition, drop_condition, save_weights,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the shipped weights."""

    net: NetConfig = field(default_factory=lambda: NetConfig(match=True))
    steps: int = 5000
    batch: int = 128
    lr: float = 2e-3
    warmup: int = 200
    ema: float = 0.998
    cond_dropout: float = 0.1
    jump_fraction: float = 0.15
    t_mean: float | None = 1.0  # logit-normal path time: median t = 0.73
    t_std: float = 1.0
    context_noise: float = 0.0  # the previous frame + N(0, (u context_noise)^2) pixel noise, u ~ U(0, 1) per row
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "warmup", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
                raise ValueError(f"{name}={v!r} must be an integer >= {0 if name == 'warmup' else 1}")
        for name, lo, hi in (("lr", 0.0, 1.0), ("ema", 0.0, 1.0), ("cond_dropout", 0.0, 1.0),
                             ("jump_fraction", 0.0, 0.5), ("context_noise", 0.0, 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo < v < hi) and not (name != "lr" and v == lo):
                raise ValueError(f"{name}={v!r} must be in [{lo}, {hi})")

    def to_dict(self) -> dict:
        return {**asdict(self), "net": self.net.to_dict()}


def transitions(images: torch.Tensor, batch: int, jump_fraction: float, gen: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch: (previous frames (B, ROWS, COLS), actions (B,), next frames (B, ROWS, COLS), weights (B,)).
    The first round(B * jump_fraction) rows jump; weight = P(move | action) / its share of the batch."""
    x = torch.randint(0, MAX_X + 1, (batch,), generator=gen)
    a = torch.randint(0, len(ACTIONS), (batch,), generator=gen)
    digits = images[torch.randint(0, images.shape[0], (batch,), generator=gen)]
    side = torch.where(torch.rand(batch, generator=gen) < 0.5, -1, 1)
    m = round(batch * jump_fraction)
    jump = torch.arange(batch) < m
    x_next = torch.where(jump, x + JUMP * side, x + torch.tensor(MOVE)[a]).clamp(0, MAX_X)
    p = torch.tensor(P_JUMP, dtype=torch.float32)[a]
    w = torch.where(jump, p / max(jump_fraction, 1e-12), (1 - p) / (1 - jump_fraction)) if m else torch.ones(batch)
    return place(digits, x), a, place(digits, x_next), w


def train_denoiser(config: TrainConfig, on_step: Callable[[int, float, float], None] | None = None
                   ) -> tuple[FrameDenoiser, dict]:
    """Train the denoiser; returns (the EMA network in eval mode, training stats)."""
    torch.set_num_threads(config.threads)  # oversubscribed threads are far slower on a shared CPU
    torch.manual_seed(config.seed)  # the initialisation
    gen = torch.Generator().manual_seed(config.seed)
    images = digit_images()[0]
    net = FrameDenoiser(config.net)
    opt = Optimiser(net, config.lr, config.steps, config.warmup, ema=config.ema)
    path, clock, cpu0 = RectifiedFlow(), Clock(), time.process_time()
    for step in range(config.steps):
        prev, a, nxt, w = transitions(images, config.batch, config.jump_fraction, gen)
        if config.context_noise > 0:  # a rollout conditions on its own imperfect frames (exposure bias)
            level = torch.rand(config.batch, 1, 1, generator=gen) * config.context_noise
            prev = (prev + level * torch.randn(prev.shape, generator=gen)).clamp(-1.0, 1.0)
        cond = condition(prev, a)
        drop = torch.rand(config.batch, generator=gen) < config.cond_dropout
        cond = torch.where(drop[:, None], drop_condition(cond), cond)
        x0 = nxt.reshape(config.batch, -1)
        eps = torch.randn(x0.shape, generator=gen)
        if config.t_mean is None:  # uniform path time
            t = torch.rand(config.batch, generator=gen) * (path.t_max - path.t_min) + path.t_min
        else:  # logit-normal path time (Esser et al. 2024), clipped to the path's range
            z = torch.randn(config.batch, generator=gen) * config.t_std + config.t_mean
            t = torch.sigmoid(z).clamp(path.t_min, path.t_max)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * eps  # rectified flow: alpha = 1 - t, sigma = t
        per_row = (net(x_t, t, cond) - x0).pow(2).mean(1) / t.clamp(min=0.05).pow(2)  # velocity units
        loss = (per_row * w).mean()
        opt.step(loss)
        clock.record(loss)
        if on_step is not None and ((step + 1) % 250 == 0 or step + 1 == config.steps):
            on_step(step + 1, clock.loss, time.perf_counter() - clock.t0)
    stats = clock.stats(cpu_seconds=round(time.process_time() - cpu0, 1),
                        parameters=sum(p.numel() for p in net.parameters()))
    return opt.result(), stats


# ---------------------------------------------------------------------------------------------
# The card: the rare-branch rate vs the exact truth at the reference setting, measured on the engine
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardProtocol:
    """How the card measures the model: R rollouts of H frames per constant plan from the start column, with an
    accurate solver (the tail gate's reference setting), through the rollout engine. Not Heun: its correction
    divides by the smallest sigma of the grid, where the x0-network's small residual becomes a blow-up
    (docs/moving_digits.md)."""

    solver: str = "dpmpp_2m"
    steps: int = 8
    grid: str = "karras"
    horizon: int = 6
    start: int = 4
    rollouts: int = 1000
    seed: int = 0
    plans: tuple[str, ...] = ACTIONS


def command_for(config: TrainConfig) -> str:
    """The exact command that reproduces weights trained with ``config``."""
    return (f"fastdiff train moving_digits --steps {config.steps} --batch {config.batch} --lr {config.lr} "
            f"--jump-fraction {config.jump_fraction} --seed {config.seed}")


def measure_card(net: FrameDenoiser, protocol: CardProtocol = CardProtocol()) -> dict:
    """Per constant plan: the branch histogram (rates with Wilson intervals) against the exact probabilities,
    and the coverage gate over all plans (three outcomes, family-wise alpha 0.05)."""
    from fastdiff_core.denoiser import NFECounter
    from fastdiff_core.grids import build_grid
    from fastdiff_core.metrics.gate import RELEASE_GATE, coverage_gate
    from fastdiff_core.metrics.intervals import wilson_interval
    from fastdiff_core.rollout import fan_out
    from fastdiff_core.speedups import frame_sampler
    from fastdiff_core.worlds.moving_digits.dynamics import LABELS, TAIL, branch_probabilities, classify_codes
    from fastdiff_core.worlds.moving_digits.model import MovingDigitsWorldModel

    gen = torch.Generator().manual_seed(protocol.seed)
    counts, truths, plans, t0 = {}, {}, {}, time.perf_counter()
    counter = NFECounter()
    for action in protocol.plans:
        world = MovingDigitsWorldModel(net, start=protocol.start, action=action)
        sigmas = build_grid(protocol.grid, protocol.steps, world.path)
        plan = torch.full((1, protocol.horizon), world.action, dtype=torch.long)
        codes = []
        for lo in range(0, protocol.rollouts, 500):
            n = min(500, protocol.rollouts - lo)
            context = world.observe(n, gen)  # independent rollouts: each its own held-out digit
            noise = torch.randn(n, protocol.horizon, world.frame_dim, generator=gen)
            frames = fan_out(net, world, plan.expand(n, -1), 1, sampler=frame_sampler(protocol.solver), sigmas=sigmas,
                             noise=noise, context=context, counter=counter)
            codes.append(classify_codes(frames.reshape(n, *frames.shape[2:])))
        c = torch.bincount(torch.cat(codes), minlength=len(LABELS))
        counts[action] = {lab: int(c[i]) for i, lab in enumerate(LABELS)}
        truths[action] = branch_probabilities(protocol.start, plan[0].tolist())
        rate = counts[action][TAIL] / protocol.rollouts
        lo_, hi_ = wilson_interval(counts[action][TAIL], protocol.rollouts)
        plans[action] = {"counts": counts[action], "truth": truths[action], "tail_rate": rate, "tail_lo": lo_,
                         "tail_hi": hi_, "implausible_rate": counts[action]["implausible"] / protocol.rollouts}
    gate = coverage_gate(counts, truths, replace(RELEASE_GATE, tail=TAIL))
    return {"protocol": asdict(protocol), "plans": plans, "gate": gate.summary(),
            "nfe_counted": counter.rows, "seconds": round(time.perf_counter() - t0, 1)}


def render_card(card: dict) -> str:
    """The card as markdown (README.md beside the weights)."""
    train, stats, m = card["train"], card["stats"], card["measured"]
    p = m["protocol"]
    lines = [
        "# fastdiff moving digits: a frame denoiser on real data", "",
        "A handwritten digit (scikit-learn's bundled 8x8 digits, nothing downloaded) on an 8x16 canvas, moving one "
        "column per frame under an action (left, stay, right); now and then it jumps three columns (the rare branch, "
        "`jumps`). This network generates the next frame from the previous one and the action; fastdiff's "
        "`moving_digits` world rolls it out (docs/moving_digits.md).", "",
        "## Reproduce", "", "```bash", card["command"], "```", "",
        "## Files", "",
        f"- `denoiser.safetensors`: the weights (config in the header); sha256 `{card['sha256']}`, checked at load",
        "- `card.json`: this card as data (training config, statistics, measurements)", "",
        "## Training", "",
        f"- clean-x0 prediction on the rectified-flow path; conv net, {train['net']['channels']} channels, "
        f"dilations {train['net']['dilations']}; {stats['parameters']:,} parameters",
        f"- {train['steps']} steps, batch {train['batch']}, AdamW lr {train['lr']}, EMA {train['ema']}, condition "
        f"dropout {train['cond_dropout']}, jumps drawn at {train['jump_fraction']} of a batch (exactly reweighted), "
        f"seed {train['seed']}",
        f"- data: {card['data']['source']}; {card['data']['train_n']} training-split digits, the context of runs "
        f"from the {card['data']['heldout_n']} held-out ones",
        f"- training time: **{stats['train_seconds'] / 60:.1f} min** ({stats['cpu_seconds']:.0f} CPU s) on "
        f"{stats['threads']} thread(s), {stats['host']}; final loss {stats['final_loss']:.4f}; trained "
        f"{card['trained_at']}", "",
        f"## Measured: the rare branch vs the exact truth ({p['solver']} x {p['steps']} steps, {p['grid']} grid, "
        f"H = {p['horizon']}, start column {p['start']}, {p['rollouts']:,} rollouts per plan, seed {p['seed']})", "",
        "| plan | jumps generated [95% Wilson] | jumps true | implausible |", "|---|---|---|---|",
    ]
    for action, row in m["plans"].items():
        lines.append(f"| {action} x {p['horizon']} | {row['tail_rate']:.2%} [{row['tail_lo']:.2%}, {row['tail_hi']:.2%}] "
                     f"| {row['truth']['jumps']:.2%} | {row['implausible_rate']:.2%} |")
    gate = m["gate"]
    lines += ["", f"Coverage gate (three outcomes, family-wise alpha {gate['alpha']}): **{gate['outcome']}**. "
              f"Measured in {m['seconds']:.0f} s; NFE counted {m['nfe_counted']:,.0f}.", ""]
    return "\n".join(lines)


def write_card(net: FrameDenoiser, out: Path, card: dict, *, protocol: CardProtocol = CardProtocol(),
               on_stage: Callable[[str, dict], None] | None = None) -> dict:
    """Measure ``net`` and write card.json and README.md beside its weights; returns the card."""
    (on_stage or (lambda name, facts: None))("card", {"rollouts": protocol.rollouts, "plans": len(protocol.plans)})
    card = {**card, "measured": measure_card(net, protocol)}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / README_FILE).write_text(render_card(card))
    return card


def train_moving_digits(config: TrainConfig, out: Path = WEIGHTS_DIR, *, protocol: CardProtocol = CardProtocol(),
                        on_stage: Callable[[str, dict], None] | None = None,
                        on_step: Callable[[int, float, float], None] | None = None) -> dict:
    """Train, save the weights to ``out``, measure and write the card; returns the card."""
    stage = on_stage or (lambda name, facts: None)
    train_images, heldout = digit_images()
    stage("train", {"steps": config.steps, "batch": config.batch, "digits": int(train_images.shape[0])})
    net, stats = train_denoiser(config, on_step)
    sha = save_weights(net, out)
    card = {"command": command_for(config), "train": config.to_dict(), "sha256": sha,
            "stats": {**stats, "threads": config.threads,
                      "host": f"{platform.machine()}, {platform.processor() or 'cpu'}, shared"},
            "data": {"source": "sklearn.datasets.load_digits (bundled with scikit-learn)",
                     "train_n": int(train_images.shape[0]), "heldout_n": int(heldout.shape[0])},
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # the card records the sha256 first, so the weights load through the same checked path they ship with
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return write_card(net, out, card, protocol=protocol, on_stage=stage)
