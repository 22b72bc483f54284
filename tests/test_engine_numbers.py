"""The world-model protocol changed structure, not numbers: two driving runs give, at the same seed, the
branch counts, chosen plans, NFE and metrics recorded before the rollout engine ran over the protocol
(commit 199b0ec, `fastdiff run --spec ... --json`): a planning run with importance sampling and guidance
(generic runner over DrivingWorldModel) and a plain run of 2,500 rollouts in batches of 700 (the world's
runner, now tallying batch by batch and keeping only the first 2,000 rollouts for its sample metrics)."""

import pytest

from fastdiff_core.run import execute


PLANNING = {"world": "driving", "scene": "child_at_curb", "solver": "euler", "steps": 4, "horizon": 4, "plans": 6,
            "futures": 50, "samples": 3, "seed": 7, "importance": "tail", "guidance_scale": 2.0}
PLANNING_COUNTS = {
    "b-b-b-b": (0, 110, 18, 22), "k-k-k-k": (52, 39, 8, 51), "a-a-a-a": (74, 30, 8, 38),
    "b-k-k-k": (5, 102, 13, 30), "k-a-a-a": (69, 31, 15, 35), "a-b-b-b": (0, 98, 24, 28),
}
PLAIN = {"world": "driving", "scene": "child_at_curb", "solver": "dpmpp_2m", "steps": 4, "horizon": 3,
         "samples": 2500, "seed": 9, "world_options": {"batch": 700}}
# batches 1..3 of the plain run take seeds.derived_seed(9, b) since the batch seeds stopped overlapping
# neighbouring run seeds (they were 9 + b: run seed 10's batch 0 was this run's batch 1); batch 0 is unchanged
PLAIN_COUNTS = (1632, 304, 2, 562)  # were (1654, 290, 1, 555) with seed + b
PLAIN_METRICS = {"coverage": 0.601, "density": 13.3667, "implausible_rate": 0.2248, "mmd": 0.023855864418307338,
                 "precision": 0.666, "recall": 0.1775, "sliced_w1": 0.25994252051786615, "tail_rate": 0.0008,
                 "tail_truth": 0.08229325809935568, "tv": 0.2248, "vendi": 2.4628221644525814,
                 "vendi_truth": 4.28589305842447}


def counts_by_group(result) -> dict:
    out: dict = {}
    for row in result.histograms:
        out.setdefault(row["group"], []).append(row["count"])
    return {g: tuple(c) for g, c in out.items()}


def test_a_planning_run_gives_the_numbers_it_gave_before_the_protocol():
    result = execute(PLANNING)
    assert counts_by_group(result) == PLANNING_COUNTS
    assert result.info["chosen_last"] == [2, 2, 2, 2]
    assert result.nfe_counted == result.nfe_formula == 28800
    assert result.metrics["tail_rate_mean"] == pytest.approx(0.017122315217625136, rel=1e-9)
    assert result.info["proposal_frames"] == pytest.approx(
        [0.7235867381095886, 0.25555938482284546, 0.010419965721666813, 0.010433941148221493], rel=1e-6)


def test_a_plain_run_streams_its_batches_and_gives_the_numbers_it_gave_before():
    result = execute(PLAIN)
    assert counts_by_group(result) == {"child_at_curb": PLAIN_COUNTS}
    assert result.nfe_counted == result.nfe_formula == 30000
    assert {k: result.metrics[k] for k in PLAIN_METRICS} == pytest.approx(PLAIN_METRICS, rel=1e-6)


def test_the_plain_runner_forwards_at_most_a_chunk_of_rollouts(monkeypatch):
    """FASTDIFF_CHUNK_ROLLOUTS below the world's batch option bounds the rows per forward (the peak), the
    bill is unchanged."""
    monkeypatch.setenv("FASTDIFF_CHUNK_ROLLOUTS", "150")
    result = execute({**PLAIN, "samples": 400, "horizon": 2})
    assert {row["batch"] for row in result.latency} == {150}
    assert result.nfe_counted == result.nfe_formula == 4 * 2 * 400
