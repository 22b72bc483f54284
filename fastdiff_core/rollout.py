"""H-frame autoregressive rollouts and the planning cycle: P candidate plans x R futures, batched.

A planning cycle imagines R futures for each of P candidate action sequences (plans) over H frames.
Every frame is ONE solve over all P·R rows together (each network forward carries every candidate
and every future), so the cycle costs exactly

    NFE = S (evaluations per frame) x C (guidance passes) x H (frames) x P·R (plans x futures)

per-sample network evaluations — the counter's ``rows`` — whatever the solver, cache or precision.

What makes the fan-out cheaper than P·R separate rollouts, without changing what is sampled:
  * batching: one forward per solver step for the whole fan-out instead of P·R small ones;
  * shared context: the condition path of the network (the part that depends only on the previous
    frame, the scene and the action, ``SharedContextNet.context``) is computed once per frame rather
    than once per solver step, and on frame 1 — where all R futures of a plan share the observed
    context and the first action — once per plan, then shared by its R futures;
  * warm start (``Planner``): the next cycle starts from the previous cycle's best plan (shifted one
    frame) and reuses its tail proposal, so no pilot run is spent per cycle;
  * importance sampling of the tail (``TailProposal``): the initial noise of every frame is drawn from
    a defensive mixture q = (1 - beta) N(0, I) + beta N(mu, I) whose shift mu points to where the tail
    branch came from in earlier cycles; each rollout carries the exact weight p(z) / q(z) and branch
    probabilities are self-normalised weighted rates, so they stay (asymptotically) unbiased while the
    tail gets many more samples (Owen 2013, ch. 9; Hesterberg 1995, defensive mixtures).

Everything world-specific comes from a world model (``fastdiff_core.worlds.protocol.WorldModel``: frames and
their encoding, the condition on history and action, the branch classifier, where a branch began, the
planning objective); the network is passed alongside it, so a cached, quantised or instrumented copy of
the world model's network rolls out the same world. ``SharedContextNet`` applies to networks with the
staged forward of ``fastdiff_core.models.world_model``; any other network runs its condition path at every
step. The runner of a RunSpec over this engine is ``fastdiff_core.rollout_runner``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from fastdiff_core.denoiser import Denoiser, Guidance, NFECounter
from fastdiff_core.limits import RunLimits
from fastdiff_core.metrics.intervals import label_effective_n, rate_interval, snis_rate_variance
from fastdiff_core.worlds.protocol import WorldModel, check_world_model

# x0 = sampler(denoiser, x_T, sigmas): a solver from the registry or Picard, options bound
FrameSampler = Callable[[Denoiser, torch.Tensor, Sequence[float]], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Shared context: the network's condition path computed once per frame / per plan
# ---------------------------------------------------------------------------------------------


class SharedContextNet(nn.Module):
    """The world model with its condition path split off: ``context(cond)`` once, then
    ``net(x_t, t, ctx)`` per step. Equal to the wrapped network's forward up to float rounding:

        embed(t, cond) = silu(time_mlp(t) + cond_mlp(cond))          -> cond_mlp(cond) is context
        stem(x_t, cond) = W [x_t; cond] + b = W_x x_t + (W_c cond + b) -> W_c cond + b is context

    ctx: (B, 2 * width). Exposes the staged API (embed / stem / run_blocks / head) for feature caching.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        fd = net.config.frame_dim
        w = net.config.width
        weight, bias = net.input.weight.detach(), net.input.bias.detach()
        self.x_proj = nn.Linear(fd, w, bias=False)
        self.c_proj = nn.Linear(weight.shape[1] - fd, w)
        with torch.no_grad():
            self.x_proj.weight.copy_(weight[:, :fd])
            self.c_proj.weight.copy_(weight[:, fd:])
            self.c_proj.bias.copy_(bias)
        self.x_proj.to(weight.device)
        self.c_proj.to(weight.device)
        self.width = w
        self.blocks = net.blocks
        # follows .to(dtype) but not int8 quantisation (which keeps float activations)
        self.register_buffer("dtype_probe", torch.zeros((), device=weight.device), persistent=False)

    @property
    def prediction(self) -> str:
        return self.net.prediction

    def context(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, COND_DIM) condition -> (B, 2 * width) context, in the network's dtype."""
        cond = cond.to(self.dtype_probe.dtype)
        return torch.cat([self.net.cond_mlp(cond), self.c_proj(cond)], -1)

    def embed(self, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        # the time features stay in float32 whatever the network's precision: t x 1000 in bf16 would
        # be off by radians
        freqs = self.net.freqs.float()
        ang = t[:, None].float() * freqs[None, :]
        tf = torch.cat([torch.sin(ang), torch.cos(ang)], -1).to(ctx.dtype)
        return nn.functional.silu(self.net.time_mlp(tf) + ctx[:, : self.width])

    def stem(self, x_t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.x_proj(x_t.to(ctx.dtype)) + ctx[:, self.width:]

    def run_blocks(self, h: torch.Tensor, emb: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.net.run_blocks(h, emb, start, stop)

    def head(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.net.head(h, emb)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t, ctx)
        return self.head(self.run_blocks(self.stem(x_t, ctx), emb), emb)


def _context_owner(net: nn.Module) -> nn.Module | None:
    """What computes the context in a (possibly cached or instrumented) network stack: the first
    module down the ``.net`` chain that defines ``context`` (a SharedContextNet, or a wrapper that
    times or records it); None for a plain network."""
    seen = net
    for _ in range(4):
        if isinstance(seen, SharedContextNet) or callable(getattr(type(seen), "context", None)):
            return seen
        seen = getattr(seen, "net", None)
        if seen is None:
            break
    return None


# ---------------------------------------------------------------------------------------------
# Candidate plans
# ---------------------------------------------------------------------------------------------


def candidate_plans(plans: int, horizon: int, previous: Sequence[int] | None = None, *, actions: int) -> torch.Tensor:
    """P candidate action sequences (P, H) of indices into ``actions`` actions: the A constant plans, then
    'start with a, switch to b at frame k' plans. ``previous`` (a plan of the last cycle) warm-starts:
    shifted by one frame (its last action repeated) it becomes candidate 0."""
    for name, v in (("plans", plans), ("horizon", horizon), ("actions", actions)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be an integer >= 1")
    rows = []
    if previous is not None:
        prev = [int(a) for a in previous]
        if len(prev) != horizon or any(not 0 <= a < actions for a in prev):
            raise ValueError(f"previous plan={prev!r} must be {horizon} indices into {actions} actions")
        rows.append(prev[1:] + prev[-1:])
    others = max(actions - 1, 1)  # the actions a plan can switch to (itself when there is only one)
    i = 0
    while len(rows) < plans:
        if i < actions:
            plan = [i] * horizon
        else:
            j = i - actions
            a = j % actions
            b = (a + 1 + (j // actions) % others) % actions
            k = 1 + (j // (actions * others)) % max(horizon - 1, 1)
            plan = [a] * k + [b] * (horizon - k)
        # every distinct plan has been proposed once i passes the last switch plan: repeats are allowed then
        if plan not in rows or i >= actions * (actions * others * horizon + actions):
            rows.append(plan)
        i += 1
    return torch.tensor(rows[:plans], dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Importance sampling of the tail
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TailProposal:
    """A defensive mixture over the H frames' initial noise z = (z_1 .. z_H) that shifts ONE frame:

        q(z) = (1 - beta) p(z) + beta sum_h pi_h N(z_h; mu_h, I) prod_{j != h} N(z_j; 0, I)

    with p = N(0, I). A branch begins in one frame (the pedestrian starts to run), so the proposal
    moves the noise of one frame, chosen with probability pi_h, towards where the tail came from.
    log p(z)/q(z) = -log((1 - beta) + beta sum_h pi_h exp(mu_h . z_h - |mu_h|^2 / 2)); the weight is
    bounded by 1 / (1 - beta), so no single rollout can dominate an estimate.
    mu: (H, D); pi: (H,) summing to 1.
    """

    mu: torch.Tensor
    pi: torch.Tensor
    beta: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, (int, float)) and 0.0 <= self.beta < 1.0):
            raise ValueError(f"importance beta={self.beta!r} must be in [0, 1)")
        if self.mu.ndim != 2 or self.pi.shape != (self.mu.shape[0],):
            raise ValueError(f"mu shape={tuple(self.mu.shape)} must be (H, D) and pi shape={tuple(self.pi.shape)} (H,)")

    @property
    def horizon(self) -> int:
        return self.mu.shape[0]

    def sample(self, n: int, horizon: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(n, horizon, D) initial noise drawn from q."""
        if horizon != self.horizon:
            raise ValueError(f"horizon={horizon} but the proposal was fitted for horizon {self.horizon}")
        d = self.mu.shape[1]
        z = torch.randn(n, horizon, d, generator=generator, dtype=dtype)
        shifted = torch.rand(n, generator=generator) < self.beta
        frame = torch.multinomial(self.pi.double(), n, replacement=True, generator=generator)
        rows = torch.nonzero(shifted).flatten()
        z[rows, frame[rows]] += self.mu.to(dtype)[frame[rows]]
        return z.to(device)

    def log_weights(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) / q(z) per rollout: (n,)."""
        mu = self.mu.to(device=z.device, dtype=torch.float64)
        a = (z.to(torch.float64) * mu).sum(-1) - 0.5 * (mu * mu).sum(-1)  # (n, H): log N(z_h; mu_h) - log N(z_h; 0)
        if self.beta == 0.0:
            return torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
        mix = torch.logsumexp(a + torch.log(self.pi.to(a)), -1)
        return -torch.logaddexp(torch.full_like(mix, math.log1p(-self.beta)), mix + math.log(self.beta))

    @staticmethod
    def fit(noise: torch.Tensor, onset: torch.Tensor, is_tail: torch.Tensor, log_w: torch.Tensor | None = None,
            *, beta: float = 0.5, smoothing: float = 0.5) -> "TailProposal | None":
        """Cross-entropy step from earlier rollouts: mu_h = (weighted) mean noise of frame h over the tail
        rollouts whose branch began in frame h (the pooled mean where none did); pi_h = their share
        (smoothed). noise (n, H, D); onset (n,) frame index into H; is_tail (n,) bool. None when no
        rollout reached the tail. (``TailFit`` is the same step fed chunk by chunk.)"""
        fit = TailFit(noise.shape[1], noise.shape[2])
        fit.add(noise, onset, is_tail, log_w)
        return fit.proposal(beta=beta, smoothing=smoothing)


class TailFit:
    """The sufficient statistics of ``TailProposal.fit``, accumulated over chunks of rollouts: per frame
    h the number of tail rollouts whose branch began in h, their summed weight and their weighted
    summed noise of frame h. Weights are w = p/q = exp(log_w) <= 1 / (1 - beta), so the raw sums stay
    finite; the fit only uses ratios of them, so any split into chunks gives the same proposal."""

    def __init__(self, horizon: int, dim: int) -> None:
        self.count = torch.zeros(horizon, dtype=torch.long)
        self.weight = torch.zeros(horizon, dtype=torch.float64)
        self.weighted_noise = torch.zeros(horizon, dim, dtype=torch.float64)

    def add(self, noise: torch.Tensor, onset: torch.Tensor, is_tail: torch.Tensor,
            log_w: torch.Tensor | None = None) -> None:
        idx = torch.nonzero(is_tail.cpu()).flatten()
        if idx.numel() == 0:
            return
        frame = onset.cpu()[idx]
        w = torch.ones(len(idx), dtype=torch.float64) if log_w is None else log_w.cpu()[idx].double().exp()
        z = noise.cpu().to(torch.float64)[idx, frame]  # (n_tail, D): the noise of each rollout's onset frame
        self.count.index_add_(0, frame, torch.ones_like(frame))
        self.weight.index_add_(0, frame, w)
        self.weighted_noise.index_add_(0, frame, w[:, None] * z)

    def proposal(self, *, beta: float = 0.5, smoothing: float = 0.5) -> TailProposal | None:
        n = int(self.count.sum())
        if n == 0:
            return None
        total = float(self.weight.sum())
        h, d = self.weighted_noise.shape
        pooled = self.weighted_noise.sum(0) / total
        mu = pooled.expand(h, d).clone()
        seen = self.count > 0
        mu[seen] = self.weighted_noise[seen] / self.weight[seen, None]
        mass = self.weight / total
        pi = (mass * n + smoothing) / (n + smoothing * h)
        return TailProposal(mu.to(torch.float32), (pi / pi.sum()).to(torch.float32), beta)


def weighted_rates(codes: torch.Tensor, log_w: torch.Tensor | None, labels: int) -> torch.Tensor:
    """Self-normalised branch rates per group: codes (G, N) -> (G, labels); uniform when log_w is None."""
    if log_w is None:
        log_w = torch.zeros(codes.shape, dtype=torch.float64, device=codes.device)
    w = torch.softmax(log_w.to(torch.float64), -1)
    one_hot = nn.functional.one_hot(codes, labels).to(torch.float64)
    return (w[..., None] * one_hot).sum(-2)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's ESS = (sum w)^2 / sum w^2 per group (last axis)."""
    w = torch.softmax(log_w.to(torch.float64), -1)
    return 1.0 / (w * w).sum(-1)


class BranchTally:
    """Self-normalised (importance-weighted) branch rates of one group of rollouts, accumulated chunk by
    chunk from sufficient statistics: per label the raw count, sum w and sum w^2, with w = p/q =
    exp(log_w) (1 for plain sampling; <= 1 / (1 - beta) under a tail proposal, so the sums stay finite).

        rate_k = S_k / S          n_kish = S^2 / Q (Kish)
        var_k  = [(1 - rate_k)^2 Q_k + rate_k^2 (Q - Q_k)] / S^2   (delta method; p(1-p)/n unweighted)
        n_eff_k = rate_k (1 - rate_k) / var_k   (the label's own effective n; Kish's where not valid)

    with S_k = sum of w over label k, Q_k = sum of w^2 over label k, S and Q over all rollouts
    (``metrics.intervals.snis_rate_variance``, ``label_effective_n``)."""

    def __init__(self, labels: int) -> None:
        self.count = torch.zeros(labels, dtype=torch.long)
        self.weight = torch.zeros(labels, dtype=torch.float64)
        self.weight_sq = torch.zeros(labels, dtype=torch.float64)

    def add(self, codes: torch.Tensor, log_w: torch.Tensor | None = None) -> "BranchTally":
        """codes (N,) label indices; log_w (N,) log p/q or None."""
        codes = codes.cpu().long().reshape(-1)
        w = torch.ones(codes.shape, dtype=torch.float64) if log_w is None else log_w.cpu().double().reshape(-1).exp()
        self.count += torch.bincount(codes, minlength=len(self.count))
        self.weight.index_add_(0, codes, w)
        self.weight_sq.index_add_(0, codes, w * w)
        return self

    def merge(self, other: "BranchTally") -> "BranchTally":
        self.count += other.count
        self.weight += other.weight
        self.weight_sq += other.weight_sq
        return self

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def n_eff(self) -> float:
        s, q = float(self.weight.sum()), float(self.weight_sq.sum())
        return s * s / q if q > 0 else 0.0

    @property
    def rates(self) -> torch.Tensor:
        """(labels,) self-normalised rates (zeros while empty)."""
        s = float(self.weight.sum())
        return self.weight / s if s > 0 else torch.zeros_like(self.weight)

    @property
    def variances(self) -> torch.Tensor:
        s, q = float(self.weight.sum()), float(self.weight_sq.sum())
        if s <= 0:
            return torch.zeros_like(self.weight)
        return snis_rate_variance(self.weight, self.weight_sq, s, q)

    @property
    def weighted(self) -> bool:
        """False when every weight is 1 (plain sampling: rates are count / n, effective n is n)."""
        return not (torch.equal(self.weight, self.count.double()) and torch.equal(self.weight_sq, self.count.double()))

    def effective_n(self) -> list[float]:
        """Per label, the effective n of its rate: n unweighted, else ``label_effective_n`` (its own
        r (1 - r) / var where valid, Kish's n_eff otherwise)."""
        if not self.weighted:
            return [float(self.n)] * len(self.count)
        return label_effective_n(self.rates.numpy(), self.variances.numpy(), self.count.numpy(), self.n,
                                 self.n_eff).tolist()

    def rows(self, truth: Mapping[str, float], *, group: str, labels: Sequence[str],
             confidence: float = 0.95) -> list[dict]:
        """Histogram rows {group, label, count, n, rate, n_eff, n_kish, var, lo, hi, truth}: n_eff the
        label's own effective n (``effective_n``), what the gate judges; lo/hi the Wilson interval at
        (rate, n_eff), so every rate lies inside its own interval; n_kish Kish's n_eff of the group;
        count / n the raw rollouts drawn per label (not an estimate when weighted: judge rate and n_eff)."""
        n, n_kish = self.n, self.n_eff
        if n == 0:
            raise ValueError(f"group={group!r} has no rollouts to tabulate")
        rates, var, n_eff = self.rates, self.variances, self.effective_n()
        rows = []
        for k, label in enumerate(labels):
            rate = min(1.0, max(0.0, float(rates[k])))
            lo, hi = rate_interval(rate, n_eff[k], confidence)
            rows.append({"group": group, "label": label, "count": int(self.count[k]), "n": n, "rate": rate,
                         "n_eff": n_eff[k], "n_kish": n_kish, "var": float(var[k]), "lo": lo, "hi": hi,
                         "truth": float(truth.get(label, 0.0))})
        return rows


# ---------------------------------------------------------------------------------------------
# The batched fan-out
# ---------------------------------------------------------------------------------------------


def fan_out(net: SharedContextNet | nn.Module, world: WorldModel, plans: torch.Tensor, futures: int, *,
            sampler: FrameSampler, sigmas: Sequence[float], noise: torch.Tensor, context: torch.Tensor,
            guidance: Guidance = Guidance(), counter: NFECounter | None = None,
            share_context: bool = True, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """R futures of each of P plans over H frames of ``world``, every frame ONE batched solve over all P·R rows.

    net: the world model's network, or a SharedContextNet (or a cache wrapping one) of it, or any
    network ``net(x_t, t, cond)`` with a ``prediction`` (then the condition path runs at every step: the
    baseline the shared context is measured against);
    plans (P, H) indices into ``world.actions``;
    noise (P·R, H, D) standard-normal (or proposal) initial noise, D = world.frame_dim, row p·R + r is
    plan p, future r; context (*frame_shape) the observed frame (or (P, *frame_shape), one per plan).
    Returns (P, R, H + 1, *frame_shape), frame 0 the context. NFE: sampler's per frame x H x P·R rows
    (``counter.rows``).
    rows=(lo, hi): only rows lo..hi-1 of the fan-out (a chunk; noise (hi - lo, H, D)); returns
    (hi - lo, H + 1, *frame_shape). NFE: the sampler's per frame x H x (hi - lo).
    """
    p, h = plans.shape
    lo, hi = (0, p * futures) if rows is None else rows
    if not 0 <= lo < hi <= p * futures:
        raise ValueError(f"rows=({lo}, {hi}) must satisfy 0 <= lo < hi <= P·R = {p * futures}")
    if noise.shape[:2] != (hi - lo, h):
        raise ValueError(f"noise shape={tuple(noise.shape)} must be ({hi - lo}, {h}, {world.frame_dim}) for P={p}, "
                         f"R={futures}, rows {lo}..{hi - 1}")
    owner = _context_owner(net)
    # a plain network gets the raw condition (recomputing its condition path at every step)
    encode = owner.context if owner is not None else (lambda c: c)
    prediction = owner.prediction if owner is not None else net.prediction
    dev, dtype = noise.device, noise.dtype
    ctx0 = _observed_per_plan(world, context, p).to(device=dev, dtype=dtype)
    # the plans this chunk touches, and the chunk's rows within their P'·R rows
    p0, p1 = lo // futures, (hi - 1) // futures + 1
    plans, ctx0 = plans[p0:p1].to(dev), ctx0[p0:p1]
    take = slice(lo - p0 * futures, hi - p0 * futures)
    frames = [ctx0.repeat_interleave(futures, 0)[take]]  # (rows, *frame_shape)
    counter = counter if counter is not None else NFECounter()
    den: Denoiser | None = None
    # the condition's history-free part (scene, action, ...) for every plan and frame, built once per cycle
    static = world.plan_condition(plans, dtype=dtype, device=dev)  # (P', H, ...)
    static_rows = static.repeat_interleave(futures, 0)[take]  # (rows, H, ...)
    with torch.inference_mode():  # no autograd bookkeeping on the ~10 small ops per step
        for k in range(h):
            if k == 0 and share_context:
                # all R futures of a plan share the observed frame and the first action: context once per plan
                ctx, uctx = _contexts(world, encode, world.condition([ctx0], static[:, 0]), guidance)
                ctx = ctx.repeat_interleave(futures, 0)[take]
                uctx = None if uctx is None else uctx.repeat_interleave(futures, 0)[take]
            else:
                ctx, uctx = _contexts(world, encode, world.condition(frames, static_rows[:, k]), guidance)
            # x_t and t enter in the sampling dtype; the network casts x_t itself (and keeps t in float32).
            # One denoiser for all frames (its per-sigma coefficient and time caches stay warm): only the
            # conditions change from frame to frame.
            if den is None:
                den = Denoiser(net, world.path, prediction, cond=ctx, uncond=uctx, guidance=guidance, counter=counter)
            den.cond, den.uncond = ctx, uctx
            x0 = sampler(den, noise[:, k] * float(sigmas[0]), sigmas)
            frames.append(world.decode(x0, frames))
    out = torch.stack(frames, 1)
    return out if rows is not None else out.reshape(p, futures, h + 1, *frames[-1].shape[1:])


def _observed_per_plan(world: WorldModel, context: torch.Tensor, plans: int) -> torch.Tensor:
    """The observed frame per plan (P, *frame_shape): ``context`` as given, or one frame repeated."""
    shape = tuple(world.frame_shape)
    ctx0 = context.expand(plans, *context.shape) if tuple(context.shape) == shape else context
    if tuple(ctx0.shape) != (plans, *shape):
        raise ValueError(f"context shape={tuple(context.shape)} must be {shape} or {(plans, *shape)}")
    return ctx0


def _contexts(world: WorldModel, encode: Callable, cond: torch.Tensor, guidance: Guidance
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the condition's context, the unconditional one when guidance needs a second pass, else None)."""
    return encode(cond), (encode(world.uncondition(cond)) if guidance.scale != 1.0 else None)


def loop_over_candidates(net: nn.Module, world: WorldModel, plans: torch.Tensor, futures: int, *, sampler: FrameSampler,
                         sigmas: Sequence[float], noise: torch.Tensor, context: torch.Tensor,
                         guidance: Guidance = Guidance(), counter: NFECounter | None = None) -> torch.Tensor:
    """The baseline the fan-out replaces: one rollout at a time, a Python loop over plans and futures.
    Same inputs, same outputs (up to float rounding) as ``fan_out``."""
    p, _ = plans.shape
    out = []
    for i in range(p):
        for r in range(futures):
            row = i * futures + r
            one = context if tuple(context.shape) == tuple(world.frame_shape) else context[i]
            out.append(fan_out(net, world, plans[i:i + 1], 1, sampler=sampler, sigmas=sigmas, noise=noise[row:row + 1],
                               context=one,
                               guidance=guidance, counter=counter, share_context=False))
    return torch.cat(out, 1).reshape(p, futures, *out[0].shape[2:])


# ---------------------------------------------------------------------------------------------
# The planning cycle and the planner
# ---------------------------------------------------------------------------------------------

# Rows per noise draw: the cycle's noise is drawn in blocks of this many rows in row order, so every
# row gets the same noise whatever the chunk size (and a cycle of at most this many rows draws exactly
# what one draw of all its rows would).
NOISE_BLOCK = 4096


def chunk_rollouts() -> int:
    """Rollouts per fan-out chunk: the FASTDIFF_CHUNK_ROLLOUTS setting of ``fastdiff_core.limits`` (the
    one place run settings are read), so the peak memory of a cycle is bounded whatever P·R is."""
    return RunLimits.from_env().chunk_rollouts


class NoiseStream:
    """A cycle's initial noise (and its log p/q under a proposal), handed out in row order chunk by chunk.
    Drawn in blocks of ``NOISE_BLOCK`` rows from the cycle's generator, so the rows' noise does not depend
    on the chunk size; at most one block beyond the chunk is held."""

    def __init__(self, rows: int, horizon: int, dim: int, *, proposal: TailProposal | None,
                 generator: torch.Generator | None, device: torch.device | str) -> None:
        self.left, self.horizon, self.dim = rows, horizon, dim
        self.proposal, self.generator, self.device = proposal, generator, device
        self._noise: list[torch.Tensor] = []
        self._log_w: list[torch.Tensor] = []
        self._held = 0

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next n rows: noise (n, H, D) on the device, log p/q (n,) float64 or None."""
        while self._held < n:
            m = min(NOISE_BLOCK, self.left)
            if m <= 0:
                raise ValueError(f"asked for {n} rows of noise but only {self._held} are left")
            if self.proposal is None:
                z = torch.randn(m, self.horizon, self.dim, generator=self.generator, device=self.device)
            else:
                z = self.proposal.sample(m, self.horizon, generator=self.generator, device=self.device)
                self._log_w.append(self.proposal.log_weights(z).cpu())
            self._noise.append(z)
            self._held += m
            self.left -= m
        noise = torch.cat(self._noise) if len(self._noise) > 1 else self._noise[0]
        self._noise = [noise[n:]] if n < noise.shape[0] else []
        log_w = None
        if self.proposal is not None:
            lw = torch.cat(self._log_w) if len(self._log_w) > 1 else self._log_w[0]
            self._log_w = [lw[n:]] if n < lw.shape[0] else []
            log_w = lw[:n]
        self._held -= n
        return noise[:n], log_w


@dataclass
class CycleResult:
    """One planning cycle: per-plan branch tallies and estimates, the choice, its NFE and time, and
    (when asked) the statistics that refit the tail proposal. Rollouts themselves are not kept: a
    cycle runs in chunks and keeps only what its estimates need."""

    plans: torch.Tensor  # (P, H)
    tallies: list[BranchTally]  # one per plan
    rates: torch.Tensor  # (P, len(world.labels)) self-normalised branch rates per plan
    cost: torch.Tensor  # (P,)
    chosen: int
    nfe: float  # counted per-sample network evaluations (counter.rows)
    forwards: int  # batched network forwards (sequential rounds)
    seconds: float  # time in the fan-out (network and solver), chunks summed
    chunks: int = 1
    tail_fit: TailFit | None = field(repr=False, default=None)
    repeats: float = 0.0  # of ``nfe``: re-evaluations beyond the sequential count (Picard sweeps)

    def chosen_plan(self) -> list[int]:
        return [int(a) for a in self.plans[self.chosen]]


def plan_costs(world: WorldModel, plans: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Expected cost of each plan (P,): sum over labels of rate x ``world.label_cost`` minus the mean
    ``world.action_progress`` over the plan's actions."""
    risk = torch.tensor([float(world.label_cost.get(lab, 0.0)) for lab in world.labels], dtype=torch.float64)
    reward = list(world.action_progress) or [0.0] * len(world.actions)
    progress = torch.tensor(reward, dtype=torch.float64)[plans.cpu()].mean(1)
    return rates @ risk - progress


def planning_cycle(net: nn.Module, world: WorldModel, plans: torch.Tensor, futures: int, *, sampler: FrameSampler,
                   sigmas: Sequence[float], context: torch.Tensor, guidance: Guidance = Guidance(),
                   proposal: TailProposal | None = None, generator: torch.Generator | None = None,
                   fit_tail: bool = False, chunk: int | None = None) -> CycleResult:
    """P plans x R futures in batched forwards, in chunks of at most ``chunk`` rollouts (default: the
    FASTDIFF_CHUNK_ROLLOUTS setting); per-plan branch rates (importance-weighted when a proposal is
    given); the plan with the lowest expected cost is chosen. ``fit_tail``: also gather the statistics
    that refit the tail proposal. The noise of every row, the rates, the choice and the NFE do not
    depend on the chunk size (up to float rounding of a batch's arithmetic)."""
    p, h = plans.shape
    rows = p * futures
    chunk = chunk_rollouts() if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be an integer >= 1 (rollouts per fan-out chunk)")
    stream = NoiseStream(rows, h, world.frame_dim, proposal=proposal, generator=generator, device=context.device)
    tallies = [BranchTally(len(world.labels)) for _ in range(p)]
    tail_fit = TailFit(h, world.frame_dim) if fit_tail else None
    tail_code = world.labels.index(world.tail)
    counter = NFECounter()
    seconds, chunks = 0.0, 0
    for lo in range(0, rows, chunk):
        hi = min(rows, lo + chunk)
        noise, log_w = stream.take(hi - lo)
        t0 = time.perf_counter()
        frames = fan_out(net, world, plans, futures, sampler=sampler, sigmas=sigmas, noise=noise, context=context,
                         guidance=guidance, counter=counter, rows=(lo, hi))
        seconds += time.perf_counter() - t0
        chunks += 1
        codes = world.classify(frames).cpu()
        plan_of_row = torch.arange(lo, hi) // futures
        for i in range(int(plan_of_row[0]), int(plan_of_row[-1]) + 1):
            mine = plan_of_row == i
            tallies[i].add(codes[mine], None if log_w is None else log_w[mine])
        if tail_fit is not None:
            tail_fit.add(noise, _onset(world, frames).cpu(), codes == tail_code, log_w)
    rates = torch.stack([t.rates for t in tallies])
    cost = plan_costs(world, plans, rates)
    return CycleResult(plans.cpu(), tallies, rates, cost, int(cost.argmin()), float(counter.rows), counter.forwards,
                       seconds, chunks, tail_fit, float(counter.repeat_rows))


class Planner:
    """Runs planning cycles back to back with warm start: each cycle's candidate set starts from the
    previous best plan shifted one frame, and (with ``importance``) its tail proposal is refitted on
    the previous cycle's weighted rollouts — the first cycle samples uniformly and serves as the pilot
    (its NFE is billed like every other cycle's)."""

    def __init__(self, net: nn.Module, world: WorldModel, *, plans: int, futures: int, horizon: int,
                 sampler: FrameSampler, sigmas: Sequence[float], guidance: Guidance = Guidance(),
                 importance: bool = False, beta: float = 0.5, warm_start: bool = True,
                 chunk: int | None = None) -> None:
        check_world_model(world)
        self.net, self.world, self.P, self.R, self.H = net, world, plans, futures, horizon
        self.sampler, self.sigmas, self.guidance = sampler, sigmas, guidance
        self.importance, self.beta, self.warm_start = importance, beta, warm_start
        self.chunk = chunk
        self.previous: list[int] | None = None
        self.proposal: TailProposal | None = None

    def cycle(self, context: torch.Tensor, generator: torch.Generator | None = None) -> CycleResult:
        plans = candidate_plans(self.P, self.H, self.previous if self.warm_start else None,
                                actions=len(self.world.actions))
        res = planning_cycle(self.net, self.world, plans, self.R, sampler=self.sampler, sigmas=self.sigmas,
                             context=context, guidance=self.guidance,
                             proposal=self.proposal if self.importance else None, generator=generator,
                             fit_tail=self.importance, chunk=self.chunk)
        self.previous = res.chosen_plan()
        if res.tail_fit is not None:
            fitted = res.tail_fit.proposal(beta=self.beta)
            if fitted is not None:
                self.proposal = fitted
        return res


def _onset(world: WorldModel, frames: torch.Tensor) -> torch.Tensor:
    onset = world.onset(frames)
    if onset is None:
        raise ValueError(f"importance sampling needs where a branch began: {type(world).__name__}.onset returns "
                         f"None (the world model does not support it); allowed: importance='off'")
    return onset
