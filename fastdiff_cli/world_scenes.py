"""``fastdiff world scenes``: every scene's exact branch probabilities per action (closed form)."""

from __future__ import annotations

import argparse

from fastdiff_cli.args import int_range
from fastdiff_core.worlds.driving import ACTIONS, SCENES, branch_probabilities, frame_hazards, time_to_arrival


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon", type=int_range(1, 1000), default=6, help="frames (1 s each)")


def main(args: argparse.Namespace) -> int:
    print(f"{'scene':<22} {'action':<10} {'TTA s':>6} {'waits':>7} {'crosses':>8} {'darts':>7} {'dart/frame':>10}")
    for scene in SCENES.values():
        for action in ACTIONS:
            p = branch_probabilities(scene, action, args.horizon)
            print(f"{scene.name:<22} {action:<10} {time_to_arrival(scene, action):>6.1f} {p['waits']:>7.4f} "
                  f"{p['crosses']:>8.4f} {p['darts']:>7.4f} {frame_hazards(scene, action)[1]:>10.4f}")
    return 0
