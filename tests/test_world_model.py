"""The world-model network and its training: staged forward, checkpoints, a short real training run."""

import pytest
import torch

from fastdiff_core.models.teacher import TrainConfig, load_checkpoint, save_checkpoint, train_teacher, transition_pool
from fastdiff_core.models.world_model import WorldModelConfig, WorldModelNet
from fastdiff_core.worlds.driving import encoding


def _net(prediction="flow", seed=0):
    torch.manual_seed(seed)
    net = WorldModelNet(WorldModelConfig(width=32, depth=3, prediction=prediction))
    for p in net.parameters():  # leave the zero init so the staged forward is not trivially zero
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def test_staged_forward_equals_forward_and_blocks_are_residual():
    net = _net()
    x, t, c = torch.randn(5, 8), torch.rand(5), torch.randn(5, encoding.COND_DIM)
    emb = net.embed(t, c)
    h = net.stem(x, c)
    h1 = net.run_blocks(h, emb, 0, 1)
    out = net.head(net.run_blocks(h1, emb, 1), emb)
    assert torch.allclose(out, net(x, t, c), atol=1e-6)
    blk = net.blocks[0]
    assert torch.allclose(blk(h, emb), h + blk.residual(h, emb))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="prediction='eps'"):
        WorldModelConfig(prediction="eps")
    with pytest.raises(ValueError, match="width=0"):
        WorldModelConfig(width=0)
    with pytest.raises(ValueError, match="tail_fraction=0.9"):
        TrainConfig(tail_fraction=0.9)


def test_checkpoint_round_trip(tmp_path):
    net = _net("x0")
    save_checkpoint(net, tmp_path / "ck", {"note": 1})
    back = load_checkpoint(tmp_path / "ck")
    assert back.config == net.config and back.prediction == "x0"
    x, t, c = torch.randn(3, 8), torch.rand(3), torch.randn(3, encoding.COND_DIM)
    assert torch.equal(back(x, t, c), net(x, t, c))
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


def test_transition_pool_marks_rare_starts():
    pool = transition_pool(200, 4, torch.Generator().manual_seed(0))
    assert pool.x0.shape[1] == encoding.FRAME_DIM and pool.cond.shape[1] == encoding.COND_DIM
    assert 0 < pool.rare.float().mean() < 0.2


@pytest.mark.parametrize("prediction,tail_fraction", [("flow", 0.0), ("x0", 0.1)])
def test_short_training_reduces_the_loss(prediction, tail_fraction):
    losses = []
    cfg = TrainConfig(model=WorldModelConfig(width=32, depth=2, prediction=prediction), steps=120, batch=256,
                      rollouts_per_condition=50, train_horizon=4, pool_steps=60, threads=1,
                      tail_fraction=tail_fraction)
    net, stats = train_teacher(cfg, lambda step, loss, sec: losses.append(loss))
    assert losses[-1] < 0.85 * losses[0]
    assert not net.training and stats["parameters"] > 0
