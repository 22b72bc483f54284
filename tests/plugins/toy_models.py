"""A third-party PyTorch model, as a user would write one: plain torch, registered through a
``fastdiff.models`` entry point. Two Gaussian blobs in 2-D (weights 0.9 / 0.1) and the exact
eps-prediction network of that data on the VP-linear path (x_t = a x0 + s eps):

    x_t | blob k ~ N(a mu_k, (a^2 r_k^2 + s^2) I),   E[eps | x_t] = sum_k p(k | x_t) s (x_t - a mu_k) / (a^2 r_k^2 + s^2)

plus a classifier (which blob a sample is nearer) for the coverage modes."""

from __future__ import annotations

import math

import torch
from torch import nn

from fastdiff_core.models.interface import ModelInterface, PathDecl
from fastdiff_core.models.loading import ModuleModel


class TwoBlobs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("means", torch.tensor([[-1.0, 0.0], [2.0, 1.0]]))
        self.register_buffer("radii", torch.tensor([0.3, 0.2]))
        self.register_buffer("log_w", torch.tensor([math.log(0.9), math.log(0.1)]))
        self.beta = (0.1, 20.0)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        b0, b1 = self.beta
        log_a = -0.25 * t * t * (b1 - b0) - 0.5 * t * b0
        a, s = log_a.exp()[:, None, None], (-torch.expm1(2 * log_a)).sqrt()[:, None, None]
        var = a * a * self.radii[None, :, None] ** 2 + s * s  # (B, K, 1)
        diff = x_t[:, None, :] - a * self.means[None]  # (B, K, 2)
        logp = self.log_w[None] - 0.5 * ((diff * diff) / var).sum(-1) - torch.log(var[..., 0])
        r = torch.softmax(logp, dim=1)[..., None]
        return (r * s * diff / var).sum(1)


def two_blobs() -> ModuleModel:
    return ModuleModel(TwoBlobs(), ModelInterface("eps", PathDecl("vp_linear"), (2,), class_names=()),
                       card={"data": "two Gaussian blobs, weights 0.9 / 0.1"}, classifier="toy_models:blob_classifier")


def blob_classifier():
    means = torch.tensor([[-1.0, 0.0], [2.0, 1.0]])
    return lambda x: torch.cdist(x.reshape(len(x), -1).float(), means).argmin(1)
