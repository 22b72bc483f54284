"""Feature caching across adjacent denoising steps: reuse the deep blocks' output (DeepCache / FORA),
on a fixed schedule or under a feedback controller that holds a compute budget (SoftCap).

Works on any *staged* network, the world model's contract (``fastdiff_core.models.world_model``):

    emb = net.embed(t, cond); h = net.stem(x_t, cond); h = net.run_blocks(h, emb, start, stop); out = net.head(h, emb)

Blocks [0, from_block) are shallow and always run; blocks [from_block, depth) are deep. On a refresh
step the deep blocks run and their total update ``delta = deep(h) - h`` is stored; on a cached step
the network returns ``head(h + delta)`` without running them. A cached step is still one NFE (the
network is evaluated, more cheaply); ``stats`` reports what fraction of deep-block work was done.

Schedules (Ma et al. 2024, DeepCache; Selvaraju et al. 2024, FORA; SoftCap, the seed's 002):
  fixed       refresh every ``interval``-th call of a trajectory.
  controlled  a drift observer accumulates the relative L1 change of the shallow hidden state since
              the last refresh (a cheap proxy of how stale the cached deep features are) and refreshes
              when it exceeds a threshold; a PI controller moves log(threshold) so that the running
              share of refresh steps tracks ``budget``: more drift than the budget allows -> skip less
              where it matters, less -> skip more. The controller's state persists across
              trajectories (frames of a rollout), so the budget is held over a whole run.

A trajectory starts (and the cache is refreshed) at ``reset()``, when the batch shape changes (e.g.
a guidance interval switching between one and two passes) or when t does not decrease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

CacheMode = Literal["fixed", "controlled"]
CACHE_MODES: tuple[str, ...] = ("fixed", "controlled")


@dataclass
class CacheStats:
    """What the cache did: calls, refreshes (deep blocks run), and the controller's threshold trace."""

    calls: int = 0
    refreshes: int = 0
    drift: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)

    @property
    def deep_fraction(self) -> float:
        """Share of calls that ran the deep blocks (1 = no saving)."""
        return self.refreshes / self.calls if self.calls else 1.0


class FeatureCache(nn.Module):
    """A staged network with its deep blocks cached across adjacent steps; ``net(x_t, t, cond)``."""

    def __init__(self, net: nn.Module, mode: CacheMode = "fixed", *, interval: int = 2, budget: float = 0.5,
                 from_block: int = 1, kp: float = 1.0, ki: float = 0.3, threshold: float = 0.1) -> None:
        super().__init__()
        if mode not in CACHE_MODES:
            raise ValueError(f"feature_cache={mode!r} is not one of {list(CACHE_MODES)}")
        depth = len(net.blocks)
        if isinstance(from_block, bool) or not isinstance(from_block, int) or not 0 <= from_block < depth:
            raise ValueError(f"cache_options.from_block={from_block!r} must be an integer in [0, {depth - 1}]")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"cache_options.interval={interval!r} must be an integer >= 1")
        if not (isinstance(budget, (int, float)) and 0.0 < budget <= 1.0):
            raise ValueError(f"cache_options.budget={budget!r} must be a number in (0, 1]")
        if not (isinstance(threshold, (int, float)) and threshold > 0):
            raise ValueError(f"cache_options.threshold={threshold!r} must be a number > 0")
        self.net, self.mode, self.interval, self.budget = net, mode, interval, float(budget)
        self.from_block, self.kp, self.ki = from_block, float(kp), float(ki)
        self.log_threshold0 = math.log(threshold)
        self.stats = CacheStats()
        self._integral, self._error = 0.0, 0.0
        self.reset()

    @property
    def prediction(self) -> str:
        return self.net.prediction

    def reset(self) -> None:
        """Start a new trajectory: the next call refreshes."""
        self._delta: torch.Tensor | None = None
        self._h_prev: torch.Tensor | None = None
        self._t_prev: float | None = None
        self._step = 0
        self._acc = 0.0

    @property
    def threshold(self) -> float:
        """The controller's current skip threshold on the accumulated drift."""
        log_thr = self.log_threshold0 + self.kp * self._error + self.ki * self._integral
        return math.exp(min(max(log_thr, -12.0), 12.0))

    def _decide(self, h: torch.Tensor, t_now: float) -> bool:
        new_traj = (self._delta is None or self._delta.shape != h.shape
                    or (self._t_prev is not None and t_now >= self._t_prev))
        if new_traj:
            self._step, self._acc = 0, 0.0
            return True
        if self.mode == "fixed":
            return self._step % self.interval == 0
        # drift observer: relative L1 change of the shallow features since the previous step
        drift = float((h - self._h_prev).abs().mean() / self._h_prev.abs().mean().clamp_min(1e-12))
        self._acc += drift
        self.stats.drift.append(drift)
        thr = self.threshold
        self.stats.thresholds.append(thr)
        return self._acc > thr

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        net = self.net
        emb = net.embed(t, cond)
        h = net.run_blocks(net.stem(x_t, cond), emb, 0, self.from_block)
        t_now = float(t.max())
        refresh = self._decide(h, t_now)
        if refresh:
            deep = net.run_blocks(h, emb, self.from_block, None)
            self._delta = deep - h
            self._acc = 0.0
        else:
            deep = h + self._delta
        if self.mode == "controlled":
            # PI controller on log(threshold): error = refreshed - budget, every call (forced refreshes
            # at trajectory starts included: the budget is the share of all calls); anti-windup clamp
            self._error = (1.0 if refresh else 0.0) - self.budget
            self._integral = min(max(self._integral + self._error, -12.0 / max(self.ki, 1e-9)),
                                 12.0 / max(self.ki, 1e-9))
        self._h_prev, self._t_prev = h, t_now
        self._step += 1
        self.stats.calls += 1
        self.stats.refreshes += int(refresh)
        return net.head(deep, emb)
