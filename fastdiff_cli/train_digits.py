"""``fastdiff train digits``: train the digits world's class-conditional UNet and digit classifier on
scikit-learn's bundled digits, write the diffusers folder and its card (the work:
fastdiff_core.worlds.digits.train; this module parses the flags and prints the progress).

    fastdiff train digits                 # the shipped folder: fastdiff_core/models/weights/digits/
    fastdiff train digits --card-only     # re-measure the folder's weights, rewrite fastdiff.json and README.md
"""

from __future__ import annotations

import argparse

from fastdiff_cli.args import float_range, int_range, writable_dir
from fastdiff_cli.progress import print_step, stage_printer
from fastdiff_core.worlds.digits import WEIGHTS_DIR, TrainConfig, measure_folder, train_digits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--steps", type=int_range(1), default=d.steps, help="UNet training steps")
    parser.add_argument("--batch", type=int_range(1, 65536), default=d.batch)
    parser.add_argument("--lr", type=float_range(0.0, lo_open=True), default=d.lr)
    parser.add_argument("--rare-digit", type=int_range(0, 9), default=d.rare_digit)
    parser.add_argument("--rare-fraction", type=float_range(0.001, 0.09), default=d.rare_fraction)
    parser.add_argument("--classifier-steps", type=int_range(1), default=d.classifier_steps)
    parser.add_argument("--seed", type=int_range(0, 2**31 - 1), default=d.seed)
    parser.add_argument("--no-ema-warmup", action="store_true",
                        help="keep the EMA decay fixed from step 0 (how the shipped weights were trained)")
    parser.add_argument("--threads", type=int_range(1, 1024), default=d.threads)
    parser.add_argument("--out", type=writable_dir, default=WEIGHTS_DIR, help="the model folder to write")
    parser.add_argument("--card-only", action="store_true", help="re-measure the folder's weights, rewrite the card")
    parser.add_argument("--card-n", type=int_range(100, 100_000), default=1000,
                        help="samples per condition for the card's measured histograms")


_stage = stage_printer({
    "classifier": "training the digit classifier: {steps} steps",
    "classifier_done": "  held-out accuracy {heldout_accuracy:.4f} on {heldout_n} digits",
    "unet": "training the UNet: {steps} steps x batch {batch} on {images} images ({rare_digit} thinned to "
            "{rare_rate:.4f})",
    "card": "measuring the card: {n} samples per condition",
})


def main(args: argparse.Namespace) -> int:
    if args.card_only:
        measure_folder(args.out, card_n=args.card_n, on_stage=_stage)
    else:
        config = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, rare_digit=args.rare_digit,
                             rare_fraction=args.rare_fraction, classifier_steps=args.classifier_steps,
                             seed=args.seed, threads=args.threads, ema_warmup=not args.no_ema_warmup)
        train_digits(config, args.out, card_n=args.card_n, on_stage=_stage,
                     on_step=print_step)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)", flush=True)
    return 0
