"""The first screen's three ready examples, one per regime: each a RunSpec that its world can run and
the run guard lets through (tests/test_app_first_screen.py holds both), so one click and Run works.
They are templates built at import, so the run limits are checked when one is run, not here: a server
with tighter limits still draws its pages (and says so when the example is run)."""

from __future__ import annotations

from dataclasses import dataclass

from fastdiff_core.spec import RunSpec

INTRO = (
    "**fastdiff answers one question: how few network evaluations (NFE) can a diffusion world model "
    "spend and still produce the rare futures a planner must see?** Choose a sampler on the left: its "
    "NFE bill, projected latency and cost appear before anything runs. Then run it on a world with exact "
    "answers and read the verdict against the regime's budget: coverage of every branch (the rare tail "
    "too), cost, latency. **Run** is below; or start from one of the three regimes' examples:"
)


@dataclass(frozen=True)
class Example:
    regime: str
    title: str
    question: str
    spec: RunSpec


EXAMPLES: tuple[Example, ...] = (
    Example("offline", "Offline generation",
            "Does an 8-step DPM-Solver++ keep the rare mode of an exact 2-D mixture?",
            RunSpec(world="mixture", solver="dpmpp_2m", steps=8, samples=2000, regime="offline",
                    name="example: offline generation", enforce_limits=False)),
    Example("closed_loop", "Closed-loop simulation",
            "Is a 6-step solver over 20 frames cheap enough per 1,000 scenarios, and are darting pedestrians still there?",
            RunSpec(world="driving", scene="red_light_jaywalker", solver="dpmpp_2m", steps=6, horizon=20,
                    samples=40, regime="closed_loop", name="example: closed-loop simulation", enforce_limits=False)),
    Example("planning", "In-the-loop planning",
            "Can 10 plans x 4 futures over 12 frames at 4 steps fit a 100 ms cycle?",
            RunSpec(world="driving", scene="red_light_jaywalker", solver="dpmpp_2m", steps=4, horizon=12, plans=10,
                    futures=4, samples=5, regime="planning", name="example: in-the-loop planning", enforce_limits=False)),
)
