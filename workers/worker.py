"""``fastdiff worker``: join a broker (FASTDIFF_BROKER_URL, --broker, or this machine's embedded one) and run.

Sized to the machine by default: one process per GPU when ``nvidia-smi`` lists any, else one per CPU
core, each with its share of the cores for torch's threads. The parent imports no torch; each child
imports it on its first run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys

from fastdiff_cli.args import int_range
from workers.settings import broker_url_argument, check_broker_url


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", type=broker_url_argument, default=None, help="Redis URL (default: FASTDIFF_BROKER_URL or the embedded broker)")
    parser.add_argument("--concurrency", "-c", type=int_range(1, 1024), default=None,
                        help="worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--name", default=None, help="worker node name (default: fastdiff-<pid>@<host>)")
    parser.add_argument("--loglevel", default="INFO")


def main(args: argparse.Namespace) -> int:
    if args.broker:
        os.environ["FASTDIFF_BROKER_URL"] = check_broker_url(args.broker)
    gpus = gpu_count()
    concurrency = args.concurrency or gpus or max(1, os.cpu_count() or 1)
    if gpus:  # each child sees one GPU (round robin), so "auto" spreads the children over the GPUs
        visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(str(i) for i in range(gpus))
        os.environ["FASTDIFF_WORKER_GPUS"] = visible
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r} must be an integer >= 1")
    os.environ["FASTDIFF_WORKER_CONCURRENCY"] = str(concurrency)  # the heartbeat tells the fair queue
    threads = max(1, (os.cpu_count() or 1) // concurrency)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    from workers.settings import load_settings

    settings = load_settings()
    if settings.broker_url is None and not settings.embedded_socket.exists():
        print(f"no broker configured (FASTDIFF_BROKER_URL, --broker) and no embedded broker at "
              f"{settings.embedded_socket}: start `fastdiff up` on this machine or give a Redis URL; "
              "retrying until one appears", file=sys.stderr, flush=True)
    from workers.celery_app import QUEUE
    from workers.tasks import app

    name = args.name or f"fastdiff-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", str(concurrency), "--queues", QUEUE,
                     "--hostname", name, "--loglevel", args.loglevel, "--without-gossip", "--without-mingle",
                     "--without-heartbeat"])  # Celery's event heartbeats: nothing reads them (ours: workers.supervision)
    return 0
