"""``fastdiff train teacher``: train the driving world-model teacher, measure it, write weights + card.

    fastdiff train teacher --prediction flow            # the shipped default teacher
    fastdiff train teacher --prediction x0              # the clean-x0 variant
    fastdiff train teacher --prediction flow --card-only  # re-measure shipped weights, rewrite the card
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from fastdiff_cli.args import file_stem, float_range, int_range, writable_dir
from fastdiff_cli.progress import print_step
from fastdiff_core.models.card import CardProtocol, measure_teacher, regate, render_card
from fastdiff_core.models.teacher import (
    WEIGHTS_DIR, TrainConfig, load_checkpoint, save_checkpoint, train_teacher,
)
from fastdiff_core.models.world_model import WorldModelConfig
from fastdiff_core.spec import MAX_SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--prediction", choices=("flow", "x0"), default="flow")
    parser.add_argument("--steps", type=int_range(1), default=d.steps)
    parser.add_argument("--batch", type=int_range(1), default=d.batch)
    parser.add_argument("--lr", type=float_range(0.0, lo_open=True), default=d.lr)
    parser.add_argument("--width", type=int_range(1, 65536), default=d.model.width)
    parser.add_argument("--depth", type=int_range(1, 1024), default=d.model.depth)
    parser.add_argument("--tail-fraction", type=float_range(0.0, 1.0), default=d.tail_fraction)
    parser.add_argument("--seed", type=int_range(0, MAX_SEED), default=d.seed)
    parser.add_argument("--threads", type=int_range(1, 1024), default=d.threads)
    parser.add_argument("--out", type=writable_dir, default=WEIGHTS_DIR, help="directory for weights and card")
    parser.add_argument("--name", type=file_stem, default=None, help="checkpoint name (default driving_teacher_<prediction>)")
    parser.add_argument("--card-only", action="store_true", help="re-measure existing weights, rewrite the card")
    parser.add_argument("--n-per-seed", type=int_range(1), default=CardProtocol().n_per_seed)
    parser.add_argument("--regate", action="store_true",
                        help="with --card-only: recompute the gate from the stored counts (no sampling)")


def command_for(train: dict) -> str:
    """The exact command that reproduces a checkpoint with this training config."""
    m = train["model"]
    return (f"fastdiff train teacher --prediction {m['prediction']} --steps {train['steps']} --batch {train['batch']} "
            f"--lr {train['lr']} --width {m['width']} --depth {m['depth']} --tail-fraction {train['tail_fraction']} "
            f"--seed {train['seed']}")


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)  # oversubscribed threads are ~10x slower on a shared CPU
    name = args.name or f"driving_teacher_{args.prediction}"
    stem = args.out / name
    if args.card_only:
        meta = json.loads(stem.with_suffix(".json").read_text())
        net = load_checkpoint(stem)
        meta["command"] = command_for(meta["train"])
    else:
        config = TrainConfig(
            model=WorldModelConfig(width=args.width, depth=args.depth, prediction=args.prediction),
            steps=args.steps, batch=args.batch, lr=args.lr, tail_fraction=args.tail_fraction, seed=args.seed,
            threads=args.threads,
        )
        print(f"training {name}: {config.steps} steps on {config.threads} thread(s)", flush=True)
        net, stats = train_teacher(config, print_step)
        stats["host"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, shared"
        meta = {"command": command_for(config.to_dict()), "train": config.to_dict(), "stats": stats,
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save_checkpoint(net, stem, meta)
    if args.card_only and args.regate:
        meta["measured"] = regate(meta["measured"])
    else:
        protocol = CardProtocol(n_per_seed=args.n_per_seed)
        print(f"measuring {name}: {protocol.solver} x {protocol.steps}, {len(protocol.scenes)} scenes", flush=True)
        meta["measured"] = measure_teacher(net, protocol)
    save_checkpoint(net, stem, meta)
    card = render_card(f"Driving world-model teacher `{name}`", meta)
    stem.with_suffix(".md").write_text(card)
    print(card)
    return 0
