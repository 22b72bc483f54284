"""``fastdiff train moving_digits``: train the moving-digits world's frame denoiser on ground-truth transitions of
scikit-learn's bundled digits, write the shipped weights and their card (the work:
fastdiff_core.worlds.moving_digits.train; this module parses the flags and prints the progress).

    fastdiff train moving_digits               # the shipped weights: fastdiff_core/models/weights/moving_digits/
    fastdiff train moving_digits --card-only   # re-measure the shipped weights, rewrite card.json and README.md
"""

from __future__ import annotations

import argparse
import json

from fastdiff_cli.args import float_range, int_range, writable_dir
from fastdiff_cli.progress import print_step, stage_printer
from fastdiff_core.worlds.moving_digits import (
    CARD_FILE, WEIGHTS_DIR, CardProtocol, TrainConfig, load_weights, train_moving_digits, write_card,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--steps", type=int_range(1), default=d.steps, help="training steps")
    parser.add_argument("--batch", type=int_range(1, 65536), default=d.batch)
    parser.add_argument("--lr", type=float_range(0.0, 1.0, lo_open=True), default=d.lr)
    parser.add_argument("--jump-fraction", type=float_range(0.0, 0.49), default=d.jump_fraction,
                        help="share of each batch drawn from jump transitions (exactly reweighted)")
    parser.add_argument("--seed", type=int_range(0, 2**31 - 1), default=d.seed)
    parser.add_argument("--threads", type=int_range(1, 1024), default=d.threads)
    parser.add_argument("--out", type=writable_dir, default=WEIGHTS_DIR, help="the weights folder to write")
    parser.add_argument("--card-only", action="store_true", help="re-measure the folder's weights, rewrite the card")
    parser.add_argument("--card-rollouts", type=int_range(100, 100_000), default=CardProtocol().rollouts,
                        help="rollouts per plan for the card's measured rates")


_stage = stage_printer({
    "train": "training the frame denoiser: {steps} steps x batch {batch} on {digits} training digits",
    "card": "measuring the card: {rollouts} rollouts x {plans} plans",
})


def main(args: argparse.Namespace) -> int:
    protocol = CardProtocol(rollouts=args.card_rollouts)
    if args.card_only:
        card = json.loads((args.out / CARD_FILE).read_text())
        card = write_card(load_weights(args.out), args.out, card, protocol=protocol, on_stage=_stage)
    else:
        config = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, jump_fraction=args.jump_fraction,
                             seed=args.seed, threads=args.threads)
        card = train_moving_digits(config, args.out, protocol=protocol, on_stage=_stage, on_step=print_step)
    for action, row in card["measured"]["plans"].items():
        print(f"  {action:>5}: jumps {row['tail_rate']:.2%} [{row['tail_lo']:.2%}, {row['tail_hi']:.2%}] vs true "
              f"{row['truth']['jumps']:.2%}; implausible {row['implausible_rate']:.2%}", flush=True)
    print(f"  coverage gate: {card['measured']['gate']['outcome']}", flush=True)
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)", flush=True)
    return 0
