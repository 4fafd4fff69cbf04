"""The non-arcloss losses the benchmarks compare against, written once."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from arcloss.recipes import unit_norm_init_


class SoftmaxLoss(nn.Module):
    """Plain softmax: ``nn.Linear(D, C)`` then cross-entropy."""

    def __init__(self, num_classes: int, embedding_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes, bias=bias, device=device, dtype=dtype)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.fc(embeddings), labels)


class NormSoftmaxLoss(nn.Module):
    """Normalised softmax, the naive cosine loss: cross-entropy of ``scale * cos(theta_j)``, no margin.

    Class centres ``W`` ``(D, C)``, as arcloss's; N(0, 1) initialisation, or N(0, 1/D) (unit norm) with
    ``unit_init``."""

    def __init__(
        self, num_classes: int, embedding_size: int, scale: float, unit_init: bool = False, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.scale = scale
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes, device=device, dtype=dtype))
        if unit_init:
            unit_norm_init_(self.W)
        else:
            nn.init.normal_(self.W)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = F.normalize(embeddings, dim=1) @ F.normalize(self.W, dim=0)
        return F.cross_entropy(self.scale * cos, labels)
