"""Why a moving-digits frame denoiser keeps or loses the rare jump (docs/moving_digits.md).

    python tools/moving_digits_tail.py [WEIGHTS_DIR] [--rollouts 3000]

For the denoiser in WEIGHTS_DIR (default: the shipped one, its sha256 checked; another folder is read without a
card) under action `right` from column 4 (no wall within reach of one frame: truth 1% jumps):

1. posterior: x_t = (1 - t) x0 + t eps of a held-out digit's next frame, x0 the normal move or a jump; the
   weight the exact posterior mean puts on the jumps (the next frame is one of three known frames) beside the
   weight of the jumps in the network's x0 estimate (least squares onto the three frames), per path time t;
2. one frame: R rollouts of one frame through the rollout engine (DPM-Solver++(2M) x 8 and Euler x 16, Karras
   grid, seed 1, each from its own held-out digit), the network beside the exact-posterior denoiser (the
   sampler's own error).

    python tools/moving_digits_tail.py [WEIGHTS_DIR] --per-frame [--solver euler --steps 32 --rollouts 2000]

3. per frame: R six-frame rollouts under `right` from column 4 (each from its own held-out digit, seed 0): the
   jump rate of every frame against the exact one (``frame_jump_probabilities``), by the column the digit stood
   in before the frame (read off the frames: 4 plus the observed moves) against that column's exact rate, and
   the jumps' directions; then one frame from a TRUE context at each start column 4..8 (no rollout history:
   what the network does at a wall, apart from what it does to its own frames).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch
from torch import nn

from fastdiff_core.grids import build_grid
from fastdiff_core.rollout import fan_out
from fastdiff_core.speedups import frame_sampler
from fastdiff_core.worlds.moving_digits import dynamics as D
from fastdiff_core.worlds.moving_digits.model import MovingDigitsWorldModel
from fastdiff_core.worlds.moving_digits.network import (
    FRAME_DIM, WEIGHTS_DIR, WEIGHTS_FILE, FrameDenoiser, NetConfig, condition, load_weights,
)


class ExactDenoiser(nn.Module):
    """The exact posterior mean of the next frame given x_t, the previous frame and the action, for a digit no
    wall can clip (the seven moves' frames are the previous frame shifted)."""

    prediction = "x0"

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        prev = cond[:, :FRAME_DIM].reshape(b, D.ROWS, D.COLS)
        a = cond[:, FRAME_DIM:FRAME_DIM + len(D.ACTIONS)].argmax(1)
        f = torch.stack([D.shifted(prev, d).reshape(b, -1) for d in range(-D.JUMP, D.JUMP + 1)], 1)
        p = torch.tensor(D.P_JUMP)[a]
        prior = torch.full((b, 2 * D.JUMP + 1), 1e-30)
        prior[:, 0] += p / 2
        prior[:, -1] += p / 2
        prior[torch.arange(b), D.JUMP + torch.tensor(D.MOVE)[a]] += 1 - p
        s = t.clamp(min=1e-4)[:, None]
        ll = -(x_t[:, None] - (1 - s)[:, :, None] * f).pow(2).sum(-1) / (2 * s * s) + prior.log()
        return (ll.softmax(-1)[:, :, None] * f).sum(1)


def load(folder: pathlib.Path) -> FrameDenoiser:
    if folder.resolve() == WEIGHTS_DIR.resolve():
        return load_weights(folder)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        raw = json.loads(f.metadata()["config"])
    net = FrameDenoiser(NetConfig(**{**raw, "dilations": tuple(raw["dilations"])}))
    net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return net.eval().requires_grad_(False)


def posterior_table(net: nn.Module, n: int = 400) -> None:
    gen = torch.Generator().manual_seed(1)
    held = D.digit_images()[1]
    img = held[torch.randint(0, held.shape[0], (n,), generator=gen)]
    x, right = torch.full((n,), 4), D.action_index("right")
    frames = torch.stack([D.place(img, x + 1), D.place(img, x - D.JUMP), D.place(img, x + D.JUMP)], 1).reshape(n, 3, -1)
    prior = torch.tensor([1 - D.P_JUMP[right], D.P_JUMP[right] / 2, D.P_JUMP[right] / 2])
    cond = condition(D.place(img, x), torch.full((n,), right))
    print("   t | x0 drawn | exact posterior: jump weight | network: jump weight")
    for t in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        for name, k in (("normal", 0), ("jump", 2)):
            x_t = (1 - t) * frames[:, k] + t * torch.randn(n, FRAME_DIM, generator=gen)
            w = (-(x_t[:, None] - (1 - t) * frames).pow(2).sum(-1) / (2 * t * t) + prior.log()).softmax(-1)
            with torch.no_grad():
                pred = net(x_t, torch.full((n,), t), cond)
            coef = torch.linalg.lstsq(frames.transpose(1, 2), pred[:, :, None]).solution[:, :, 0]
            print(f"{t:4.2f} | {name:8s} | {float(w[:, 1:].sum(1).mean()):.4f} | {float(coef[:, 1:].sum(1).mean()):.4f}")


def one_frame(net: nn.Module, n: int) -> list[tuple[str, int, int, int]]:
    """(solver, steps, jumps, implausible) of ``n`` one-frame rollouts (each from its own held-out digit), per
    sampler."""
    out = []
    for solver, steps in (("dpmpp_2m", 8), ("euler", 16)):
        c = torch.bincount(D.classify_codes(rollouts(net, solver, steps, n, 4, 1, seed=1)), minlength=3)
        out.append((solver, steps, int(c[D.JUMPS]), int(c[D.IMPLAUSIBLE])))
    return out


def rollouts(net: nn.Module, solver: str, steps: int, n: int, start: int, horizon: int, seed: int) -> torch.Tensor:
    """n rollouts (n, H + 1, ROWS, COLS) under `right` from ``start``, each from its own held-out digit."""
    gen = torch.Generator().manual_seed(seed)
    world = MovingDigitsWorldModel(net, start=start, action="right")
    context = world.observe(n, gen)
    noise = torch.randn(n, horizon, FRAME_DIM, generator=gen)
    frames = fan_out(net, world, torch.full((n, horizon), world.action), 1, sampler=frame_sampler(solver),
                     sigmas=build_grid("karras", steps, world.path), noise=noise, context=context)
    return frames.reshape(n, *frames.shape[2:])


def per_frame(net: nn.Module, solver: str, steps: int, n: int, horizon: int = 6) -> None:
    from fastdiff_core.metrics.intervals import wilson_interval

    right = D.action_index("right")
    moves, errors = D.observed_moves(rollouts(net, solver, steps, n, 4, horizon, seed=0))
    ok = ~(errors > D.MATCH_TOL).any(1)
    truth = D.frame_jump_probabilities(4, [right] * horizon)
    jumped = moves.abs() >= 2
    rollout_rate = float((jumped.any(1) & ok).double().mean())
    print(f"{solver} x {steps}, {n} rollouts right x {horizon} from column 4: jumps {rollout_rate:.2%} "
          f"(truth {D.branch_probabilities(4, [right] * horizon)['jumps']:.2%}), implausible {float((~ok).double().mean()):.2%}")
    print("frame | jumps [95% Wilson] | truth | directions of the jumps (-3, -2, +2, +3) | match error median, 99th pct")
    for k in range(horizon):
        j = int(jumped[:, k].sum())
        lo, hi = wilson_interval(j, n)
        dirs = [int((moves[:, k] == d).sum()) for d in (-3, -2, 2, 3)]
        q = torch.quantile(errors[:, k], torch.tensor([0.5, 0.99])).tolist()
        print(f"{k + 1} | {j / n:.2%} [{lo:.2%}, {hi:.2%}] | {truth[k]:.2%} | {dirs} | {q[0]:.4f}, {q[1]:.4f}")
    print(f"rollouts with 2+ jumps: {int((jumped.sum(1) >= 2).sum())}; jumps after a jump, by frame: "
          f"{[int((jumped[:, k] & jumped[:, :k].any(1)).sum()) for k in range(horizon)]}")
    column = (4 + torch.cat([torch.zeros(n, 1, dtype=torch.long), moves.cumsum(1)[:, :-1]], 1))  # before frame k
    print("column before the frame | frames | jumps [95% Wilson] | truth | moves -3..3")
    for x in sorted(set(column[ok].flatten().tolist())):  # outside 0..MAX_X: moved off the canvas
        at = (column == x) & ok[:, None]
        m, j = int(at.sum()), int((jumped & at).sum())
        lo, hi = wilson_interval(j, m)
        exact = f"{D.frame_jump_probabilities(x, [right])[0]:.2%}" if 0 <= x <= D.MAX_X else "- (off the canvas)"
        dirs = [int(((moves == d) & at).sum()) for d in range(-D.JUMP, D.JUMP + 1)]
        print(f"{x} | {m} | {j / m:.2%} [{lo:.2%}, {hi:.2%}] | {exact} | {dirs}")
    print("one frame from a true context | jumps [95% Wilson] | truth | directions (-3, -2, +2, +3)")
    for x in range(4, D.MAX_X + 1):
        mv, _ = D.observed_moves(rollouts(net, solver, steps, n, x, 1, seed=1 + x))
        j = int((mv.abs() >= 2).sum())
        lo, hi = wilson_interval(j, n)
        dirs = [int((mv == d).sum()) for d in (-3, -2, 2, 3)]
        print(f"{x} | {j / n:.2%} [{lo:.2%}, {hi:.2%}] | {D.frame_jump_probabilities(x, [right])[0]:.2%} | {dirs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="?", type=pathlib.Path, default=WEIGHTS_DIR)
    parser.add_argument("--rollouts", type=int, default=3000)
    parser.add_argument("--per-frame", action="store_true", help="section 3 instead of 1-2")
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = load(args.weights)
    if args.per_frame:
        per_frame(net, args.solver, args.steps, args.rollouts)
        return
    posterior_table(net)
    for label, model in (("network", net), ("exact posterior", ExactDenoiser())):
        for solver, steps, jumps, bad in one_frame(model, args.rollouts):
            print(f"one frame, {label}, {solver} x {steps}: jumps {jumps}/{args.rollouts} "
                  f"({jumps / args.rollouts:.2%}; truth 1.00%), implausible {bad}")


if __name__ == "__main__":
    main()
