"""Progress lines of the training commands: the core reports (``on_step(step, loss, seconds)``,
``on_stage(name, facts)``), a command prints. One step line for every trainer; each command names the
stages it shows and the line for each, a format string over the stage's facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def print_step(step: int, loss: float, seconds: float) -> None:
    """One optimiser step's line: its index, its loss, the seconds since training started."""
    print(f"  step {step:6d}  loss {loss:.4f}  {seconds:7.1f}s", flush=True)


def stage_printer(lines: Mapping[str, str]) -> Callable[[str, Mapping[str, Any]], None]:
    """An ``on_stage(name, facts)`` that prints ``lines[name].format(**facts)``; a stage not named is silent."""

    def on_stage(name: str, facts: Mapping[str, Any]) -> None:
        if name in lines:
            print(lines[name].format(**facts), flush=True)

    return on_stage
