"""A margin that depends on the feature norm, written as one class against the public protocol, and its
independent float64 reference (plain autograd through the whole equation)."""

from __future__ import annotations

import torch
from torch import Tensor

from arcloss import Margin

from . import reference as ref


class NormShiftMargin(Margin):
    """``phi = cos(theta) - m * tanh(|x| / r)``: a cosine margin growing with the feature norm (toy)."""

    def __init__(self, m: float = 0.3, r: float = 2.0) -> None:
        super().__init__()
        self.m, self.r = m, r

    def forward(self, cos: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        return cos - self.m * torch.tanh(norm / self.r), torch.ones_like(cos)


def norm_shift_loss(x: Tensor, w: Tensor, labels: Tensor, m: float, r: float, scale: float, reduction: str) -> Tensor:
    """Float64 reference of the toy margin's loss: differentiable in ``x`` (cosines and norm) and ``w``."""
    cos = ref.cosines(x, w)
    target = cos[torch.arange(len(labels)), labels] - m * torch.tanh(x.double().norm(dim=1) / r)
    return ref.margin_softmax_loss(cos, labels, target, scale, reduction)
