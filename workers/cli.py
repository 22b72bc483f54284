"""The ``fastdiff`` command. Each subcommand lives in the module that owns it and is imported only
when invoked, so ``fastdiff up`` does not pay for torch and ``fastdiff bench`` does not pay for Streamlit.

A command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. A bad argument or spec
exits 2 with one line on stderr naming the flag or field, the value and what is allowed: argparse's
errors (argument types in ``fastdiff_cli.args`` check values where they are read) and the
ValueError a command raises while checking its input, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("run",): ("fastdiff_cli.run", "run one RunSpec and print its RunResult as a table"),
    ("schema",): ("fastdiff_cli.schema", "the JSON schema of a RunSpec (--write: docs/schema/, --check: up to date)"),
    ("models", "list"): ("fastdiff_cli.models", "the registered models (name, kind, prediction, path, sha256)"),
    ("models", "add"): ("fastdiff_cli.models",
                        "check a diffusers-format directory or a 'module:function' PyTorch model and register it"),
    ("models", "remove"): ("fastdiff_cli.models", "forget a registered model (its files are untouched)"),
    ("bench", "models"): ("fastdiff_cli.bench_models",
                          "load time of each diffusers model kind; a run's cold vs warm (cached model) time"),
    ("world", "scenes"): ("fastdiff_cli.world_scenes",
                          "the driving scenes' exact branch probabilities per ego action"),
    ("train", "teacher"): ("fastdiff_cli.train_teacher",
                           "train the driving world-model teacher, measure it, write weights + card"),
    ("bench", "coverage"): ("fastdiff_cli.bench_coverage",
                            "solvers x NFE x guidance on the driving teacher: TV, tail rate, P/R, gate"),
    ("bench", "gate"): ("fastdiff_cli.bench_gate",
                        "the coverage gate's pass/fail/undecided rates by simulation, fixed n and sequential"),
    ("bench", "solvers"): ("fastdiff_cli.bench_solvers", "every solver x grid x NFE on the mixture world, vs peers"),
    ("fit", "grids"): ("fastdiff_cli.fit_grids",
                       "last-step defaults and tuned grids fitted across random worlds, judged on held-out ones"),
    ("fit", "learned"): ("fastdiff_cli.fit_learned",
                         "a learned few-step grid + last step per model and NFE (LD3-style), on held-out worlds "
                         "and the driving teacher"),
    ("up",): ("workers.up", "start the broker (embedded unless configured), workers, the collector and the dashboard"),
    ("worker",): ("workers.worker", "join a broker and run queued runs (FASTDIFF_BROKER_URL or --broker)"),
    ("collector",): ("workers.collector", "the store's single result writer (started by `fastdiff up`)"),
    ("bench", "dashboard"): ("workers.bench_dashboard", "render time of every dashboard page over 1,000 stored runs"),
    ("bench", "service"): ("workers.bench_service", "queue round trip (Redis vs embedded), sweep throughput vs in-process"),
    ("bench", "store"): ("workers.bench_store", "store queries (Experiments, Explore, Sweep, Compare), a new process's "
                                                "first query and compaction over N runs; files per 1,000 runs"),
    ("bench", "faults"): ("workers.faults", "kill -9 each part of `fastdiff up` mid-sweep (and Ctrl-C): runs "
                                             "stored, duplicated, lost, recovery seconds"),
    ("train", "digits"): ("fastdiff_cli.train_digits",
                          "train the digits world's class-conditional UNet + classifier on sklearn's digits, "
                          "write a diffusers folder + card"),
    ("train", "moving_digits"): ("fastdiff_cli.train_moving_digits",
                                 "train the moving-digits world's frame denoiser on sklearn's digits, write weights + card"),
    ("bench", "digits"): ("fastdiff_cli.bench_digits",
                          "digits model: class histogram vs data truth and vs its teacher, per solver x NFE x guidance"),
    ("train", "student"): ("fastdiff_cli.train_student",
                           "distil one student from the shipped driving teacher, write weights + model card"),
    ("bench", "students"): ("fastdiff_cli.bench_students",
                            "every distilled student vs the teacher: NFE, wall clock at equal TV, tail, gates"),
    ("bench", "speedups"): ("fastdiff_cli.bench_speedups",
                            "caching, Picard, bf16/int8, compile, guidance interval: speed vs coverage, side by side"),
    ("bench", "rollout"): ("fastdiff_cli.bench_rollout",
                           "planning fan-out: batched vs loop, overhead, cycle latency + verdict, IS vs uniform"),
}


def _usage() -> str:
    lines = ["usage: fastdiff COMMAND [options]", "", "commands:"]
    for words, (_, doc) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<22} {doc}")
    return "\n".join(lines)


class UsageError(Exception):
    """A bad argument, reported as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line ("fastdiff bench coverage: argument --n: ...") and no usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def one_line(text: str, limit: int = 500) -> str:
    """A message as one line of at most ``limit`` characters (a repr of a huge value is cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for n in (2, 1):
        key = tuple(argv[:n])
        if len(key) == n and key in COMMANDS:
            module_name, doc = COMMANDS[key]
            prog = "fastdiff " + " ".join(key)
            parser = OneLineParser(prog=prog, description=doc)
            module = importlib.import_module(module_name)
            module.add_arguments(parser)
            try:
                args = parser.parse_args(argv[n:])
                return int(module.main(args) or 0)
            except UsageError as e:
                print(one_line(str(e)), file=sys.stderr)
                return 2
            except (ValueError, RecursionError) as e:
                # a command's input check (a RunSpec, an option, a file): the message names the field
                print(one_line(f"{prog}: {e}"), file=sys.stderr)
                return 2
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    words = sorted(" ".join(w) for w in COMMANDS if w[0] == argv[0]) or sorted({w[0] for w in COMMANDS})
    print(one_line(f"fastdiff: {' '.join(argv[:2])!r} is not a command; allowed: {', '.join(words)}"
                   " (fastdiff --help describes them)"), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
