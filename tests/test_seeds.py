"""Seeds derived for batches and looks never alias another run seed's noise (``fastdiff_core.seeds``):
``seed + b`` made run seed 0's batch 1 run seed 1's batch 0, correlating 'independent' seeds."""

import pytest
import torch

from fastdiff_core.models.teacher import load_teacher
from fastdiff_core.seeds import derived_seed
from fastdiff_core.worlds.driving import get_scene, solver_and_grid, stream_rollouts


def test_derived_seeds_of_neighbouring_run_seeds_are_disjoint_and_the_first_stream_is_the_seed():
    streams = [{derived_seed(seed, b) for b in range(200)} for seed in range(50)]
    assert all(len(s) == 200 for s in streams)
    assert len(set().union(*streams)) == 50 * 200  # no seed shares a batch seed with another
    assert derived_seed(7) == derived_seed(7, 0) == derived_seed(7, 0, 0) == 7
    assert derived_seed(3, 1) != derived_seed(3, 1, 0) != derived_seed(3, 0, 1)  # keys of other lengths differ
    assert 0 <= derived_seed(2**63 - 1, 5) < 2**63
    for bad in (-1, 2**63, 1.5, True, "3"):
        with pytest.raises(ValueError, match="seed="):
            derived_seed(bad, 1)
    with pytest.raises(ValueError, match="key="):
        derived_seed(1, -1)


def test_a_second_batch_is_not_the_next_seeds_first_batch():
    net = load_teacher("x0", "cpu")
    solver, sigmas = solver_and_grid("euler", 1)
    scene = get_scene("child_at_curb")

    def batches(seed):
        return list(stream_rollouts(net, scene, "keep", 8, 1, solver=solver, sigmas=sigmas, seed=seed, batch=4))

    zero, one = batches(0), batches(1)
    assert not torch.equal(zero[1], one[0])  # with seed + b they were identical
    assert torch.equal(zero[0], list(stream_rollouts(net, scene, "keep", 4, 1, solver=solver, sigmas=sigmas,
                                                     seed=0))[0])  # a one-batch stream is unchanged
